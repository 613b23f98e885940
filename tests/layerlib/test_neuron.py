"""ReLU, Dropout, Sigmoid, TanH, AbsVal, Power, Exp, Log, BNLL, Threshold, ELU, PReLU, Clip, Swish:
hand values, gradients, in-place use, phases."""
import numpy as np
import pytest

from gradient_check import check_gradient, check_gradient_elementwise, check_gradient_exhaustive
from helpers import layer_param, make_blob
from npcaffe import rng
from npcaffe.blob import Blob
from npcaffe.errors import NetError
from npcaffe.layer import TEST, TRAIN, create_layer
from npcaffe.proto import caffe_pb2


def make(text):
    return create_layer(layer_param(f'name: "n" {text}'))


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


X = np.array([[-2.0, -0.5, 0.0, 0.5, 3.0]], np.float32)


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


# -- Sigmoid, TanH, AbsVal, Power, Exp, Log, BNLL, Threshold, ELU ---------------------

def run(layer, values, top_diff=None):
    bottom, top = blob_of(values), Blob(())
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    if top_diff is not None:
        top.diff[...] = top_diff
        layer.backward([top], [True], [bottom])
    return top, bottom


@pytest.mark.parametrize("text, forward, grad", [
    ('type: "Sigmoid"', lambda x: 1 / (1 + np.exp(-x)), lambda x: np.exp(-x) / (1 + np.exp(-x)) ** 2),
    ('type: "TanH"', np.tanh, lambda x: 1 - np.tanh(x) ** 2),
    ('type: "AbsVal"', np.abs, np.sign),
    ('type: "BNLL"', lambda x: np.log1p(np.exp(x)), lambda x: 1 / (1 + np.exp(-x))),
    ('type: "ELU" elu_param { alpha: 0.5 }', lambda x: np.where(x > 0, x, 0.5 * (np.exp(x) - 1)),
     lambda x: np.where(x > 0, 1, 0.5 * np.exp(x))),
    ('type: "Power" power_param { power: 2 scale: 3 shift: 1 }', lambda x: (1 + 3 * x) ** 2, lambda x: 6 * (1 + 3 * x)),
    ('type: "Exp" exp_param { base: 2 scale: 0.5 shift: 1 }', lambda x: 2 ** (1 + 0.5 * x),
     lambda x: 2 ** (1 + 0.5 * x) * np.log(2) * 0.5),
    ('type: "Exp"', np.exp, np.exp),
    ('type: "Threshold" threshold_param { threshold: 0.5 }', lambda x: (x > 0.5).astype(float), None),
])
def test_hand_values(text, forward, grad):
    x = X.astype(np.float64)
    top, bottom = run(make(text), X, None if grad is None else 2.0)
    np.testing.assert_allclose(top.data, forward(x), rtol=1e-6, atol=1e-7)
    if grad is not None:
        np.testing.assert_allclose(bottom.diff, 2 * grad(x), rtol=1e-5, atol=1e-6)


def test_log_hand_values():
    x = np.array([[0.5, 1.0, 4.0]], np.float32)
    top, bottom = run(make('type: "Log" log_param { base: 10 scale: 2 shift: 1 }'), x, 1.0)
    np.testing.assert_allclose(top.data, np.log10(2 * x + 1), rtol=1e-6)
    np.testing.assert_allclose(bottom.diff, 2 / ((2 * x + 1) * np.log(10)), rtol=1e-6)


@pytest.mark.parametrize("text, kink", [
    ('type: "Sigmoid"', None), ('type: "TanH"', None), ('type: "AbsVal"', 0.0), ('type: "BNLL"', None),
    ('type: "ELU" elu_param { alpha: 0.5 }', 0.0), ('type: "ELU"', 0.0),
    ('type: "Power" power_param { power: 0.37 scale: 0.83 shift: -2.4 }', None),
    ('type: "Power" power_param { power: 2 scale: 0.83 shift: -2.4 }', None),
    ('type: "Power" power_param { power: 1 scale: 0.83 shift: -2.4 }', None),
    ('type: "Power" power_param { power: 0 scale: 0.83 shift: -2.4 }', None),
    ('type: "Power" power_param { power: 2.5 scale: 0.83 }', None),
    ('type: "Exp" exp_param { base: 2 scale: 0.5 shift: 1 }', None), ('type: "Exp"', None),
    ('type: "Log" log_param { base: 2 scale: 0.5 shift: 1 }', None), ('type: "Log"', None),
])
def test_gradient(text, kink):
    low = 0.5 if ("Log" in text or "power: 0.37" in text or "power: 2.5" in text) else -1.0
    x = make_blob((2, 3, 2, 2), low=low, high=low + 2 if low > 0 else 1.0, seed=7)
    if "power: 0.37" in text:  # (shift + scale x) must stay positive
        x.data[...] = 4 + x.data
    kwargs = dict(kink=kink, kink_range=0.02) if kink is not None else {}
    check_gradient_elementwise(make(text), [x], [Blob(())], stepsize=1e-3, threshold=1e-2, **kwargs)


