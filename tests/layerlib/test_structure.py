"""Concat, Slice, Eltwise, Reshape, Silence, ArgMax, Reduction, Crop, Tile, Filter."""
import numpy as np
import pytest

from gradient_check import check_gradient
from helpers import layer_param, make_blob
from npcaffe.blob import Blob
from npcaffe.errors import NetError
from npcaffe.layer import create_layer


def make(text):
    return create_layer(layer_param(f'name: "s" {text}'))


def blob_of(values):
    b = Blob(np.shape(values), name="b")
    b.data[...] = values
    return b


def forward(layer, bottom, ntop=1):
    top = [Blob((), name=f"t{i}") for i in range(ntop)]
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    return top


# -- Concat / Slice -------------------------------------------------------------------

@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concat_forward_and_gradient(axis):
    shapes = [[2, 3, 2, 4], [2, 3, 2, 4]]
    shapes[1][axis] = 5 if axis != -1 else 1
    a, b = make_blob(shapes[0], seed=1), make_blob(shapes[1], seed=2)
    (top,) = forward(make(f'type: "Concat" concat_param {{ axis: {axis} }}'), [a, b])
    np.testing.assert_array_equal(top.data, np.concatenate([a.data, b.data], axis=axis))
    check_gradient(make(f'type: "Concat" concat_param {{ axis: {axis} }}'), [a, b], [Blob(())])


def test_concat_legacy_concat_dim_and_mismatch_error():
    a, b = make_blob((2, 3, 4), seed=1), make_blob((2, 5, 4), seed=2)
    (top,) = forward(make('type: "Concat" concat_param { concat_dim: 1 }'), [a, b])
    assert top.shape == (2, 8, 4)
    with pytest.raises(NetError, match=r"layer 's' \(Concat\).*except along the concat axis 0.*\(2, 3, 4\).*\(2, 5, 4\)"):
        forward(make('type: "Concat" concat_param { axis: 0 }'), [a, b])


def test_slice_points_and_equal_split():
    x = make_blob((2, 6, 3), seed=3)
    tops = forward(make('type: "Slice" slice_param { axis: 1 slice_point: 1 slice_point: 4 }'), [x], 3)
    for t, ref in zip(tops, np.split(x.data, [1, 4], axis=1)):
        np.testing.assert_array_equal(t.data, ref)
    tops = forward(make('type: "Slice" slice_param { slice_dim: 1 }'), [x], 3)
    assert [t.shape for t in tops] == [(2, 2, 3)] * 3
    check_gradient(make('type: "Slice" slice_param { axis: -1 slice_point: 2 }'), [x], [Blob(()), Blob(())])


@pytest.mark.parametrize("text, match", [
    ('slice_point: 2 slice_point: 9', r"slice_point \[2, 9\] out of range for axis 1 of size 6"),
    ('slice_point: 4 slice_point: 2', r"strictly increasing"),
    ('slice_point: 2', r"1 slice_point values for 3 tops"),
    ('axis: 2', r"does not split evenly into 3 tops"),
])
def test_slice_errors(text, match):
    with pytest.raises(NetError, match=match):
        forward(make(f'type: "Slice" slice_param {{ {text} }}'), [make_blob((2, 6, 4))], 3)


# -- Eltwise --------------------------------------------------------------------------

def test_eltwise_hand_values():
    a, b, c = blob_of([1.0, -2.0, 3.0]), blob_of([4.0, 5.0, 3.0]), blob_of([-1.0, 0.5, 2.0])
    (t,) = forward(make('type: "Eltwise" eltwise_param { operation: SUM coeff: 1 coeff: -0.5 coeff: 2 }'), [a, b, c])
    np.testing.assert_allclose(t.data, [-3.0, -3.5, 5.5])
    (t,) = forward(make('type: "Eltwise" eltwise_param { operation: PROD }'), [a, b, c])
    np.testing.assert_allclose(t.data, [-4.0, -5.0, 18.0])
    layer = make('type: "Eltwise" eltwise_param { operation: MAX }')
    (t,) = forward(layer, [a, b, c])
    np.testing.assert_allclose(t.data, [4.0, 5.0, 3.0])
    t.diff[...] = [1, 2, 3]
    layer.backward([t], [True] * 3, [a, b, c])
    # tie at index 2 between a and b: the first bottom gets the gradient
    np.testing.assert_array_equal(a.diff, [0, 0, 3])
    np.testing.assert_array_equal(b.diff, [1, 2, 0])
    np.testing.assert_array_equal(c.diff, [0, 0, 0])


