"""Pooling kernels: Numba against the NumPy references, plus Caffe's edge cases."""
import math

import numpy as np
import pytest

from npcaffe.kernels import pooling as P


def caffe_scan_plane(src, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dst, arg):
    """Caffe's PoolingLayer MAX loop for one plane, literally: each window clipped to the image, scanned
    row by row, the first value strictly greater than the best so far from -FLT_MAX (NaN never wins)."""
    height, width = src.shape
    for y in range(dst.shape[0]):
        h0 = y * stride_h - pad_h
        h1 = min(h0 + kernel_h, height)
        for x in range(dst.shape[1]):
            w0 = x * stride_w - pad_w
            w1 = min(w0 + kernel_w, width)
            best, best_at = -np.finfo(np.float32).max, -1
            for h in range(max(h0, 0), h1):
                for w in range(max(w0, 0), w1):
                    if src[h, w] > best:
                        best, best_at = src[h, w], h * width + w
            dst[y, x], arg[y, x] = best, best_at


def pooled(size, kernel, stride, pad):
    out = math.ceil((size + 2 * pad - kernel) / stride) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


# (N, C, H, W, kh, kw, sh, sw, ph, pw); the last two have stride > kernel and
# no padding, which leaves windows past the image (Caffe's empty windows).
CASES = [
    (2, 3, 6, 5, 3, 3, 2, 2, 1, 1),
    (1, 2, 7, 7, 3, 2, 2, 1, 2, 1),
    (3, 1, 5, 9, 2, 4, 1, 3, 0, 2),
    (2, 2, 4, 4, 4, 4, 1, 1, 3, 3),
    (1, 3, 8, 3, 1, 1, 2, 1, 0, 0),
    (1, 2, 5, 5, 1, 1, 3, 3, 0, 0),
    (2, 1, 4, 6, 1, 2, 2, 3, 0, 0),
    (2, 3, 8, 6, 2, 2, 2, 2, 0, 0),   # 2x2/2 with full windows: the fast path
    (1, 2, 7, 5, 2, 2, 2, 2, 0, 0),   # 2x2/2 with clipped last windows: the general path
]


def _shapes(case):
    n, c, h, w, kh, kw, sh, sw, ph, pw = case
    return (n, c, h, w), (n, c, pooled(h, kh, sh, ph), pooled(w, kw, sw, pw)), (kh, kw, sh, sw, ph, pw)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("mask_dtype", [np.int32, np.float32])
@pytest.mark.parametrize("ties", [False, True])
def test_max_matches_reference(case, mask_dtype, ties):
    bottom_shape, top_shape, args = _shapes(case)
    rng = np.random.default_rng(sum(case))
    # Small integers make ties common, exercising "first maximum wins".
    bottom = (rng.integers(0, 3, bottom_shape) if ties else rng.standard_normal(bottom_shape)).astype(np.float32)
    top, top_ref = np.empty(top_shape, np.float32), np.empty(top_shape, np.float32)
    mask, mask_ref = np.empty(top_shape, mask_dtype), np.empty(top_shape, mask_dtype)
    P.max_pool_forward(bottom, *args, top, mask)
    P.max_pool_forward_reference(bottom, *args, top_ref, mask_ref)
    np.testing.assert_array_equal(top, top_ref)
    np.testing.assert_array_equal(mask, mask_ref)

    diff = rng.standard_normal(top_shape).astype(np.float32)
    grad, grad_ref = np.full(bottom_shape, np.nan, np.float32), np.full(bottom_shape, np.nan, np.float32)
    P.max_pool_backward(diff, mask, grad)
    P.max_pool_backward_reference(diff, mask_ref, grad_ref)
    np.testing.assert_allclose(grad, grad_ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", CASES + [(2, 3, 13, 11, 3, 3, 2, 2, 0, 0), (1, 2, 12, 12, 3, 3, 2, 2, 1, 1),
                                  (1, 1, 9, 10, 5, 3, 1, 2, 2, 1)])
@pytest.mark.parametrize("mask_dtype", [np.int32, np.float32])
def test_max_equals_caffes_scan_with_nan_inf_and_ties(case, mask_dtype):
    """The separable passes against Caffe's loop where the NumPy reference's argmax cannot stand in:
    NaN, -inf, -FLT_MAX, +inf and ties in the windows (AlexNet's and ResNet's 3x3 / 2 among the cases)."""
    bottom_shape, top_shape, args = _shapes(case)
    rng = np.random.default_rng(sum(case) + 1)
    flt_max = np.finfo(np.float32).max
    special = np.array([np.nan, -np.inf, np.inf, -flt_max, 0, 1, 1, 2], np.float32)
    bottom = rng.choice(special, bottom_shape)
    top, mask = np.empty(top_shape, np.float32), np.empty(top_shape, mask_dtype)
    P.max_pool_forward(bottom, *args, top, mask)
    top_ref, mask_ref = np.empty_like(top), np.empty_like(mask)
    for n in range(bottom_shape[0]):
        for c in range(bottom_shape[1]):
            caffe_scan_plane(bottom[n, c], *args, top_ref[n, c], mask_ref[n, c])
    np.testing.assert_array_equal(top, top_ref)
    np.testing.assert_array_equal(mask, mask_ref)


