"""im2col / col2im: Numba kernels against the NumPy references and hand values; the N-D ones against the 2-D."""
import numpy as np
import pytest

from npcaffe.kernels.im2col import (col2im, col2im_nd, col2im_reference, im2col, im2col_nd, im2col_reference,
                                    same_values, same_values_reference)


def out_dim(size, kernel, pad, stride, dilation):
    return int((size + 2 * pad - (dilation * (kernel - 1) + 1)) / stride) + 1


# (N, C, H, W, kh, kw, ph, pw, sh, sw, dh, dw): odd sizes, padding, strides,
# dilation, a kernel larger than the input (Caffe's truncating division).
CASES = [
    (1, 1, 3, 3, 2, 2, 0, 0, 1, 1, 1, 1),
    (2, 3, 7, 5, 3, 3, 1, 1, 2, 2, 1, 1),
    (3, 2, 9, 11, 3, 2, 2, 1, 2, 3, 2, 1),
    (2, 4, 6, 7, 1, 1, 0, 0, 1, 1, 1, 1),
    (1, 2, 5, 4, 5, 4, 2, 3, 3, 1, 1, 2),
    (2, 1, 2, 2, 3, 3, 0, 0, 2, 2, 1, 1),
    (4, 3, 13, 10, 4, 3, 3, 2, 3, 2, 2, 3),
    # no padding, stride 1, no dilation: the dense fast path (LeNet's shapes, and awkward ones)
    (3, 5, 12, 12, 5, 5, 0, 0, 1, 1, 1, 1),
    (2, 1, 9, 7, 4, 2, 0, 0, 1, 1, 1, 1),
    # padding at stride 1 (ResNet's 3x3), ResNet's 7x7 stride-2 stem, padding wider than the kernel
    # (whole column runs in the padding), a stride wider than the image
    (2, 3, 8, 8, 3, 3, 1, 1, 1, 1, 1, 1),
    (1, 2, 15, 13, 7, 7, 3, 3, 2, 2, 1, 1),
    (1, 2, 3, 4, 2, 2, 4, 3, 1, 2, 1, 1),
    (2, 2, 5, 3, 3, 3, 1, 2, 4, 5, 1, 2),
]


@pytest.mark.parametrize("case", CASES)
def test_kernels_match_reference(case):
    n, c, h, w, kh, kw, ph, pw, sh, sw, dh, dw = case
    oh, ow = out_dim(h, kh, ph, sh, dh), out_dim(w, kw, pw, sw, dw)
    geometry = (kh, kw, ph, pw, sh, sw, dh, dw, oh, ow)
    rng = np.random.default_rng(sum(case))
    im = rng.standard_normal((n, c, h, w)).astype(np.float32)
    col = np.full((c * kh * kw, n * oh * ow), np.nan, dtype=np.float32)
    ref = np.full_like(col, np.nan)
    im2col(im, *geometry, col)
    im2col_reference(im, *geometry, ref)
    np.testing.assert_array_equal(col, ref)

    dcol = rng.standard_normal(col.shape).astype(np.float32)
    back = np.full_like(im, np.nan)
    back_ref = np.full_like(im, np.nan)
    col2im(dcol, *geometry, back)
    col2im_reference(dcol, *geometry, back_ref)
    # Same summation order per pixel, so equal to the bit.
    np.testing.assert_array_equal(back, back_ref)

    # col2im is the adjoint of im2col: <im2col(x), y> == <x, col2im(y)>.
    lhs = np.dot(col.astype(np.float64).ravel(), dcol.astype(np.float64).ravel())
    rhs = np.dot(im.astype(np.float64).ravel(), back.astype(np.float64).ravel())
    assert lhs == pytest.approx(rhs, rel=1e-5, abs=1e-4)


