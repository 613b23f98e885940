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

Training (the DNS layers' TRAIN forward and backward, when W * T is sparse;
npcaffe.layerlib.dns), on the convolutions' column path (the other path is
npcaffe.kernels.batch_inner, whose adjoint kernel the convolution backward
here also uses): the forward product from a column matrix, and the bottom
gradients

    convolution:    bottom_diff[n, c, h, w] = sum over kept W[o, (c, i, j)] and the
                        (y, x) that read (h, w): W[o, (c, i, j)] * top_diff[n, o, y, x]
    inner product:  bottom_diff (M, K) = top_diff (M, O) . W

each summed over the kept weights in (o, index) order, so again equal to
the dense path's to float rounding.  The weight gradient stays dense (DNS
gives it to every weight, pruned or not).

Each Numba kernel has a NumPy reference beside it (through the dense
weights, im2col and a matrix product); the tests compare the two.
"""
import numpy as np
from numba import njit

from .activation import relu_forward
from .batch_inner import from_batch_inner, sparse_conv_backward, sparse_conv_forward, to_batch_inner, valid_range
from .im2col import col2im_reference, im2col_reference
from .softmax import softmax_forward

_jit = njit(cache=True, error_model="numpy", nogil=True)


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
def csr_vector_product(x, indptr, indices, values, bias, y):
    """y (O,) = W . x (K,) (+ bias when bias.size > 0): one sparse dot per output."""
    for o in range(y.size):
        s = np.float32(0)
        for p in range(indptr[o], indptr[o + 1]):
            s += values[p] * x[indices[p]]
        y[o] = s + bias[o] if bias.size else s


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
        csr_vector_product(bottom[0], indptr, indices, values, bias, top[0])
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


@_jit
def csc_vector_product(x, colptr, rows, values, bias, y):
    """y (O,) = W . x (K,) (+ bias when bias.size > 0), W (O, K) packed by columns.

    The batch-1 product, with W stored column by column (the CSR of W^T:
    column k's weights at values[colptr[k]:colptr[k+1]], their rows at
    rows[...]).  Each nonzero input adds its scaled column into y, so the
    inputs that are zero (most pixels of an MNIST digit, half of a ReLU's
    outputs) cost nothing, and no float dependency chain runs through a
    row's terms.  Each y[o] still sums its terms in ascending k, as
    `csr_inner_product`; skipping x[k] == 0 drops terms W[o, k] * 0 = 0,
    exact for finite weights (the caller packs columns only for those)."""
    for o in range(y.size):
        y[o] = 0
    for k in range(x.size):
        xk = x[k]
        if xk != 0:
            for p in range(colptr[k], colptr[k + 1]):
                y[np.uint32(rows[p])] += values[p] * xk  # unsigned: no negative-index wrap
    if bias.size:
        for o in range(y.size):
            y[o] += bias[o]


def csc_vector_product_reference(x, colptr, rows, values, bias, y):
    """NumPy reference for `csc_vector_product`."""
    y[...] = np.dot(csr_to_dense(colptr, rows, values, (x.size, y.size)).T, x)
    if bias.size:
        y += bias


def csr_inner_product_reference(bottom, indptr, indices, values, bias, top):
    """NumPy reference for `csr_inner_product`."""
    top[...] = np.dot(bottom, csr_to_dense(indptr, indices, values, (top.shape[1], bottom.shape[1])).T)
    if bias.size:
        top += bias


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
                y0, y1 = valid_range(off_h, stride_h, height, out_h)
                x0, x1 = valid_range(off_w, stride_w, width, out_w)
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


def csr_convolution(bottom, indptr, indices, values, bias, kernel_h, kernel_w, pad_h, pad_w,
                    stride_h, stride_w, dilation_h, dilation_w, top, scratch=None):
    """top (N, O, OH, OW) from bottom (N, C, H, W) and CSR weights (O, C*kh*kw).

    From 8 images on, batch-innermost (npcaffe.kernels.batch_inner, the
    kernels DNS training uses): each kept weight is one long axpy over pixels
    and images.  `scratch` (a dict, kept by the caller) holds those layout
    copies between calls; without it they are allocated here."""
    num = bottom.shape[0]
    if num < 8:
        _csr_convolution_by_image(bottom, indptr, indices, values, bias, kernel_h, kernel_w, pad_h, pad_w,
                                  stride_h, stride_w, dilation_h, dilation_w, top)
        return
    scratch = {} if scratch is None else scratch
    shapes = {"images": bottom.shape[1:] + (num,), "planes": top.shape[1:] + (num,)}
    for key, shape in shapes.items():
        if scratch.get(key) is None or scratch[key].shape != shape:
            scratch[key] = np.empty(shape, np.float32)
    to_batch_inner(bottom, scratch["images"])
    sparse_conv_forward(scratch["images"], indptr, indices, values, kernel_h, kernel_w, pad_h, pad_w,
                        stride_h, stride_w, dilation_h, dilation_w, scratch["planes"])
    from_batch_inner(scratch["planes"], top, bias if bias.size else None)


def stride1_tap_offsets(indices, kernel_h, kernel_w, dilation_h, dilation_w, plane_h, plane_w):
    """For `csr_convolution_stride1`: each kept weight's offset into the flat (C, plane_h, plane_w)
    (padded) image, int32, in the order of `indices`."""
    taps = kernel_h * kernel_w
    c, tap = np.divmod(indices.astype(np.int64), taps)
    i, j = np.divmod(tap, kernel_w)
    offsets = (c * plane_h + i * dilation_h) * plane_w + j * dilation_w
    return offsets.astype(np.int32)


@_jit
def csr_convolution_stride1(bottom, indptr, offsets, values, bias, top, padded, wide):
    """top (N, O, OH, OW) from bottom (N, C, H, W), stride 1, image by image (small batches).

    Without im2col: the output plane is computed `wide`, on rows as long as
    the (padded) input's, so every kept weight is one contiguous axpy of
    (OH - 1) * plane_w + OW floats from its offset into the flat input
    (`stride1_tap_offsets`, which holds the kernel position and dilation;
    precomputed, so no index division here).  The columns beyond OW are
    wasted work, the price of the long vectorized loop; then the OW valid
    columns of each row are copied out, the bias added.  `padded` is a
    (C, H + 2 pad_h, W + 2 pad_w) buffer whose border the caller keeps at
    zero, or empty when there is no padding (the image is read in place);
    `wide` is (O, >= OH * plane_w).  Each output sums its kept weights in
    index order, then adds the bias, as `csr_columns_product`."""
    num, channels, height, width = bottom.shape
    outputs, out_h, out_w = top.shape[1], top.shape[2], top.shape[3]
    if padded.size:
        plane_h, plane_w = padded.shape[1], padded.shape[2]
    else:
        plane_h, plane_w = height, width
    pad_h, pad_w = (plane_h - height) // 2, (plane_w - width) // 2
    length = (out_h - 1) * plane_w + out_w
    for n in range(num):
        if padded.size:
            for c in range(channels):
                for h in range(height):
                    for w in range(width):
                        padded[c, h + pad_h, w + pad_w] = bottom[n, c, h, w]
            flat = padded.reshape(channels * plane_h * plane_w)
        else:
            flat = bottom[n].reshape(channels * plane_h * plane_w)
        for o in range(outputs):
            dst = wide[o]
            dst[:length] = 0
            for p in range(indptr[o], indptr[o + 1]):
                v = values[p]
                src = flat[offsets[p]:offsets[p] + length]
                for q in range(length):
                    dst[q] += v * src[q]
            for y in range(out_h):
                row = dst[y * plane_w:y * plane_w + out_w]
                out = top[n, o, y]
                if bias.size:
                    b = bias[o]
                    for x in range(out_w):
                        out[x] = row[x] + b
                else:
                    for x in range(out_w):
                        out[x] = row[x]


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


# -- training ----------------------------------------------------------------------
@_jit
def csr_columns_product(indptr, indices, values, bias, col, top):
    """top (N, O, P) = W (O, K) . col (K, N*P), per image, (+ bias when bias.size > 0).

    `col` is npcaffe.kernels.im2col's column matrix.  Image by image, each
    kept weight adds its scaled column segment (P long, contiguous) into the
    output row, which stays in L1; the bias is added after the sum."""
    num, outputs, plane = top.shape
    for n in range(num):
        start = n * plane
        for o in range(outputs):
            dst = top[n, o]
            dst[:] = 0
            for p in range(indptr[o], indptr[o + 1]):
                v = values[p]
                src = col[indices[p], start:start + plane]
                for q in range(plane):
                    dst[q] += v * src[q]
            if bias.size:
                b = bias[o]
                for q in range(plane):
                    dst[q] += b


def csr_columns_product_reference(indptr, indices, values, bias, col, top):
    """NumPy reference for `csr_columns_product`."""
    num, outputs, plane = top.shape
    weight = csr_to_dense(indptr, indices, values, (outputs, col.shape[0]))
    out = np.dot(weight, col).reshape(outputs, num, plane).transpose(1, 0, 2)
    top[...] = out + bias.reshape(-1, 1) if bias.size else out


def csr_convolution_backward(top_diff, indptr, indices, values, kernel_h, kernel_w, pad_h, pad_w,
                             stride_h, stride_w, dilation_h, dilation_w, bottom_diff, top_t, bottom_t):
    """Overwrite bottom_diff (N, C, H, W) with the gradient through CSR weights (O, C*kh*kw).

    On the batch-innermost copies top_t (O, OH, OW, N) and bottom_t
    (C, H, W, N), with npcaffe.kernels.batch_inner's kernel: each kept
    weight, at each output row, is one long axpy over pixels and images."""
    to_batch_inner(top_diff, top_t)
    sparse_conv_backward(top_t, indptr, indices, values, kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w,
                         dilation_h, dilation_w, bottom_t)
    from_batch_inner(bottom_t, bottom_diff)


def csr_convolution_backward_reference(top_diff, indptr, indices, values, kernel_h, kernel_w, pad_h, pad_w,
                                       stride_h, stride_w, dilation_h, dilation_w, bottom_diff,
                                       top_t=None, bottom_t=None):
    """NumPy reference for `csr_convolution_backward` (dense W^T . top_diff, then col2im)."""
    num, outputs, out_h, out_w = top_diff.shape
    taps = bottom_diff.shape[1] * kernel_h * kernel_w
    weight = csr_to_dense(indptr, indices, values, (outputs, taps))
    dy = top_diff.reshape(num, outputs, -1).transpose(1, 0, 2).reshape(outputs, -1)
    col2im_reference(np.dot(weight.T, dy), kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w,
                     dilation_h, dilation_w, out_h, out_w, bottom_diff)


@_jit
def _csr_inner_product_backward_t(indptr, indices, values, top_t, bottom_t):
    num = top_t.shape[1]
    bottom_t[...] = 0
    for o in range(top_t.shape[0]):
        for p in range(indptr[o], indptr[o + 1]):
            v = values[p]
            k = indices[p]
            for m in range(num):
                bottom_t[k, m] += v * top_t[o, m]


@_jit
def _csr_inner_product_backward_one(top_diff, indptr, indices, values, bottom_diff):
    bottom_diff[...] = 0
    for o in range(top_diff.shape[1]):
        g = top_diff[0, o]
        for p in range(indptr[o], indptr[o + 1]):
            bottom_diff[0, indices[p]] += values[p] * g


def csr_inner_product_backward(top_diff, indptr, indices, values, bottom_diff, top_t, bottom_t):
    """bottom_diff (M, K) = top_diff (M, O) . W, W (O, K) in CSR, overwritten.

    Several samples: each kept weight is an axpy over the samples, on the
    transposed scratch copies top_t (O, M) and bottom_t (K, M)."""
    if top_diff.shape[0] == 1:
        _csr_inner_product_backward_one(top_diff, indptr, indices, values, bottom_diff)
        return
    np.copyto(top_t, top_diff.T)
    _csr_inner_product_backward_t(indptr, indices, values, top_t, bottom_t)
    np.copyto(bottom_diff, bottom_t.T)


def csr_inner_product_backward_reference(top_diff, indptr, indices, values, bottom_diff, top_t=None,
                                         bottom_t=None):
    """NumPy reference for `csr_inner_product_backward`."""
    weight = csr_to_dense(indptr, indices, values, (top_diff.shape[1], bottom_diff.shape[1]))
    bottom_diff[...] = np.dot(top_diff, weight)


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


# -- fused chains of inference layers -----------------------------------------------------
# The step codes of `sparse_chain_forward` (column 0 of `steps`).
CHAIN_ROWS = 0      # sparse inner product, CSR rows: csr_inner_product
CHAIN_COLUMNS = 1   # sparse inner product of one sample, by columns: csc_vector_product
CHAIN_RELU = 2      # ReLU with negative_slope 0: relu_forward
CHAIN_SOFTMAX = 3   # softmax_forward
CHAIN_STEP_WIDTH = 10


@_jit
def sparse_chain_forward(blobs, steps, pointers, indices, values, biases):
    """Run consecutive inference layers in one call, each with its own kernel.

    At batch 1 a layer's arithmetic takes about as long as a Python call
    into Numba, so a pruned MLP spends most of its forward in calls; this
    makes one call for the whole run (npcaffe.sparse.ChainPlan).  The
    kernels are the ones the layers call, with the same arguments, so the
    results are the same bits.

    blobs: flat float32 data of the blobs the steps read and write.  steps:
    one int64 row per layer, [code, bottom, top, ...] with bottom / top
    indexing `blobs`, then for the inner products num, outputs, inputs,
    pointer offset, value offset, bias offset (-1: none), nonzeros, and for
    softmax outer, channels, inner.  pointers / indices / values / biases:
    the packed weights of every inner product, one after another (each
    layer's pointers count from its own first value)."""
    for s in range(steps.shape[0]):
        code = steps[s, 0]
        x = blobs[steps[s, 1]]
        y = blobs[steps[s, 2]]
        if code == CHAIN_RELU:
            relu_forward(x, y)
        elif code == CHAIN_SOFTMAX:
            shape = (steps[s, 3], steps[s, 4], steps[s, 5])
            softmax_forward(x.reshape(shape), y.reshape(shape))
        else:
            num, outputs, inputs = steps[s, 3], steps[s, 4], steps[s, 5]
            first, start, bias_start, nnz = steps[s, 6], steps[s, 7], steps[s, 8], steps[s, 9]
            bias = biases[bias_start:bias_start + outputs] if bias_start >= 0 else biases[:0]
            if code == CHAIN_COLUMNS:
                csc_vector_product(x, pointers[first:first + inputs + 1], indices[start:start + nnz],
                                   values[start:start + nnz], bias, y)
            else:
                csr_inner_product(x.reshape((num, inputs)), pointers[first:first + outputs + 1],
                                  indices[start:start + nnz], values[start:start + nnz], bias,
                                  y.reshape((num, outputs)))
