"""Convolution in the batch-innermost layout, for training with sparse weights.

The DNS layers train LeNet-style nets whose masks keep a few percent of
the weights.  Their forward product and bottom gradient then cost a few
million multiply-adds, far less than unrolling the input (im2col) for a
GEMM.  These kernels work on copies of the blobs with the batch as the
innermost axis:

    images (C, H, W, N)      planes (O, OH, OW, N)      col (C*kh*kw, OH, OW, N)

so that one kept weight, applied at one output row, is a single axpy over
OW * N contiguous floats (stride 1) or over N floats per output pixel:
long, contiguous and vectorized, with no dependency chain through it.

    forward:   planes[o, y, x, :] = sum over kept W[o, (c, i, j)] of
                   W[o, (c, i, j)] * images[c, y*sh - ph + i*dh, x*sw - pw + j*dw, :]
    backward:  images_diff[c, h, w, :] = the adjoint (sum over kept weights and the
                   outputs that read (h, w))
    im2col:    col[(c, i, j), y, x, :] = images[c, y*sh - ph + i*dh, x*sw - pw + j*dw, :]

with zeros outside the image (as npcaffe.kernels.im2col).  The column
matrix in this layout makes the (dense) weight gradient one GEMM,
dW (O, C*kh*kw) = planes_diff (O, OH*OW*N) . col (C*kh*kw, OH*OW*N)^T,
summed over (y, x, n) rather than Caffe's (n, y, x): equal to float rounding.
Each kept weight's terms are added in (o, index) order.

`to_batch_inner` / `from_batch_inner` make the layout copies.  Every
kernel takes a range of independent items (output or input channels,
blocks of rows) and is split over threads by npcaffe.parallel; each item is
computed the same way whatever the split, so results do not depend on the
thread count.  Each kernel has a NumPy reference beside it; the tests
compare the two.
"""
import numpy as np
from numba import njit

from .. import parallel
from .im2col import im2col_reference

_jit = njit(cache=True, error_model="numpy", nogil=True)
_BLOCK = 32  # source rows per transposing step: 32 floats, two 64-byte lines per destination row


def to_batch_inner(blob_data, out):
    """out (..., N) = blob_data (N, ...) with the batch moved innermost."""
    num = blob_data.shape[0]
    src, dst = blob_data.reshape(num, -1), out.reshape(-1, num)
    # NumPy's copy is fast in this direction (it writes dst in order); split by dst rows.
    parallel.run(_copy_transposed, dst.shape[0], src, dst, min_items=1024)


def _copy_transposed(src, dst, start, stop):
    np.copyto(dst[start:stop], src[:, start:stop].T)


_NO_BIAS = np.zeros(0, np.float32)