@pytest.mark.parametrize("case", CASES)
def test_ave_matches_reference(case):
    bottom_shape, top_shape, args = _shapes(case)
    rng = np.random.default_rng(sum(case))
    bottom = rng.standard_normal(bottom_shape).astype(np.float32)
    top, top_ref = np.empty(top_shape, np.float32), np.empty(top_shape, np.float32)
    P.ave_pool_forward(bottom, *args, top)
    P.ave_pool_forward_reference(bottom, *args, top_ref)
    np.testing.assert_array_equal(top, top_ref)

    diff = rng.standard_normal(top_shape).astype(np.float32)
    grad, grad_ref = np.full(bottom_shape, np.nan, np.float32), np.full(bottom_shape, np.nan, np.float32)
    P.ave_pool_backward(diff, *args, grad)
    P.ave_pool_backward_reference(diff, *args, grad_ref)
    np.testing.assert_array_equal(grad, grad_ref)


def test_max_empty_window_and_backward_skip():
    # 1x5 input, kernel 1, stride 3: windows at 0, 3 and 6 -- the last is empty.
    bottom = np.array([5, 1, 2, 7, 3], np.float32).reshape(1, 1, 1, 5)
    top = np.empty((1, 1, 1, 3), np.float32)
    mask = np.empty((1, 1, 1, 3), np.int32)
    P.max_pool_forward(bottom, 1, 1, 1, 3, 0, 0, top, mask)
    np.testing.assert_array_equal(top.ravel(), [5, 7, -np.finfo(np.float32).max])
    np.testing.assert_array_equal(mask.ravel(), [0, 3, -1])
    grad = np.full_like(bottom, np.nan)
    P.max_pool_backward(np.ones_like(top), mask, grad)
    np.testing.assert_array_equal(grad.ravel(), [1, 0, 0, 1, 0])


def test_max_backward_accumulates_overlapping_windows():
    bottom = np.array([0, 9, 0], np.float32).reshape(1, 1, 1, 3)
    top = np.empty((1, 1, 1, 2), np.float32)
    mask = np.empty((1, 1, 1, 2), np.int32)
    P.max_pool_forward(bottom, 1, 2, 1, 1, 0, 0, top, mask)
    grad = np.empty_like(bottom)
    P.max_pool_backward(np.array([2, 3], np.float32).reshape(top.shape), mask, grad)
    np.testing.assert_array_equal(grad.ravel(), [0, 5, 0])


def test_max_2x2_fast_path_keeps_caffe_start_value():
    """-inf and NaN taps: Caffe starts from -FLT_MAX with '>', so an all -inf
    window gives -FLT_MAX and index -1 and a NaN is never picked, as in the
    general per-plane kernel (the NumPy reference's argmax does not model this)."""
    bottom = np.array([[[[-np.inf, -np.inf, np.nan, 1],
                         [-np.inf, -np.inf, 2, np.nan]]]], np.float32)
    top, mask = np.empty((1, 1, 1, 2), np.float32), np.empty((1, 1, 1, 2), np.int32)
    top_ref, mask_ref = np.empty_like(top), np.empty_like(mask)
    P.max_pool_forward(bottom, 2, 2, 2, 2, 0, 0, top, mask)
    caffe_scan_plane(bottom[0, 0], 2, 2, 2, 2, 0, 0, top_ref[0, 0], mask_ref[0, 0])
    np.testing.assert_array_equal(top, [[[[-np.finfo(np.float32).max, 2]]]])
    np.testing.assert_array_equal(mask, [[[[-1, 6]]]])
    np.testing.assert_array_equal(top, top_ref)
    np.testing.assert_array_equal(mask, mask_ref)


def _caffe_max_planes(bottom, top_shape, mask_dtype):
    """Caffe's scan (the general per-plane kernel) run plane by plane."""
    top, mask = np.empty(top_shape, np.float32), np.empty(top_shape, mask_dtype)
    for n in range(bottom.shape[0]):
        for c in range(bottom.shape[1]):
            caffe_scan_plane(bottom[n, c], 2, 2, 2, 2, 0, 0, top[n, c], mask[n, c])
    return top, mask


