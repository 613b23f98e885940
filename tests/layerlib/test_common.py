"""InnerProduct, Split, Flatten, Softmax, Embed, Parameter, BatchReindex: forward against float64
references, hand values, gradients, sharing, errors; a Net of Embed, BatchReindex and Parameter."""
import ctypes
import ctypes.util

import numpy as np
import pytest
from google.protobuf import text_format

import npcaffe
from gradient_check import check_gradient, check_gradient_exhaustive
from helpers import layer_param, make_blob
from npcaffe import rng
from npcaffe.blob import Blob
from npcaffe.errors import NetError
from npcaffe.fileio.caffemodel import read_caffemodel
from npcaffe.kernels import softmax as K
from npcaffe.layer import create_layer
from npcaffe.layerlib.common import InnerProductLayer
from npcaffe.proto import caffe_pb2

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


def make(text):
    return create_layer(layer_param(text))


def blob_of(values, name=""):
    b = Blob(np.shape(values), name=name)
    b.data[...] = values
    return b


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


# -- Embed ----------------------------------------------------------------------------

EMBED = """name: "emb" type: "Embed"
embed_param {{ num_output: {n} input_dim: {k} {extra}
  weight_filler {{ type: "gaussian" std: 0.5 }} bias_filler {{ type: "uniform" min: -1 max: 1 }} }}"""


def embed(n=4, k=6, extra=""):
    return make(EMBED.format(n=n, k=k, extra=extra))


IDX = [[3, 0, 5], [3, 1, 0]]


@pytest.mark.parametrize("extra", ["", "bias_term: false"])
def test_embed_forward_hand_values(extra):
    layer, bottom, top = embed(extra=extra), blob_of(IDX, "words"), Blob(())
    layer.setup([bottom], [top])
    assert top.shape == (2, 3, 4)
    assert [b.shape for b in layer.blobs] == ([(6, 4)] if extra else [(6, 4), (4,)])
    layer.forward([bottom], [top])
    w = layer.blobs[0].data
    for i in range(2):
        for j in range(3):
            row = w[IDX[i][j]] + layer.blobs[1].data if not extra else w[IDX[i][j]]
            np.testing.assert_array_equal(top.data[i, j], row)


def test_embed_shapes_follow_bottom():
    layer, top = embed(n=5, k=3), Blob(())
    bottom = blob_of(np.zeros((2, 1, 4)))
    layer.setup([bottom], [top])
    assert top.shape == (2, 1, 4, 5)
    bottom.reshape((7,))
    bottom.data[...] = 2
    layer.forward([bottom], [top])
    assert top.shape == (7, 5)
    np.testing.assert_array_equal(top.data, np.tile(layer.blobs[0].data[2] + layer.blobs[1].data, (7, 1)))


def test_embed_backward_accumulates_in_order():
    layer, bottom, top = embed(), blob_of(IDX), Blob(())
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    dy = make_blob((2, 3, 4), seed=3).data
    top.diff[...] = dy
    layer.blobs[0].diff[...] = 0.25  # parameter diffs accumulate
    layer.blobs[1].diff[...] = -1
    layer.backward([top], [False], [bottom])
    want_w = np.full((6, 4), 0.25, np.float32)
    for i in range(2):
        for j in range(3):
            want_w[IDX[i][j]] += dy[i, j]  # index 3 and 0 twice: summed in bottom order
    np.testing.assert_array_equal(layer.blobs[0].diff, want_w)
    np.testing.assert_allclose(layer.blobs[1].diff, -1 + dy.reshape(-1, 4).astype(np.float64).sum(0), rtol=1e-6)


def test_embed_frozen_params_untouched():
    layer, bottom, top = embed(), blob_of(IDX), Blob(())
    layer.setup([bottom], [top])
    layer.set_param_propagate_down(0, False)
    layer.set_param_propagate_down(1, False)
    layer.forward([bottom], [top])
    top.diff[...] = 1
    layer.backward([top], [False], [bottom])
    assert not layer.blobs[0].diff.any() and not layer.blobs[1].diff.any()


