"""CSR inference kernels against their NumPy references (dense weights, im2col, a product)."""
import numpy as np
import pytest

from npcaffe.kernels import sparse as S


def _pruned(rng, shape, density):
    w = rng.standard_normal(shape).astype(np.float32)
    w[rng.random(shape) >= density] = 0
    return w


def _close(got, want):
    scale = max(float(np.abs(want).max()), 1e-30)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * scale)


def test_csr_round_trip():
    rng = np.random.default_rng(1)
    w = _pruned(rng, (7, 13), 0.2)
    w[3] = 0  # an empty row
    indptr, indices, values = S.dense_to_csr(w)
    assert indptr[-1] == np.count_nonzero(w) and indices.dtype == np.int32
    np.testing.assert_array_equal(S.csr_to_dense(indptr, indices, values, w.shape), w)


@pytest.mark.parametrize("m, k, o, density, bias", [(1, 800, 500, 0.01, True), (5, 37, 11, 0.3, False),
                                                    (3, 9, 4, 0.0, True)])
def test_inner_product_matches_reference(m, k, o, density, bias):
    rng = np.random.default_rng(m + k + o)
    x = rng.standard_normal((m, k)).astype(np.float32)
    csr = S.dense_to_csr(_pruned(rng, (o, k), density))
    b = rng.standard_normal(o).astype(np.float32) if bias else np.zeros(0, np.float32)
    got, want = np.full((m, o), np.nan, np.float32), np.full((m, o), np.nan, np.float32)
    S.csr_inner_product(x, *csr, b, got)
    S.csr_inner_product_reference(x, *csr, b, want)
    _close(got, want)


@pytest.mark.parametrize("k, o, density, bias", [(800, 500, 0.01, True), (784, 300, 0.02, False), (37, 11, 0.3, True),
                                                 (9, 4, 0.0, True)])
def test_vector_products_match_reference(k, o, density, bias):
    """Batch 1: rows (CSR) and columns (the CSR of W^T, zero inputs skipped) against NumPy."""
    rng = np.random.default_rng(k + o)
    x = rng.standard_normal(k).astype(np.float32)
    x[rng.random(k) < 0.6] = 0  # as after a ReLU
    w = _pruned(rng, (o, k), density)
    b = rng.standard_normal(o).astype(np.float32) if bias else np.zeros(0, np.float32)
    want = np.full(o, np.nan, np.float32)
    S.csr_inner_product_reference(x[None], *S.dense_to_csr(w), b, want[None])
    rows, columns = np.full(o, np.nan, np.float32), np.full(o, np.nan, np.float32)
    S.csr_vector_product(x, *S.dense_to_csr(w), b, rows)
    S.csc_vector_product(x, *S.dense_to_csr(np.ascontiguousarray(w.T)), b, columns)
    _close(rows, want)
    _close(columns, want)
    reference = np.full(o, np.nan, np.float32)
    S.csc_vector_product_reference(x, *S.dense_to_csr(np.ascontiguousarray(w.T)), b, reference)
    _close(reference, want)
    np.testing.assert_array_equal(rows, columns)  # both sum each output in ascending k


# (N, C, H, W, O, kh, kw, ph, pw, sh, sw, dh, dw)
CONV_CASES = [
    (2, 20, 12, 12, 50, 5, 5, 0, 0, 1, 1, 1, 1),   # LeNet-5 conv2
    (1, 1, 28, 28, 20, 5, 5, 0, 0, 1, 1, 1, 1),    # conv1 at batch 1
    (2, 3, 9, 11, 4, 3, 2, 2, 1, 2, 3, 2, 1),       # padding, strides, dilation
    (1, 2, 5, 4, 3, 5, 4, 2, 3, 3, 1, 1, 2),
    (9, 3, 9, 11, 4, 3, 2, 2, 1, 2, 3, 2, 1),       # 8 images or more: the batch-innermost kernel
    (16, 20, 12, 12, 50, 5, 5, 0, 0, 1, 1, 1, 1),
]


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_convolution_matches_reference(case, bias):
    n, c, h, w, o, kh, kw, ph, pw, sh, sw, dh, dw = case
    oh = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    ow = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    rng = np.random.default_rng(sum(case))
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    csr = S.dense_to_csr(_pruned(rng, (o, c * kh * kw), 0.1))
    b = rng.standard_normal(o).astype(np.float32) if bias else np.zeros(0, np.float32)
    geometry = (kh, kw, ph, pw, sh, sw, dh, dw)
    got, want = np.full((n, o, oh, ow), np.nan, np.float32), np.full((n, o, oh, ow), np.nan, np.float32)
    S.csr_convolution(x, *csr, b, *geometry, got)
    S.csr_convolution_reference(x, *csr, b, *geometry, want)
    _close(got, want)


@pytest.mark.parametrize("case", [c for c in CONV_CASES if c[9] == c[10] == 1] +
                         [(3, 2, 7, 6, 5, 3, 2, 1, 2, 1, 1, 2, 1), (1, 4, 6, 9, 3, 2, 3, 0, 1, 1, 1, 1, 2)])
