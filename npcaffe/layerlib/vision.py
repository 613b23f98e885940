"""Vision layers: Convolution and Pooling over (N, C, H, W) blobs.

The arithmetic lives in npcaffe.kernels.im2col / npcaffe.kernels.pooling;
this module reads the parameters, checks them as Caffe does, sizes the tops
and keeps the scratch buffers.
"""
import math

import numpy as np

from ..blob import Blob
from ..errors import NetError
from ..filler import fill
from ..kernels.batch_inner import (from_batch_inner, im2col_batch_inner, sparse_conv_backward, sparse_conv_forward,
                                   to_batch_inner)
from ..kernels.im2col import col2im, col2im_nd, im2col, im2col_nd, same_values
from ..kernels.pooling import ave_pool_backward, ave_pool_forward, max_pool_backward, max_pool_forward
from ..kernels.sparse import (csr_columns_product, csr_convolution, csr_convolution_backward,
                              csr_convolution_stride1, stride1_tap_offsets)
from ..layer import Layer, register
from ..masks import computing_params, mask_gradients
from ..proto import caffe_pb2
from ..sparse.packing import SMALL_BATCH, repack

_Pool = caffe_pb2.PoolingParameter
_EMPTY = np.zeros(0, np.float32)
# Up to this many weights per output (C/group * kh * kw), the weight gradient is one
# GEMM per image (N small products, summed) rather than one over the batch: for
# LeNet-5's conv1 (25) that is twice as fast and needs no transposed copy of the
# top diff; for conv2 (500) one GEMM is (README, section Speed).
PER_IMAGE_WEIGHT_GRAD_TAPS = 64
# The sparse (TRAIN, DNS) path unrolls this many floats of columns at a time.
COLUMN_CHUNK_FLOATS = 1 << 17
# Its batch-innermost weight gradient unrolls about this many floats (1 MB, half of L2)
# per GEMM: LeNet-5's conv2 one output row of 8 at a time, 0.5-0.9 ms faster per training
# iteration than its whole 8 MB column matrix (in-process A/B, README).
WEIGHT_GRAD_BAND_FLOATS = 1 << 18


class _Scratch:
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


def _spatial_pair(layer, param, field, default):
    """One of kernel_size / stride / pad as (h, w), following
    BaseConvolutionLayer::LayerSetUp: either the _h/_w pair or the repeated
    field given once (both axes) or twice (h then w)."""
    name = "kernel_size" if field == "kernel" else field
    pair = (f"{field}_h", f"{field}_w")
    repeated = list(getattr(param, name))
    if any(param.HasField(p) for p in pair):
        if repeated:
            raise NetError(
                f"layer '{layer.name}': give either {name} or {pair[0]}/{pair[1]}, not both "
                f"({name}: {repeated}, {pair[0]}: {getattr(param, pair[0])}, {pair[1]}: {getattr(param, pair[1])})")
        return getattr(param, pair[0]), getattr(param, pair[1])
    if not repeated and default is not None:
        return default, default
    if len(repeated) not in (1, 2):
        raise NetError(
            f"layer '{layer.name}': {name} must be given once, or once per spatial dimension (2); "
            f"it was given {len(repeated)} times")
    return (repeated[0], repeated[-1])


def _spatial_nd(layer, param, axes):
    """(kernel, stride, pad, dilation), one entry per spatial axis, for a convolution over
    `axes` != 2 spatial axes (BaseConvolutionLayer::LayerSetUp): each repeated field given
    once (every axis) or once per axis; the _h / _w forms are 2-D only."""
    legacy = [f for f in ("kernel_h", "kernel_w", "stride_h", "stride_w", "pad_h", "pad_w") if param.HasField(f)]
    if legacy:
        raise NetError(f"layer '{layer.name}': {', '.join(legacy)} can only be used for 2-D convolution; this "
                       f"one has {axes} spatial axes: give kernel_size / stride / pad once or {axes} times")
    values = []
    for name, default in (("kernel_size", None), ("stride", 1), ("pad", 0), ("dilation", 1)):
        given = list(getattr(param, name))
        if not given and default is None:
            raise NetError(f"layer '{layer.name}': convolution_param.kernel_size is required")
        if len(given) not in (0, 1, axes):
            raise NetError(f"layer '{layer.name}': {name} must be given once, or once per spatial dimension "
                           f"({axes}); it was given {len(given)} times")
        values.append(tuple(given * axes if len(given) == 1 else given) if given else (default,) * axes)
    kernel, stride = values[0], values[1]
    if min(kernel) <= 0 or min(stride) <= 0:
        raise NetError(f"layer '{layer.name}': kernel size and stride must be positive, got kernel {kernel}, "
                       f"stride {stride}")
    return tuple(values)


def _conv_out_dim(size, kernel, pad, stride, dilation):
    extent = dilation * (kernel - 1) + 1
    # C integer division truncates toward zero: an input slightly smaller than
    # the kernel extent still yields one output, read mostly from padding.
    return int((size + 2 * pad - extent) / stride) + 1