@pytest.mark.parametrize("extra", ["", "bias_term: false"])
def test_embed_gradient(extra):
    bottom = blob_of([[1, 4, 4], [0, 5, 1]])
    check_gradient(embed(extra=extra), [bottom], [Blob(())], check_bottom=-2)


@pytest.mark.parametrize("value, position", [(1.5, (1, 2)), (-1, (0, 1)), (6, (1, 0)), (np.nan, (0, 0))])
def test_embed_bad_index_names_value_and_position(value, position):
    layer, bottom, top = embed(), blob_of(np.ones((2, 3)), "words"), Blob(())
    layer.setup([bottom], [top])
    bottom.data[position] = value
    with pytest.raises(NetError, match=rf"layer 'emb' \(Embed\): bottom 'words' holds {float(value)!r} at position "
                                       rf"\({position[0]}, {position[1]}\).*\[0, input_dim = 6\)"):
        layer.forward([bottom], [top])


def test_embed_refuses_backward_to_indices():
    layer, bottom, top = embed(), blob_of(IDX, "words"), Blob(())
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    with pytest.raises(NetError, match="'emb' \\(Embed\\): cannot backpropagate to its bottom 'words'"):
        layer.backward([top], [True], [bottom])


@pytest.mark.parametrize("text, match", [
    ('name: "emb" type: "Embed" embed_param { input_dim: 3 }', "num_output must be positive, got 0"),
    ('name: "emb" type: "Embed" embed_param { num_output: 3 }', "input_dim must be positive, got 0"),
])
def test_embed_needs_sizes(text, match):
    with pytest.raises(NetError, match=match):
        make(text).setup([blob_of(IDX)], [Blob(())])


def test_embed_keeps_given_blobs_and_checks_them():
    layer = embed(n=2, k=3)
    w = blob_of(np.arange(6, dtype=np.float32).reshape(3, 2))
    layer.blobs = [w, Blob((2,))]
    bottom, top = blob_of([2, 0]), Blob(())
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    assert layer.blobs[0] is w
    np.testing.assert_array_equal(top.data, [[4, 5], [0, 1]])
    layer = embed(n=2, k=3)
    layer.blobs = [Blob((2, 3)), Blob((2,))]
    with pytest.raises(NetError, match="parameter blobs have shapes"):
        layer.setup([bottom], [Blob(())])


def test_embed_refuses_in_place():
    b = blob_of(IDX)
    with pytest.raises(NetError, match="cannot run in place"):
        embed().setup([b], [b])


# -- Parameter ------------------------------------------------------------------------

def parameter(shape="shape { dim: 2 dim: 3 }"):
    return make(f'name: "p" type: "Parameter" parameter_param {{ {shape} }}')


def test_parameter_top_shares_blob():
    layer, top = parameter(), Blob(())
    layer.setup([], [top])
    assert top.shape == (2, 3) and layer.blobs[0].shape == (2, 3)
    assert not layer.blobs[0].data.any()  # zero, as a fresh Caffe blob
    layer.blobs[0].data[...] = make_blob((2, 3), seed=1).data
    layer.forward([], [top])
    np.testing.assert_array_equal(top.data, layer.blobs[0].data)
    top.diff[...] = 3  # what a consumer's backward writes
    layer.backward([top], [], [])
    assert (layer.blobs[0].diff == 3).all()
    layer.blobs[0].data[0, 0] = 42
    assert top.data[0, 0] == 42


def test_parameter_without_shape_is_a_scalar():
    layer, top = parameter(""), Blob(())
    layer.setup([], [top])
    assert top.shape == () and layer.blobs[0].shape == ()


def test_parameter_follows_new_storage():
    layer, top = parameter(), Blob(())
    layer.setup([], [top])
    layer.forward([], [top])
    other = blob_of(np.full((2, 3), 7.0))
    layer.blobs[0].share_data(other)  # as a param shared by name
    layer.forward([], [top])
    assert (top.data == 7).all()