@pytest.mark.parametrize("bias", [True, False])
def test_stride1_convolution_matches_reference(case, bias):
    """The small-batch direct kernel (stride 1; padding and dilation through the tap offsets)."""
    n, c, h, w, o, kh, kw, ph, pw, sh, sw, dh, dw = case
    oh = h + 2 * ph - dh * (kh - 1)
    ow = w + 2 * pw - dw * (kw - 1)
    rng = np.random.default_rng(sum(case) + 2)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    csr = S.dense_to_csr(_pruned(rng, (o, c * kh * kw), 0.1))
    b = rng.standard_normal(o).astype(np.float32) if bias else np.zeros(0, np.float32)
    want = np.full((n, o, oh, ow), np.nan, np.float32)
    S.csr_convolution_reference(x, *csr, b, kh, kw, ph, pw, 1, 1, dh, dw, want)
    plane_h, plane_w = h + 2 * ph, w + 2 * pw
    padded = np.zeros((c, plane_h, plane_w) if ph or pw else (0, 0, 0), np.float32)
    wide = np.full((o, oh * plane_w), np.nan, np.float32)  # stale contents must not leak
    offsets = S.stride1_tap_offsets(csr[1], kh, kw, dh, dw, plane_h, plane_w)
    for _ in range(2):  # the buffers reused, as across forwards
        got = np.full((n, o, oh, ow), np.nan, np.float32)
        S.csr_convolution_stride1(x, csr[0], offsets, csr[2], b, got, padded, wide)
        _close(got, want)


def test_same_values_chunked():
    a = np.random.default_rng(0).standard_normal(5000).astype(np.float32)
    b = a.copy()
    assert S.same_values_chunked(a, b)
    b[4321] += 1
    assert not S.same_values_chunked(a, b)
    b = a.copy()
    b[0] = np.nan
    assert not S.same_values_chunked(b, b.copy())


# -- training kernels ----------------------------------------------------------------

@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_columns_product_matches_reference(case, bias):
    from npcaffe.kernels.im2col import im2col_reference
    n, c, h, w, o, kh, kw, ph, pw, sh, sw, dh, dw = case
    oh = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    ow = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    rng = np.random.default_rng(sum(case) + 1)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    col = np.empty((c * kh * kw, n * oh * ow), np.float32)
    im2col_reference(x, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, col)
    csr = S.dense_to_csr(_pruned(rng, (o, c * kh * kw), 0.1))
    b = rng.standard_normal(o).astype(np.float32) if bias else np.zeros(0, np.float32)
    got, want = np.full((n, o, oh * ow), np.nan, np.float32), np.full((n, o, oh * ow), np.nan, np.float32)
    S.csr_columns_product(*csr, b, col, got)
    S.csr_columns_product_reference(*csr, b, col, want)
    _close(got, want)
    # The same as the direct convolution kernel.
    direct = np.empty((n, o, oh, ow), np.float32)
    S.csr_convolution(x, *csr, b, kh, kw, ph, pw, sh, sw, dh, dw, direct)
    _close(got.reshape(direct.shape), direct)


@pytest.mark.parametrize("case", CONV_CASES)
def test_convolution_backward_matches_reference(case):
    n, c, h, w, o, kh, kw, ph, pw, sh, sw, dh, dw = case
    oh = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    ow = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    rng = np.random.default_rng(sum(case) + 2)
    dy = rng.standard_normal((n, o, oh, ow)).astype(np.float32)
    csr = S.dense_to_csr(_pruned(rng, (o, c * kh * kw), 0.1))
    geometry = (kh, kw, ph, pw, sh, sw, dh, dw)
    got, want = np.full((n, c, h, w), np.nan, np.float32), np.full((n, c, h, w), np.nan, np.float32)
    S.csr_convolution_backward(dy, *csr, *geometry, got, np.empty((o, oh, ow, n), np.float32),
                               np.empty((c, h, w, n), np.float32))
    S.csr_convolution_backward_reference(dy, *csr, *geometry, want)
    _close(got, want)


@pytest.mark.parametrize("m, k, o, density", [(1, 800, 500, 0.01), (64, 800, 500, 0.02), (5, 37, 11, 0.3),
                                              (3, 9, 4, 0.0)])
def test_inner_product_backward_matches_reference(m, k, o, density):
    rng = np.random.default_rng(m + k + o + 1)
    dy = rng.standard_normal((m, o)).astype(np.float32)
    csr = S.dense_to_csr(_pruned(rng, (o, k), density))
    got, want = np.full((m, k), np.nan, np.float32), np.full((m, k), np.nan, np.float32)
    S.csr_inner_product_backward(dy, *csr, got, np.empty((o, m), np.float32), np.empty((k, m), np.float32))
    S.csr_inner_product_backward_reference(dy, *csr, want)
    _close(got, want)