def from_batch_inner(data, out, bias=None):
    """out (N, O, ...) = data (O, ..., N) moved back batch-first, + bias[o] if given."""
    num = out.shape[0]
    src = data.reshape(-1, num)
    plane = src.shape[0] // out.shape[1]  # rows of src per output channel
    bias = _NO_BIAS if bias is None else bias
    parallel.run(_transpose, -(-src.shape[0] // _BLOCK), src, out.reshape(num, -1), bias, plane, min_items=64)


@_jit
def _transpose(src, dst, bias, plane, start, stop):
    # dst (C, R) = src (R, C)^T (+ bias[r // plane] when bias.size) for source rows in
    # blocks start..stop of _BLOCK.  A block of source rows at a time, so that each
    # visit to a destination row writes _BLOCK contiguous values: NumPy's copy of a
    # transposed view reads or writes a cache line per value and is up to 8x slower
    # on LeNet-size planes.  32 rows rather than 16 halved the time inside a LeNet-5
    # iteration, where the destination is not in cache.  The bias is added here, one
    # float32 add as a separate pass would make, to save that pass.
    rows, cols = src.shape
    add = np.zeros(_BLOCK, np.float32)
    for block in range(start, stop):
        r0 = block * _BLOCK
        r1 = min(r0 + _BLOCK, rows)
        if bias.size:
            for r in range(r1 - r0):
                add[r] = bias[(r0 + r) // plane]
        if r1 - r0 == _BLOCK:
            for c in range(cols):
                d = dst[c, r0:r0 + _BLOCK]
                if bias.size:
                    for r in range(_BLOCK):
                        d[r] = src[r0 + r, c] + add[r]
                else:
                    for r in range(_BLOCK):
                        d[r] = src[r0 + r, c]
        else:
            for c in range(cols):
                for r in range(r1 - r0):
                    dst[c, r0 + r] = src[r0 + r, c] + add[r] if bias.size else src[r0 + r, c]


@_jit
def valid_range(offset, stride, size, count):
    """Output positions q in [lo, hi) with 0 <= q*stride + offset < size."""
    lo = 0
    if offset < 0:
        lo = (-offset + stride - 1) // stride
    hi = 0
    if size - 1 - offset >= 0:
        hi = (size - 1 - offset) // stride + 1
    hi = min(hi, count)
    return min(lo, hi), hi


@_jit
def _sparse_conv(images, indptr, indices, values, kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w,
                 dilation_h, dilation_w, planes, adjoint, start, stop):
    # adjoint False: planes[o] = (W . images)[o] for outputs o in [start, stop);
    # adjoint True: images[c] = (W^T . planes)[c] for input channels c in [start, stop).
    # Either way each item sums its terms in (o, index) order.
    channels, height, width, num = images.shape
    outputs, out_h, out_w = planes.shape[0], planes.shape[1], planes.shape[2]
    img = images.reshape(-1)
    pln = planes.reshape(-1)
    taps = kernel_h * kernel_w
    if adjoint:
        images[start:stop] = 0
        first_o, last_o = 0, outputs
    else:
        planes[start:stop] = 0
        first_o, last_o = start, stop
    for o in range(first_o, last_o):
        for p in range(indptr[o], indptr[o + 1]):
            k = indices[p]
            c = k // taps
            if adjoint and not start <= c < stop:
                continue
            i = (k % taps) // kernel_w
            j = k % kernel_w
            v = values[p]
            off_h = i * dilation_h - pad_h
            off_w = j * dilation_w - pad_w
            y0, y1 = valid_range(off_h, stride_h, height, out_h)
            x0, x1 = valid_range(off_w, stride_w, width, out_w)
            if x1 <= x0:
                continue
            for y in range(y0, y1):
                h = y * stride_h + off_h
                at_img = ((c * height + h) * width + x0 * stride_w + off_w) * num
                at_pln = ((o * out_h + y) * out_w + x0) * num
                if stride_w == 1:
                    # One contiguous run of (x1 - x0) pixels x N images.  Slices, not
                    # offset arithmetic, so the loop index is provably non-negative and
                    # the loop vectorizes.
                    run = (x1 - x0) * num
                    a = img[at_img:at_img + run]
                    b = pln[at_pln:at_pln + run]
                    if adjoint:
                        for q in range(run):
                            a[q] += v * b[q]
                    else:
                        for q in range(run):
                            b[q] += v * a[q]
                else:
                    for x in range(x1 - x0):
                        a = img[at_img + x * stride_w * num:at_img + x * stride_w * num + num]
                        b = pln[at_pln + x * num:at_pln + x * num + num]
                        if adjoint:
                            for q in range(num):
                                a[q] += v * b[q]
                        else:
                            for q in range(num):
                                b[q] += v * a[q]


def sparse_conv_forward(images, indptr, indices, values, kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w,
                        dilation_h, dilation_w, planes):
    """Overwrite planes (O, OH, OW, N) with W . images for CSR weights W (O, C*kh*kw), no bias."""
    parallel.run(_sparse_conv, planes.shape[0], images, indptr, indices, values, kernel_h, kernel_w, pad_h, pad_w,
                 stride_h, stride_w, dilation_h, dilation_w, planes, False)


def sparse_conv_backward(planes_diff, indptr, indices, values, kernel_h, kernel_w, pad_h, pad_w, stride_h,
                         stride_w, dilation_h, dilation_w, images_diff):
    """Overwrite images_diff (C, H, W, N) with the gradient through CSR weights W (O, C*kh*kw)."""
    parallel.run(_sparse_conv, images_diff.shape[0], images_diff, indptr, indices, values, kernel_h, kernel_w,
                 pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w, planes_diff, True)


def im2col_batch_inner(images, kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w,
                       out_w, y_start, col):
    """col (C*kh*kw, rows, OW, N) from images (C, H, W, N) for output rows
    y_start .. y_start + rows - 1; col rows in Caffe's (c, i, j) order."""
    parallel.run(_im2col_batch_inner, images.shape[0], images, kernel_h, kernel_w, pad_h, pad_w, stride_h,
                 stride_w, dilation_h, dilation_w, out_w, y_start, col)


@_jit
def _im2col_batch_inner(images, kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w,
                        out_w, y_start, col, start, stop):
    # Input channels start..stop: their kh*kw rows of col.
    channels, height, width, num = images.shape
    rows = col.shape[1]
    for c in range(start, stop):
        for i in range(kernel_h):
            for j in range(kernel_w):
                off_h = i * dilation_h - pad_h
                off_w = j * dilation_w - pad_w
                x0, x1 = valid_range(off_w, stride_w, width, out_w)
                for r in range(rows):
                    out = col[(c * kernel_h + i) * kernel_w + j, r].reshape(-1)  # (OW * N)
                    h = (y_start + r) * stride_h + off_h
                    if h < 0 or h >= height or x1 <= x0:
                        out[:] = 0
                        continue
                    for q in range(x0 * num):
                        out[q] = 0
                    for q in range(x1 * num, out_w * num):
                        out[q] = 0
                    if stride_w == 1:
                        src = images[c, h, x0 + off_w:x1 + off_w].reshape(-1)
                        dst = out[x0 * num:x1 * num]
                        for q in range(src.size):
                            dst[q] = src[q]
                    else:
                        for x in range(x0, x1):
                            src = images[c, h, x * stride_w + off_w]
                            dst = out[x * num:(x + 1) * num]
                            for q in range(num):
                                dst[q] = src[q]


# -- NumPy references (tests) -----------------------------------------------------------
def im2col_batch_inner_reference(images, kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w, dilation_h,
                                 dilation_w, out_w, y_start, col):
    batch_first = np.ascontiguousarray(np.moveaxis(images, -1, 0))
    num, rows = batch_first.shape[0], col.shape[1]
    out_h = y_start + rows
    flat = np.empty((col.shape[0], num * out_h * out_w), np.float32)
    im2col_reference(batch_first, kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w,
                     out_h, out_w, flat)
    col[...] = np.moveaxis(flat.reshape(-1, num, out_h, out_w), 1, -1)[:, y_start:]