@pytest.mark.parametrize("param", [
    "operation: SUM", "operation: SUM coeff: 1 coeff: -0.5 coeff: 2", "operation: PROD",
    "operation: PROD stable_prod_grad: false", "operation: MAX",
])
def test_eltwise_gradient(param):
    bottoms = [make_blob((2, 3, 2), seed=s) for s in (1, 2, 3)]
    check_gradient(make(f'type: "Eltwise" eltwise_param {{ {param} }}'), bottoms, [Blob(())], threshold=1e-2)


def test_eltwise_errors():
    with pytest.raises(NetError, match=r"layer 's' \(Eltwise\): all bottoms must have the same shape.*\(2, 3\).*\(2, 4\)"):
        forward(make('type: "Eltwise"'), [make_blob((2, 3)), make_blob((2, 4))])
    with pytest.raises(NetError, match="coeff is only for operation SUM"):
        forward(make('type: "Eltwise" eltwise_param { operation: MAX coeff: 1 coeff: 2 }'), [make_blob((2,))] * 2)
    with pytest.raises(NetError, match="once per bottom"):
        forward(make('type: "Eltwise" eltwise_param { coeff: 1 }'), [make_blob((2,))] * 2)


# -- Reshape --------------------------------------------------------------------------

@pytest.mark.parametrize("param, expected", [
    ("shape { dim: 0 dim: -1 }", (2, 24)),
    ("shape { dim: 4 dim: 0 dim: 2 dim: -1 }", (4, 3, 2, 2)),
    ("axis: 1 shape { dim: 3 dim: 2 dim: 2 dim: 2 }", (2, 3, 2, 2, 2)),
    ("axis: 1 num_axes: 1 shape { dim: 1 dim: 3 }", (2, 1, 3, 2, 4)),
    ("axis: -1 shape { dim: 1 }", (2, 3, 2, 4, 1)),
    ("axis: 0 num_axes: 0 shape { dim: 1 }", (1, 2, 3, 2, 4)),
])
def test_reshape_shapes(param, expected):
    x = make_blob((2, 3, 2, 4), seed=5)
    (t,) = forward(make(f'type: "Reshape" reshape_param {{ {param} }}'), [x])
    assert t.shape == expected
    np.testing.assert_array_equal(t.data.ravel(), x.data.ravel())
    t.diff[...] = 7
    assert (x.diff == 7).all()  # diff shared


@pytest.mark.parametrize("param, match", [
    ("shape { dim: -1 dim: -1 }", r"layer 's' \(Reshape\): at most one dimension may be -1.*\[-1, -1\]"),
    ("shape { dim: 5 dim: -1 }", r"cannot infer the -1 in shape \[5, -1\].*\(2, 3, 2, 4\) has 48 elements"),
    ("shape { dim: 7 }", r"top shape \(7,\) with 7 elements.*has 48"),
    ("axis: 3 shape { dim: 0 dim: 0 }", r"copies dimension 4"),
])
def test_reshape_errors(param, match):
    with pytest.raises(NetError, match=match):
        forward(make(f'type: "Reshape" reshape_param {{ {param} }}'), [make_blob((2, 3, 2, 4))])


# -- Silence / ArgMax / Reduction -----------------------------------------------------------

def test_silence_zeroes_diffs():
    x = make_blob((3, 2))
    x.diff[...] = 5
    layer = make('type: "Silence"')
    forward(layer, [x], 0)
    layer.backward([], [True], [x])
    assert (x.diff == 0).all()


def test_argmax():
    x = blob_of([[1.0, 5.0, 3.0, 5.0], [0.0, -1.0, 2.0, 1.0]])
    (t,) = forward(make('type: "ArgMax"'), [x])
    assert t.shape == (2, 1, 1)
    np.testing.assert_array_equal(t.data.ravel(), [3, 2])  # tie: larger index first
    (t,) = forward(make('type: "ArgMax" argmax_param { top_k: 2 out_max_val: true }'), [x])
    assert t.shape == (2, 2, 2)
    np.testing.assert_array_equal(t.data, [[[3, 1], [5, 5]], [[2, 3], [2, 1]]])
    (t,) = forward(make('type: "ArgMax" argmax_param { axis: 0 }'), [x])
    np.testing.assert_array_equal(t.data, [[0, 0, 0, 0]])
    (t,) = forward(make('type: "ArgMax" argmax_param { axis: 1 top_k: 2 out_max_val: true }'), [x])
    np.testing.assert_array_equal(t.data, [[5, 5], [2, 1]])
    with pytest.raises(NetError, match="top_k 5 exceeds the 4 values"):
        forward(make('type: "ArgMax" argmax_param { top_k: 5 }'), [x])


