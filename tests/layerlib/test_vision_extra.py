"""LRN, Deconvolution, Im2col, SPP, stochastic pooling: hand values, gradients, errors."""
import numpy as np
import pytest

from gradient_check import check_gradient, check_gradient_exhaustive
from helpers import layer_param, make_blob
from npcaffe import rng
from npcaffe.blob import Blob
from npcaffe.errors import NetError
from npcaffe.layer import TEST, TRAIN, create_layer


def make(text, phase=TRAIN):
    return create_layer(layer_param(f'name: "v" {text}'), phase)


def forward(layer, bottom, ntop=1):
    top = [Blob(()) for _ in range(ntop)]
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    return top[0] if ntop == 1 else top


# -- LRN ------------------------------------------------------------------------------------

def test_lrn_across_hand_values():
    # One pixel, 3 channels, local_size 3: scale_c = k + alpha/3 * (sum of squares of c-1..c+1).
    x = Blob((1, 3, 1, 1))
    x.data[...] = np.array([1.0, 2.0, 3.0]).reshape(1, 3, 1, 1)
    top = forward(make('type: "LRN" lrn_param { local_size: 3 alpha: 3 beta: 0.5 k: 2 }'), [x])
    scale = 2 + np.array([1 + 4, 1 + 4 + 9, 4 + 9])
    np.testing.assert_allclose(top.data.ravel(), [1, 2, 3] / np.sqrt(scale), rtol=1e-6)


def test_lrn_within_hand_values():
    # 3x3 image, local_size 3: centre window is the whole image, corner windows hold 4 pixels.
    x = Blob((1, 1, 3, 3))
    x.data[...] = np.arange(1, 10, dtype=np.float32).reshape(1, 1, 3, 3)
    top = forward(make('type: "LRN" lrn_param { local_size: 3 alpha: 9 beta: 1 k: 100 norm_region: WITHIN_CHANNEL }'), [x])
    v = x.data[0, 0].astype(np.float64)
    centre = 5 / (1 + (v ** 2).sum())  # alpha / size^2 = 1, k ignored
    corner = 1 / (1 + (1 + 4 + 16 + 25))
    assert top.data[0, 0, 1, 1] == pytest.approx(centre, rel=1e-6)
    assert top.data[0, 0, 0, 0] == pytest.approx(corner, rel=1e-6)


@pytest.mark.parametrize("param", ["local_size: 3 alpha: 1.5 beta: 0.75 k: 1.2",
                                   "local_size: 5",
                                   "local_size: 3 alpha: 1.5 beta: 0.75 norm_region: WITHIN_CHANNEL"])
def test_lrn_gradient(param):
    x = make_blob((2, 7, 3, 3), seed=3)
    check_gradient_exhaustive(make(f'type: "LRN" lrn_param {{ {param} }}'), [x], [Blob(())], threshold=2e-3)


def test_lrn_even_local_size_is_an_error():
    with pytest.raises(NetError, match=r"layer 'v' \(LRN\): lrn_param.local_size must be odd.*got 4"):
        forward(make('type: "LRN" lrn_param { local_size: 4 }'), [make_blob((1, 3, 2, 2))])
    with pytest.raises(NetError, match=r"must have 4 axes.*\(2, 3\)"):
        forward(make('type: "LRN"'), [make_blob((2, 3))])


# -- Deconvolution ----------------------------------------------------------------------------

def deconv(param, bottom):
    layer = make(f'type: "Deconvolution" convolution_param {{ {param} weight_filler {{ type: "gaussian" std: 0.5 }} '
                 'bias_filler { type: "gaussian" std: 0.5 } }')
    return layer, forward(layer, [bottom])


@pytest.mark.parametrize("param", ["num_output: 3 kernel_size: 3 stride: 2 pad: 1",
                                   "num_output: 4 kernel_size: 2 stride: 1 group: 2",
                                   "num_output: 2 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 dilation: 2"])
def test_deconvolution_is_convolution_transposed(param):
    x = make_blob((2, 4, 3, 4), seed=1)
    layer, top = deconv(param + " bias_term: false", x)
    p = layer
    assert top.shape[2] == p.stride[0] * (3 - 1) + p.dilation[0] * (p.kernel[0] - 1) + 1 - 2 * p.pad[0]
    # <deconv(x), y> == <x, conv(y)>: deconvolution is the adjoint of convolution.
    # A Convolution from the deconvolution's output back to its input has the same weight shape.
    conv_param = param.replace(f"num_output: {layer.num_output}", f"num_output: {x.shape[1]}")
    conv = make(f'type: "Convolution" convolution_param {{ {conv_param} bias_term: false }}')
    y = make_blob(top.shape, seed=2)
    conv_top = Blob(())
    conv.setup([y], [conv_top])
    conv.blobs[0].data[...] = layer.blobs[0].data
    assert conv_top.shape == x.shape
    conv.forward([y], [conv_top])
    lhs = np.dot(top.data.ravel().astype(np.float64), y.data.ravel())
    rhs = np.dot(x.data.ravel().astype(np.float64), conv_top.data.ravel())
    assert lhs == pytest.approx(rhs, rel=1e-5)


def test_deconvolution_hand_values():
    # 1x1 input of value 2, 2x2 kernel, stride 1: the output is 2 * kernel + bias.
    x = Blob((1, 1, 1, 1))
    x.data[...] = 2
    layer, top = deconv("num_output: 1 kernel_size: 2", x)
    np.testing.assert_allclose(top.data[0, 0], 2 * layer.blobs[0].data[0, 0] + layer.blobs[1].data[0], rtol=1e-6)