def test_im2col_hand_values():
    im = np.arange(1, 10, dtype=np.float32).reshape(1, 1, 3, 3)
    col = np.empty((4, 4), dtype=np.float32)
    # 2x2 kernel, stride 1, pad 0: rows are the taps (0,0), (0,1), (1,0), (1,1).
    im2col(im, 2, 2, 0, 0, 1, 1, 1, 1, 2, 2, col)
    np.testing.assert_array_equal(col, [[1, 2, 4, 5], [2, 3, 5, 6], [4, 5, 7, 8], [5, 6, 8, 9]])
    # Pad 1, stride 2, 2x2: output positions read (-1,-1), (-1,1), (1,-1), (1,1).
    im2col(im, 2, 2, 1, 1, 2, 2, 1, 1, 2, 2, col)
    np.testing.assert_array_equal(col, [[0, 0, 0, 5], [0, 0, 4, 6], [0, 2, 0, 8], [1, 3, 7, 9]])


def test_col2im_sums_overlaps_and_batches_side_by_side():
    # Two images, 1x3 input, 1x2 kernel: the middle pixel is read by both windows.
    col = np.array([[1, 2, 10, 20], [3, 4, 30, 40]], dtype=np.float32)
    im = np.full((2, 1, 1, 3), np.nan, dtype=np.float32)
    col2im(col, 1, 2, 0, 0, 1, 1, 1, 1, 1, 2, im)
    np.testing.assert_array_equal(im[:, 0, 0], [[1, 2 + 3, 4], [10, 20 + 30, 40]])


def test_same_values():
    a = np.arange(7, dtype=np.float32)
    b = a.copy()
    assert same_values(a, b) and same_values_reference(a, b)
    b[6] = -1
    assert not same_values(a, b) and not same_values_reference(a, b)
    assert not same_values(a, a[:6]) and not same_values_reference(a, a[:6])
    nan = np.full(3, np.nan, np.float32)
    assert not same_values(nan, nan.copy()) and not same_values_reference(nan, nan.copy())


@pytest.mark.parametrize("case", [CASES[6], CASES[7]])
@pytest.mark.parametrize("count", [2, 3])
def test_split_over_threads_is_bit_identical(case, count):
    """The kernels split the batch over threads (npcaffe.parallel); any count gives the same bits."""
    from npcaffe import parallel
    n, c, h, w, kh, kw, ph, pw, sh, sw, dh, dw = case
    oh, ow = out_dim(h, kh, ph, sh, dh), out_dim(w, kw, pw, sw, dw)
    im = np.random.default_rng(5).standard_normal((n, c, h, w)).astype(np.float32)
    before = parallel.num_threads()
    results = []
    try:
        for threads in (1, count):
            parallel.set_num_threads(threads)
            col = np.empty((c * kh * kw, n * oh * ow), np.float32)
            im2col(im, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, col)
            back = np.full_like(im, np.nan)
            col2im(col, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, back)
            results.append((col, back))
    finally:
        parallel.set_num_threads(before)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("geometry", [((3, 3), (1, 1), (1, 1), (1, 1)), ((3, 2), (0, 1), (2, 1), (1, 2)),
                                      ((2, 4), (2, 0), (1, 3), (2, 1))])
def test_nd_kernels_equal_the_2d_ones(geometry):
    kernel, pad, stride, dilation = geometry
    im = np.random.default_rng(1).uniform(-1, 1, (1, 3, 7, 8)).astype(np.float32)
    out = tuple((n + 2 * p - (d * (k - 1) + 1)) // s + 1 for n, k, p, s, d in zip((7, 8), kernel, pad, stride, dilation))
    want = np.empty((3 * kernel[0] * kernel[1], out[0] * out[1]), np.float32)
    im2col(im, *kernel, *pad, *stride, *dilation, *out, want)
    got = np.empty_like(want)
    im2col_nd(im[0], kernel, pad, stride, dilation, out, got)
    np.testing.assert_array_equal(got, want)
    back_want, back_got = np.empty_like(im), np.empty_like(im[0])
    col2im(want, *kernel, *pad, *stride, *dilation, *out, back_want)
    col2im_nd(want, kernel, pad, stride, dilation, out, back_got)
    np.testing.assert_array_equal(back_got, back_want[0])
