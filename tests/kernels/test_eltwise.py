"""npcaffe.kernels.eltwise: Eltwise SUM of two bottoms in one pass, Caffe's (and NumPy's three passes') bits."""
import numpy as np
import pytest

from npcaffe.kernels.eltwise import weighted_sum_of_two


def _numpy_sum(xs, coeffs):
    y = np.zeros_like(xs[0])
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf and 3e38 * 2 are part of the test
        for c, x in zip(coeffs, xs):
            y += x if c == 1 else c * x
    return y


@pytest.mark.parametrize("coeffs", [(1, 1), (1, -1), (0.5, 2.0), (-1, 1)])
def test_one_pass_equals_caffes_set_then_axpy_to_the_bit(coeffs):
    rng = np.random.default_rng(3)
    special = np.array([-0.0, 0.0, np.nan, np.inf, -np.inf, 3e38, -1e-45], np.float32)
    x0 = np.concatenate([special, rng.normal(size=100).astype(np.float32)])
    x1 = np.concatenate([special[::-1], rng.normal(size=100).astype(np.float32)])
    c0, c1 = (np.float32(c) for c in coeffs)
    want = _numpy_sum([x0, x1], [c0, c1])
    y = np.full_like(x0, 7.0)
    weighted_sum_of_two(x0, c0, x1, c1, y)
    np.testing.assert_array_equal(y, want)
    assert np.array_equal(np.signbit(y), np.signbit(want))  # -0.0 + -0.0 starts from +0.0: +0.0
    inplace = x1.copy()
    weighted_sum_of_two(x0, c0, inplace, c1, inplace)
    np.testing.assert_array_equal(inplace, want)
