"""Max and average pooling over a whole batch (N, C, H, W) -> (N, C, PH, PW).

The window of output (y, x) starts at (y*stride_h - pad_h, x*stride_w - pad_w)
and spans (kernel_h, kernel_w); the caller sizes `top` (Caffe's ceil/floor
and pad-clipping rules live in the layer).  Semantics follow Caffe's
PoolingLayer::Forward_cpu / Backward_cpu (layers/pooling_layer.cpp):

- MAX scans the window clipped to the image, row by row, and keeps the
  first strictly greater value starting from -FLT_MAX (so NaN never wins
  and ties keep the earliest pixel); `mask` receives its index h * W + w
  within the channel plane, or -1 (top -FLT_MAX) if no pixel exceeds
  -FLT_MAX, e.g. an empty window or one of NaN / -inf / -FLT_MAX only.
  `mask` may be an int32 array or, for Caffe's optional second top, a
  float32 one.  The common 2x2 / stride 2 / pad 0 case with every window
  inside the image has its own vectorized kernel with the same results.
  Backward zeroes `bottom_diff` and adds each top diff to its argmax
  (overlapping windows accumulate); a -1 entry is skipped where Caffe would
  write before the plane.
- AVE sums the window clipped to the image, but divides by the window size
  clipped to the *padded* image (H + pad_h, W + pad_w), so padding counts as
  zeros except beyond the far edge.  Backward spreads diff / pool_size over
  the same clipped window.  An empty window (possible only without padding
  and with stride > kernel) divides 0 by a non-positive size as Caffe does.

Each Numba kernel has a NumPy reference beside it with the same signature
and semantics; the tests compare the two.
"""
import numpy as np
from numba import njit

from .. import parallel

_FLT_MAX = np.float32(np.finfo(np.float32).max)


# Each kernel runs a per-plane helper over the (n, c) planes.  Serial on
# purpose, as in kernels/im2col.py: Numba's OpenMP threads slow down the
# threaded BLAS calls around them.  error_model="numpy" drops Python's
# zero-division checks from the integer index arithmetic (it halves the run
# time) and lets an empty AVE window divide by zero as in C.
_jit = njit(cache=True, error_model="numpy", nogil=True)


@_jit
def _max_forward_plane(src, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dst, arg):
    height, width = src.shape
    pooled_h, pooled_w = dst.shape
    for y in range(pooled_h):
        h0 = y * stride_h - pad_h
        h1 = min(h0 + kernel_h, height)
        h0 = max(h0, 0)
        for x in range(pooled_w):
            w0 = x * stride_w - pad_w
            w1 = min(w0 + kernel_w, width)
            w0 = max(w0, 0)
            best = -_FLT_MAX
            best_at = -1
            for h in range(h0, h1):
                for w in range(w0, w1):
                    v = src[h, w]
                    if v > best:
                        best = v
                        best_at = h * width + w
            dst[y, x] = best
            arg[y, x] = best_at


# Scratch elements per group of planes in `_max_forward_2x2` (kept in L1).
_GROUP_ELEMS = 1024