def test_parameter_gradient():
    layer, top = parameter("shape { dim: 3 dim: 2 dim: 2 }"), Blob(())
    layer.setup([], [top])
    layer.blobs[0].data[...] = make_blob((3, 2, 2), seed=5).data
    check_gradient(layer, [], [top], setup=False)


def test_parameter_given_blob_must_match_count():
    layer = parameter()
    layer.blobs = [Blob((3, 2))]  # same count: kept, as Caffe's ShareData allows
    top = Blob(())
    layer.setup([], [top])
    assert top.shape == (2, 3)
    layer = parameter()
    layer.blobs = [Blob((4,))]
    with pytest.raises(NetError, match=r"'p' \(Parameter\).*\(4,\).*needs 6"):
        layer.setup([], [Blob(())])


def test_parameter_takes_no_bottom():
    with pytest.raises(NetError, match="exactly 0 bottom"):
        parameter().setup([Blob((1,))], [Blob(())])


# -- BatchReindex ---------------------------------------------------------------------

PERM = [4, 0, 4, 0, 1, 2]


def reindex():
    return make('name: "ri" type: "BatchReindex"')


def test_batch_reindex_forward_hand_values():
    x = blob_of(np.arange(5 * 4 * 3 * 2, dtype=np.float32).reshape(5, 4, 3, 2))
    idx, top = blob_of(PERM), Blob(())
    layer = reindex()
    layer.setup([x, idx], [top])
    assert top.shape == (6, 4, 3, 2)
    layer.forward([x, idx], [top])
    for i, n in enumerate(PERM):
        np.testing.assert_array_equal(top.data[i], x.data[n])


def test_batch_reindex_truncates_fractional_indices():
    x, idx, top = blob_of(np.arange(6.0).reshape(3, 2)), blob_of([1.7, 0.2, 2.9]), Blob(())
    layer = reindex()
    layer.setup([x, idx], [top])
    layer.forward([x, idx], [top])
    np.testing.assert_array_equal(top.data, [[2, 3], [0, 1], [4, 5]])


def test_batch_reindex_backward_sums_repeats_and_zeroes_the_rest():
    x, idx, top = make_blob((5, 3), seed=1), blob_of(PERM), Blob(())
    layer = reindex()
    layer.setup([x, idx], [top])
    layer.forward([x, idx], [top])
    dy = make_blob((6, 3), seed=2).data
    top.diff[...] = dy
    x.diff[...] = 9  # overwritten, not accumulated
    layer.backward([top], [True, False], [x, idx])
    want = np.zeros((5, 3), np.float32)
    for i, n in enumerate(PERM):
        want[n] += dy[i]
    np.testing.assert_array_equal(x.diff, want)
    assert not x.diff[3].any()


def test_batch_reindex_gradient():
    check_gradient(reindex(), [make_blob((5, 2, 3), seed=4), blob_of(PERM)], [Blob(())], check_bottom=0)


def test_batch_reindex_empty_index():
    x, idx, top = make_blob((3, 2), seed=1), Blob((0,)), Blob(())
    layer = reindex()
    layer.setup([x, idx], [top])
    layer.forward([x, idx], [top])
    assert top.shape == (0, 2)
    x.diff[...] = 5
    layer.backward([top], [True, False], [x, idx])
    assert not x.diff.any()


@pytest.mark.parametrize("value, position", [(-0.5, 2), (5, 0), (np.nan, 4)])
def test_batch_reindex_bad_index(value, position):
    x, idx, top = make_blob((5, 2), name="x"), blob_of(PERM, "order"), Blob(())
    layer = reindex()
    layer.setup([x, idx], [top])
    idx.data[position] = value
    with pytest.raises(NetError, match=rf"'ri' \(BatchReindex\): bottom 'order' holds {float(value)!r} at position "
                                       rf"\({position},\).*of bottom 'x' must lie in \[0, 5\)"):
        layer.forward([x, idx], [top])


