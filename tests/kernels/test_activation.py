"""Activation kernels: Numba against the NumPy references, on awkward sizes and extremes."""
import numpy as np
import pytest

from npcaffe.kernels import activation as k

SIZES = [1, 7, 130]


def inputs(n, seed):
    x = np.random.default_rng(seed).normal(0, 4, n).astype(np.float32)
    x[: min(n, 3)] = np.array([0.0, 60.0, -60.0], np.float32)[: min(n, 3)]
    return x


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("name, extra", [
    ("sigmoid_forward", ()), ("tanh_forward", ()), ("bnll_forward", ()),
    ("elu_forward", (np.float32(0.7),)),
    ("exp_forward", (np.float32(0.5), np.float32(1.5))),
])
def test_forward_kernels_match_reference(n, name, extra):
    x = inputs(n, n)
    if name == "exp_forward":
        x = np.clip(x, -20, 20)
    y, ref = np.empty_like(x), np.empty_like(x)
    getattr(k, name)(x, *extra, y)
    getattr(k, name + "_reference")(x, *extra, ref)
    np.testing.assert_allclose(y, ref, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("n", SIZES)
def test_log_and_bnll_backward_match_reference(n):
    x = np.abs(inputs(n, n + 1)) + np.float32(0.1)
    y, ref = np.empty_like(x), np.empty_like(x)
    k.log_forward(x, np.float32(2), np.float32(0.5), np.float32(0.4), y)
    k.log_forward_reference(x, np.float32(2), np.float32(0.5), np.float32(0.4), ref)
    np.testing.assert_allclose(y, ref, rtol=2e-6)
    x = inputs(n, n + 2)
    dy = inputs(n, n + 3)
    k.bnll_backward(x, dy, y)
    k.bnll_backward_reference(x, dy, ref)
    np.testing.assert_allclose(y, ref, rtol=2e-6, atol=1e-7)


def test_kernels_work_in_place():
    x = inputs(9, 5)
    expected = np.empty_like(x)
    k.tanh_forward(x, expected)
    k.tanh_forward(x, x)
    np.testing.assert_array_equal(x, expected)


def test_sigmoid_hand_values():
    y = np.empty(3, np.float32)
    k.sigmoid_forward(np.array([0, 2, -2], np.float32), y)
    np.testing.assert_allclose(y, [0.5, 1 / (1 + np.exp(-2)), 1 / (1 + np.exp(2))], rtol=1e-7)


@pytest.mark.parametrize("ignore", [False, True])
def test_sigmoid_cross_entropy_sum_matches_reference(ignore):
    x = inputs(37, 11)
    t = (np.random.default_rng(3).random(37) > 0.5).astype(np.float32)
    if ignore:
        t[::5] = -1
    loss, count = k.sigmoid_cross_entropy_sum(x, t, ignore, -1)
    ref_loss, ref_count = k.sigmoid_cross_entropy_sum_reference(x, t, ignore, -1)
    assert count == ref_count
    assert loss == pytest.approx(ref_loss, rel=1e-5)


@pytest.mark.parametrize("slope", [0.0, 0.1, -0.5])
def test_relu_backward_kernel_is_caffes_formula_to_the_bit(slope):
    x = np.array([1.5, -2.0, 0.0, -0.0, np.nan, np.inf, -np.inf, -1e-45, 3e38], np.float32)
    x = np.concatenate([x, inputs(130, 3)])
    dy = np.concatenate([np.array([-1.0, 2.0, -3.0, 4.0, 5.0, -0.0, np.nan, np.inf, -2.0], np.float32),
                         inputs(130, 4)])
    dx, ref = np.full_like(x, 7.0), np.full_like(x, 7.0)
    k.relu_backward(x, dy, np.float32(slope), dx)
    k.relu_backward_reference(x, dy, np.float32(slope), ref)
    np.testing.assert_array_equal(dx, ref)
    assert np.array_equal(np.signbit(dx), np.signbit(ref))
    assert dx[4] == 0  # a NaN input passes no gradient, whatever the slope (neither > 0 nor <= 0)
    k.relu_backward_in_place(x, dy, np.float32(slope))  # in place over the top diff
    np.testing.assert_array_equal(dy, ref)
    assert np.array_equal(np.signbit(dy), np.signbit(ref))


def test_relu_kernel_is_std_max_to_the_bit():
    x = np.array([1.5, -2.0, 0.0, -0.0, np.nan, np.inf, -np.inf, -1e-45, 3e38], np.float32)
    x = np.concatenate([x, inputs(130, 3)])
    y, ref = np.empty_like(x), np.empty_like(x)
    k.relu_forward(x, y)
    k.relu_forward_reference(x, ref)
    np.testing.assert_array_equal(y, ref)
    assert np.array_equal(np.signbit(y), np.signbit(ref))  # -0.0 stays -0.0, as std::max(x, 0)
    assert np.signbit(y[3]) and y[4] != y[4]
    inplace = x.copy()
    k.relu_forward(inplace, inplace)
    np.testing.assert_array_equal(inplace, ref)
