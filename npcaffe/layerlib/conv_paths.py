"""Convolution's compute paths: each a way of computing a Convolution layer, picked by the layer.

npcaffe.layerlib.convolution.Convolution owns the parameters, the shapes
and the choice; each class here computes, with its own work arrays:

    DenseColumns      dense weights, 2 spatial axes: the batch's im2col, one GEMM per group
    ImageColumns      dense weights, 2 spatial axes, a batch of large outputs: Caffe's loop,
                      one image's im2col and GEMMs at a time
    Depthwise         dense weights, 2 spatial axes, group = C (one input channel per group):
                      the windows read in place (npcaffe.kernels.depthwise), no im2col
    Winograd          dense weights, 3x3 stride 1, asked for by engine: WINOGRAD: F(2x2, 3x3)
    NdColumns         dense weights, 1 or 3+ spatial axes: Caffe's N-D path, image by image
    SparseBatchInner  TRAIN, sparse weights (CSR): batch-innermost kernels, no im2col in forward
    SparseStride1     TRAIN, sparse weights, stride 1: a direct kernel in forward
    SparseColumns     TRAIN, sparse weights: column chunks
    PackedStride1     TEST, packed weights (npcaffe.sparse.packing), a few images, stride 1
    PackedColumns     TEST, packed weights, a few images, any stride
    PackedBatchInner  TEST, packed weights, from SMALL_BATCH images on

`per_image_weight_gradient` is the weight gradient as one small GEMM per
image, used by the column paths when the weights per output are few.

All compute the same convolution (Convolution's docstring has the
formula), summed in different orders, so they agree with each other and
with Caffe to float rounding; each path computes the same way every time,
so a run repeats to the bit.  The sparse paths (CSR rows (indptr, indices,
values) of the (O, C*kh*kw) weights, group 1, 2-D) run the forward product
and the bottom gradient on sparse kernels; their weight gradient is dense
(DNS trains every weight).  tests/layerlib/test_conv_paths.py checks each
against a NumPy reference convolution.

Interface.  A path is built by the layer for one ConvShape and a Scratch
the layer keeps across shapes.  Dense and TRAIN paths have
`forward(bottom, top, weight, bias, csr)` (weight: the (O, C/g, kh, kw)
array or None when csr is given; bias: (O,) or None) and
`backward(top, propagate_down, bottom, weight, csr, weight_diff, bias_diff)`,
which adds the weight and bias gradients into `weight_diff` / `bias_diff`
(the parameter blobs' diffs, or None when not wanted) and overwrites the
bottom diffs, as Caffe's GEMMs with beta = 1 and col2im do.  A path with
`writes_fresh_weight_diff` also takes `fresh`: the weight diff is a deferred
clear's promised zeros (Blob.clear_diff), which the path writes its gradient
over instead of adding to (the same numbers, two passes fewer).  TEST paths have
`forward(pairs, packed)` over [(image (N, C, H, W), top (N, O, OH, OW))].

np.dot, not np.matmul, for the matrix products with out=: with a transposed
operand NumPy 2's matmul can leave BLAS for a far slower loop; np.dot always
calls sgemm, passing transposes as flags.  (per_image_weight_gradient's
stacked product is np.matmul's alone.)
"""
import math
from typing import NamedTuple

import numpy as np

from ..kernels.batch_inner import (from_batch_inner, im2col_batch_inner, sparse_conv_backward, sparse_conv_forward,
                                   to_batch_inner)
from ..kernels.depthwise import depthwise_backward, depthwise_forward
from ..kernels.im2col import col2im, col2im_nd, im2col, im2col_nd, same_values
from ..kernels.winograd import convolution as winograd_convolution, filter_transform
from ..kernels.sparse import (csr_columns_product, csr_convolution, csr_convolution_backward,
                              csr_convolution_stride1, stride1_tap_offsets)

_EMPTY = np.zeros(0, np.float32)
# Up to this many weights per output (C/group * kh * kw), the weight gradient is one
# GEMM per image (N small products, summed) rather than one over the batch: for
# LeNet-5's conv1 (25) that is twice as fast and needs no transposed copy of the
# top diff; for conv2 (500) one GEMM is (README, section Speed).
PER_IMAGE_WEIGHT_GRAD_TAPS = 64
# From this many output positions (OH * OW) on, a batch's dense convolution goes image by
# image (ImageColumns) instead of through the batch's columns (DenseColumns); a 1x1 kernel
# (no im2col to build per image) from IMAGE_COLUMNS_POSITIONS_1X1.  One image's GEMMs are
# then wide enough, and the batch layout's transposed copies of the top and its diff, the
# check of the saved columns and a column matrix far larger than the caches cost more than
# unrolling each image again in backward.  `python tools/bench.py --conv_paths` (batch 16,
# idle, forward + backward, 1 and 2 threads): 1.15-2.2x from 729 positions (AlexNet's conv2
# 1.03-1.11x), 1x1 kernels 1.09-1.31x at 196 (ResNet's 14x14), 3x3 at 196 0.87-0.98x, at
# 49 (7x7) 0.5-0.7x; LeNet's layers (at most 576 positions, 5x5) stay on DenseColumns.
IMAGE_COLUMNS_POSITIONS = 729
IMAGE_COLUMNS_POSITIONS_1X1 = 196
# SparseColumns unrolls this many floats of columns at a time.
COLUMN_CHUNK_FLOATS = 1 << 17
# SparseBatchInner's weight gradient unrolls about this many floats (1 MB, half of L2)
# per GEMM: LeNet-5's conv2 one output row of 8 at a time, 0.5-0.9 ms faster per training
# iteration than its whole 8 MB column matrix (in-process A/B, README).
WEIGHT_GRAD_BAND_FLOATS = 1 << 18


