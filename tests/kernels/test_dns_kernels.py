"""DNS kernels: Numba against the NumPy reference, and against hand-computed cases."""
import ctypes

import numpy as np
import pytest

from npcaffe.kernels import dns


def _bits(x):
    return np.float32(x).view(np.uint32)


def _params(rng, nw, nb, keep=0.7):
    w = rng.normal(0, 0.1, nw).astype(np.float32)
    b = rng.normal(0, 0.1, nb).astype(np.float32)
    w[rng.random(nw) < 0.05] = 0  # exact zeros do not count in ncount
    wm = (rng.random(nw) < keep).astype(np.float32)
    bm = (rng.random(nb) < keep).astype(np.float32)
    return w, b, wm, bm


@pytest.mark.parametrize("nw,nb", [(1, 1), (7, 3), (1001, 13), (25000, 50)])
@pytest.mark.parametrize("masked", [True, False])
def test_statistics_kernel_equals_reference_bit_for_bit(nw, nb, masked):
    rng = np.random.default_rng(nw + nb)
    w, b, wm, bm = _params(rng, nw, nb)
    wm[0] = 1
    for mu0 in (0.0, 0.25):
        got = dns.dns_statistics(w, b, wm, bm, masked, np.float32(mu0), np.float32(0))
        ref = dns.dns_statistics_ref(w, b, wm, bm, masked, mu0, 0.0)
        assert _bits(got[0]) == _bits(ref[0]) and _bits(got[1]) == _bits(ref[1]) and got[2] == ref[2]


def test_statistics_by_hand():
    w = np.array([0.5, -1.0, 0.0, 2.0], np.float32)
    b = np.array([-0.5], np.float32)
    wm = np.array([1, 1, 1, 0], np.float32)
    bm = np.array([1], np.float32)
    # Masked (CConvolution): x = 0.5, -1, 0, 0, -0.5 -> n 3, mean 2/3, E[x^2] = 0.5
    mu, std, n = dns.dns_statistics(w, b, wm, bm, True, np.float32(0), np.float32(0))
    assert n == 3
    assert np.float32(mu) == np.float32(np.float32(2.0) / np.float32(3))
    s = np.float32(np.float32(1.5) - np.float32(3) * np.float32(mu) * np.float32(mu))
    assert np.float32(std) == np.sqrt(np.float32(s / np.float32(3)))
    # Plain (CInnerProduct): the mask is ignored, 2.0 counts.
    mu, std, n = dns.dns_statistics(w, b, wm, bm, False, np.float32(0), np.float32(0))
    assert n == 4 and np.float32(mu) == np.float32(1.0)
    # The accumulator starts from the member's value (upstream never resets mu).
    mu2, _, _ = dns.dns_statistics(w, b, wm, bm, False, np.float32(1.0), np.float32(0))
    assert np.float32(mu2) == np.float32(5.0 / 4)


def test_statistics_of_nothing_is_nan():
    z = np.zeros(5, np.float32)
    mu, std, n = dns.dns_statistics(np.ones(5, np.float32), z[:2], z, z[:2], True, np.float32(0), np.float32(0))
    assert n == 0 and np.isnan(mu) and np.isnan(std)
    assert np.isnan(dns.dns_threshold(mu, std, 1.0))


def test_statistics_sum_in_float32_index_order():
    # 1 + 2^-24 ... in float32 sequential sums drop the small terms; a float64 or
    # pairwise sum would not.
    w = np.array([1.0] + [2.0 ** -24] * 8, np.float32)
    mu, _, _ = dns.dns_statistics(w, np.zeros(1, np.float32), np.ones(9, np.float32), np.ones(1, np.float32),
                                  False, np.float32(0), np.float32(0))
    assert np.float32(mu) == np.float32(np.float32(1.0) / np.float32(9))


def test_threshold():
    assert dns.dns_threshold(0.5, 0.25, 2.0) == np.float32(1.0)
    assert dns.dns_threshold(0.5, 0.25, -4.0) == 0  # clamped at 0
    assert dns.dns_threshold(0.1, 0.2, 0.3).dtype == np.float32
    assert dns.dns_threshold(0.1, 0.2, 0.3) == np.float32(np.float32(0.1) + np.float32(0.3) * np.float32(0.2))


def _borderline(threshold):
    """|w| values at and next to 0.9*T and 1.1*T (in double), as float32."""
    t = np.float64(np.float32(threshold))
    out = []
    for edge in (0.9 * t, 1.1 * t):
        f = np.float32(edge)
        out += [f, np.nextafter(f, np.float32(0)), np.nextafter(f, np.float32(10))]
    return np.array(out, np.float32)


@pytest.mark.parametrize("size", [1, 13, 4097, 300_001])  # the last is split over threads
def test_mask_update_kernel_equals_reference(size):
    rng = np.random.default_rng(size)
    t = np.float32(0.1)
    w = rng.normal(0, 0.1, size).astype(np.float32)
    w[: min(size, 6)] = (_borderline(t) * np.sign(rng.normal(size=6)).astype(np.float32))[: min(size, 6)]
    mask = rng.integers(0, 2, size).astype(np.float32)
    mask[rng.random(size) < 0.05] = 0.5  # neither 0 nor 1: upstream leaves it
    m1, m2 = mask.copy(), mask.copy()
    assert dns.dns_update_masks(w, m1, t) == dns.dns_update_masks_ref(w, m2, t)
    assert np.array_equal(m1, m2)
    assert np.array_equal(m1 == 0.5, mask == 0.5)


