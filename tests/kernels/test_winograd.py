"""Winograd F(2x2, 3x3) (npcaffe.kernels.winograd, conv_paths.Winograd, engine: WINOGRAD): the transforms
against their matrix form, the convolution against the float64 reference on awkward sizes (odd outputs,
every pad it takes, groups, two bottoms), its error measured against the exact path's, and the engine
field choosing it only where it applies."""
import numpy as np
import pytest
from google.protobuf import text_format

import npcaffe
from conv_reference import reference_convolution
from npcaffe.kernels import winograd
from npcaffe.layerlib.conv_paths import DenseColumns, Scratch, Winograd
from npcaffe.proto import caffe_pb2

from layerlib.test_conv_paths import Problem, check, conv_shape


def test_the_matrices_compute_a_3_tap_correlation_of_4_inputs():
    """1-D F(2, 3): Aᵀ [(G g) ⊙ (Bᵀ d)] equals (d0 g0 + d1 g1 + d2 g2, d1 g0 + d2 g1 + d3 g2) exactly."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        d, g = rng.normal(size=4), rng.normal(size=3)
        got = winograd.A_T @ ((winograd.G @ g) * (winograd.B_T @ d))
        np.testing.assert_allclose(got, [d[:3] @ g, d[1:] @ g], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("num, channels, outputs, image, pad", [
    (2, 3, 4, (7, 9), (1, 1)),   # odd output: the last tiles half used
    (1, 5, 2, (3, 3), (0, 0)),   # one output
    (3, 2, 3, (6, 5), (2, 2)),   # the largest pad the backward pass can take
    (2, 4, 6, (8, 8), (0, 1)),
])
def test_kernels_match_the_reference_convolution(num, channels, outputs, image, pad):
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (num, channels) + image).astype(np.float32)
    w = rng.uniform(-1, 1, (outputs, channels, 3, 3)).astype(np.float32)
    b = rng.uniform(-1, 1, outputs).astype(np.float32)
    want = reference_convolution(x, w, b, (1, 1), pad, (1, 1), 1)
    np.testing.assert_allclose(winograd.convolution_reference(x, w, b, *pad), want, rtol=1e-10, atol=1e-10)
    top = np.full(want.shape, np.nan, np.float32)
    winograd.convolution(x, winograd.filter_transform(w), b, *pad, top, Scratch().get)
    np.testing.assert_allclose(top, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pad", [(0, 0), (1, 1), (2, 1)])
@pytest.mark.parametrize("group", [1, 2])
@pytest.mark.parametrize("bottoms", [1, 2])
def test_the_path_matches_the_reference_forward_and_backward(pad, group, bottoms):
    shape = conv_shape(3, 4 * group, 5 * group, (7, 6), (3, 3), pad, group=group)
    problem = Problem(shape, bottoms=bottoms, bias=True)
    check(problem, problem.run(Winograd(shape, Scratch())))


def test_its_error_is_of_the_exact_paths_order():
    """On a ResNet-like 3x3 layer (64 -> 64 channels, 14x14, pad 1) with unit-scale data, the largest
    error against float64, relative to the largest output, for the exact columns and for Winograd."""
    shape = conv_shape(2, 64, 64, (14, 14), (3, 3), (1, 1))
    problem = Problem(shape, bias=False, seed=3)
    (want, _), = [(y, dx) for y, dx in problem.reference()[0]]
    errors = {}
    for cls in (DenseColumns, Winograd):
        cls(shape, Scratch()).forward(problem.bottom, problem.top, problem.weight, None)
        errors[cls.__name__] = np.abs(problem.top[0].data - want).max() / np.abs(want).max()
    assert errors["DenseColumns"] < 1e-6
    # measured (64 and 256 channels, 14x14 and 56x56): 2.8e-7 to 7.2e-7 for Winograd, 4.7e-7 to 5.5e-7
    # for the exact path: F(2x2, 3x3)'s transforms (halves and a few additions) cost little accuracy
    assert errors["Winograd"] < 4 * max(errors["DenseColumns"], 2.5e-7)


def _net(engine, kernel=3, stride=1):
    text = f"""
    layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 2 dim: 3 dim: 8 dim: 8 }} }} }}
    layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv"
      convolution_param {{ num_output: 4 kernel_size: {kernel} stride: {stride} pad: 1 engine: {engine}
        weight_filler {{ type: "gaussian" std: 0.5 }} bias_filler {{ type: "constant" value: 0.1 }} }} }}"""
    npcaffe.set_random_seed(5)
    net = npcaffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), npcaffe.TEST)
    net.blobs["data"].data[...] = np.random.default_rng(2).normal(size=(2, 3, 8, 8))
    net.forward()
    return net


def test_the_engine_field_chooses_winograd_only_where_it_applies():
    exact, fast = _net("CAFFE"), _net("WINOGRAD")
    assert type(fast.layer_dict["conv"].compute_path()) is Winograd
    assert type(exact.layer_dict["conv"].compute_path()) is DenseColumns
    np.testing.assert_allclose(fast.blobs["conv"].data, exact.blobs["conv"].data, rtol=1e-5, atol=1e-5)
    assert not np.array_equal(fast.blobs["conv"].data, exact.blobs["conv"].data)  # another sum, not the same one
    for kernel, stride in ((5, 1), (3, 2)):  # other shapes keep Caffe's exact path
        assert type(_net("WINOGRAD", kernel, stride).layer_dict["conv"].compute_path()) is DenseColumns


def test_gradient_check_through_the_winograd_engine():
    """At unit-scale weights and data (std 1) the finite differences of Winograd's forward are noisy
    (changing one weight changes the rounding of every tile, which does not cancel between the two
    sides as the exact path's does): 2 of 12 seeds were off by 1.5e-3; at std 0.3 / 0.5, 0 of 30."""
    from gradient_check import check_gradient
    from helpers import layer_param
    from npcaffe.blob import Blob
    from npcaffe.layer import create_layer
    npcaffe.set_random_seed(6)
    layer = create_layer(layer_param(
        'name: "conv" type: "Convolution" convolution_param { num_output: 3 kernel_size: 3 pad: 1 group: 1 '
        'engine: WINOGRAD weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" std: 0.3 } }'))
    x = Blob((2, 2, 5, 4))
    x.data[...] = 0.5 * np.random.default_rng(4).normal(size=x.shape)
    check_gradient(layer, [x], [Blob(())])
    assert type(layer.compute_path()) is Winograd


def test_the_filter_transforms_are_reused_only_while_the_weights_are_unchanged():
    exact, fast = _net("CAFFE"), _net("WINOGRAD")
    path = fast.layer_dict["conv"].compute_path()
    first = path._transformed[False][1][0][2]
    fast.forward()
    assert path._transformed[False][1][0][2] is first  # the same weights: the same transforms
    for net in (exact, fast):
        net.params["conv"][0].data[0, 1, 2, 0] += 0.75  # written in place, as a solver or user does
        net.forward()
    assert path._transformed[False][1][0][2] is not first
    np.testing.assert_allclose(fast.blobs["conv"].data, exact.blobs["conv"].data, rtol=1e-5, atol=1e-5)


def test_the_filter_transform_kernel_gives_numpys_float64_matrix_products():
    weight = np.random.default_rng(8).normal(size=(5, 4, 3, 3)).astype(np.float32)
    for g in (weight, weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)):  # and the bottom gradient's view
        blocks = np.ascontiguousarray(g).reshape(-1, 3, 3).astype(np.float64)
        want = np.matmul(np.matmul(winograd.G, blocks), winograd.G.T).reshape(g.shape[0], g.shape[1], 16)
        np.testing.assert_array_equal(winograd.filter_transform(g), want.transpose(2, 0, 1).astype(np.float32))
