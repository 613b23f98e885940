"""npcaffe.kernels.channelwise: one pass with NumPy's bits (BatchNorm's stored-statistics forward, Scale)."""
import numpy as np
import pytest

from npcaffe.kernels.channelwise import normalize, normalize_scale_relu, scale_backward, scale_shift


@pytest.mark.parametrize("shape", [(2, 3, 17), (1, 64, 1), (3, 1, 100), (0, 4, 5)])
def test_one_pass_gives_numpys_two_passes_bit_for_bit(shape):
    rng = np.random.default_rng(sum(shape))
    x = (rng.normal(size=shape) * 10 ** rng.uniform(-3, 3, shape)).astype(np.float32)
    mean, std, bias = (rng.normal(size=shape[1]).astype(np.float32) for _ in range(3))
    std = np.abs(std) + np.float32(1e-3)

    y = np.full_like(x, np.nan)
    normalize(x, mean, std, y)
    want = np.subtract(x, mean.reshape(1, -1, 1))
    want /= std.reshape(1, -1, 1)
    np.testing.assert_array_equal(y, want)

    for has_bias in (True, False):
        y = np.full_like(x, np.nan)
        scale_shift(x, std, bias, has_bias, y)
        want = np.multiply(x, std.reshape(1, -1, 1))
        if has_bias:
            want += bias.reshape(1, -1, 1)
        np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("in_place", [True, False])
def test_in_place(in_place):
    """y is x, said (the in-place loops) or not (the general loop must still read before it writes)."""
    x = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
    scale_shift(x, np.float32([1, 2, 3]), np.float32([0, 1, 0]), True, x, in_place)
    np.testing.assert_array_equal(x[1], [[6, 7], [17, 19], [30, 33]])
    normalize(x, np.float32([0, 1, 0]), np.float32([1, 2, 3]), x, in_place)
    np.testing.assert_array_equal(x[1], [[6, 7], [8, 9], [10, 11]])
    x[0, 0, 0] = -5
    normalize_scale_relu(x, np.float32([0, 0, 0]), np.float32([1, 1, 1]), np.float32([2, 2, 2]),
                         np.float32([0, 0, -20]), True, True, x, in_place)
    np.testing.assert_array_equal(x[:, :, 0], [[0, 4, 0], [12, 16, 0]])


@pytest.mark.parametrize("shape", [(2, 3, 17), (1, 64, 1), (3, 1, 1000), (0, 4, 5)])
def test_scale_backward_sums_and_diff_against_float64(shape):
    rng = np.random.default_rng(sum(shape))
    dy, x = (rng.normal(size=shape).astype(np.float32) for _ in range(2))
    scale = rng.normal(size=shape[1]).astype(np.float32)
    sums = np.full((2, shape[1]), np.nan, np.float32)
    dx = np.full_like(dy, np.nan)
    scale_backward(dy, x, scale, sums[0], sums[1], dx, True, True, True)
    np.testing.assert_array_equal(dx, dy * scale.reshape(1, -1, 1))  # float32 products, NumPy's bits
    want = (dy.astype(np.float64) * x).sum(axis=(0, 2)), dy.astype(np.float64).sum(axis=(0, 2))
    for got, exact in zip(sums, want):
        np.testing.assert_allclose(got, exact, rtol=1e-6, atol=1e-6)


def test_scale_backward_writes_only_what_is_asked_and_may_work_in_place():
    dy = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
    scale = np.float32([1, 2, 3])
    sums = np.full((2, 3), np.nan, np.float32)
    scale_backward(dy, dy, scale, sums[0], sums[1], np.zeros((0, 0, 0), np.float32), False, True, True, True)
    assert np.isnan(sums[0]).all()
    np.testing.assert_array_equal(sums[1], [0 + 1 + 6 + 7, 2 + 3 + 8 + 9, 4 + 5 + 10 + 11])
    np.testing.assert_array_equal(dy[1], [[6, 7], [16, 18], [30, 33]])  # dx written over dy
    before = dy.copy()
    scale_backward(dy, dy, scale, sums[0], sums[1], np.full_like(dy, np.nan), True, False, False)
    np.testing.assert_array_equal(dy, before)
    np.testing.assert_array_equal(sums[0], (before * before).sum(axis=(0, 2)))