def test_mask_update_compares_in_double():
    t = np.float32(0.3)
    lo, hi = 0.9 * np.float64(t), 1.1 * np.float64(t)
    w = _borderline(t)
    ones = np.ones_like(w)
    pruned, spliced = dns.dns_update_masks(w, ones, t)
    assert spliced == 0
    assert np.array_equal(ones == 0, w.astype(np.float64) <= lo)
    zeros = np.zeros_like(w)
    pruned, spliced = dns.dns_update_masks(w, zeros, t)
    assert pruned == 0
    assert np.array_equal(zeros == 1, w.astype(np.float64) > hi)


def test_mask_update_keeps_a_weight_float32_arithmetic_would_prune():
    # A T whose 0.9*T, rounded to float32, lands above the double product: the
    # weight equal to that float32 value is kept upstream (double compare).
    for t in np.linspace(0.01, 1, 1000, dtype=np.float32):
        w = np.float32(0.9 * np.float64(t))
        if np.float64(w) > 0.9 * np.float64(t) and w <= np.float32(0.9) * t:
            break
    else:
        pytest.fail("no such threshold in the sample")
    mask = np.ones(1, np.float32)
    assert dns.dns_update_masks(np.array([w]), mask, t) == (0, 0)
    assert mask[0] == 1


def test_masked_product():
    rng = np.random.default_rng(3)
    w = rng.normal(size=333).astype(np.float32)
    m = rng.integers(0, 2, 333).astype(np.float32)
    a, b = np.empty_like(w), np.empty_like(w)
    dns.masked_product(w, m, a)
    dns.masked_product_ref(w, m, b)
    assert np.array_equal(a, b) and np.array_equal(a, w * m)


@pytest.mark.parametrize("rows, width, keep, max_share", [(7, 48, 0.05, 1.0), (50, 500, 0.02, 0.1),
                                                          (9, 33, 0.5, 0.1), (4, 70, 0.0, 0.1),
                                                          (3, 37, 0.3, 0.0)])
def test_masked_csr(rows, width, keep, max_share):
    """The CSR lists the nonzeros of values * mask by rows, or gives -1 past max_nnz."""
    rng = np.random.default_rng(rows * width)
    w = rng.normal(size=rows * width).astype(np.float32)
    w[::11] = 0  # zero weights under a 1 mask are not kept either
    w[1::13] = -w[1::13]
    m = (rng.random(rows * width) < keep).astype(np.float32)  # negative weights under 0 give -0.0: not kept
    if w.size > 40:
        w[40], m[40] = np.nan, 1  # kept, as any value != 0
    max_nnz = int(max_share * w.size)
    got = [np.zeros(rows + 1, np.int32), np.zeros(w.size, np.int32), np.zeros(w.size, np.float32)]
    want = [a.copy() for a in got]
    n_got = dns.masked_csr(w, m, rows, max_nnz, *got)
    n_want = dns.masked_csr_ref(w, m, rows, max_nnz, *want)
    assert n_got == n_want
    if n_got < 0:
        assert np.count_nonzero(w * m) > max_nnz
        return
    assert n_got == np.count_nonzero(w * m)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1][:n_got], want[1][:n_got])
    np.testing.assert_array_equal(got[2][:n_got], want[2][:n_got])


def test_gate_probability_is_glibc_powf():
    try:
        libm = ctypes.CDLL("libm.so.6")
    except OSError:
        pytest.skip("no glibc libm")
    libm.powf.restype = ctypes.c_float
    libm.powf.argtypes = [ctypes.c_float, ctypes.c_float]
    for gamma, power in ((1e-4, 1.0), (1e-3, 0.75), (3e-5, 2.3)):
        g, p = np.float32(gamma), np.float32(power)
        for it in range(0, 30000, 97):
            base = np.float32(1) + g * np.float32(it)
            want = np.float32(libm.powf(base, -p))
            assert np.float32(dns.gate_probability(g, it, p)) == want
            assert dns.gate_probability_ref(g, it, p) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("size", [5, 300_001])  # the larger is split when threads are on
def test_masked_accumulate_equals_the_two_numpy_steps(size):
    rng = np.random.default_rng(size)
    diff = rng.standard_normal(size).astype(np.float32)
    mask = (rng.random(size) < 0.3).astype(np.float32)
    grad = rng.standard_normal(size).astype(np.float32)
    got, want = diff.copy(), diff.copy()
    dns.masked_accumulate(got, mask, grad)
    dns.masked_accumulate_ref(want, mask, grad)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, diff * mask + grad)


@pytest.mark.parametrize("x", [0.0, -0.0, 0.1, -0.1, 1e-46, -1e-46, 0.27000001072883606, 3.4028234663852886e38,
                               3.5e38, -3.5e38, float("inf"), float("-inf")])
def test_float32_floor_is_the_largest_float32_not_above(x):
    f = dns._float32_floor(x)
    assert f.dtype == np.float32 and np.float64(f) <= x
    with np.errstate(over="ignore"):  # the step above FLT_MAX is inf
        above = np.nextafter(f, np.float32(np.inf)) if f != np.inf else None
    assert above is None or np.float64(above) > x
