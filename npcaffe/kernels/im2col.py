"""im2col / col2im over a whole batch: the column matrix behind Convolution.

For an image batch `im` of shape (N, C, H, W) and an output grid of
(out_h, out_w) positions, the column matrix `col` has shape
(C * kernel_h * kernel_w, N * out_h * out_w):

    col[(c, i, j), (n, y, x)] = im[n, c, y*stride_h - pad_h + i*dilation_h,
                                         x*stride_w - pad_w + j*dilation_w]

and 0 where that tap falls outside the image (in the padding).  Rows are
ordered (c, i, j) exactly as in Caffe's im2col_cpu (util/im2col.cpp), so a
weight blob (num_output, C, kh, kw) reshaped to (num_output, C*kh*kw) is the
left operand of the GEMM.  Caffe builds the columns of one image at a time;
we lay the images side by side along the columns so that one GEMM covers
the whole batch.

col2im is the adjoint: it overwrites `im` with the sum of every column entry
into the pixel it was read from.  For each pixel the terms are added in
Caffe's order (kernel row, then kernel column), so given the same columns
the result is bit-identical to Caffe's col2im_cpu.

`out_h` / `out_w` are passed in rather than recomputed, because the caller
owns the output-size rule (Caffe's C integer division).

Each Numba kernel has a NumPy reference beside it with the same signature
and semantics; the tests compare the two.
"""
import numpy as np
from numba import njit

from .. import parallel


# Split over images by npcaffe.parallel (not Numba's parallel=True,
# whose OpenMP threads spin-wait against OpenBLAS's: see that module).
# error_model="numpy" drops Python's zero-division checks from the integer
# index arithmetic.  Every kernel walks `col` row by row, in memory order
# (writing 16 KB-strided rows image by image thrashes the TLB).
#
# `im2col` / `col2im` dispatch: the common case (no padding, stride 1, no
# dilation: every LeNet convolution) goes to a kernel whose innermost loop
# is a plain contiguous copy / add that LLVM vectorizes; the general kernel,
# with its per-element bounds test, is 3-5 times slower on that case.
_jit = njit(cache=True, error_model="numpy", nogil=True)
_kernel = njit(cache=True, error_model="numpy", nogil=True)


@_jit
def _dense_geometry(pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w):
    return pad_h == 0 and pad_w == 0 and stride_h == 1 and stride_w == 1 and dilation_h == 1 and dilation_w == 1


@_kernel
def _im2col_dense(im, kernel_h, kernel_w, out_h, out_w, col, start, stop):
    channels = im.shape[1]
    plane = out_h * out_w
    for c in range(channels):
        for i in range(kernel_h):
            for j in range(kernel_w):
                # Images start..stop as a loop from 0: Numba adds a wraparound test to
                # indices it cannot prove non-negative, which stops vectorization.
                dst = col[(c * kernel_h + i) * kernel_w + j, start * plane:]
                for n in range(stop - start):
                    src = im[start + n, c]
                    d = n * plane
                    for y in range(out_h):
                        row = src[y + i]
                        for x in range(out_w):
                            dst[d + x] = row[x + j]
                        d += out_w


