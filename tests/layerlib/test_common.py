"""InnerProduct, Split, Flatten, Softmax: forward against float64 references, gradients, sharing, errors."""
import ctypes
import ctypes.util

import numpy as np
import pytest

from gradient_check import check_gradient, check_gradient_exhaustive
from helpers import layer_param, make_blob
from npcaffe.blob import Blob
from npcaffe.errors import NetError
from npcaffe.kernels import softmax as K
from npcaffe.layer import create_layer
from npcaffe.layerlib.common import InnerProductLayer

IP = """name: "ip" type: "InnerProduct"
inner_product_param {{ num_output: {n} {extra}
  weight_filler {{ type: "gaussian" std: 0.5 }} bias_filler {{ type: "uniform" min: -1 max: 1 }} }}"""


def ip_layer(n=4, extra=""):
    return create_layer(layer_param(IP.format(n=n, extra=extra)))


def setup(layer, bottom_shapes, tops=1, seed=0):
    bottom = [make_blob(s, seed=seed + i) for i, s in enumerate(bottom_shapes)]
    top = [Blob(()) for _ in range(tops)]
    layer.setup(bottom, top)
    return bottom, top


# -- InnerProduct ---------------------------------------------------------------

@pytest.mark.parametrize("extra, axis", [("", 1), ("transpose: true", 1), ("axis: 2", 2), ("bias_term: false", 1)])
def test_inner_product_forward(extra, axis):
    layer = ip_layer(4, extra)
    (bottom,), (top,) = setup(layer, [(2, 3, 2, 5)])
    layer.forward([bottom], [top])
    x = bottom.data.astype(np.float64)
    m = int(np.prod(x.shape[:axis]))
    w = layer.blobs[0].data.astype(np.float64)
    expected = x.reshape(m, -1) @ (w if "transpose" in extra else w.T)
    if "bias_term: false" in extra:
        assert len(layer.blobs) == 1
    else:
        expected += layer.blobs[1].data
    assert top.shape == x.shape[:axis] + (4,)
    np.testing.assert_allclose(top.data.reshape(m, 4), expected, rtol=1e-5, atol=1e-5)


def test_inner_product_weight_shapes():
    layer = ip_layer(4)
    setup(layer, [(2, 3, 5)])
    assert [b.shape for b in layer.blobs] == [(4, 15), (4,)]
    layer = ip_layer(4, "transpose: true")
    setup(layer, [(2, 3, 5)])
    assert layer.blobs[0].shape == (15, 4)
    layer = ip_layer(4, "axis: -1")
    (_,), (top,) = setup(layer, [(2, 3, 5)])
    assert layer.blobs[0].shape == (4, 5) and top.shape == (2, 3, 4)


@pytest.mark.parametrize("extra", ["", "transpose: true", "axis: 2", "bias_term: false"])
def test_inner_product_gradient(extra):
    layer = ip_layer(3, extra)
    check_gradient_exhaustive(layer, [make_blob((2, 3, 2, 2))], [Blob(())])


def test_inner_product_param_diffs_accumulate():
    layer = ip_layer(3)
    (bottom,), (top,) = setup(layer, [(4, 5)])
    layer.forward([bottom], [top])
    top.diff[...] = make_blob(top.shape, seed=7).data
    layer.backward([top], [True], [bottom])
    w1, b1, x1 = layer.blobs[0].diff.copy(), layer.blobs[1].diff.copy(), bottom.diff.copy()
    np.testing.assert_allclose(w1, top.diff.T @ bottom.data, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b1, top.diff.sum(0), rtol=1e-5, atol=1e-6)
    layer.backward([top], [True], [bottom])
    np.testing.assert_allclose(layer.blobs[0].diff, 2 * w1, rtol=1e-6)
    np.testing.assert_allclose(layer.blobs[1].diff, 2 * b1, rtol=1e-6)
    np.testing.assert_array_equal(bottom.diff, x1)  # the bottom diff is written, not accumulated


def test_inner_product_frozen_params_untouched():
    layer = ip_layer(3)
    (bottom,), (top,) = setup(layer, [(4, 5)])
    layer.set_param_propagate_down(0, False)
    layer.set_param_propagate_down(1, False)
    layer.forward([bottom], [top])
    top.diff[...] = 1
    layer.backward([top], [True], [bottom])
    assert not layer.blobs[0].diff.any() and not layer.blobs[1].diff.any()
    assert bottom.diff.any()