@pytest.mark.parametrize("op, ref", [
    ("SUM", lambda x: x.sum(-1)), ("ASUM", lambda x: np.abs(x).sum(-1)),
    ("SUMSQ", lambda x: (x * x).sum(-1)), ("MEAN", lambda x: x.mean(-1)),
])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_reduction(op, ref, axis):
    x = make_blob((2, 3, 4), seed=axis)
    text = f'type: "Reduction" reduction_param {{ operation: {op} axis: {axis} coeff: 1.5 }}'
    (t,) = forward(make(text), [x])
    assert t.shape == x.shape[:axis]
    np.testing.assert_allclose(t.data, 1.5 * ref(x.data.reshape(x.shape[:axis] + (-1,))), rtol=1e-5)
    check_gradient(make(text), [x], [Blob(())], kink=0.0, kink_range=0.02 if op == "ASUM" else -1)


# -- Crop / Tile / Filter ---------------------------------------------------------------

def test_crop_forward_and_gradient():
    x = make_blob((2, 3, 6, 5), seed=1)
    ref = Blob((2, 3, 3, 2))
    (t,) = forward(make('type: "Crop" crop_param { axis: 2 offset: 1 offset: 2 }'), [x, ref])
    np.testing.assert_array_equal(t.data, x.data[:, :, 1:4, 2:4])
    (t,) = forward(make('type: "Crop" crop_param { axis: 1 offset: 0 }'), [x, Blob((1, 2, 4, 4))])
    np.testing.assert_array_equal(t.data, x.data[:, :2, :4, :4])
    layer = make('type: "Crop" crop_param { offset: 1 }')
    check_gradient(layer, [x, ref], [Blob(())], check_bottom=0)
    with pytest.raises(NetError, match=r"crop of axis 3 out of range: size 2 at offset 4 does not fit in 5"):
        forward(make('type: "Crop" crop_param { axis: 2 offset: 1 offset: 4 }'), [x, ref])


def test_tile():
    x = blob_of([[1.0, 2.0], [3.0, 4.0]])
    (t,) = forward(make('type: "Tile" tile_param { axis: 1 tiles: 3 }'), [x])
    np.testing.assert_array_equal(t.data, [[1, 2, 1, 2, 1, 2], [3, 4, 3, 4, 3, 4]])
    (t,) = forward(make('type: "Tile" tile_param { axis: 0 tiles: 2 }'), [x])
    np.testing.assert_array_equal(t.data, [[1, 2], [3, 4], [1, 2], [3, 4]])
    check_gradient(make('type: "Tile" tile_param { axis: 1 tiles: 3 }'), [make_blob((2, 3, 2))], [Blob(())])


def test_filter():
    x = make_blob((4, 3), seed=2)
    y = make_blob((4, 2, 2), seed=3)
    sel = blob_of([[1.0], [0.0], [1.0], [0.0]])
    layer = make('type: "Filter"')
    tops = [Blob(()), Blob(())]
    layer.setup([x, y, sel], tops)
    assert tops[0].shape == (4, 3)  # first reshape: the whole batch, as upstream
    layer.forward([x, y, sel], tops)
    np.testing.assert_array_equal(tops[0].data, x.data[[0, 2]])
    np.testing.assert_array_equal(tops[1].data, y.data[[0, 2]])
    tops[0].diff[...] = 1
    tops[1].diff[...] = 2
    layer.backward(tops, [True, True, False], [x, y, sel])
    np.testing.assert_array_equal(x.diff[:, 0], [1, 0, 1, 0])
    np.testing.assert_array_equal(y.diff[:, 0, 0], [2, 0, 2, 0])
    with pytest.raises(NetError, match="selector"):
        layer.backward(tops, [True, True, True], [x, y, sel])


def test_filter_and_reshape_gradients():
    sel = blob_of(np.array([0.0, 1.0, 1.0, 0.0, 1.0], np.float32))
    check_gradient(make('type: "Filter"'), [make_blob((5, 2, 2), seed=4), sel], [Blob(())], check_bottom=0)
    check_gradient(make('type: "Reshape" reshape_param { shape { dim: -1 dim: 2 } }'),
                   [make_blob((2, 3, 2), seed=5)], [Blob(())])
