"""npcaffe.kernels.channelwise: one pass with NumPy's bits (BatchNorm's stored-statistics forward, Scale)."""
import numpy as np
import pytest

from npcaffe.kernels.channelwise import normalize, scale_shift


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


def test_in_place():
    x = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
    scale_shift(x, np.float32([1, 2, 3]), np.float32([0, 1, 0]), True, x)
    np.testing.assert_array_equal(x[1], [[6, 7], [17, 19], [30, 33]])
    normalize(x, np.float32([0, 1, 0]), np.float32([1, 2, 3]), x)
    np.testing.assert_array_equal(x[1], [[6, 7], [8, 9], [10, 11]])