@register("Convolution")
class Convolution(Layer):
    """2-D convolution (Caffe's ConvolutionLayer, layers/base_conv_layer.cpp
    and conv_layer.cpp).

    Shapes: each bottom i (..., C, H, W), channel axis `axis` (default 1),
    maps to top i (..., num_output, OH, OW) with the same weights; all bottoms
    must have the same shape.  blobs[0] is the weight
    (num_output, C / group, kernel_h, kernel_w), blobs[1] the bias
    (num_output,) when bias_term.

        OH = (H + 2 pad_h - (dilation_h (kernel_h - 1) + 1)) / stride_h + 1
        top[n, o, y, x] = bias[o] + sum_{c in group(o), i, j}
            weight[o, c, i, j] * bottom[n, c, y stride_h - pad_h + i dilation_h,
                                            x stride_w - pad_w + j dilation_w]

    with '/' C's truncating integer division (so an input just smaller than the
    kernel extent still gives one output) and zeros outside the image.  Output
    channel o sees only the input channels of its group.

    Mirrored from upstream on purpose:
    - kernel_size / stride / pad (repeated, once or per axis) versus the
      _h/_w fields: mixing the two forms is an error; dilation has only the
      repeated form.  stride defaults to 1, pad to 0, dilation to 1.
    - blobs already present at setup (e.g. set by a test or a Net) are kept
      if their shapes fit, as Caffe skips the fillers then.
    - backward accumulates the weight and bias gradients (+=) and overwrites
      the bottom diffs, as Caffe's GEMMs with beta = 1 and col2im do.
    Other than 2 spatial axes (1-D, 3-D, ...): Caffe's N-D path, per image
    im2col_nd + one GEMM per group (`_nd_forward` / `_nd_backward`, NumPy
    columns; no sparse kernels there).  Deliberate differences:
    force_nd_im2col has no effect (the 2-D kernels give the same values),
    and an output size below 1 is an error instead of an empty blob.

    Computation: the whole batch is unrolled into one column matrix (see
    npcaffe.kernels.im2col) and multiplied by the weights in one GEMM per
    group, instead of Caffe's one GEMM per image; sums are therefore taken in
    a different order and agree with Caffe to float rounding.  Backward
    reuses forward's column matrix for the weight gradient when the bottom
    still holds the values forward saw (checked against a copy, which costs
    a tenth of an im2col for LeNet's conv2); otherwise it unrolls again.

    Subclass hook (the DNS CConvolution layer uses it with masked weights):
    `forward_cpu` calls `conv_forward(bottom, top, weight, bias)` and
    `backward_cpu` calls `conv_backward(top, propagate_down, bottom, weight)`,
    where `weight` (shaped like blobs[0]) and `bias` (like blobs[1], or None)
    are the arrays to convolve with.  Both take an optional `csr`, the same
    weight as (indptr, indices, values) rows (group 1 only; `weight` may then
    be None): the forward product and the bottom gradient then run on sparse
    kernels and the weight gradient stays a dense GEMM, on one of two paths
    (`_batch_inner`): when copying the bottom and top batch-innermost costs
    well under the column matrix (LeNet-5's conv2), npcaffe.kernels.batch_inner
    (no im2col in forward; the weight gradient from batch-innermost columns,
    a band of output rows per GEMM; backward reuses forward's copy of the
    bottom while its data stamp is unchanged); otherwise (conv1, one input
    channel) npcaffe.kernels.sparse: at stride 1 the direct kernel for the
    forward product, else columns a chunk of images at a time, and columns
    for the weight gradient.  conv_backward accumulates the weight gradient
    into blobs[0].diff (if param_needs_backward(0)), the bias gradient into
    blobs[1].diff (if bias_term and param_needs_backward(1)), and writes the
    bottom diffs computed with the given `weight`.
    """
    min_bottom = 1
    min_top = 1
    equal_num_bottom_top = True
    reshape_from_shapes = True

    def layer_setup(self, bottom, top):
        param = self.layer_param.convolution_param
        shape = bottom[0].shape
        self.channel_axis = bottom[0].canonical_axis(param.axis)
        spatial_axes = len(shape) - self.channel_axis - 1
        self.nd = spatial_axes != 2  # 1-D, 3-D, ...: the plain path of _nd_forward / _nd_backward
        if spatial_axes < 1:
            raise NetError(f"layer '{self.name}': bottom shape {shape} with axis {param.axis} has no spatial "
                           "axis after the channels")
        if self.nd:
            self.kernel, self.stride, self.pad, self.dilation = _spatial_nd(self, param, spatial_axes)
        else:
            self.kernel = _spatial_pair(self, param, "kernel", None)
            self.stride = _spatial_pair(self, param, "stride", 1)
            self.pad = _spatial_pair(self, param, "pad", 0)
            dilation = list(param.dilation)
            if len(dilation) not in (0, 1, 2):
                raise NetError(
                    f"layer '{self.name}': dilation must be given once, or once per spatial dimension (2); "
                    f"it was given {len(dilation)} times")
            self.dilation = (dilation[0], dilation[-1]) if dilation else (1, 1)
        if min(self.kernel) <= 0:
            raise NetError(f"layer '{self.name}': kernel size must be positive, got {self.kernel} (h, w)")
        if min(self.stride) <= 0:
            raise NetError(f"layer '{self.name}': stride must be positive, got {self.stride} (h, w)")

        self.channels = shape[self.channel_axis]
        self.num_output = param.num_output
        self.group = param.group
        if self.num_output <= 0:
            raise NetError(f"layer '{self.name}': convolution_param.num_output must be positive, "
                           f"got {self.num_output}")
        if self.group <= 0 or self.channels % self.group or self.num_output % self.group:
            raise NetError(
                f"layer '{self.name}': group {self.group} must divide both the input channels "
                f"({self.channels}, bottom shape {shape}) and num_output ({self.num_output})")
        self.bias_term = param.bias_term

        weight_shape = (self.num_output, self.channels // self.group) + self.kernel
        bias_shape = (self.num_output,)
        if self.blobs:
            expected = [weight_shape] + ([bias_shape] if self.bias_term else [])
            got = [b.shape for b in self.blobs]
            if got != expected:
                raise NetError(
                    f"layer '{self.name}': existing parameter blobs have shapes {got}, "
                    f"expected {expected} (weight, then bias if bias_term)")
        else:
            weight = Blob(weight_shape, name=f"{self.name}.weight")
            fill(weight, param.weight_filler, where=f"layer '{self.name}' weight_filler")
            self.blobs = [weight]
            if self.bias_term:
                bias = Blob(bias_shape, name=f"{self.name}.bias")
                fill(bias, param.bias_filler, where=f"layer '{self.name}' bias_filler")
                self.blobs.append(bias)
        self._scratch = _Scratch()

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        axis = self.channel_axis
        if self.nd:
            return self._nd_reshape(bottom, top)
        if len(shape) != axis + 3:
            raise NetError(f"layer '{self.name}': bottom '{bottom[0].name}' changed its number of axes "
                           f"(now shape {shape}, channel axis {axis})")
        if shape[axis] != self.channels:
            raise NetError(
                f"layer '{self.name}': bottom '{bottom[0].name}' has {shape[axis]} channels (shape {shape}) "
                f"but the weights were set up for {self.channels}")
        for b in bottom[1:]:
            if b.shape != shape:
                raise NetError(f"layer '{self.name}': all bottoms must have the same shape; "
                               f"'{bottom[0].name}' is {shape}, '{b.name}' is {b.shape}")
        height, width = shape[axis + 1:]
        self._image_shape = (height, width)
        self.out_h = _conv_out_dim(height, self.kernel[0], self.pad[0], self.stride[0], self.dilation[0])
        self.out_w = _conv_out_dim(width, self.kernel[1], self.pad[1], self.stride[1], self.dilation[1])
        if self.out_h < 1 or self.out_w < 1:
            raise NetError(
                f"layer '{self.name}': input {height}x{width} (bottom shape {shape}) is too small for "
                f"kernel {self.kernel}, dilation {self.dilation}, pad {self.pad}, stride {self.stride}; "
                f"output would be {self.out_h}x{self.out_w}")
        self.num = math.prod(shape[:axis])
        for t in top:
            t.reshape(shape[:axis] + (self.num_output, self.out_h, self.out_w))

    packed = None  # npcaffe.sparse.packing.PackedWeights while a TEST net runs this layer sparsely

    # -- the hook for subclasses ------------------------------------------------
    def forward_cpu(self, bottom, top):
        if self.packed is not None and self.sparse_forward(bottom, top):
            return
        weight, bias = computing_params(self)
        self.conv_forward(bottom, top, weight, bias)

    def backward_cpu(self, top, propagate_down, bottom):
        if self.attached_masks is None:
            self.conv_backward(top, propagate_down, bottom, self.blobs[0].data)
        else:  # the gradient of W ⊙ T: none for a pruned weight
            self.conv_backward(top, propagate_down, bottom, computing_params(self)[0])
            mask_gradients(self)

    def sparse_forward(self, bottom, top):
        """Forward with the packed weights (a TEST net, npcaffe.sparse.packing); False if the layer
        should run dense instead.  Weights written since packing are packed again first."""
        packed = self.packed
        num = self.num
        if packed.verify and not packed.current(self):
            return repack(self) and self.sparse_forward(bottom, top)
        if num < SMALL_BATCH and self.stride == (1, 1):
            self._small_batch_convolution(packed, bottom, top)
            return True
        for b, t in zip(bottom, top):
            if num < SMALL_BATCH:
                # A few images, strided: unroll them (the column matrix is small) and
                # add one contiguous column row per kept weight.
                col = self._columns(b.data)[0]
                csr_columns_product(packed.indptr, packed.indices, packed.values, packed.bias, col,
                                    t.data.reshape(num, self.num_output, self.out_h * self.out_w))
            else:
                csr_convolution(self._image(b.data), packed.indptr, packed.indices, packed.values, packed.bias,
                                *self.kernel, *self.pad, *self.stride, *self.dilation,
                                t.data.reshape((num, self.num_output, self.out_h, self.out_w)), packed.scratch)
        return True

    def _small_batch_convolution(self, packed, bottom, top):
        """A few images at stride 1: the direct kernel on the (padded) images, no im2col."""
        height, width = bottom[0]._shape[-2:]
        work = packed.scratch.get("stride1")
        if work is None or work[0] != (height, width):
            (pad_h, pad_w), (kernel_h, kernel_w), (dilation_h, dilation_w) = self.pad, self.kernel, self.dilation
            plane_h, plane_w = height + 2 * pad_h, width + 2 * pad_w
            padded = np.zeros((self.channels, plane_h, plane_w) if pad_h or pad_w else (0, 0, 0), np.float32)
            offsets = stride1_tap_offsets(packed.indices, kernel_h, kernel_w, dilation_h, dilation_w, plane_h,
                                          plane_w)
            wide = np.empty((self.num_output, self.out_h * plane_w), np.float32)
            work = packed.scratch["stride1"] = ((height, width), offsets, padded, wide)
        _, offsets, padded, wide = work
        for image, out in self.blob_views(bottom, top, _image_views):
            csr_convolution_stride1(image, packed.indptr, offsets, packed.values, packed.bias, out, padded, wide)

    # -- computation ------------------------------------------------------------
    def _geometry(self):
        return (*self.kernel, *self.pad, *self.stride, *self.dilation, self.out_h, self.out_w)

    def _image(self, array):
        return array.reshape((self.num, self.channels) + array.shape[-2:])

    def _columns(self, bottom_data, key="col"):
        """im2col of the whole batch into a scratch buffer, viewed per group."""
        taps = self.kernel[0] * self.kernel[1]
        col = self._scratch.get(key, (self.channels * taps, self.num * self.out_h * self.out_w))
        im2col(self._image(bottom_data), *self._geometry(), col)
        return col.reshape(self.group, -1, col.shape[1])

    # np.dot, not np.matmul, throughout: with out= and a transposed operand
    # NumPy 2's matmul can leave BLAS for a far slower loop; np.dot always
    # calls sgemm, passing transposes as flags.
    def conv_forward(self, bottom, top, weight, bias, csr=None):
        if self.nd:
            return self._nd_forward(bottom, top, weight, bias)
        g, positions = self.group, self.out_h * self.out_w
        out = self._scratch.get("out", (g, self.num_output // g, self.num * positions))
        self._images_source = (None, None)
        if csr is not None and self._batch_inner():
            self._col_source = None
            images = self._scratch.get("images_bi", (self.channels,) + bottom[0].shape[-2:] + (self.num,))
            planes = self._scratch.get("planes_bi", (self.num_output, self.out_h, self.out_w, self.num))
            for b, t in zip(bottom, top):
                to_batch_inner(b.data.reshape((self.num,) + images.shape[:-1]), images)
                sparse_conv_forward(images, *csr, *self._geometry()[:8], planes)
                from_batch_inner(planes, t.data.reshape((self.num,) + planes.shape[:-1]), bias)
            # Backward may reuse the last bottom's copy if nothing wrote that bottom since
            # (Blob.data_stamp: None while a view may be alive, so then it copies again).
            self._images_source = (bottom[-1], bottom[-1].data_stamp())
            return
        if csr is not None and self.stride == (1, 1):
            # Stride 1 (LeNet-5's conv1): the direct kernel, no columns at all.
            self._col_source = None
            indptr, indices, values = csr
            height, width = self._image_shape
            plane_h, plane_w = height + 2 * self.pad[0], width + 2 * self.pad[1]
            offsets = stride1_tap_offsets(indices, *self.kernel, *self.dilation, plane_h, plane_w)
            padded = self._scratch.get("padded", (self.channels, plane_h, plane_w) if any(self.pad) else (0, 0, 0))
            padded[...] = 0
            wide = self._scratch.get("wide", (self.num_output, self.out_h * plane_w))
            bias = _EMPTY if bias is None else bias
            for b, t in zip(bottom, top):
                csr_convolution_stride1(self._image(b.data), indptr, offsets, values, bias,
                                        t.data.reshape(self.num, self.num_output, self.out_h, self.out_w), padded, wide)
            return
        if csr is not None:
            # A chunk of images at a time, so the columns stay in cache; backward
            # unrolls them again (cheaper than a batch-sized matrix through memory).
            self._col_source = None
            bias = _EMPTY if bias is None else bias
            for b, t in zip(bottom, top):
                out = t.data.reshape(self.num, self.num_output, positions)
                for start, stop, col in self._column_chunks(b.data):
                    csr_columns_product(*csr, bias, col, out[start:stop])
            return
        w = weight.reshape(g, self.num_output // g, -1)
        for b, t in zip(bottom, top):
            col = self._columns(b.data)
            for k in range(g):
                np.dot(w[k], col[k], out=out[k])
            # out is (num_output, N * positions); the top wants N first.
            by_image = out.reshape(self.num_output, self.num, positions).transpose(1, 0, 2)
            dst = t.data.reshape(self.num, self.num_output, positions)
            if bias is None:
                np.copyto(dst, by_image)
            else:
                np.add(by_image, bias.reshape(-1, 1), out=dst)
        # Backward reuses the last bottom's columns if that bottom still holds
        # the same values then (an in-place layer downstream may change it).
        last = bottom[-1]
        self._col_source = last
        np.copyto(self._scratch.get("col_source", (last.count,)), last.flat_data)

    # -- any number of spatial axes but 2 (Caffe's N-D im2col path) -------------------
    def _nd_reshape(self, bottom, top):
        shape, axis = bottom[0].shape, self.channel_axis
        if len(shape) != axis + 1 + len(self.kernel) or shape[axis] != self.channels:
            raise NetError(f"layer '{self.name}': bottom '{bottom[0].name}' has shape {shape}; the layer was set up "
                           f"for {self.channels} channels at axis {axis} and {len(self.kernel)} spatial axes")
        for b in bottom[1:]:
            if b.shape != shape:
                raise NetError(f"layer '{self.name}': all bottoms must have the same shape; "
                               f"'{bottom[0].name}' is {shape}, '{b.name}' is {b.shape}")
        self._image_shape = shape[axis + 1:]
        self.out_shape = tuple(_conv_out_dim(*dims) for dims in zip(self._image_shape, self.kernel, self.pad,
                                                                     self.stride, self.dilation))
        if min(self.out_shape) < 1:
            raise NetError(f"layer '{self.name}': input {self._image_shape} (bottom shape {shape}) is too small for "
                           f"kernel {self.kernel}, dilation {self.dilation}, pad {self.pad}, stride {self.stride}; "
                           f"output would be {self.out_shape}")
        self.num = math.prod(shape[:axis])
        for t in top:
            t.reshape(shape[:axis] + (self.num_output,) + self.out_shape)

    def _nd_geometry(self):
        return self.kernel, self.pad, self.stride, self.dilation, self.out_shape

    def _nd_column_buffer(self):
        return self._scratch.get("col_nd", (self.channels * math.prod(self.kernel), math.prod(self.out_shape)))

    def _nd_columns(self, image):
        col = self._nd_column_buffer()
        im2col_nd(image, *self._nd_geometry(), col)
        return col.reshape(self.group, -1, col.shape[1])

    def _nd_forward(self, bottom, top, weight, bias):
        """As Caffe's forward_cpu_gemm on the N-D path: per image, columns, one GEMM per group,
        then the bias added."""
        g = self.group
        w = weight.reshape(g, self.num_output // g, -1)
        for b, t in zip(bottom, top):
            images = b.data.reshape((self.num, self.channels) + self._image_shape)
            out = t.data.reshape(self.num, g, self.num_output // g, -1)
            for n in range(self.num):
                col = self._nd_columns(images[n])
                for k in range(g):
                    np.dot(w[k], col[k], out=out[n, k])
                if bias is not None:
                    out[n] += bias.reshape(g, -1, 1)

    def _nd_backward(self, top, propagate_down, bottom, weight):
        """Caffe's backward on the N-D path, per image: bias and weight gradients accumulated,
        the bottom diff from the columns' gradient by col2im."""
        g = self.group
        need_weight = self.param_needs_backward(0)
        need_bias = self.bias_term and self.param_needs_backward(1)
        w = weight.reshape(g, self.num_output // g, -1)
        for i, (t, b) in enumerate(zip(top, bottom)):
            dy = t.diff.reshape(self.num, g, self.num_output // g, -1)
            if need_bias:
                self.blobs[1].diff[...] += dy.reshape(self.num, self.num_output, -1).sum(axis=2, dtype=np.float32) \
                    .sum(axis=0, dtype=np.float32)
            images = b.data.reshape((self.num, self.channels) + self._image_shape)
            if need_weight:
                grad = self.blobs[0].diff.reshape(g, self.num_output // g, -1)
                for n in range(self.num):
                    col = self._nd_columns(images[n])
                    for k in range(g):
                        grad[k] += np.dot(dy[n, k], col[k].T)
            if propagate_down[i]:
                dx = b.diff.reshape((self.num, self.channels) + self._image_shape)
                col = self._nd_column_buffer()
                col_g = col.reshape(g, -1, col.shape[1])
                for n in range(self.num):
                    for k in range(g):
                        np.dot(w[k].T, dy[n, k], out=col_g[k])
                    col2im_nd(col, *self._nd_geometry(), dx[n])

    def _batch_inner(self):
        """Whether the sparse (TRAIN) path should work batch-innermost (npcaffe.kernels.batch_inner).

        It copies the bottom and top to that layout and back, where the column
        path unrolls the bottom into C*kh*kw rows of OH*OW per image: worth it
        when the copies are well under half the size of the columns (LeNet-5's
        conv2: 6,080 against 32,000 floats per image; conv1, a single input
        channel, 12,304 against 14,400 stays on the column path)."""
        height, width = self._image_shape
        positions = self.out_h * self.out_w
        copies = self.channels * height * width + self.num_output * positions
        return self.group == 1 and 2 * copies < self.blobs[0].count // self.num_output * positions

    def _batch_inner_backward(self, t, b, need_weight, need_bias, propagate_down, csr):
        """conv_backward's sparse path in the batch-innermost layout (one top, one bottom)."""
        geometry = self._geometry()[:8]
        taps = self.blobs[0].count // self.num_output
        planes_diff = self._scratch.get("planes_bi", (self.num_output, self.out_h, self.out_w, self.num))
        to_batch_inner(t.diff.reshape((self.num,) + planes_diff.shape[:-1]), planes_diff)
        flat_diff = planes_diff.reshape(self.num_output, -1)
        if need_bias:
            total = self._scratch.get("bias_sum", (self.num_output,))
            np.sum(flat_diff, axis=1, out=total)
            self.blobs[1].diff += total
        if need_weight:
            images = self._scratch.get("images_bi", (self.channels,) + self._image_shape + (self.num,))
            source, stamp = getattr(self, "_images_source", (None, None))
            if source is not b or stamp is None or stamp != b.data_stamp():
                to_batch_inner(b.data.reshape((self.num,) + images.shape[:-1]), images)
                self._images_source = (b, b.data_stamp())
            # A band of output rows at a time, about WEIGHT_GRAD_BAND_FLOATS of columns,
            # so that the columns are still in cache when the GEMM reads them.
            rows = max(1, min(self.out_h, WEIGHT_GRAD_BAND_FLOATS // (taps * self.out_w * self.num)))
            grad_t = self._scratch.get("weight_grad_t", (taps, self.num_output))
            part = self._scratch.get("weight_grad_part", (taps, self.num_output))
            band = self.out_w * self.num
            for y0 in range(0, self.out_h, rows):
                y1 = min(y0 + rows, self.out_h)
                col = self._scratch.get("col_bi", (taps, y1 - y0, self.out_w, self.num))
                im2col_batch_inner(images, *geometry, self.out_w, y0, col)
                np.dot(col.reshape(taps, -1), planes_diff.reshape(self.num_output, -1)[:, y0 * band:y1 * band].T,
                       out=grad_t if y0 == 0 else part)
                if y0:
                    grad_t += part
            self.blobs[0].diff.reshape(self.num_output, taps)[...] += grad_t.T
        if propagate_down:
            images_diff = self._scratch.get("images_diff_bi", (self.channels,) + self._image_shape + (self.num,))
            sparse_conv_backward(planes_diff, *csr, *geometry, images_diff)
            from_batch_inner(images_diff, b.diff.reshape((self.num,) + images_diff.shape[:-1]))

    def _column_chunks(self, bottom_data):
        """(start, stop, im2col of images start:stop) over the batch, group 1, chunks of
        about COLUMN_CHUNK_FLOATS."""
        rows = self.channels * self.kernel[0] * self.kernel[1]
        positions = self.out_h * self.out_w
        chunk = max(1, COLUMN_CHUNK_FLOATS // (rows * positions))
        image = self._image(bottom_data)
        for start in range(0, self.num, chunk):
            stop = min(start + chunk, self.num)
            col = self._scratch.get("col_chunk", (rows, (stop - start) * positions))
            im2col(image[start:stop], *self._geometry(), col)
            yield start, stop, col

    def _columns_for_backward(self, b):
        saved = self._scratch.get("col_source", (b.count,))
        if getattr(self, "_col_source", None) is b and same_values(saved, b.flat_data):
            taps = self.kernel[0] * self.kernel[1]
            col = self._scratch.get("col", (self.channels * taps, self.num * self.out_h * self.out_w))
            return col.reshape(self.group, -1, col.shape[1])
        self._col_source = None
        return self._columns(b.data)

    def _chunked_weight_grad(self, b, by_image, dy, per_image):
        """blobs[0].diff += the weight gradient, group 1, from columns unrolled a chunk at a time."""
        positions = self.out_h * self.out_w
        taps = self.blobs[0].count // self.num_output
        grad = self._scratch.get("weight_grad", (self.num_output, taps))
        part = self._scratch.get("weight_grad_part", (self.num_output, taps))
        grad[...] = 0
        for start, stop, col in self._column_chunks(b.data):
            if per_image:
                images = self._scratch.get("weight_grad_images", (stop - start, self.num_output, taps))
                np.matmul(by_image[start:stop], col.reshape(taps, stop - start, positions).transpose(1, 2, 0),
                          out=images)
                np.sum(images, axis=0, out=part)
            else:
                np.dot(dy[0][:, start * positions:stop * positions], col.T, out=part)
            grad += part
        self.blobs[0].diff.reshape(grad.shape)[...] += grad

    def conv_backward(self, top, propagate_down, bottom, weight, csr=None):
        if self.nd:
            return self._nd_backward(top, propagate_down, bottom, weight)
        g, positions = self.group, self.out_h * self.out_w
        need_weight = self.param_needs_backward(0)
        need_bias = self.bias_term and self.param_needs_backward(1)
        taps = self.blobs[0].count // self.num_output
        w = None if weight is None else weight.reshape(g, self.num_output // g, taps)
        for i, (t, b) in enumerate(zip(top, bottom)):
            if not (need_weight or need_bias or propagate_down[i]):
                continue
            if csr is not None and self._batch_inner():
                self._batch_inner_backward(t, b, need_weight, need_bias, propagate_down[i], csr)
                continue
            by_image = t.diff.reshape(self.num, self.num_output, positions)
            per_image = need_weight and g == 1 and taps <= PER_IMAGE_WEIGHT_GRAD_TAPS
            dy = None
            if (need_weight and not per_image) or (propagate_down[i] and csr is None):
                dy = self._scratch.get("dy", (self.num_output, self.num, positions))
                np.copyto(dy, by_image.transpose(1, 0, 2))
                dy = dy.reshape(g, self.num_output // g, self.num * positions)
            if need_bias:
                total = self._scratch.get("bias_sum", (self.num_output,))
                if dy is None:
                    # As Caffe: a GEMV with ones per image (all images in one call), then
                    # the images summed; 7x faster than NumPy's sum over axes (0, 2).
                    ones = self._scratch.get("ones", (positions,))
                    ones[...] = 1
                    sums = self._scratch.get("bias_per_image", (self.num, self.num_output))
                    np.dot(by_image.reshape(-1, positions), ones, out=sums.reshape(-1))
                    np.sum(sums, axis=0, out=total)
                else:
                    np.sum(dy.reshape(self.num_output, -1), axis=1, out=total)
                self.blobs[1].diff += total
            if need_weight and csr is not None:
                self._chunked_weight_grad(b, by_image, dy, per_image)
            elif need_weight:
                col = self._columns_for_backward(b)
                grad = self._scratch.get("weight_grad", (g, self.num_output // g, taps))
                if per_image:
                    # One small GEMM per image, straight from the top diff's (N, O, P) layout.
                    images = self._scratch.get("weight_grad_images", (self.num, self.num_output, taps))
                    np.matmul(by_image, col[0].reshape(taps, self.num, positions).transpose(1, 2, 0), out=images)
                    np.sum(images, axis=0, out=grad[0])
                else:
                    for k in range(g):
                        np.dot(dy[k], col[k].T, out=grad[k])
                self.blobs[0].diff.reshape(grad.shape)[...] += grad
            if not propagate_down[i]:
                continue
            if csr is not None:
                height, width = b.shape[-2:]
                csr_convolution_backward(
                    t.diff.reshape(self.num, self.num_output, self.out_h, self.out_w), *csr, *self._geometry()[:8],
                    self._image(b.diff),
                    self._scratch.get("top_t", (self.num_output, self.out_h, self.out_w, self.num)),
                    self._scratch.get("bottom_t", (self.channels, height, width, self.num)))
            else:
                dcol = self._scratch.get("dcol", (g, taps, self.num * positions))
                for k in range(g):
                    np.dot(w[k].T, dy[k], out=dcol[k])
                col2im(dcol.reshape(-1, dcol.shape[2]), *self._geometry(), self._image(b.diff))


def _image_views(layer, bottom, top):
    # [(bottom (N, C, H, W), top (N, O, OH, OW))] of a Convolution layer
    return [(b.flat_data.reshape((layer.num, layer.channels) + b._shape[-2:]),
             t.flat_data.reshape((layer.num, layer.num_output, layer.out_h, layer.out_w))) for b, t in zip(bottom, top)]


def _pool_out_dim(size, kernel, pad, stride, ceil_mode):
    # Caffe divides in float (static_cast<float>), then rounds.
    ratio = np.float32(size + 2 * pad - kernel) / np.float32(stride)
    return int(math.ceil(ratio) if ceil_mode else math.floor(ratio)) + 1


@register("Pooling")
class Pooling(Layer):
    """Max / average pooling (Caffe's PoolingLayer, layers/pooling_layer.cpp).

    Shapes: bottom (N, C, H, W) -> top (N, C, PH, PW); with MAX an optional
    second top (same shape) receives the argmax mask as float (index
    h * W + w within the channel plane, -1 for an empty window).

        PH = ceil((H + 2 pad_h - kernel_h) / stride_h) + 1   (round_mode CEIL, default)
        PH = floor((H + 2 pad_h - kernel_h) / stride_h) + 1  (round_mode FLOOR)

    then, if pad_h or pad_w is nonzero, each dimension whose last window would
    start at or beyond H + pad (resp. W + pad) loses that window (the pad
    clipping rule; it is applied to both dimensions even when only one is
    padded, as upstream does).  Window (y, x) starts at
    (y stride_h - pad_h, x stride_w - pad_w).

    MAX: the largest input in the window clipped to the image; ties go to the
    first in row-major order (Caffe compares with strict '>').  Backward
    routes each top diff to its argmax, accumulating where windows overlap.
    With a mask top, backward reads the mask from that top's data, as Caffe.
    AVE: the sum over the window clipped to the image divided by the window
    size clipped to (H + pad_h, W + pad_w), not to the image, so near the
    leading edge padding counts as zeros.  Backward spreads diff / that size.

    Parameter checks mirror LayerSetUp: kernel_size or both kernel_h and
    kernel_w (but with kernel_size, a lone kernel_h or kernel_w is ignored, as
    upstream); pad / pad_h+pad_w and stride / stride_h+stride_w likewise;
    global_pooling takes the whole image and allows no kernel fields, pad 0
    and stride 1; pad must be smaller than the kernel.  Deliberate
    difference: STOCHASTIC pooling raises a NetError at setup (upstream CPU
    code stops at forward with NOT_IMPLEMENTED).
    """
    exact_num_bottom = 1
    min_top = 1
    max_top = 2
    reshape_from_shapes = True

    def __init__(self, param, phase=None):
        super().__init__(param, phase)
        self.method = param.pooling_param.pool
        if self.method != _Pool.MAX:
            # Only MAX has a mask to offer as a second top.
            self.max_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.pooling_param
        fail = self._fail
        if self.method == _Pool.STOCHASTIC:
            fail("pool: STOCHASTIC is not implemented yet; use MAX or AVE")
        if self.method not in (_Pool.MAX, _Pool.AVE):
            fail(f"unknown pool method {self.method}")
        has = p.HasField
        if p.global_pooling:
            if has("kernel_size") or has("kernel_h") or has("kernel_w"):
                fail("global_pooling takes the whole image; remove kernel_size / kernel_h / kernel_w")
        else:
            if has("kernel_size") == (has("kernel_h") and has("kernel_w")):
                fail("give the filter size as kernel_size, or as both kernel_h and kernel_w; not both, not neither "
                     f"(kernel_size: {p.kernel_size if has('kernel_size') else 'unset'}, "
                     f"kernel_h: {p.kernel_h if has('kernel_h') else 'unset'}, "
                     f"kernel_w: {p.kernel_w if has('kernel_w') else 'unset'})")
        for field in ("pad", "stride"):
            h, w = has(f"{field}_h"), has(f"{field}_w")
            if (h or w) and not (h and w and not has(field)):
                fail(f"give {field}, or both {field}_h and {field}_w; not a mix")
        self.global_pooling = p.global_pooling
        self.ceil_mode = p.round_mode == _Pool.CEIL
        if self.global_pooling:
            self.kernel = bottom[0].shape[-2:]
        elif has("kernel_size"):
            self.kernel = (p.kernel_size, p.kernel_size)
        else:
            self.kernel = (p.kernel_h, p.kernel_w)
        if min(self.kernel) <= 0:
            fail(f"kernel size must be positive, got {tuple(self.kernel)} (h, w)")
        self.pad = (p.pad_h, p.pad_w) if has("pad_h") else (p.pad, p.pad)
        self.stride = (p.stride_h, p.stride_w) if has("stride_h") else (p.stride, p.stride)
        if min(self.stride) <= 0:
            fail(f"stride must be positive, got {self.stride} (h, w)")
        if self.global_pooling and (self.pad != (0, 0) or self.stride != (1, 1)):
            fail(f"global_pooling needs pad 0 and stride 1, got pad {self.pad}, stride {self.stride}")
        if any(self.pad) and (self.pad[0] >= self.kernel[0] or self.pad[1] >= self.kernel[1]):
            fail(f"pad {self.pad} must be smaller than the kernel {tuple(self.kernel)} (h, w)")
        self._mask = np.empty(0, dtype=np.int32)

    def _fail(self, message):
        raise NetError(f"layer '{self.name}' (Pooling): {message}")

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) != 4:
            self._fail(f"bottom '{bottom[0].name}' must have 4 axes (num, channels, height, width), "
                       f"got shape {shape}")
        num, channels, height, width = shape
        if self.global_pooling:
            self.kernel = (height, width)
        (kh, kw), (ph, pw), (sh, sw) = self.kernel, self.pad, self.stride
        pooled_h = _pool_out_dim(height, kh, ph, sh, self.ceil_mode)
        pooled_w = _pool_out_dim(width, kw, pw, sw, self.ceil_mode)
        if ph or pw:
            if (pooled_h - 1) * sh >= height + ph:
                pooled_h -= 1
            if (pooled_w - 1) * sw >= width + pw:
                pooled_w -= 1
        if pooled_h < 1 or pooled_w < 1:
            self._fail(f"input {height}x{width} (bottom shape {shape}) is too small for kernel "
                       f"{tuple(self.kernel)}, pad {self.pad}, stride {self.stride}")
        for t in top:
            t.reshape(num, channels, pooled_h, pooled_w)
        if self.method == _Pool.MAX and len(top) == 1:
            count = num * channels * pooled_h * pooled_w
            if self._mask.size < count:
                self._mask = np.empty(count, dtype=np.int32)

    def _argmax(self, top):
        """The mask in use: the second top's data if there is one, else our own."""
        if len(top) > 1:
            return top[1].data
        return self._mask[:top[0].count].reshape(top[0].shape)

    def forward_cpu(self, bottom, top):
        args = (*self.kernel, *self.stride, *self.pad)
        if self.method == _Pool.MAX:
            max_pool_forward(bottom[0].data, *args, top[0].data, self._argmax(top))
        else:
            ave_pool_forward(bottom[0].data, *args, top[0].data)

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        if self.method == _Pool.MAX:
            max_pool_backward(top[0].diff, self._argmax(top), bottom[0].diff)
        else:
            ave_pool_backward(top[0].diff, *self.kernel, *self.stride, *self.pad, bottom[0].diff)