def test_inner_product_batch_may_change_but_not_k():
    layer = ip_layer(3)
    (bottom,), (top,) = setup(layer, [(4, 5)])
    bottom.reshape((7, 5))
    layer.forward([bottom], [top])
    assert top.shape == (7, 3)
    bottom.reshape((7, 6))
    with pytest.raises(NetError, match="set up for 5"):
        layer.forward([bottom], [top])


def test_inner_product_keeps_given_blobs():
    layer = ip_layer(3)
    w = Blob((3, 5))
    w.data[...] = 1
    b = Blob((3,))
    layer.blobs = [w, b]
    setup(layer, [(2, 5)])
    assert layer.blobs[0] is w and (w.data == 1).all()
    layer = ip_layer(3)
    layer.blobs = [Blob((5, 3)), Blob((3,))]
    with pytest.raises(NetError, match="parameter blobs have shapes"):
        setup(layer, [(2, 5)])


def test_inner_product_needs_num_output():
    with pytest.raises(NetError, match="num_output"):
        create_layer(layer_param('name: "ip" type: "InnerProduct"')).setup([make_blob((2, 3))], [Blob(())])


class MaskedIP(InnerProductLayer):
    """What CInnerProduct does with the hook: compute with a masked weight."""

    def forward_cpu(self, bottom, top):
        self.ip_forward(bottom, top, self.blobs[0].data * self.mask, self.blobs[1].data)

    def backward_cpu(self, top, propagate_down, bottom):
        self.ip_backward(top, propagate_down, bottom, self.blobs[0].data * self.mask)


def test_inner_product_hook_uses_given_weight():
    layer = MaskedIP(layer_param(IP.format(n=3, extra="")))
    (bottom,), (top,) = setup(layer, [(4, 5)])
    layer.mask = (np.arange(15).reshape(3, 5) % 2).astype(np.float32)
    layer.forward([bottom], [top])
    wm = layer.blobs[0].data * layer.mask
    np.testing.assert_allclose(top.data, bottom.data @ wm.T + layer.blobs[1].data, rtol=1e-5, atol=1e-6)
    top.diff[...] = 1
    layer.backward([top], [True], [bottom])
    np.testing.assert_allclose(bottom.diff, top.diff @ wm, rtol=1e-5, atol=1e-6)
    # The weight gradient is the dense one; masking it is the subclass's business.
    np.testing.assert_allclose(layer.blobs[0].diff, top.diff.T @ bottom.data, rtol=1e-5, atol=1e-6)


# -- Split ------------------------------------------------------------------------

def test_split_shares_data_and_sums_diffs():
    layer = create_layer(layer_param('name: "s" type: "Split"'))
    bottom = make_blob((2, 3))
    top = [Blob(()) for _ in range(3)]
    layer.setup([bottom], top)
    layer.forward([bottom], top)
    for t in top:
        assert t.shape == (2, 3) and t.shares_data_with(bottom)
        np.testing.assert_array_equal(t.data, bottom.data)
    for i, t in enumerate(top):
        t.diff[...] = make_blob((2, 3), seed=10 + i).data
    layer.backward(top, [True], [bottom])
    np.testing.assert_array_equal(bottom.diff, (top[0].diff + top[1].diff) + top[2].diff)


def test_split_one_top_and_gradient():
    layer = create_layer(layer_param('name: "s" type: "Split"'))
    check_gradient(layer, [make_blob((2, 3, 2))], [Blob(()), Blob(())])
    layer = create_layer(layer_param('name: "s" type: "Split"'))
    bottom, top = make_blob((4,)), Blob(())
    layer.setup([bottom], [top])
    top.diff[...] = 3
    layer.backward([top], [True], [bottom])
    assert (bottom.diff == 3).all()


def test_split_refuses_in_place():
    bottom = make_blob((2, 3))
    with pytest.raises(NetError, match="in place"):
        create_layer(layer_param('name: "s" type: "Split"')).setup([bottom], [Blob(()), bottom])


# -- Flatten ----------------------------------------------------------------------

@pytest.mark.parametrize("params, shape", [("", (2, 60)), ("axis: 2", (2, 3, 20)),
                                           ("axis: 1 end_axis: 2", (2, 12, 5)), ("axis: 0 end_axis: -2", (24, 5))])
