"""Embed, Parameter, BatchReindex, Clip, Swish: hand values, shapes, errors, gradients, a Net."""
import numpy as np
import pytest
from google.protobuf import text_format

import npcaffe
from gradient_check import check_gradient, check_gradient_elementwise
from helpers import layer_param, make_blob
from npcaffe import rng
from npcaffe.blob import Blob
from npcaffe.errors import NetError
from npcaffe.fileio.caffemodel import read_caffemodel
from npcaffe.layer import create_layer
from npcaffe.proto import caffe_pb2


def make(text):
    return create_layer(layer_param(text))


def blob_of(values, name=""):
    b = Blob(np.shape(values), name=name)
    b.data[...] = values
    return b


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


# -- Clip -----------------------------------------------------------------------------

def clip(lo=-1.0, hi=2.0):
    return make(f'name: "c" type: "Clip" clip_param {{ min: {lo} max: {hi} }}')


X = np.array([[-3.0, -1.0, -0.999, 0.0, 1.5, 2.0, 2.001, 7.0]], np.float32)


def test_clip_forward_and_backward_hand_values():
    layer, bottom, top = clip(), blob_of(X), Blob(())
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    want = [[-1.0, -1.0, -0.999, 0.0, 1.5, 2.0, 2.0, 2.0]]
    np.testing.assert_array_equal(top.data, np.array(want, np.float32))
    top.diff[...] = np.arange(1, 9, dtype=np.float32)
    layer.backward([top], [True], [bottom])
    # The bounds themselves pass the gradient (>= min, <= max).
    np.testing.assert_array_equal(bottom.diff, [[0, 2, 3, 4, 5, 6, 0, 0]])


def test_clip_nan_gives_min_and_crossed_bounds_give_min():
    layer, bottom, top = clip(), blob_of([np.nan, 0.5]), Blob(())
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    np.testing.assert_array_equal(top.data, [-1, 0.5])
    layer, bottom, top = clip(3, 1), blob_of([0.0, 2.0, 5.0]), Blob(())
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    np.testing.assert_array_equal(top.data, [3, 3, 3])


def test_clip_in_place_passes_every_gradient_as_upstream():
    layer, y = clip(), blob_of(X)
    layer.setup([y], [y])
    layer.forward([y], [y])
    y.diff[...] = 1
    layer.backward([y], [True], [y])  # backward sees the clipped values, all inside [min, max]
    assert (y.diff == 1).all()


def test_clip_gradient():
    x = make_blob((2, 3, 4, 5), low=-3, high=3, seed=7)
    v = x.data
    for bound in (-1.0, 2.0):  # keep the inputs off the kinks, as upstream's test does
        near = np.abs(v - bound) < 0.02
        v[near] = bound - 0.05
    check_gradient_elementwise(clip(), [x], [Blob(())])


def test_clip_needs_both_bounds():
    with pytest.raises(NetError, match="'c' \\(Clip\\): clip_param.max is required"):
        make('name: "c" type: "Clip" clip_param { min: 1 }').setup([blob_of(X)], [Blob(())])
    with pytest.raises(NetError, match="clip_param.min is required"):
        make('name: "c" type: "Clip"').setup([blob_of(X)], [Blob(())])


# -- Swish ----------------------------------------------------------------------------

def swish(beta=None):
    extra = f"swish_param {{ beta: {beta} }}" if beta is not None else ""
    return make(f'name: "s" type: "Swish" {extra}')


def swish_reference(x, beta):
    """Upstream's arithmetic written out: float32 beta x, sigmoid in double, float32 product."""
    x = np.asarray(x, np.float32)
    s = (0.5 * np.tanh(0.5 * (np.float32(beta) * x).astype(np.float64)) + 0.5).astype(np.float32)
    return x * s, s


@pytest.mark.parametrize("beta", [None, 1.5, 0.0, -0.7])
def test_swish_forward(beta):
    b = 1.0 if beta is None else beta
    layer, bottom, top = swish(beta), make_blob((3, 4, 5), low=-4, high=4, seed=3), Blob(())
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    x = bottom.data.astype(np.float64)
    np.testing.assert_allclose(top.data, x / (1 + np.exp(-b * x)), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(top.data, swish_reference(bottom.data, b)[0])
    if b == 0:
        np.testing.assert_array_equal(top.data, bottom.data / 2)


@pytest.mark.parametrize("beta", [None, 1.5])
def test_swish_backward(beta):
    b = 1.0 if beta is None else beta
    layer, bottom, top = swish(beta), make_blob((2, 3, 4), low=-4, high=4, seed=8), Blob(())
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    dy = make_blob((2, 3, 4), seed=9).data
    top.diff[...] = dy
    layer.backward([top], [True], [bottom])
    x = bottom.data.astype(np.float64)
    s = 1 / (1 + np.exp(-b * x))
    np.testing.assert_allclose(bottom.diff, dy * (s + b * x * s * (1 - s)), rtol=1e-5, atol=1e-6)
    # Upstream's order: dy * (beta y + s (1 - beta y)), beta y in float32, the rest in double.
    y, s32 = swish_reference(bottom.data, b)
    by = (np.float32(b) * y).astype(np.float64)
    np.testing.assert_array_equal(bottom.diff, (dy * (by + s32 * (1.0 - by))).astype(np.float32))


@pytest.mark.parametrize("beta", [None, 1.5])
def test_swish_gradient(beta):
    check_gradient_elementwise(swish(beta), [make_blob((2, 3, 2, 2), low=-3, high=3, seed=2)], [Blob(())])


def test_swish_in_place_matches_out_of_place():
    x, dy = make_blob((3, 5), seed=4), make_blob((3, 5), seed=5).data
    ref, ref_top = swish(1.5), Blob(())
    ref.setup([x], [ref_top])
    ref.forward([x], [ref_top])
    ref_top.diff[...] = dy
    ref.backward([ref_top], [True], [x])
    layer, y = swish(1.5), make_blob((3, 5), seed=4)
    layer.setup([y], [y])
    layer.forward([y], [y])
    np.testing.assert_array_equal(y.data, ref_top.data)
    y.diff[...] = dy
    layer.backward([y], [True], [y])
    np.testing.assert_array_equal(y.diff, x.diff)


def test_swish_beta_default_and_schema_numbers():
    assert caffe_pb2.SwishParameter().beta == 1
    f = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
    assert (f["swish_param"].number, f["clip_param"].number) == (147, 148)  # BVLC master's
    clip_fields = caffe_pb2.ClipParameter.DESCRIPTOR.fields_by_name
    assert clip_fields["min"].number == 1 and clip_fields["max"].number == 2


# -- a Net using all five -------------------------------------------------------------

NET = '''
name: "new_layers"
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


def test_net_with_new_layers_forward_backward():
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
    path = tmp_path / "new_layers.caffemodel"
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