@_jit
def _valid_columns(offset, stride, size, out):
    """The output positions x in [x0, x1) whose input x * stride + offset lies in [0, size)."""
    x0 = 0 if offset >= 0 else (stride - 1 - offset) // stride
    last = size - 1 - offset
    x1 = 0 if last < 0 else min(out, last // stride + 1)
    x0 = min(x0, out)
    return x0, max(x0, x1)


@_kernel
def _im2col_general(im, kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w,
                    dilation_h, dilation_w, out_h, out_w, col, start, stop):
    channels, height = im.shape[1], im.shape[2]
    width = im.shape[3]
    plane = out_h * out_w
    for c in range(channels):
        for i in range(kernel_h):
            for j in range(kernel_w):
                dst_row = col[(c * kernel_h + i) * kernel_w + j]
                offset = j * dilation_w - pad_w
                x0, x1 = _valid_columns(offset, stride_w, width, out_w)
                for n in range(start, stop):
                    for y in range(out_h):
                        h = y * stride_h - pad_h + i * dilation_h
                        dst = dst_row[n * plane + y * out_w:]
                        if h < 0 or h >= height:
                            for x in range(out_w):
                                dst[x] = 0
                            continue
                        # The padding around the valid run, then the run: a contiguous copy at
                        # stride 1 (indices from 0, so that Numba can vectorise it).
                        for x in range(x0):
                            dst[x] = 0
                        for x in range(x1, out_w):
                            dst[x] = 0
                        run = dst[x0:x1]
                        src = im[n, c, h, x0 * stride_w + offset:]
                        if stride_w == 1:
                            for x in range(x1 - x0):
                                run[x] = src[x]
                        else:
                            for x in range(x1 - x0):
                                run[x] = src[x * stride_w]


def im2col(im, kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w,
           dilation_h, dilation_w, out_h, out_w, col):
    if _dense_geometry(pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w):
        parallel.run(_im2col_dense, im.shape[0], im, kernel_h, kernel_w, out_h, out_w, col)
    else:
        parallel.run(_im2col_general, im.shape[0], im, kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w,
                     dilation_h, dilation_w, out_h, out_w, col)


@_kernel
def _col2im_dense(col, kernel_h, kernel_w, out_h, out_w, im, start, stop):
    channels = im.shape[1]
    plane = out_h * out_w
    im[start:stop] = 0
    for c in range(channels):
        for i in range(kernel_h):
            for j in range(kernel_w):
                src = col[(c * kernel_h + i) * kernel_w + j, start * plane:]  # from 0: see _im2col_dense
                for n in range(stop - start):
                    dst = im[start + n, c]
                    d = n * plane
                    for y in range(out_h):
                        row = dst[y + i]
                        for x in range(out_w):
                            row[x + j] += src[d + x]
                        d += out_w


@_kernel
def _col2im_general(col, kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w,
                    dilation_h, dilation_w, out_h, out_w, im, start, stop):
    channels, height = im.shape[1], im.shape[2]
    width = im.shape[3]
    plane = out_h * out_w
    im[start:stop] = 0
    for c in range(channels):
        for i in range(kernel_h):
            for j in range(kernel_w):
                src_row = col[(c * kernel_h + i) * kernel_w + j]
                offset = j * dilation_w - pad_w
                x0, x1 = _valid_columns(offset, stride_w, width, out_w)
                if x1 == x0:
                    continue
                for n in range(start, stop):
                    for y in range(out_h):
                        h = y * stride_h - pad_h + i * dilation_h
                        if h < 0 or h >= height:
                            continue
                        src = src_row[n * plane + y * out_w + x0:]
                        dst = im[n, c, h, x0 * stride_w + offset:]
                        if stride_w == 1:
                            for x in range(x1 - x0):
                                dst[x] += src[x]
                        else:
                            for x in range(x1 - x0):
                                dst[x * stride_w] += src[x]


def col2im(col, kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w,
           dilation_h, dilation_w, out_h, out_w, im):
    if _dense_geometry(pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w):
        parallel.run(_col2im_dense, im.shape[0], col, kernel_h, kernel_w, out_h, out_w, im)
    else:
        parallel.run(_col2im_general, im.shape[0], col, kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w,
                     dilation_h, dilation_w, out_h, out_w, im)


@_jit
def same_values(a, b):
    """True iff the flat arrays a and b hold equal values (a NaN is never equal).

    Lets Convolution check, without allocating, that its bottom is unchanged
    since forward, so the column matrix built there can serve backward."""
    if a.size != b.size:
        return False
    for k in range(a.size):
        if a[k] != b[k]:
            return False
    return True


def same_values_reference(a, b):
    """NumPy reference for `same_values`."""
    return a.size == b.size and bool(np.array_equal(a, b))


def _padded_extent(size, pad, kernel, stride, dilation, out):
    # Caffe's truncating division can yield an output whose last window
    # reaches past the far padding; pad that side further so slicing works.
    needed = (out - 1) * stride + dilation * (kernel - 1) + 1
    return pad, max(pad, needed - size - pad)


def _tap_slices(i, j, stride_h, stride_w, dilation_h, dilation_w, out_h, out_w):
    h0, w0 = i * dilation_h, j * dilation_w
    return (slice(h0, h0 + stride_h * (out_h - 1) + 1, stride_h),
            slice(w0, w0 + stride_w * (out_w - 1) + 1, stride_w))


def im2col_reference(im, kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w,
                     dilation_h, dilation_w, out_h, out_w, col):
    """NumPy reference for `im2col` (same signature and semantics)."""
    num, channels, height, width = im.shape
    ph = _padded_extent(height, pad_h, kernel_h, stride_h, dilation_h, out_h)
    pw = _padded_extent(width, pad_w, kernel_w, stride_w, dilation_w, out_w)
    padded = np.pad(im, ((0, 0), (0, 0), ph, pw))
    rows = col.reshape(channels, kernel_h, kernel_w, num, out_h, out_w)
    for i in range(kernel_h):
        for j in range(kernel_w):
            sh, sw = _tap_slices(i, j, stride_h, stride_w, dilation_h, dilation_w, out_h, out_w)
            rows[:, i, j] = padded[:, :, sh, sw].transpose(1, 0, 2, 3)


def col2im_reference(col, kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w,
                     dilation_h, dilation_w, out_h, out_w, im):
    """NumPy reference for `col2im` (same signature and semantics)."""
    num, channels, height, width = im.shape
    ph = _padded_extent(height, pad_h, kernel_h, stride_h, dilation_h, out_h)
    pw = _padded_extent(width, pad_w, kernel_w, stride_w, dilation_w, out_w)
    padded = np.zeros((num, channels, height + sum(ph), width + sum(pw)), dtype=im.dtype)
    rows = col.reshape(channels, kernel_h, kernel_w, num, out_h, out_w)
    for i in range(kernel_h):
        for j in range(kernel_w):
            sh, sw = _tap_slices(i, j, stride_h, stride_w, dilation_h, dilation_w, out_h, out_w)
            padded[:, :, sh, sw] += rows[:, i, j].transpose(1, 0, 2, 3)
    im[...] = padded[:, :, ph[0]:ph[0] + height, pw[0]:pw[0] + width]


# -- any number of spatial axes (Caffe's im2col_nd_cpu / col2im_nd_cpu) --------------------
def _nd_tap_slices(offsets, dilation, stride, out_shape):
    # The strided window of the padded image that one kernel tap reads, per spatial axis.
    return tuple(slice(o * d, o * d + s * (n - 1) + 1, s) for o, d, s, n in zip(offsets, dilation, stride, out_shape))


def im2col_nd(im, kernel, pad, stride, dilation, out_shape, col):
    """col (C * prod(kernel), prod(out_shape)) of one image im (C, *spatial), any number of axes.

    col[(c, k...), (y...)] = im[c, y*stride - pad + k*dilation] (0 in the padding), rows in
    Caffe's order (channel, then the kernel offsets in C order), as im2col_nd_cpu.  NumPy:
    one strided copy per kernel tap."""
    channels = im.shape[0]
    padded = np.pad(im, [(0, 0)] + [(p, p) for p in pad]) if any(pad) else im
    view = col.reshape((channels,) + tuple(kernel) + tuple(out_shape))
    for offsets in np.ndindex(*kernel):
        view[(slice(None),) + offsets] = padded[(slice(None),) + _nd_tap_slices(offsets, dilation, stride, out_shape)]


def col2im_nd(col, kernel, pad, stride, dilation, out_shape, im):
    """The adjoint of im2col_nd: im (C, *spatial) = every column entry summed into the pixel it
    was read from, the taps in Caffe's order (col2im_nd_cpu), padding dropped."""
    channels, spatial = im.shape[0], im.shape[1:]
    padded = np.zeros((channels,) + tuple(n + 2 * p for n, p in zip(spatial, pad)), np.float32)
    view = col.reshape((channels,) + tuple(kernel) + tuple(out_shape))
    for offsets in np.ndindex(*kernel):
        padded[(slice(None),) + _nd_tap_slices(offsets, dilation, stride, out_shape)] += view[(slice(None),) + offsets]
    im[...] = padded[(slice(None),) + tuple(slice(p, p + n) for p, n in zip(pad, spatial))]