def test_batch_reindex_errors():
    x, top = make_blob((5, 2), name="x"), Blob(())
    with pytest.raises(NetError, match="index bottom 'order' must be 1-D, got shape \\(2, 3\\)"):
        reindex().setup([x, blob_of(np.zeros((2, 3)), "order")], [top])
    with pytest.raises(NetError, match="cannot run in place"):
        reindex().setup([x, blob_of([0])], [x])
    layer, idx = reindex(), blob_of([0, 1], "order")
    layer.setup([x, idx], [top])
    layer.forward([x, idx], [top])
    with pytest.raises(NetError, match="cannot backpropagate to the indices 'order'"):
        layer.backward([top], [True, True], [x, idx])


# -- Embed, BatchReindex and Parameter in a Net (with Clip and Swish of neuron.py) -----

NET = '''
name: "embed_reindex_parameter"
layer { name: "input" type: "Input" top: "words" top: "order" top: "target"
        input_param { shape { dim: 4 dim: 3 } shape { dim: 5 } shape { dim: 5 dim: 3 dim: 6 } } }
layer { name: "embed" type: "Embed" bottom: "words" top: "emb"
        embed_param { num_output: 6 input_dim: 10
                      weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "pick" type: "BatchReindex" bottom: "emb" bottom: "order" top: "picked" }
layer { name: "offset" type: "Parameter" top: "offset" parameter_param { shape { dim: 5 dim: 3 dim: 6 } } }
layer { name: "sum" type: "Eltwise" bottom: "picked" bottom: "offset" top: "summed" }
layer { name: "clip" type: "Clip" bottom: "summed" top: "clipped" clip_param { min: -0.6 max: 0.7 } }
layer { name: "swish" type: "Swish" bottom: "clipped" top: "act" swish_param { beta: 1.5 } }
layer { name: "loss" type: "EuclideanLoss" bottom: "act" bottom: "target" top: "loss" }
'''


def build(text=NET, seed=0):
    rng.set_random_seed(seed)
    net = npcaffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), npcaffe.TRAIN)
    net.blobs["words"].data[...] = [[3, 7, 0], [9, 3, 2], [5, 5, 1], [0, 8, 4]]
    net.blobs["order"].data[...] = [2, 0, 2, 3, 1]
    net.blobs["target"].data[...] = np.random.default_rng(11).normal(0, 0.5, (5, 3, 6))
    return net


def reference(net):
    """The same net in float64 NumPy: loss, and the gradients of the embedding table, bias and offset."""
    words = net.blobs["words"].data.astype(int)
    order = net.blobs["order"].data.astype(int)
    w, b = (p.data.astype(np.float64) for p in net.params["embed"])
    offset = net.params["offset"][0].data.astype(np.float64)
    emb = w[words] + b
    summed = emb[order] + offset
    clipped = np.clip(summed, np.float32(-0.6), np.float32(0.7))
    s = 1 / (1 + np.exp(-1.5 * clipped))
    act = clipped * s
    residual = act - net.blobs["target"].data
    loss = (residual * residual).sum() / 5 / 2
    d_act = residual / 5
    d_summed = d_act * (s + 1.5 * clipped * s * (1 - s)) * ((summed >= np.float32(-0.6)) & (summed <= np.float32(0.7)))
    d_emb = np.zeros_like(emb)
    np.add.at(d_emb, order, d_summed)
    d_w = np.zeros_like(w)
    np.add.at(d_w, words, d_emb)
    return loss, d_w, d_emb.sum(axis=(0, 1)), d_summed


