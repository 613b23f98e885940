"""Sigmoid, TanH, AbsVal, Power, Exp, Log, BNLL, Threshold, ELU, PReLU: hand values and gradients."""
import numpy as np
import pytest

from gradient_check import check_gradient_elementwise, check_gradient_exhaustive
from helpers import layer_param, make_blob
from npcaffe.blob import Blob
from npcaffe.errors import NetError
from npcaffe.layer import create_layer


def make(text):
    return create_layer(layer_param(f'name: "n" {text}'))


def blob_of(values):
    b = Blob(np.shape(values))
    b.data[...] = values
    return b


def run(layer, values, top_diff=None):
    bottom, top = blob_of(values), Blob(())
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    if top_diff is not None:
        top.diff[...] = top_diff
        layer.backward([top], [True], [bottom])
    return top, bottom


X = np.array([[-2.0, -0.5, 0.0, 0.5, 3.0]], np.float32)


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