# 2x2/2 fast path: LeNet's pool1/pool2 planes (channel counts that are not a
# multiple of the kernel's plane group), odd sizes whose last row / column
# no window covers (floor mode), and a 1x1 output.
@pytest.mark.parametrize("shape", [(2, 5, 24, 24), (3, 13, 8, 8), (1, 37, 8, 8), (2, 3, 25, 25),
                                   (2, 2, 9, 6), (1, 3, 6, 11), (2, 2, 2, 2)])
@pytest.mark.parametrize("mask_dtype", [np.int32, np.float32])
@pytest.mark.parametrize("data", ["normal", "ties", "special"])
def test_max_2x2_fast_path(shape, mask_dtype, data):
    n, c, h, w = shape
    top_shape = (n, c, h // 2, w // 2)
    rng = np.random.default_rng(h * w + c)
    flt_max = np.finfo(np.float32).max
    if data == "normal":
        bottom = rng.standard_normal(shape)
    elif data == "ties":
        bottom = rng.integers(-1, 2, shape)
    else:
        # Few values, with NaN, -inf and -FLT_MAX (never strictly above the
        # -FLT_MAX start) and +inf; whole windows of them are common.
        bottom = rng.choice(np.array([np.nan, -np.inf, -flt_max, 0.0, -0.0, 1.0, np.inf]), shape)
        bottom[0, 0, :2, :2] = [[np.nan, -np.inf], [-flt_max, np.nan]]   # no tap wins: -FLT_MAX, -1
        bottom[-1, -1, 0, 1] = 1.0
    bottom = bottom.astype(np.float32)
    top, mask = np.empty(top_shape, np.float32), np.empty(top_shape, mask_dtype)
    P.max_pool_forward(bottom, 2, 2, 2, 2, 0, 0, top, mask)
    top_ref, mask_ref = _caffe_max_planes(bottom, top_shape, mask_dtype)
    np.testing.assert_array_equal(top, top_ref)
    np.testing.assert_array_equal(np.signbit(top), np.signbit(top_ref))   # -0.0 vs 0.0: the same tap
    np.testing.assert_array_equal(mask, mask_ref)
    if data != "special":
        # The NumPy reference's argmax agrees when no NaN or -inf is present.
        top_np, mask_np = np.empty(top_shape, np.float32), np.empty(top_shape, mask_dtype)
        P.max_pool_forward_reference(bottom, 2, 2, 2, 2, 0, 0, top_np, mask_np)
        np.testing.assert_array_equal(top, top_np)
        np.testing.assert_array_equal(mask, mask_np)
    else:
        assert mask[0, 0, 0, 0] == -1 and top[0, 0, 0, 0] == -flt_max and mask[-1, -1, 0, 0] >= 0

    diff = rng.standard_normal(top_shape).astype(np.float32)
    grad, grad_ref = np.full(shape, np.nan, np.float32), np.full(shape, np.nan, np.float32)
    P.max_pool_backward(diff, mask, grad)
    P.max_pool_backward_reference(diff, mask_ref, grad_ref)
    np.testing.assert_array_equal(grad, grad_ref)
    # Rows / columns no window covers get zero.
    assert not grad[:, :, 2 * (h // 2):, :].any() and not grad[:, :, :, 2 * (w // 2):].any()


def test_max_2x2_ceil_mode_partial_windows():
    """25x25 in Caffe's ceil mode gives 13x13 with clipped last windows: the
    general path handles them (a clipped window has fewer taps)."""
    rng = np.random.default_rng(7)
    bottom = rng.integers(-2, 3, (2, 3, 25, 25)).astype(np.float32)
    bottom[0, 0, 24, 24] = np.nan
    bottom[0, 1, 24, :] = -np.inf
    top, mask = np.empty((2, 3, 13, 13), np.float32), np.empty((2, 3, 13, 13), np.float32)
    P.max_pool_forward(bottom, 2, 2, 2, 2, 0, 0, top, mask)
    assert mask[0, 0, 12, 12] == -1 and top[0, 0, 12, 12] == -np.finfo(np.float32).max
    top_ref = np.empty_like(top)
    mask_ref = np.empty_like(mask)
    for n in range(2):
        for c in range(3):
            caffe_scan_plane(bottom[n, c], 2, 2, 2, 2, 0, 0, top_ref[n, c], mask_ref[n, c])
    np.testing.assert_array_equal(top, top_ref)
    np.testing.assert_array_equal(mask, mask_ref)
    diff = rng.standard_normal(top.shape).astype(np.float32)
    grad, grad_ref = np.full(bottom.shape, np.nan, np.float32), np.full(bottom.shape, np.nan, np.float32)
    P.max_pool_backward(diff, mask, grad)
    P.max_pool_backward_reference(diff, mask, grad_ref)
    np.testing.assert_array_equal(grad, grad_ref)
