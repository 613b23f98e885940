"""ReLU and Dropout: hand values, gradients, in-place use, phases."""
import numpy as np
import pytest

from gradient_check import check_gradient, check_gradient_elementwise
from helpers import layer_param, make_blob
from npcaffe import rng
from npcaffe.blob import Blob
from npcaffe.errors import NetError
from npcaffe.layer import TEST, TRAIN, create_layer


def relu(slope=None):
    extra = f"relu_param {{ negative_slope: {slope} }}" if slope is not None else ""
    return create_layer(layer_param(f'name: "r" type: "ReLU" {extra}'))


def dropout(ratio=None, phase=TRAIN):
    extra = f"dropout_param {{ dropout_ratio: {ratio} }}" if ratio is not None else ""
    return create_layer(layer_param(f'name: "d" type: "Dropout" {extra}'), phase)


def blob_of(values):
    b = Blob(np.shape(values))
    b.data[...] = values
    return b


X = [[-2.0, -0.5, 0.0, 0.5, 3.0]]


# -- ReLU -------------------------------------------------------------------------

@pytest.mark.parametrize("slope, expected, grad", [
    (None, [0, 0, 0, 0.5, 3], [0, 0, 0, 1, 1]),
    (0.25, [-0.5, -0.125, 0, 0.5, 3], [0.25, 0.25, 0.25, 1, 1]),  # gradient at exactly 0 is the slope
])
def test_relu_hand_values(slope, expected, grad):
    layer, bottom, top = relu(slope), blob_of(X), Blob(())
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    np.testing.assert_array_equal(top.data, [expected])
    top.diff[...] = 2
    layer.backward([top], [True], [bottom])
    np.testing.assert_array_equal(bottom.diff, 2 * np.array([grad], np.float32))


@pytest.mark.parametrize("slope", [None, 0.01, 0.5])
def test_relu_gradient(slope):
    check_gradient_elementwise(relu(slope), [make_blob((2, 3, 2, 2), seed=2)], [Blob(())],
                               kink=0.0, kink_range=0.01)


@pytest.mark.parametrize("slope", [None, 0.1])
def test_relu_in_place_matches_out_of_place(slope):
    x = make_blob((3, 4, 5), seed=4)
    dy = make_blob((3, 4, 5), seed=5).data.copy()
    ref_layer, ref_top = relu(slope), Blob(())
    ref_layer.setup([x], [ref_top])
    ref_layer.forward([x], [ref_top])
    ref_top.diff[...] = dy
    ref_layer.backward([ref_top], [True], [x])
    layer, y = relu(slope), make_blob((3, 4, 5), seed=4)
    layer.setup([y], [y])
    layer.forward([y], [y])
    np.testing.assert_array_equal(y.data, ref_top.data)
    y.diff[...] = dy
    layer.backward([y], [True], [y])
    np.testing.assert_array_equal(y.diff, x.diff)


def test_relu_no_propagate_leaves_diff():
    layer, bottom, top = relu(), blob_of(X), Blob(())
    layer.setup([bottom], [top])
    bottom.diff[...] = 7
    layer.backward([top], [False], [bottom])
    assert (bottom.diff == 7).all()


# -- Dropout ----------------------------------------------------------------------

def test_dropout_train_mask_and_scale():
    rng.set_random_seed(11)
    layer, bottom, top = dropout(0.25), make_blob((50, 40), low=1, high=2), Blob(())
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    kept = top.data != 0
    assert abs(kept.mean() - 0.75) < 0.03
    scale = np.float32(1 / (1 - 0.25))
    np.testing.assert_array_equal(top.data[kept], bottom.data[kept] * scale)
    top.diff[...] = 3
    layer.backward([top], [True], [bottom])
    np.testing.assert_array_equal(bottom.diff, np.where(kept, np.float32(3) * scale, 0))


def test_dropout_seeded_runs_repeat():
    outs = []
    for _ in range(2):
        rng.set_random_seed(3)
        layer, bottom, top = dropout(), make_blob((10, 10)), Blob(())
        layer.setup([bottom], [top])
        layer.forward([bottom], [top])
        outs.append(top.data.copy())
    np.testing.assert_array_equal(outs[0], outs[1])
    assert (outs[0] == 0).any()


def test_dropout_test_phase_is_identity():
    layer, bottom, top = dropout(0.5, TEST), make_blob((4, 5)), Blob(())
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    np.testing.assert_array_equal(top.data, bottom.data)
    top.diff[...] = make_blob((4, 5), seed=9).data
    layer.backward([top], [True], [bottom])
    np.testing.assert_array_equal(bottom.diff, top.diff)


def test_dropout_gradient():
    check_gradient_elementwise(dropout(0.5), [make_blob((2, 3, 4), seed=1)], [Blob(())])
    check_gradient(dropout(0.3), [make_blob((2, 5), seed=1)], [Blob(())])


@pytest.mark.parametrize("phase", [TRAIN, TEST])
def test_dropout_in_place(phase):
    x, y = make_blob((6, 7), seed=8), make_blob((6, 7), seed=8)
    dy = make_blob((6, 7), seed=6).data.copy()
    rng.set_random_seed(5)
    ref, top = dropout(0.4, phase), Blob(())
    ref.setup([x], [top])
    ref.forward([x], [top])
    top.diff[...] = dy
    ref.backward([top], [True], [x])
    rng.set_random_seed(5)
    layer = dropout(0.4, phase)
    layer.setup([y], [y])
    layer.forward([y], [y])
    np.testing.assert_array_equal(y.data, top.data)
    y.diff[...] = dy
    layer.backward([y], [True], [y])
    np.testing.assert_array_equal(y.diff, x.diff)


@pytest.mark.parametrize("ratio", [1.0, -0.1])
def test_dropout_bad_ratio(ratio):
    with pytest.raises(NetError, match="dropout_ratio"):
        dropout(ratio).setup([make_blob((2, 2))], [Blob(())])