def test_net_embed_reindex_parameter_forward_backward():
    net = build()
    net.params["offset"][0].data[...] = np.random.default_rng(3).normal(0, 0.3, (5, 3, 6))
    loss = net.forward()["loss"]
    want_loss, d_w, d_b, d_offset = reference(net)
    assert net.blobs["emb"].shape == (4, 3, 6) and net.blobs["picked"].shape == (5, 3, 6)
    np.testing.assert_array_equal(net.blobs["offset"].data, net.params["offset"][0].data)
    assert np.isclose(float(loss), want_loss, rtol=1e-5)
    assert net.blobs["clipped"].data.min() >= np.float32(-0.6) and net.blobs["clipped"].data.max() <= np.float32(0.7)
    assert (net.blobs["clipped"].data == np.float32(0.7)).any()  # some values were clipped
    net.clear_param_diffs()
    net.backward()
    np.testing.assert_allclose(net.params["embed"][0].diff, d_w, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(net.params["embed"][1].diff, d_b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(net.params["offset"][0].diff, d_offset, rtol=1e-4, atol=1e-6)
    assert not net.params["embed"][0].diff[6].any()  # index 6 never looked up


def test_net_embed_weights_round_trip_through_caffemodel(tmp_path):
    net = build(seed=1)
    net.params["offset"][0].data[...] = np.random.default_rng(4).normal(0, 0.3, (5, 3, 6))
    loss = net.forward()["loss"]
    path = tmp_path / "net.caffemodel"
    net.save(str(path))
    saved = {layer.name: layer for layer in read_caffemodel(str(path)).layer}
    assert [list(bp.shape.dim) for bp in saved["embed"].blobs] == [[10, 6], [6]]
    other = build(seed=2)
    assert not np.array_equal(other.params["embed"][0].data, net.params["embed"][0].data)
    other.copy_from(str(path))
    for name in ("embed", "offset"):
        for a, b in zip(net.params[name], other.params[name]):
            np.testing.assert_array_equal(a.data, b.data)
    assert other.forward()["loss"] == loss


def test_net_force_backward_to_indices_is_an_error():
    net = build("force_backward: true\n" + NET)
    net.forward()
    with pytest.raises(NetError, match="'pick' \\(BatchReindex\\): cannot backpropagate to the indices 'order'"):
        net.backward()
    text = """force_backward: true
    layer { name: "input" type: "Input" top: "words" input_param { shape { dim: 2 } } }
    layer { name: "embed" type: "Embed" bottom: "words" top: "emb" embed_param { num_output: 2 input_dim: 3 } }"""
    net = npcaffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), npcaffe.TRAIN)
    net.forward()
    with pytest.raises(NetError, match="'embed' \\(Embed\\): cannot backpropagate to its bottom 'words'"):
        net.backward()


def test_net_bad_embed_index_names_layer():
    net = build()
    net.blobs["words"].data[2, 1] = 10
    with pytest.raises(NetError, match=r"'embed' \(Embed\): bottom 'words' holds 10.0 at position \(2, 1\)"):
        net.forward()


@pytest.mark.parametrize("extra", ["", "transpose: true"])
@pytest.mark.parametrize("num", [1, 3])
def test_inner_product_writes_a_deferred_cleared_diff_with_the_bits_of_adding_to_zeros(extra, num):
    """A solver's step clears the diffs with deferred zeros (Blob.clear_diff); the layer then writes
    its gradient (an outer product at batch 1) where a written clear would have it add: same bits."""
    results = []
    for deferred in (False, True):
        rng.set_random_seed(3)
        layer = ip_layer(5, extra)
        (bottom,), (top,) = setup(layer, [(num, 7)])
        bottom.data[0, :3] = [0.0, -0.0, 0.0]  # zero inputs: -0.0 products
        layer.forward([bottom], [top])
        top.diff[...] = make_blob(top.shape, seed=9).data
        for blob in layer.blobs:
            blob.diff[...] = 4  # last iteration's gradient
            blob.clear_diff(deferred)
        layer.backward([top], [True], [bottom])
        results.append([b.diff.copy() for b in layer.blobs] + [bottom.diff.copy()])
        fresh_weight, fresh_bias = (b.diff_to_accumulate()[1] for b in layer.blobs)
        assert not fresh_weight and not fresh_bias  # written by the backward
    for eager, deferred in zip(*results):
        np.testing.assert_array_equal(deferred, eager)
        assert np.array_equal(np.signbit(deferred), np.signbit(eager))
    weight_diff = results[1][0]
    x, dy = bottom.data.astype(np.float64), top.diff.astype(np.float64)
    np.testing.assert_allclose(weight_diff, x.T @ dy if extra else dy.T @ x, rtol=1e-5, atol=1e-6)