def test_power_special_cases_forward():
    top, _ = run(make('type: "Power" power_param { power: 3 scale: 0 shift: 2 }'), X)
    np.testing.assert_array_equal(top.data, np.full_like(X, 8))
    top, _ = run(make('type: "Power" power_param { power: 0 scale: 5 shift: 2 }'), X)
    np.testing.assert_array_equal(top.data, np.ones_like(X))


def test_threshold_has_no_backward():
    layer = make('type: "Threshold"')
    top, bottom = run(layer, X)
    with pytest.raises(NetError, match="no backward"):
        layer.backward([top], [True], [bottom])


def test_absval_rejects_in_place():
    b = blob_of(X)
    with pytest.raises(NetError, match="in place"):
        make('type: "AbsVal"').setup([b], [b])


@pytest.mark.parametrize("text", ['type: "Exp" exp_param { base: -2 }', 'type: "Log" log_param { base: 0 }'])
def test_bad_base(text):
    with pytest.raises(NetError, match="base must be strictly positive"):
        run(make(text), X)


# -- PReLU ---------------------------------------------------------------------------

def test_prelu_forward_per_channel():
    layer = make('type: "PReLU"')
    x = np.array([[[-1.0, 2.0]], [[-4.0, 0.5]]], np.float32).reshape(1, 2, 2)
    bottom, top = blob_of(x), Blob(())
    layer.setup([bottom], [top])
    assert layer.blobs[0].shape == (2,)
    np.testing.assert_array_equal(layer.blobs[0].data, [0.25, 0.25])
    layer.blobs[0].data[...] = [0.1, 0.5]
    layer.forward([bottom], [top])
    np.testing.assert_allclose(top.data, [[[-0.1, 2.0], [-2.0, 0.5]]])


@pytest.mark.parametrize("shared", [False, True])
def test_prelu_gradient(shared):
    layer = make(f'type: "PReLU" prelu_param {{ channel_shared: {str(shared).lower()} '
                 'filler { type: "uniform" min: 0.1 max: 0.6 } }')
    x = make_blob((2, 3, 2, 2), seed=3)
    check_gradient_exhaustive(layer, [x], [Blob(())], kink=0.0, kink_range=0.01)
    assert layer.blobs[0].shape == (() if shared else (3,))


def test_prelu_in_place_matches_out_of_place():
    dy = make_blob((2, 3, 4), seed=9).data.copy()
    results = []
    for in_place in (False, True):
        layer = make('type: "PReLU" prelu_param { filler { type: "constant" value: 0.3 } }')
        x = make_blob((2, 3, 4), seed=8)
        top = x if in_place else Blob(())
        layer.setup([x], [top])
        layer.forward([x], [top])
        out = top.data.copy()
        top.diff[...] = dy
        layer.backward([top], [True], [x])
        results.append((out, x.diff.copy(), layer.blobs[0].diff.copy()))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_prelu_needs_two_axes():
    with pytest.raises(NetError, match="at least 2 axes"):
        make('type: "PReLU"').setup([Blob((4,))], [Blob(())])


# -- Clip -----------------------------------------------------------------------------

def clip(lo=-1.0, hi=2.0):
    return create_layer(layer_param(f'name: "c" type: "Clip" clip_param {{ min: {lo} max: {hi} }}'))


CLIP_X = np.array([[-3.0, -1.0, -0.999, 0.0, 1.5, 2.0, 2.001, 7.0]], np.float32)


def test_clip_forward_and_backward_hand_values():
    layer, bottom, top = clip(), blob_of(CLIP_X), Blob(())
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
    layer, y = clip(), blob_of(CLIP_X)
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
    only_min = create_layer(layer_param('name: "c" type: "Clip" clip_param { min: 1 }'))
    with pytest.raises(NetError, match="'c' \\(Clip\\): clip_param.max is required"):
        only_min.setup([blob_of(CLIP_X)], [Blob(())])
    with pytest.raises(NetError, match="clip_param.min is required"):
        create_layer(layer_param('name: "c" type: "Clip"')).setup([blob_of(CLIP_X)], [Blob(())])


# -- Swish ----------------------------------------------------------------------------

def swish(beta=None):
    extra = f"swish_param {{ beta: {beta} }}" if beta is not None else ""
    return create_layer(layer_param(f'name: "s" type: "Swish" {extra}'))


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