def test_flatten_shapes_and_sharing(params, shape):
    layer = create_layer(layer_param(f'name: "f" type: "Flatten" flatten_param {{ {params} }}'))
    bottom, top = make_blob((2, 3, 4, 5)), Blob(())
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    assert top.shape == shape
    np.testing.assert_array_equal(top.flat_data, bottom.flat_data)
    top.diff[...] = 5
    layer.backward([top], [True], [bottom])
    assert bottom.shape == (2, 3, 4, 5) and (bottom.diff == 5).all()


def test_flatten_gradient():
    layer = create_layer(layer_param('name: "f" type: "Flatten"'))
    check_gradient(layer, [make_blob((2, 3, 2))], [Blob(())])


def test_flatten_errors():
    bottom = make_blob((2, 3, 4))
    with pytest.raises(NetError, match="in place"):
        create_layer(layer_param('name: "f" type: "Flatten"')).setup([bottom], [bottom])
    with pytest.raises(NetError, match="end_axis"):
        create_layer(layer_param('name: "f" type: "Flatten" flatten_param { axis: 2 end_axis: 1 }')).setup(
            [bottom], [Blob(())])


# -- Softmax ----------------------------------------------------------------------

def softmax64(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("axis", [1, 0, -1])
def test_softmax_forward(axis):
    layer = create_layer(layer_param(f'name: "sm" type: "Softmax" softmax_param {{ axis: {axis} }}'))
    bottom, top = make_blob((2, 10, 2, 3), low=-5, high=5), Blob(())
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    np.testing.assert_allclose(top.data, softmax64(bottom.data.astype(np.float64), axis), rtol=1e-6, atol=1e-7)


def test_softmax_hand_values_and_large_inputs():
    layer = create_layer(layer_param('name: "sm" type: "Softmax"'))
    bottom, top = Blob((2, 3)), Blob(())
    # exp overflows without the max subtraction; the second row is ln 1, ln 2, ln 5.
    bottom.data[...] = [[1000, 1000, 1000], [0, np.log(2), np.log(5)]]
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    np.testing.assert_allclose(top.data, [[1 / 3, 1 / 3, 1 / 3], [0.125, 0.25, 0.625]], rtol=1e-6)


def test_softmax_gradient():
    layer = create_layer(layer_param('name: "sm" type: "Softmax"'))
    check_gradient_exhaustive(layer, [make_blob((2, 4, 2, 1))], [Blob(())])


def test_softmax_in_place():
    layer = create_layer(layer_param('name: "sm" type: "Softmax"'))
    x = make_blob((3, 5, 2))
    ref = softmax64(x.data.astype(np.float64), 1)
    layer.setup([x], [x])
    layer.forward([x], [x])
    np.testing.assert_allclose(x.data, ref, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 7, 5), (5, 13, 1), (2, 1, 9)])
def test_softmax_kernels_match_reference(shape):
    rng = np.random.default_rng(3)
    x = rng.normal(0, 4, shape).astype(np.float32)
    out, ref = np.empty_like(x), np.empty_like(x)
    K.softmax_forward(x, out)
    K.softmax_forward_ref(x, ref)
    np.testing.assert_allclose(out, ref, rtol=2e-6, atol=1e-7)
    dy = rng.normal(0, 1, shape).astype(np.float32)
    K.softmax_backward(out, dy, x)
    K.softmax_backward_ref(out, dy, ref)
    np.testing.assert_allclose(x, ref, rtol=1e-5, atol=1e-6)


def test_softmax_kernel_is_caffe_float32_arithmetic():
    """Bit-equal to Caffe's CPU steps: float32 max, glibc expf, float32 running sum, float32 divide."""
    name = ctypes.util.find_library("m")
    if name is None:
        pytest.skip("no C math library to compare with")
    expf = ctypes.CDLL(name).expf
    expf.restype, expf.argtypes = ctypes.c_float, [ctypes.c_float]
    x = np.random.default_rng(5).normal(0, 3, (4, 10, 1)).astype(np.float32)
    out = np.empty_like(x)
    K.softmax_forward(x, out)
    for i in range(4):
        col = x[i, :, 0]
        m = col.max()
        e = [np.float32(expf(float(np.float32(v - m)))) for v in col]
        s = np.float32(0)
        for v in e:
            s = np.float32(s + v)
        np.testing.assert_array_equal(out[i, :, 0], np.array([v / s for v in e], np.float32))
