"""Sparse (CSR) inference kernels for pruned InnerProduct and Convolution weights.

A weight blob W (num_output, K), with K = C*kh*kw for a convolution, is
packed by rows into CSR: row o holds the nonzero W[o, k] at
values[indptr[o]:indptr[o+1]], their k at indices[...] (ascending).

    inner product:  top[m, o] = sum_k W[o, k] * bottom[m, k]           (+ bias[o])
    convolution:    top[n, o, y, x] = sum_{(c, i, j) kept} W[o, (c, i, j)]
                        * bottom[n, c, y*stride_h - pad_h + i*dilation_h,
                                       x*stride_w - pad_w + j*dilation_w]  (+ bias[o])

with zeros outside the image, as npcaffe.kernels.im2col.  Sums run in
float32 over the kept weights in index order, then the bias is added once,
as the dense path adds it after its GEMM; the dense path's BLAS sums in
another order, so the two agree to float rounding, not to the bit.

Each Numba kernel has a NumPy reference beside it (through the dense
weights, im2col and a matrix product); the tests compare the two.
"""
import numpy as np
from numba import njit

from .im2col import im2col_reference

_jit = njit(cache=True, error_model="numpy")


def dense_to_csr(weight):
    """(indptr, indices, values) of a 2-D float32 array's nonzeros, row by row."""
    rows, cols = np.nonzero(weight)
    indptr = np.zeros(weight.shape[0] + 1, np.int32)
    np.cumsum(np.bincount(rows, minlength=weight.shape[0]), out=indptr[1:])
    return indptr, cols.astype(np.int32), np.ascontiguousarray(weight[rows, cols], dtype=np.float32)


def csr_to_dense(indptr, indices, values, shape):
    dense = np.zeros(shape, np.float32)
    rows = np.repeat(np.arange(shape[0]), np.diff(indptr))
    dense[rows, indices] = values
    return dense


@_jit
def csr_inner_product(bottom, indptr, indices, values, bias, top):
    """top (M, O) = bottom (M, K) . W^T (+ bias when bias.size > 0).

    One sample: a sparse dot per output.  Several: each kept weight is
    applied to the whole batch at once (an axpy over the samples of the
    transposed bottom), so the loop over samples vectorizes and no float
    dependency chain runs through it; each output still sums its terms in
    index order."""
    num, outputs = top.shape
    if num == 1:
        x = bottom[0]
        for o in range(outputs):
            s = np.float32(0)
            for p in range(indptr[o], indptr[o + 1]):
                s += values[p] * x[indices[p]]
            top[0, o] = s + bias[o] if bias.size else s
        return
    columns = np.ascontiguousarray(bottom.T)
    acc = np.empty(num, np.float32)
    for o in range(outputs):
        acc[:] = 0
        for p in range(indptr[o], indptr[o + 1]):
            v = values[p]
            x = columns[indices[p]]
            for m in range(num):
                acc[m] += v * x[m]
        if bias.size:
            for m in range(num):
                top[m, o] = acc[m] + bias[o]
        else:
            for m in range(num):
                top[m, o] = acc[m]


def csr_inner_product_reference(bottom, indptr, indices, values, bias, top):
    """NumPy reference for `csr_inner_product`."""
    top[...] = np.dot(bottom, csr_to_dense(indptr, indices, values, (top.shape[1], bottom.shape[1])).T)
    if bias.size:
        top += bias


@_jit
def _valid_range(offset, stride, size, count):
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
def _csr_convolution_by_image(bottom, indptr, indices, values, bias, kernel_h, kernel_w, pad_h, pad_w,
                              stride_h, stride_w, dilation_h, dilation_w, top):
    # Each kept weight adds its shifted, scaled input plane to the output plane.
    num = bottom.shape[0]
    height, width = bottom.shape[2], bottom.shape[3]
    outputs, out_h, out_w = top.shape[1], top.shape[2], top.shape[3]
    taps = kernel_h * kernel_w
    for n in range(num):
        for o in range(outputs):
            for y in range(out_h):
                for x in range(out_w):
                    top[n, o, y, x] = 0
            for p in range(indptr[o], indptr[o + 1]):
                k = indices[p]
                c = k // taps
                i = (k % taps) // kernel_w
                j = k % kernel_w
                v = values[p]
                off_h = i * dilation_h - pad_h
                off_w = j * dilation_w - pad_w
                y0, y1 = _valid_range(off_h, stride_h, height, out_h)
                x0, x1 = _valid_range(off_w, stride_w, width, out_w)
                for y in range(y0, y1):
                    h = y * stride_h + off_h
                    if stride_w == 1:
                        for x in range(x0, x1):
                            top[n, o, y, x] += v * bottom[n, c, h, x + off_w]
                    else:
                        for x in range(x0, x1):
                            top[n, o, y, x] += v * bottom[n, c, h, x * stride_w + off_w]
            if bias.size:
                b = bias[o]
                for y in range(out_h):
                    for x in range(out_w):
                        top[n, o, y, x] = top[n, o, y, x] + b