class ConvShape(NamedTuple):
    """A convolution at its current input size: what a compute path is built for."""
    num: int             # N, images (the product of the axes before the channel axis)
    channels: int        # C
    num_output: int      # O
    group: int
    kernel: tuple        # one entry per spatial axis, as the next three
    pad: tuple
    stride: tuple
    dilation: tuple
    image: tuple         # input spatial shape: (H, W), or (D, H, W), ...
    out: tuple           # output spatial shape: (OH, OW), ...

    def taps(self):
        """Weights per output: C / group * prod(kernel)."""
        return self.channels // self.group * math.prod(self.kernel)


class Scratch:
    """Named float32 work arrays that grow with the shapes and never shrink,
    so steady-state forward/backward passes allocate nothing."""

    def __init__(self):
        self._arrays = {}

    def get(self, key, shape):
        size = math.prod(shape)
        array = self._arrays.get(key)
        if array is None or array.size < size:
            array = np.empty(size, dtype=np.float32)
            self._arrays[key] = array
        return array[:size].reshape(shape)


class _Path2d:
    """What the 2-D paths share: the shape, the work arrays and im2col's geometry arguments."""

    keep_for_backward = True  # the layer sets it False when its net will never run its backward
    writes_fresh_weight_diff = False  # backward takes `fresh` (the module docstring)

    def __init__(self, shape, scratch):
        self.shape, self.scratch = shape, scratch
        self.out_h, self.out_w = shape.out
        self.positions = self.out_h * self.out_w
        # kernel, pad, stride, dilation, output size: the argument list of the 2-D kernels
        self.geometry = (*shape.kernel, *shape.pad, *shape.stride, *shape.dilation, self.out_h, self.out_w)

    def image(self, array):
        """(N, C, H, W) view of a bottom's data or diff."""
        return array.reshape((self.shape.num, self.shape.channels) + array.shape[-2:])

    def _columns(self, bottom_data, key):
        """im2col of the whole batch into work array `key`, viewed per group:
        (group, C/group kh kw, N OH OW)."""
        s = self.shape
        col = self.scratch.get(key, (s.channels * s.kernel[0] * s.kernel[1], s.num * self.positions))
        im2col(self.image(bottom_data), *self.geometry, col)
        return col.reshape(s.group, -1, col.shape[1])

    def _top_diff(self, t, transposed):
        """(top diff as (N, O, P), and when `transposed`, its copy as (group, O/group, N P), else None)."""
        s = self.shape
        by_image = t.diff.reshape(s.num, s.num_output, self.positions)
        if not transposed:
            return by_image, None
        if s.num == 1:  # one image's (O, P) is already outputs first
            return by_image, t.diff.reshape(s.group, s.num_output // s.group, self.positions)
        dy = self.scratch.get("dy", (s.num_output, s.num, self.positions))
        np.copyto(dy, by_image.transpose(1, 0, 2))
        return by_image, dy.reshape(s.group, s.num_output // s.group, s.num * self.positions)

    def _bias_gradient(self, by_image, dy, bias_diff):
        s = self.shape
        total = self.scratch.get("bias_sum", (s.num_output,))
        if dy is None:
            # As Caffe: a GEMV with ones per image (all images in one call), then
            # the images summed; 7x faster than NumPy's sum over axes (0, 2).
            ones = self.scratch.get("ones", (self.positions,))
            ones[...] = 1
            sums = self.scratch.get("bias_per_image", (s.num, s.num_output))
            np.dot(by_image.reshape(-1, self.positions), ones, out=sums.reshape(-1))
            np.sum(sums, axis=0, out=total)
        else:
            np.sum(dy.reshape(s.num_output, -1), axis=1, out=total)
        bias_diff += total

    def _per_image(self, weight_diff):
        """The weight gradient goes image by image (per_image_weight_gradient)."""
        return weight_diff is not None and self.shape.group == 1 and self.shape.taps() <= PER_IMAGE_WEIGHT_GRAD_TAPS


def per_image_weight_gradient(top_diff, col, scratch, out):
    """out (O, taps) = sum over images n of top_diff[n] (O, P) . col_n^T, where col (taps, n P)
    holds the images' columns side by side: one small GEMM per image, then the images summed."""
    num, outputs, positions = top_diff.shape
    taps = col.shape[0]
    images = scratch.get("weight_grad_images", (num, outputs, taps))
    np.matmul(top_diff, col.reshape(taps, num, positions).transpose(1, 2, 0), out=images)
    np.sum(images, axis=0, out=out)


class DenseColumns(_Path2d):
    """Dense weights, 2 spatial axes, any group: the whole batch unrolled into one column matrix.

        forward   col (C kh kw, N OH OW) = im2col(bottom)
                  out[k] (O/g, N OH OW) = W[k] (O/g, C/g kh kw) . col[k]     one GEMM per group k
                  top (N, O, OH, OW) = out, images first (+ bias)
        backward  dy (O, N OH OW) = the top diff, outputs first
                  bias_diff += dy summed over images and positions
                  weight_diff[k] += dy[k] . col[k]^T   (per_image_weight_gradient for group 1 and few taps)
                  bottom diff = col2im(W[k]^T . dy[k])

    One GEMM for the batch instead of Caffe's one per image: the sums run in
    another order and agree with Caffe's to float rounding.  Backward reuses
    forward's columns while the bottom still holds the values forward saw
    (checked against a copy, a tenth of an im2col for LeNet's conv2);
    otherwise it unrolls again.  In a net that never runs this layer's
    backward (keep_for_backward False) forward keeps no copy.  For one image
    the GEMM writes the top directly, and a 1x1 convolution (stride 1, no
    padding) reads the image as its columns, which im2col would only copy:
    the same products of the same numbers, so the same bits.
    """

    writes_fresh_weight_diff = True

    def __init__(self, shape, scratch):
        super().__init__(shape, scratch)
        self.col_source = None  # the bottom whose columns "col" holds ("col_source": its data then)
        s = shape
        # One image through a 1x1 kernel: its (C, H W) data are its columns.
        self.image_is_columns = (s.num == 1 and s.kernel == (1, 1) and s.stride == (1, 1) and s.pad == (0, 0))

    def forward(self, bottom, top, weight, bias, csr=None):
        s = self.shape
        g, positions = s.group, self.positions
        w = weight.reshape(g, s.num_output // g, -1)
        for b, t in zip(bottom, top):
            if s.num == 1 and t is not b:
                # The top's (1, O, P) is the GEMM's (O, P): no copy between them.
                col = self._image_columns(b) if self.image_is_columns else self._columns(b.data, "col")
                dst = t.data.reshape(g, s.num_output // g, positions)
                for k in range(g):
                    np.dot(w[k], col[k], out=dst[k])
                if bias is not None:
                    dst += bias.reshape(g, -1, 1)
                continue
            out = self.scratch.get("out", (g, s.num_output // g, s.num * positions))
            col = self._columns(b.data, "col")
            for k in range(g):
                np.dot(w[k], col[k], out=out[k])
            # out is (num_output, N * positions); the top wants N first.
            by_image = out.reshape(s.num_output, s.num, positions).transpose(1, 0, 2)
            dst = t.data.reshape(s.num, s.num_output, positions)
            if bias is None:
                np.copyto(dst, by_image)
            else:
                np.add(by_image, bias.reshape(-1, 1), out=dst)
        # Backward reuses the last bottom's columns if that bottom still holds
        # the same values then (an in-place layer downstream may change it).
        last = bottom[-1]
        if self.image_is_columns or not self.keep_for_backward:
            self.col_source = None
            return
        self.col_source = last
        np.copyto(self.scratch.get("col_source", (last.count,)), last.flat_data)

    def _image_columns(self, b):
        """A one-image 1x1 convolution's columns: the bottom's data, (group, C/group, H W)."""
        return b.data.reshape(self.shape.group, -1, self.positions)

    def _columns_for_backward(self, b):
        if self.image_is_columns:
            return self._image_columns(b)
        saved = self.scratch.get("col_source", (b.count,))
        if self.col_source is b and same_values(saved, b.flat_data):
            s = self.shape
            col = self.scratch.get("col", (s.channels * s.kernel[0] * s.kernel[1], s.num * self.positions))
            return col.reshape(s.group, -1, col.shape[1])
        self.col_source = None
        return self._columns(b.data, "col")

    def backward(self, top, propagate_down, bottom, weight, csr, weight_diff, bias_diff, fresh=False):
        s = self.shape
        g, taps = s.group, s.taps()
        w = None if weight is None else weight.reshape(g, s.num_output // g, taps)
        per_image = self._per_image(weight_diff)
        for i, (t, b) in enumerate(zip(top, bottom)):
            if weight_diff is None and bias_diff is None and not propagate_down[i]:
                continue
            by_image, dy = self._top_diff(t, (weight_diff is not None and not per_image) or propagate_down[i])
            if bias_diff is not None:
                self._bias_gradient(by_image, dy, bias_diff)
            if weight_diff is not None:
                col = self._columns_for_backward(b)
                target = weight_diff.reshape(g, s.num_output // g, taps)
                grad = target if fresh else self.scratch.get("weight_grad", target.shape)
                if per_image:
                    # Straight from the top diff's (N, O, P) layout.
                    per_image_weight_gradient(by_image, col[0], self.scratch, grad[0])
                else:
                    for k in range(g):
                        np.dot(dy[k], col[k].T, out=grad[k])
                if not fresh:
                    target += grad
                fresh = False  # a second top adds to what the first wrote
            if propagate_down[i]:
                dcol = self.scratch.get("dcol", (g, taps, s.num * self.positions))
                for k in range(g):
                    np.dot(w[k].T, dy[k], out=dcol[k])
                col2im(dcol.reshape(-1, dcol.shape[2]), *self.geometry, self.image(b.diff))


class ImageColumns(_Path2d):
    """Dense weights, 2 spatial axes, a batch of large outputs: Caffe's own loop, image by image.

        forward   per image n: col_n (C kh kw, OH OW) = im2col(bottom[n])
                  top[n][k] (O/g, OH OW) = W[k] . col_n[k]   written in place (+ bias)
        backward  bias_diff += the top diff summed over images and positions
                  weight_diff[k] += dy_n[k] . col_n[k]^T     image after image, as Caffe's beta = 1
                  bottom diff[n] = col2im(W[k]^T . dy_n[k])

    A 1x1 kernel at stride 1 without padding reads each image as its
    columns and writes the bottom diff without col2im.  Backward unrolls
    each image again, as Caffe does, instead of keeping the batch's
    columns.  The forward computes DenseColumns' products over fewer
    columns; the weight gradient sums the images in Caffe's order, which
    differs from one GEMM over the batch by rounding.  Chosen for batches
    whose outputs have IMAGE_COLUMNS_POSITIONS positions or more
    (IMAGE_COLUMNS_POSITIONS_1X1 for a 1x1 kernel).
    """

    writes_fresh_weight_diff = True

    def __init__(self, shape, scratch):
        super().__init__(shape, scratch)
        s = shape
        self.image_is_columns = s.kernel == (1, 1) and s.stride == (1, 1) and s.pad == (0, 0)

    @staticmethod
    def suits(shape):
        least = IMAGE_COLUMNS_POSITIONS_1X1 if shape.kernel == (1, 1) else IMAGE_COLUMNS_POSITIONS
        return shape.num > 1 and shape.out[0] * shape.out[1] >= least

    def _image_columns(self, image):
        """Image n's columns (group, C/group kh kw, OH OW); `image` is its (1, C, H, W) view."""
        s = self.shape
        if self.image_is_columns:
            return image.reshape(s.group, -1, self.positions)
        col = self.scratch.get("col", (s.channels * s.kernel[0] * s.kernel[1], self.positions))
        im2col(image, *self.geometry, col)
        return col.reshape(s.group, -1, self.positions)

    def forward(self, bottom, top, weight, bias, csr=None):
        s = self.shape
        g, per_group = s.group, s.num_output // s.group
        w = weight.reshape(g, per_group, -1)
        for b, t in zip(bottom, top):
            images = self.image(b.data)
            # In place (top is bottom), each image's output waits in a work array until its input is read.
            out = self.scratch.get("out", (g, per_group, self.positions)) if t is b else None
            dst = t.data.reshape(s.num, g, per_group, self.positions)
            for n in range(s.num):
                col = self._image_columns(images[n:n + 1])
                target = dst[n] if out is None else out
                for k in range(g):
                    np.dot(w[k], col[k], out=target[k])
                if out is not None:
                    np.copyto(dst[n], out)
            if bias is not None:
                dst += bias.reshape(1, g, per_group, 1)

    def backward(self, top, propagate_down, bottom, weight, csr, weight_diff, bias_diff, fresh=False):
        s = self.shape
        g, per_group, taps = s.group, s.num_output // s.group, s.taps()
        w = None if weight is None else weight.reshape(g, per_group, taps)
        grad = None if weight_diff is None else weight_diff.reshape(g, per_group, taps)
        for i, (t, b) in enumerate(zip(top, bottom)):
            if weight_diff is None and bias_diff is None and not propagate_down[i]:
                continue
            by_image = t.diff.reshape(s.num, g, per_group, self.positions)
            if bias_diff is not None:
                self._bias_gradient(t.diff.reshape(s.num, s.num_output, self.positions), None, bias_diff)
            images = self.image(b.data)
            diffs = self.image(b.diff)
            product = self.scratch.get("weight_grad", (g, per_group, taps))
            dcol = None if self.image_is_columns else self.scratch.get("dcol", (g, taps, self.positions))
            for n in range(s.num):
                dy = by_image[n]
                if grad is not None:
                    col = self._image_columns(images[n:n + 1])
                    for k in range(g):
                        np.dot(dy[k], col[k].T, out=grad[k] if fresh else product[k])
                    if not fresh:
                        grad += product
                    fresh = False  # the first image writes a fresh diff, the others add
                if not propagate_down[i]:
                    continue
                if dcol is None:
                    target = diffs[n].reshape(g, taps, self.positions)
                    for k in range(g):
                        np.dot(w[k].T, dy[k], out=target[k])
                else:
                    for k in range(g):
                        np.dot(w[k].T, dy[k], out=dcol[k])
                    col2im(dcol.reshape(-1, self.positions), *self.geometry, diffs[n:n + 1])


class Depthwise(_Path2d):
    """Dense weights, 2 spatial axes, group = channels (MobileNet's and ShuffleNet's depthwise
    layers): each output channel convolves one input channel, read in place by
    npcaffe.kernels.depthwise; no columns.  Output channel o reads input channel
    o // (O / C) (a channel multiplier O / C >= 1, as grouped Convolution).

        forward   top[n, o] = bias[o] + W[o] * bottom[n, o // m]   (a 2-D correlation)
        backward  bias_diff += dy summed over images and positions
                  weight_diff += each window times its dy; bottom diff = dy spread back by W

    For C channels the grouped column path makes C GEMMs of one row each over an
    im2col of kh kw times the input; this reads the input once per tap instead.
    """

    @staticmethod
    def suits(shape):
        # group > 1: a one-channel input with group 1 (every grayscale net's first layer) is an
        # ordinary convolution, Caffe's columns and one GEMM, which is also far faster here
        return shape.group == shape.channels and shape.group > 1 and len(shape.kernel) == 2

    def forward(self, bottom, top, weight, bias, csr=None):
        s = self.shape
        w = weight.reshape(s.num_output, *s.kernel)
        b = _EMPTY if bias is None else bias
        for bb, t in zip(bottom, top):
            depthwise_forward(self.image(bb.data), w, b, bias is not None, *s.pad, *s.stride, *s.dilation,
                              t.data.reshape((s.num, s.num_output) + s.out))

    def backward(self, top, propagate_down, bottom, weight, csr, weight_diff, bias_diff):
        s = self.shape
        w = weight.reshape(s.num_output, *s.kernel)
        for i, (t, b) in enumerate(zip(top, bottom)):
            dy = t.diff.reshape((s.num, s.num_output) + s.out)
            if bias_diff is not None:
                bias_diff += dy.sum(axis=(0, 2, 3), dtype=np.float32)
            if weight_diff is None and not propagate_down[i]:
                continue
            wd = _EMPTY.reshape(0, 0, 0) if weight_diff is None else weight_diff.reshape(w.shape)
            bd = self.image(b.diff) if propagate_down[i] else _EMPTY.reshape(0, 0, 0, 0)
            depthwise_backward(self.image(b.data), w, dy, *s.pad, *s.stride, *s.dilation,
                               weight_diff is not None, wd, propagate_down[i], bd)


class Winograd(_Path2d):
    """Dense weights, 3x3 kernel, stride 1, no dilation, pad <= 2 (convolution_param { engine:
    WINOGRAD }): Winograd's F(2x2, 3x3), npcaffe.kernels.winograd, per group.

        forward   U (16, O/g, C/g) = G g Gᵀ per filter; V = Bᵀ d B per 4x4 input tile;
                  M = U V (16 GEMMs); top = Aᵀ M A per 2x2 output tile (+ bias)
        backward  bias_diff and weight_diff as DenseColumns (im2col and one GEMM: exact);
                  bottom diff = the same Winograd correlation of the top diff, padded by 2 - pad,
                  with the filters flipped and their input and output channels swapped

    2.25x fewer multiplies than the columns in forward and in the bottom gradient; the sums
    run in another order and through the transforms' additions: an error of the exact path's
    order, but not its bits (tests/kernels/test_winograd.py measures it)."""

    writes_fresh_weight_diff = True  # through DenseColumns

    @staticmethod
    def suits(shape):
        return (len(shape.kernel) == 2 and shape.kernel == (3, 3) and shape.stride == (1, 1)
                and shape.dilation == (1, 1) and max(shape.pad) <= 2)

    def __init__(self, shape, scratch):
        super().__init__(shape, scratch)
        self.columns = DenseColumns(shape, scratch)  # the weight gradient's exact path
        self._transformed = {}  # flipped -> (the weights transformed, their groups): reused while equal

    def _groups(self, weight, flipped=False):
        """[(input channel slice, output channel slice, U (16, O/g, C/g))] per group, the transforms
        reused while the weights equal those they were made from (an inference net transforms once)."""
        cached = self._transformed.get(flipped)
        if cached is not None and cached[0].shape == weight.shape and np.array_equal(cached[0], weight):
            return cached[1]
        groups = self._transform(weight, flipped)
        self._transformed[flipped] = (weight.copy(), groups)
        return groups

    def _transform(self, weight, flipped):
        s = self.shape
        ci, co = s.channels // s.group, s.num_output // s.group
        out = []
        for k in range(s.group):
            g = weight[k * co:(k + 1) * co]
            if flipped:  # the bottom gradient's filters: (C/g, O/g, 3, 3), each turned by 180 degrees
                g = g[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
            u = filter_transform(g)  # owned by the cache, not the layer's scratch
            out.append((slice(k * ci, (k + 1) * ci), slice(k * co, (k + 1) * co), u))
        return out

    def forward(self, bottom, top, weight, bias, csr=None):
        s = self.shape
        groups = self._groups(weight)
        for b, t in zip(bottom, top):
            x = self.image(b.data)
            y = t.data.reshape((s.num, s.num_output) + s.out)
            for cin, cout, u in groups:
                winograd_convolution(x[:, cin], u, None if bias is None else bias[cout], *s.pad, y[:, cout],
                                     self.scratch.get)

    def backward(self, top, propagate_down, bottom, weight, csr, weight_diff, bias_diff, fresh=False):
        s = self.shape
        if weight_diff is not None or bias_diff is not None:
            self.columns.backward(top, [False] * len(top), bottom, weight, None, weight_diff, bias_diff, fresh)
        if not any(propagate_down):
            return
        groups = self._groups(weight, flipped=True)
        pad = (2 - s.pad[0], 2 - s.pad[1])
        for i, (t, b) in enumerate(zip(top, bottom)):
            if not propagate_down[i]:
                continue
            dy = t.diff.reshape((s.num, s.num_output) + s.out)
            dx = self.image(b.diff)
            for cin, cout, u in groups:
                winograd_convolution(dy[:, cout], u, None, *pad, dx[:, cin], self.scratch.get)


class NdColumns:
    """Dense weights over 1 or 3+ spatial axes: Caffe's N-D path (forward_cpu_gemm /
    backward_cpu_gemm with im2col_nd), image by image.

        forward   col (C prod(kernel), prod(out)) = im2col_nd(image n)
                  top[n, k] (O/g, prod(out)) = W[k] . col[k]  (+ bias)       one GEMM per group k
        backward  bias_diff += the top diff summed;  weight_diff[k] += dy[n, k] . col[k]^T per image
                  bottom diff[n] = col2im_nd(W[k]^T . dy[n, k])
    """

    writes_fresh_weight_diff = False  # backward takes no `fresh`

    def __init__(self, shape, scratch):
        self.shape, self.scratch = shape, scratch
        self.geometry = (shape.kernel, shape.pad, shape.stride, shape.dilation, shape.out)

    def _column_buffer(self):
        s = self.shape
        return self.scratch.get("col_nd", (s.channels * math.prod(s.kernel), math.prod(s.out)))

    def _columns(self, image):
        col = self._column_buffer()
        im2col_nd(image, *self.geometry, col)
        return col.reshape(self.shape.group, -1, col.shape[1])

    def forward(self, bottom, top, weight, bias, csr=None):
        s = self.shape
        g = s.group
        w = weight.reshape(g, s.num_output // g, -1)
        for b, t in zip(bottom, top):
            images = b.data.reshape((s.num, s.channels) + s.image)
            out = t.data.reshape(s.num, g, s.num_output // g, -1)
            for n in range(s.num):
                col = self._columns(images[n])
                for k in range(g):
                    np.dot(w[k], col[k], out=out[n, k])
                if bias is not None:
                    out[n] += bias.reshape(g, -1, 1)

    def backward(self, top, propagate_down, bottom, weight, csr, weight_diff, bias_diff):
        s = self.shape
        g = s.group
        w = weight.reshape(g, s.num_output // g, -1)
        for i, (t, b) in enumerate(zip(top, bottom)):
            dy = t.diff.reshape(s.num, g, s.num_output // g, -1)
            if bias_diff is not None:
                bias_diff[...] += dy.reshape(s.num, s.num_output, -1).sum(axis=2, dtype=np.float32) \
                    .sum(axis=0, dtype=np.float32)
            images = b.data.reshape((s.num, s.channels) + s.image)
            if weight_diff is not None:
                grad = weight_diff.reshape(g, s.num_output // g, -1)
                for n in range(s.num):
                    col = self._columns(images[n])
                    for k in range(g):
                        grad[k] += np.dot(dy[n, k], col[k].T)
            if propagate_down[i]:
                dx = b.diff.reshape((s.num, s.channels) + s.image)
                col = self._column_buffer()
                col_g = col.reshape(g, -1, col.shape[1])
                for n in range(s.num):
                    for k in range(g):
                        np.dot(w[k].T, dy[n, k], out=col_g[k])
                    col2im_nd(col, *self.geometry, dx[n])


class SparseBatchInner(_Path2d):
    """Sparse weights (TRAIN) in the batch-innermost layout (npcaffe.kernels.batch_inner).

        forward   images (C, H, W, N) = bottom, batch innermost
                  planes (O, OH, OW, N) = sparse_conv_forward(images, W)
                  top = planes, batch first (+ bias)
        backward  planes_diff (O, OH, OW, N) = top diff, batch innermost
                  bias_diff += planes_diff summed
                  weight_diff (O, taps) += (col_band (taps, rows OW N) . planes_diff_band^T)^T, summed
                      over bands of output rows, col_band from im2col_batch_inner(images)
                  bottom diff = sparse_conv_backward(planes_diff, W), batch first

    Backward reuses forward's copy of the bottom while its data stamp
    (Blob.data_stamp) is unchanged.  The weight gradient unrolls a band of
    about WEIGHT_GRAD_BAND_FLOATS of columns per GEMM, so the columns are
    still in cache when the GEMM reads them.
    """

    @staticmethod
    def suits(shape):
        """Whether this path beats the column ones for `shape` (2-D).

        It copies the bottom and top to the batch-innermost layout and back,
        where the column paths unroll the bottom into C*kh*kw rows of OH*OW
        per image: worth it when the copies are well under half the size of
        the columns (LeNet-5's conv2: 6,080 against 32,000 floats per image;
        conv1, a single input channel, 12,304 against 14,400 stays on the
        column path)."""
        height, width = shape.image
        positions = shape.out[0] * shape.out[1]
        copies = shape.channels * height * width + shape.num_output * positions
        return shape.group == 1 and 2 * copies < shape.taps() * positions

    def __init__(self, shape, scratch):
        super().__init__(shape, scratch)
        self.images_source = (None, None)  # (bottom, its data stamp) whose copy "images_bi" holds

    def forward(self, bottom, top, weight, bias, csr):
        s = self.shape
        self.images_source = (None, None)
        images = self.scratch.get("images_bi", (s.channels,) + bottom[0].shape[-2:] + (s.num,))
        planes = self.scratch.get("planes_bi", (s.num_output, self.out_h, self.out_w, s.num))
        for b, t in zip(bottom, top):
            to_batch_inner(b.data.reshape((s.num,) + images.shape[:-1]), images)
            sparse_conv_forward(images, *csr, *self.geometry[:8], planes)
            from_batch_inner(planes, t.data.reshape((s.num,) + planes.shape[:-1]), bias)
        # Backward may reuse the last bottom's copy if nothing wrote that bottom since
        # (Blob.data_stamp: None while a view may be alive, so then it copies again).
        self.images_source = (bottom[-1], bottom[-1].data_stamp())

    def backward(self, top, propagate_down, bottom, weight, csr, weight_diff, bias_diff):
        s = self.shape
        geometry = self.geometry[:8]
        taps = s.taps()
        for i, (t, b) in enumerate(zip(top, bottom)):
            if weight_diff is None and bias_diff is None and not propagate_down[i]:
                continue
            planes_diff = self.scratch.get("planes_bi", (s.num_output, self.out_h, self.out_w, s.num))
            to_batch_inner(t.diff.reshape((s.num,) + planes_diff.shape[:-1]), planes_diff)
            flat_diff = planes_diff.reshape(s.num_output, -1)
            if bias_diff is not None:
                total = self.scratch.get("bias_sum", (s.num_output,))
                np.sum(flat_diff, axis=1, out=total)
                bias_diff += total
            if weight_diff is not None:
                images = self.scratch.get("images_bi", (s.channels,) + s.image + (s.num,))
                source, stamp = self.images_source
                if source is not b or stamp is None or stamp != b.data_stamp():
                    to_batch_inner(b.data.reshape((s.num,) + images.shape[:-1]), images)
                    self.images_source = (b, b.data_stamp())
                rows = max(1, min(self.out_h, WEIGHT_GRAD_BAND_FLOATS // (taps * self.out_w * s.num)))
                grad_t = self.scratch.get("weight_grad_t", (taps, s.num_output))
                part = self.scratch.get("weight_grad_part", (taps, s.num_output))
                band = self.out_w * s.num
                for y0 in range(0, self.out_h, rows):
                    y1 = min(y0 + rows, self.out_h)
                    col = self.scratch.get("col_bi", (taps, y1 - y0, self.out_w, s.num))
                    im2col_batch_inner(images, *geometry, self.out_w, y0, col)
                    np.dot(col.reshape(taps, -1), planes_diff.reshape(s.num_output, -1)[:, y0 * band:y1 * band].T,
                           out=grad_t if y0 == 0 else part)
                    if y0:
                        grad_t += part
                weight_diff.reshape(s.num_output, taps)[...] += grad_t.T
            if propagate_down[i]:
                images_diff = self.scratch.get("images_diff_bi", (s.channels,) + s.image + (s.num,))
                sparse_conv_backward(planes_diff, *csr, *geometry, images_diff)
                from_batch_inner(images_diff, b.diff.reshape((s.num,) + images_diff.shape[:-1]))


class SparseColumns(_Path2d):
    """Sparse weights (TRAIN), column chunks: a chunk of about COLUMN_CHUNK_FLOATS
    of columns at a time, so they stay in cache.

        forward   col (C kh kw, n OH OW) = im2col(images of the chunk)
                  top[chunk] (n, O, OH OW) = csr_columns_product(W, col) (+ bias)
        backward  bias_diff += the top diff summed (Caffe's GEMV with ones, or from dy)
                  weight_diff += sum over chunks of dy . col^T (or per_image_weight_gradient),
                      the columns unrolled again (cheaper than a batch-sized matrix through memory)
                  bottom diff = csr_convolution_backward(top diff, W)
    """

    def _column_chunks(self, bottom_data):
        """(start, stop, im2col of images start:stop) over the batch, group 1."""
        s = self.shape
        rows = s.channels * s.kernel[0] * s.kernel[1]
        positions = self.positions
        chunk = max(1, COLUMN_CHUNK_FLOATS // (rows * positions))
        image = self.image(bottom_data)
        for start in range(0, s.num, chunk):
            stop = min(start + chunk, s.num)
            col = self.scratch.get("col_chunk", (rows, (stop - start) * positions))
            im2col(image[start:stop], *self.geometry, col)
            yield start, stop, col

    def forward(self, bottom, top, weight, bias, csr):
        s = self.shape
        bias = _EMPTY if bias is None else bias
        for b, t in zip(bottom, top):
            out = t.data.reshape(s.num, s.num_output, self.positions)
            for start, stop, col in self._column_chunks(b.data):
                csr_columns_product(*csr, bias, col, out[start:stop])

    def _weight_gradient(self, b, by_image, dy, per_image, weight_diff):
        """weight_diff += the weight gradient from columns unrolled a chunk at a time."""
        s = self.shape
        positions = self.positions
        taps = s.taps()
        grad = self.scratch.get("weight_grad", (s.num_output, taps))
        part = self.scratch.get("weight_grad_part", (s.num_output, taps))
        grad[...] = 0
        for start, stop, col in self._column_chunks(b.data):
            if per_image:
                per_image_weight_gradient(by_image[start:stop], col, self.scratch, part)
            else:
                np.dot(dy[0][:, start * positions:stop * positions], col.T, out=part)
            grad += part
        weight_diff.reshape(grad.shape)[...] += grad

    def backward(self, top, propagate_down, bottom, weight, csr, weight_diff, bias_diff):
        s = self.shape
        per_image = self._per_image(weight_diff)
        for i, (t, b) in enumerate(zip(top, bottom)):
            if weight_diff is None and bias_diff is None and not propagate_down[i]:
                continue
            by_image, dy = self._top_diff(t, weight_diff is not None and not per_image)
            if bias_diff is not None:
                self._bias_gradient(by_image, dy, bias_diff)
            if weight_diff is not None:
                self._weight_gradient(b, by_image, dy, per_image, weight_diff)
            if propagate_down[i]:
                height, width = b.shape[-2:]
                csr_convolution_backward(
                    t.diff.reshape(s.num, s.num_output, self.out_h, self.out_w), *csr, *self.geometry[:8],
                    self.image(b.diff),
                    self.scratch.get("top_t", (s.num_output, self.out_h, self.out_w, s.num)),
                    self.scratch.get("bottom_t", (s.channels, height, width, s.num)))


class SparseStride1(SparseColumns):
    """Sparse weights (TRAIN), stride 1 (LeNet-5's conv1): forward by the direct kernel,
    no columns at all; backward as SparseColumns.

        forward   top[n, o] = csr_convolution_stride1: each kept weight one contiguous axpy
                      over the (padded) image n, rows as wide as the image's (+ bias)
    """

    def forward(self, bottom, top, weight, bias, csr):
        s = self.shape
        indptr, indices, values = csr
        height, width = s.image
        plane_h, plane_w = height + 2 * s.pad[0], width + 2 * s.pad[1]
        offsets = stride1_tap_offsets(indices, *s.kernel, *s.dilation, plane_h, plane_w)
        padded = self.scratch.get("padded", (s.channels, plane_h, plane_w) if any(s.pad) else (0, 0, 0))
        padded[...] = 0
        wide = self.scratch.get("wide", (s.num_output, self.out_h * plane_w))
        bias = _EMPTY if bias is None else bias
        for b, t in zip(bottom, top):
            csr_convolution_stride1(self.image(b.data), indptr, offsets, values, bias,
                                    t.data.reshape(s.num, s.num_output, self.out_h, self.out_w), padded, wide)


# -- TEST, packed weights (npcaffe.sparse.packing.PackedWeights) ----------------------------
class PackedStride1(_Path2d):
    """A few images at stride 1: csr_convolution_stride1 (see SparseStride1) on the packed
    weights, its tap offsets and work arrays kept in `packed.scratch` for the input size."""

    def forward(self, pairs, packed):
        s = self.shape
        height, width = s.image
        work = packed.scratch.get("stride1")
        if work is None or work[0] != (height, width):
            (pad_h, pad_w), (kernel_h, kernel_w), (dilation_h, dilation_w) = s.pad, s.kernel, s.dilation
            plane_h, plane_w = height + 2 * pad_h, width + 2 * pad_w
            padded = np.zeros((s.channels, plane_h, plane_w) if pad_h or pad_w else (0, 0, 0), np.float32)
            offsets = stride1_tap_offsets(packed.indices, kernel_h, kernel_w, dilation_h, dilation_w, plane_h,
                                          plane_w)
            wide = np.empty((s.num_output, self.out_h * plane_w), np.float32)
            work = packed.scratch["stride1"] = ((height, width), offsets, padded, wide)
        _, offsets, padded, wide = work
        for image, out in pairs:
            csr_convolution_stride1(image, packed.indptr, offsets, packed.values, packed.bias, out, padded, wide)


class PackedColumns(_Path2d):
    """A few images, strided: unroll them (the column matrix is small), then one contiguous
    column row per kept weight (csr_columns_product)."""

    def forward(self, pairs, packed):
        s = self.shape
        for image, out in pairs:
            col = self._columns(image, "col_packed")[0]
            csr_columns_product(packed.indptr, packed.indices, packed.values, packed.bias, col,
                                out.reshape(s.num, s.num_output, self.positions))


class PackedBatchInner(_Path2d):
    """From SMALL_BATCH images: csr_convolution, the batch-innermost kernels of
    SparseBatchInner's forward, its layout copies kept in `packed.scratch`."""

    def forward(self, pairs, packed):
        for image, out in pairs:
            csr_convolution(image, packed.indptr, packed.indices, packed.values, packed.bias, *self.geometry[:8],
                            out, packed.scratch)