@_jit
def _max_forward_2x2(bottom, top, mask):
    """MAX 2x2, stride 2, no padding, every window inside the image.

    Two passes per group of planes, both branch-free selects that LLVM
    vectorizes (the old one-pass loop compared four taps per output with a
    dependent chain of scalar compares/branches and ran at ~5 ns per output;
    this is ~2x faster on LeNet's pool1 and ~1.5x on pool2):
    1. vertical, over contiguous row pairs: for each column, the first of
       (up, down) strictly greater than -FLT_MAX / than up, with its plane
       index h * W + w (-1 if neither exceeds -FLT_MAX);
    2. horizontal, one flat loop over all outputs of the group (stride-2
       loads of the scratch rows): the right candidate wins if strictly
       greater, or if equal with a smaller plane index -- i.e. earlier in
       Caffe's scan order (up-right beats down-left on a tie).
    Together this equals Caffe's row-by-row scan with '>' from -FLT_MAX:
    the maximum over values > -FLT_MAX, ties to the first in scan order, NaN
    never picked."""
    num, channels, height, width = bottom.shape
    pooled_h, pooled_w = top.shape[2], top.shape[3]
    planes = num * channels
    per_plane = pooled_h * pooled_w
    cols = 2 * pooled_w
    src = bottom.reshape(planes, height, width)
    dst = top.reshape(planes * per_plane)
    arg = mask.reshape(planes * per_plane)
    group = max(1, _GROUP_ELEMS // (pooled_h * cols))
    best = np.empty((group * pooled_h, cols), np.float32)
    best_at = np.empty((group * pooled_h, cols), np.int32)
    flat_best = best.reshape(-1)
    flat_at = best_at.reshape(-1)
    low = -_FLT_MAX
    down_step = np.int32(width)
    none = np.int32(-1)
    for p0 in range(0, planes, group):
        g = min(group, planes - p0)
        for k in range(g):
            for y in range(pooled_h):
                r = k * pooled_h + y
                base = np.int32(2 * y * width)
                for w in range(cols):
                    up = src[p0 + k, 2 * y, w]
                    down = src[p0 + k, 2 * y + 1, w]
                    take_up = up > low
                    b = up if take_up else low
                    at = base + np.int32(w) if take_up else none
                    take_down = down > b
                    best[r, w] = down if take_down else b
                    best_at[r, w] = base + down_step + np.int32(w) if take_down else at
        out = dst[p0 * per_plane:(p0 + g) * per_plane]
        out_at = arg[p0 * per_plane:(p0 + g) * per_plane]
        for o in range(g * per_plane):
            left = flat_best[2 * o]
            right = flat_best[2 * o + 1]
            left_at = flat_at[2 * o]
            right_at = flat_at[2 * o + 1]
            take_right = (right > left) | ((right == left) & (right_at < left_at))
            out[o] = right if take_right else left
            out_at[o] = right_at if take_right else left_at


@_jit
def _max_pool_forward(bottom, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, top, mask):
    num, channels, height, width = bottom.shape
    pooled_h, pooled_w = top.shape[2], top.shape[3]
    if (kernel_h == 2 and kernel_w == 2 and stride_h == 2 and stride_w == 2 and pad_h == 0 and pad_w == 0
            and 2 * pooled_h <= height and 2 * pooled_w <= width):
        _max_forward_2x2(bottom, top, mask)
        return
    for nc in range(num * channels):
        n, c = nc // channels, nc % channels
        _max_forward_plane(bottom[n, c], kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                           top[n, c], mask[n, c])


@_jit
def _max_pool_backward(top_diff, mask, bottom_diff):
    num, channels, height, width = bottom_diff.shape
    pooled = top_diff.shape[2] * top_diff.shape[3]
    size = height * width
    planes = bottom_diff.reshape(num * channels, size)
    diffs = top_diff.reshape(num * channels, pooled)
    args = mask.reshape(num * channels, pooled)
    planes[...] = 0
    for p in range(num * channels):
        dst = planes[p]
        src = diffs[p]
        arg = args[p]
        for q in range(pooled):
            at = int(arg[q])
            if 0 <= at < size:
                dst[at] += src[q]


@_jit
def _ave_forward_plane(src, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dst):
    height, width = src.shape
    pooled_h, pooled_w = dst.shape
    for y in range(pooled_h):
        h0 = y * stride_h - pad_h
        h1 = min(h0 + kernel_h, height + pad_h)
        for x in range(pooled_w):
            w0 = x * stride_w - pad_w
            w1 = min(w0 + kernel_w, width + pad_w)
            pool_size = np.float32((h1 - h0) * (w1 - w0))
            acc = np.float32(0)
            for h in range(max(h0, 0), min(h1, height)):
                for w in range(max(w0, 0), min(w1, width)):
                    acc += src[h, w]
            dst[y, x] = acc / pool_size


@_jit
def _ave_pool_forward(bottom, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, top):
    num, channels = bottom.shape[0], bottom.shape[1]
    for nc in range(num * channels):
        n, c = nc // channels, nc % channels
        _ave_forward_plane(bottom[n, c], kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, top[n, c])


@_jit
def _ave_backward_plane(dst_diff, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, src_diff):
    height, width = src_diff.shape
    pooled_h, pooled_w = dst_diff.shape
    src_diff[:, :] = 0
    for y in range(pooled_h):
        h0 = y * stride_h - pad_h
        h1 = min(h0 + kernel_h, height + pad_h)
        for x in range(pooled_w):
            w0 = x * stride_w - pad_w
            w1 = min(w0 + kernel_w, width + pad_w)
            share = dst_diff[y, x] / np.float32((h1 - h0) * (w1 - w0))
            for h in range(max(h0, 0), min(h1, height)):
                for w in range(max(w0, 0), min(w1, width)):
                    src_diff[h, w] += share


@_jit
def _ave_pool_backward(top_diff, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, bottom_diff):
    num, channels = bottom_diff.shape[0], bottom_diff.shape[1]
    for nc in range(num * channels):
        n, c = nc // channels, nc % channels
        _ave_backward_plane(top_diff[n, c], kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                            bottom_diff[n, c])


# The public kernels split the batch over threads (npcaffe.parallel); each image
# is computed exactly as by the serial kernel.
def _by_images(kernel, batch_first, others, *args):
    """kernel(*batch_first[start:stop], *args, *others[start:stop]) over image ranges, in parallel."""
    if parallel.num_threads() == 1:
        kernel(*batch_first, *args, *others)
        return

    def part(start, stop):
        kernel(*(a[start:stop] for a in batch_first), *args, *(a[start:stop] for a in others))
    parallel.run(part, batch_first[0].shape[0])


def max_pool_forward(bottom, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, top, mask):
    _by_images(_max_pool_forward, (bottom,), (top, mask), kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w)


def max_pool_backward(top_diff, mask, bottom_diff):
    _by_images(_max_pool_backward, (top_diff, mask, bottom_diff), ())


def ave_pool_forward(bottom, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, top):
    _by_images(_ave_pool_forward, (bottom,), (top,), kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w)


def ave_pool_backward(top_diff, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, bottom_diff):
    _by_images(_ave_pool_backward, (top_diff,), (bottom_diff,), kernel_h, kernel_w, stride_h, stride_w, pad_h,
               pad_w)


def _windows(size, pooled, kernel, stride, pad):
    """Per output position: the window clipped to the image (start, end), and
    its extent clipped to the padded image only (Caffe's AVE pool_size)."""
    for p in range(pooled):
        start = p * stride - pad
        end = min(start + kernel, size + pad)
        yield p, max(start, 0), min(end, size), end - start


def max_pool_forward_reference(bottom, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, top, mask):
    """NumPy reference for `max_pool_forward` (same signature and semantics)."""
    num, channels, height, width = bottom.shape
    planes = bottom.reshape(num * channels, height * width)
    flat_top = top.reshape(num * channels, -1)
    flat_mask = mask.reshape(num * channels, -1)
    pooled_w = top.shape[3]
    for y, h0, h1, _ in _windows(height, top.shape[2], kernel_h, stride_h, pad_h):
        for x, w0, w1, _ in _windows(width, pooled_w, kernel_w, stride_w, pad_w):
            index = (np.arange(h0, h1)[:, None] * width + np.arange(w0, w1)[None, :]).ravel()
            out = y * pooled_w + x
            if index.size == 0:
                flat_top[:, out] = -_FLT_MAX
                flat_mask[:, out] = -1
                continue
            window = planes[:, index]
            # argmax returns the first maximum in scan order, as Caffe's strict '>'.
            first = np.argmax(window, axis=1)
            flat_top[:, out] = window[np.arange(window.shape[0]), first]
            flat_mask[:, out] = index[first]


def max_pool_backward_reference(top_diff, mask, bottom_diff):
    """NumPy reference for `max_pool_backward` (same signature and semantics)."""
    num, channels, height, width = bottom_diff.shape
    planes = bottom_diff.reshape(num * channels, height * width)
    planes[...] = 0
    arg = mask.reshape(num * channels, -1).astype(np.int64)
    diff = top_diff.reshape(num * channels, -1)
    rows = np.broadcast_to(np.arange(num * channels)[:, None], arg.shape)
    valid = (arg >= 0) & (arg < height * width)
    np.add.at(planes, (rows[valid], arg[valid]), diff[valid])


def ave_pool_forward_reference(bottom, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, top):
    """NumPy reference for `ave_pool_forward` (same signature and semantics)."""
    height, width = bottom.shape[2:]
    with np.errstate(divide="ignore", invalid="ignore"):
        for y, h0, h1, size_h in _windows(height, top.shape[2], kernel_h, stride_h, pad_h):
            for x, w0, w1, size_w in _windows(width, top.shape[3], kernel_w, stride_w, pad_w):
                window = bottom[:, :, h0:h1, w0:w1].reshape(bottom.shape[0], bottom.shape[1], -1)
                total = np.zeros(bottom.shape[:2], dtype=np.float32)
                for k in range(window.shape[2]):
                    total += window[:, :, k]
                top[:, :, y, x] = total / np.float32(size_h * size_w)


def ave_pool_backward_reference(top_diff, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, bottom_diff):
    """NumPy reference for `ave_pool_backward` (same signature and semantics)."""
    height, width = bottom_diff.shape[2:]
    bottom_diff[...] = 0
    with np.errstate(divide="ignore", invalid="ignore"):
        for y, h0, h1, size_h in _windows(height, top_diff.shape[2], kernel_h, stride_h, pad_h):
            for x, w0, w1, size_w in _windows(width, top_diff.shape[3], kernel_w, stride_w, pad_w):
                share = top_diff[:, :, y, x] / np.float32(size_h * size_w)
                bottom_diff[:, :, h0:h1, w0:w1] += share[:, :, None, None]