@pytest.mark.parametrize("param", ["num_output: 3 kernel_size: 3 stride: 2 pad: 1",
                                   "num_output: 4 kernel_size: 2 group: 2"])
def test_deconvolution_gradient(param):
    layer = make(f'type: "Deconvolution" convolution_param {{ {param} weight_filler {{ type: "gaussian" }} '
                 'bias_filler { type: "gaussian" } }')
    check_gradient(layer, [make_blob((2, 4, 3, 3), seed=4)], [Blob(())], threshold=2e-3)


def test_deconvolution_bad_group():
    with pytest.raises(NetError, match=r"group 2 must divide both the input channels \(3"):
        deconv("num_output: 4 kernel_size: 2 group: 2", make_blob((1, 3, 2, 2)))


# -- Im2col -------------------------------------------------------------------------------------

def test_im2col_layer():
    x = Blob((2, 1, 3, 3))
    x.data[...] = np.arange(18, dtype=np.float32).reshape(2, 1, 3, 3)
    top = forward(make('type: "Im2col" convolution_param { kernel_size: 2 }'), [x])
    assert top.shape == (2, 4, 2, 2)
    np.testing.assert_array_equal(top.data[0, :, 0, 0], [0, 1, 3, 4])
    np.testing.assert_array_equal(top.data[1, :, 1, 1], [13, 14, 16, 17])
    check_gradient(make('type: "Im2col" convolution_param { kernel_size: 3 stride: 2 pad: 1 }'),
                   [make_blob((2, 2, 4, 5), seed=5)], [Blob(())])


# -- SPP ------------------------------------------------------------------------------------------

def test_spp_shapes_and_values():
    x = make_blob((2, 3, 9, 7), seed=6)
    top = forward(make('type: "SPP" spp_param { pyramid_height: 3 pool: MAX }'), [x])
    assert top.shape == (2, 3 * (1 + 4 + 16))
    np.testing.assert_allclose(top.data[:, :3], x.data.max(axis=(2, 3)), rtol=1e-6)
    level1 = top.data[:, 3:15].reshape(2, 3, 2, 2)
    # level 1: kernel ceil(9/2)=5, pad (10-9+1)/2=1 in h; kernel 4, pad 1 in w
    np.testing.assert_allclose(level1[:, :, 0, 0], x.data[:, :, :4, :3].max(axis=(2, 3)), rtol=1e-6)
    top = forward(make('type: "SPP" spp_param { pyramid_height: 1 pool: AVE }'), [x])
    assert top.shape == (2, 3, 1, 1)
    np.testing.assert_allclose(top.data[:, :, 0, 0], x.data.mean(axis=(2, 3)), rtol=1e-5)


@pytest.mark.parametrize("pool", ["MAX", "AVE"])
def test_spp_gradient(pool):
    check_gradient(make(f'type: "SPP" spp_param {{ pyramid_height: 2 pool: {pool} }}'),
                   [make_blob((2, 2, 4, 5), seed=7)], [Blob(())])


def test_spp_reshapes_with_the_input():
    layer = make('type: "SPP" spp_param { pyramid_height: 2 }')
    x, top = make_blob((1, 2, 6, 6)), Blob(())
    layer.setup([x], [top])
    x.reshape(1, 2, 8, 10)
    layer.forward([x], [top])
    assert top.shape == (1, 10)


# -- stochastic pooling ------------------------------------------------------------------------

STO = 'type: "Pooling" pooling_param { pool: STOCHASTIC kernel_size: 2 stride: 2 }'


def test_stochastic_pooling_test_phase_hand_values():
    x = Blob((1, 1, 2, 4))
    x.data[...] = np.array([[1, 3, 0, 0], [0, 0, 2, 2]], np.float32).reshape(1, 1, 2, 4)
    top = forward(make(STO, TEST), [x])
    np.testing.assert_allclose(top.data.ravel(), [10 / 4, 8 / 4])
    check_gradient(make(STO, TEST), [make_blob((1, 2, 4, 4), low=0.1, high=1, seed=8)], [Blob(())])


def test_stochastic_pooling_train_samples_window_values():
    x = make_blob((2, 3, 4, 6), low=0.1, high=1.0, seed=9)
    rng.set_random_seed(5)
    top = forward(make(STO), [x])
    windows = x.data.reshape(2, 3, 2, 2, 3, 2).transpose(0, 1, 2, 4, 3, 5).reshape(2, 3, 2, 3, 4)
    assert all(top.data[n, c, i, j] in windows[n, c, i, j]
               for n in range(2) for c in range(3) for i in range(2) for j in range(3))
    rng.set_random_seed(5)
    again = forward(make(STO), [x])
    np.testing.assert_array_equal(top.data, again.data)  # seeded from npcaffe.rng
    check_gradient(make(STO), [x], [Blob(())])


def test_pooling_type_dispatches_stochastic_to_its_variant():
    from npcaffe.layerlib.vision import Pooling
    from npcaffe.layerlib.vision_extra import StochasticPooling
    layer = make(STO)
    assert isinstance(layer, StochasticPooling) and layer.type == "Pooling"
    assert type(make('type: "Pooling" pooling_param { pool: MAX kernel_size: 2 }')) is Pooling
    with pytest.raises(NetError, match="takes at most 1 top"):
        layer.setup([make_blob((1, 1, 4, 4))], [Blob(()), Blob(())])