@_jit
def _csr_convolution_batched(bottom, indptr, indices, values, bias, kernel_h, kernel_w, pad_h, pad_w,
                             stride_h, stride_w, dilation_h, dilation_w, top, images, planes):
    # The batch as the innermost axis ((C, H, W, N) and (O, OH, OW, N) copies):
    # each kept weight is an axpy over all images of one pixel, contiguous and
    # long enough to vectorize, where the per-image planes give 8-wide rows.
    num, channels, height, width = bottom.shape
    outputs, out_h, out_w = top.shape[1], top.shape[2], top.shape[3]
    taps = kernel_h * kernel_w
    for n in range(num):
        for c in range(channels):
            for h in range(height):
                for w in range(width):
                    images[c, h, w, n] = bottom[n, c, h, w]
    planes[...] = 0
    for o in range(outputs):
        for p in range(indptr[o], indptr[o + 1]):
            k = indices[p]
            c = k // taps
            i = (k % taps) // kernel_w
            j = k % kernel_w
            v = values[p]
            off_h = i * dilation_h - pad_h
            off_w = j * dilation_w - pad_w
            y0, y1 = _valid_range(off_h, stride_h, height, out_h)
            x0, x1 = _valid_range(off_w, stride_w, width, out_w)
            for y in range(y0, y1):
                h = y * stride_h + off_h
                for x in range(x0, x1):
                    src = images[c, h, x * stride_w + off_w]
                    dst = planes[o, y, x]
                    for n in range(num):
                        dst[n] += v * src[n]
    for n in range(num):
        for o in range(outputs):
            b = bias[o] if bias.size else np.float32(0)
            for y in range(out_h):
                for x in range(out_w):
                    top[n, o, y, x] = planes[o, y, x, n] + b if bias.size else planes[o, y, x, n]


def csr_convolution(bottom, indptr, indices, values, bias, kernel_h, kernel_w, pad_h, pad_w,
                    stride_h, stride_w, dilation_h, dilation_w, top, scratch=None):
    """top (N, O, OH, OW) from bottom (N, C, H, W) and CSR weights (O, C*kh*kw).

    `scratch` (a dict, kept by the caller) holds the batch-innermost copies
    between calls; without it they are allocated here."""
    args = (bottom, indptr, indices, values, bias, kernel_h, kernel_w, pad_h, pad_w,
            stride_h, stride_w, dilation_h, dilation_w, top)
    num = bottom.shape[0]
    if num < 8:
        _csr_convolution_by_image(*args)
        return
    scratch = {} if scratch is None else scratch
    shapes = {"images": bottom.shape[1:] + (num,), "planes": top.shape[1:] + (num,)}
    for key, shape in shapes.items():
        if scratch.get(key) is None or scratch[key].shape != shape:
            scratch[key] = np.empty(shape, np.float32)
    _csr_convolution_batched(*args, scratch["images"], scratch["planes"])


def csr_convolution_reference(bottom, indptr, indices, values, bias, kernel_h, kernel_w, pad_h, pad_w,
                              stride_h, stride_w, dilation_h, dilation_w, top, scratch=None):
    """NumPy reference for `csr_convolution` (im2col, then the dense product)."""
    num, channels = bottom.shape[:2]
    outputs, out_h, out_w = top.shape[1:]
    col = np.empty((channels * kernel_h * kernel_w, num * out_h * out_w), np.float32)
    im2col_reference(bottom, kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w,
                     out_h, out_w, col)
    weight = csr_to_dense(indptr, indices, values, (outputs, col.shape[0]))
    out = np.dot(weight, col).reshape(outputs, num, out_h, out_w).transpose(1, 0, 2, 3)
    top[...] = out + bias.reshape(-1, 1, 1) if bias.size else out


@_jit
def same_values_chunked(a, b):
    """a == b element-wise everywhere (NaN never equal), flat float32 arrays of one size.

    Compares 1024 elements at a time without early exit inside a chunk, so
    LLVM vectorizes the loop: checking that a layer's weights did not change
    costs a small fraction of one forward pass."""
    n = a.size
    for start in range(0, n, 1024):
        stop = min(start + 1024, n)
        differ = False
        for k in range(start, stop):
            differ |= a[k] != b[k]
        if differ:
            return False
    return True
