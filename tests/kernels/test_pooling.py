"""Pooling kernels: Numba against the NumPy references, plus Caffe's edge cases."""
import math

import numpy as np
import pytest

from npcaffe.kernels import pooling as P


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
    P._max_forward_plane(bottom[0, 0], 2, 2, 2, 2, 0, 0, top_ref[0, 0], mask_ref[0, 0])
    np.testing.assert_array_equal(top, [[[[-np.finfo(np.float32).max, 2]]]])
    np.testing.assert_array_equal(mask, [[[[-1, 6]]]])
    np.testing.assert_array_equal(top, top_ref)
    np.testing.assert_array_equal(mask, mask_ref)
