"""The convolution family: Convolution, Deconvolution and Im2col over (N, C, H, W) blobs
(Convolution and Deconvolution also over 1 or 3+ spatial axes).

They share the parsing and checks of convolution_param (kernel, stride, pad,
dilation as Caffe's BaseConvolutionLayer::LayerSetUp reads them).
Convolution computes through the paths of npcaffe.layerlib.conv_paths;
Deconvolution and Im2col call the im2col / col2im kernels
(npcaffe.kernels.im2col) themselves.
"""
import math

import numpy as np

from ..blob import Blob
from ..errors import NetError
from ..filler import fill
from ..kernels.im2col import col2im, col2im_nd, im2col, im2col_nd
from ..layer import Layer, register
from ..masks import computing_params, mask_gradients
from ..proto import caffe_pb2
from ..sparse.packing import SMALL_BATCH, repack
from .conv_paths import (ConvShape, DenseColumns, Depthwise, ImageColumns, NdColumns, PackedBatchInner,
                         PackedColumns, PackedStride1, Scratch, SparseBatchInner, SparseColumns, SparseStride1,
                         Winograd)


def _where(layer):
    return f"layer '{layer.name}' ({layer.type})"


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


def _spatial_2d(layer, param):
    """(kernel, stride, pad, dilation), each (h, w), of a 2-D convolution."""
    kernel = _spatial_pair(layer, param, "kernel", None)
    stride = _spatial_pair(layer, param, "stride", 1)
    pad = _spatial_pair(layer, param, "pad", 0)
    dilation = list(param.dilation)
    if len(dilation) not in (0, 1, 2):
        raise NetError(f"layer '{layer.name}': dilation must be given once, or once per spatial dimension (2); "
                       f"it was given {len(dilation)} times")
    return kernel, stride, pad, (dilation[0], dilation[-1]) if dilation else (1, 1)


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


def _image_views(layer, bottom, top):
    # [(bottom (N, C, H, W), top (N, O, OH, OW))] of a 2-D Convolution layer
    s = layer.shape
    return [(b.flat_data.reshape((s.num, s.channels) + s.image), t.flat_data.reshape((s.num, s.num_output) + s.out))
            for b, t in zip(bottom, top)]


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
    Other than 2 spatial axes (1-D, 3-D, ...): Caffe's N-D path.  Deliberate
    differences: force_nd_im2col has no effect (the 2-D kernels give the
    same values), and an output size below 1 is an error instead of an empty blob.

    Computation: this class keeps the parameters, the shapes and the choice
    (`compute_path`) of a path of npcaffe.layerlib.conv_paths: dense weights
    through DenseColumns (the batch's columns, one GEMM per group where Caffe
    makes one per image, so equal to Caffe's to float rounding) or, for a
    batch of large outputs, ImageColumns (Caffe's loop, image by image), with group =
    channels through Depthwise (the windows read in place), or, over
    other than 2 axes, NdColumns; with `engine: WINOGRAD` a dense 3x3 stride-1
    convolution through Winograd (F(2x2, 3x3): fewer multiplies, not Caffe's
    rounding; any other shape stays on the exact paths); sparse weights (`csr`, below) through
    SparseBatchInner where its layout copies cost well under the columns
    (LeNet-5's conv2), else SparseStride1 at stride 1, else SparseColumns; a
    TEST net's packed weights (npcaffe.sparse.packing) through `sparse_forward`.

    Subclass hook (the DNS CConvolution layer uses it with masked weights):
    `forward_cpu` calls `conv_forward(bottom, top, weight, bias)` and
    `backward_cpu` calls `conv_backward(top, propagate_down, bottom, weight)`,
    where `weight` (shaped like blobs[0]) and `bias` (like blobs[1], or None)
    are the arrays to convolve with.  Both take an optional `csr`, the same
    weight as (indptr, indices, values) rows (group 1, 2-D only; `weight` may
    then be None).  conv_backward accumulates the weight gradient into
    blobs[0].diff (if param_needs_backward(0)), the bias gradient into
    blobs[1].diff (if bias_term and param_needs_backward(1)), and writes the
    bottom diffs computed with the given `weight`.
    """
    min_bottom = 1
    min_top = 1
    equal_num_bottom_top = True
    reshape_from_shapes = True
    packed = None  # npcaffe.sparse.packing.PackedWeights while a TEST net runs this layer sparsely
    shape = None   # conv_paths.ConvShape at the current input size

    def layer_setup(self, bottom, top):
        param = self.layer_param.convolution_param
        shape = bottom[0].shape
        self.channel_axis = bottom[0].canonical_axis(param.axis)
        spatial_axes = len(shape) - self.channel_axis - 1
        self.nd = spatial_axes != 2  # 1-D, 3-D, ...: Caffe's N-D path (NdColumns)
        if spatial_axes < 1:
            raise NetError(f"layer '{self.name}': bottom shape {shape} with axis {param.axis} has no spatial "
                           "axis after the channels")
        if self.nd:
            self.kernel, self.stride, self.pad, self.dilation = _spatial_nd(self, param, spatial_axes)
        else:
            self.kernel, self.stride, self.pad, self.dilation = _spatial_2d(self, param)
        if min(self.kernel) <= 0:
            raise NetError(f"layer '{self.name}': kernel size must be positive, got {self.kernel} (h, w)")
        if min(self.stride) <= 0:
            raise NetError(f"layer '{self.name}': stride must be positive, got {self.stride} (h, w)")

        self.channels = shape[self.channel_axis]
        self.num_output, self.group = self.outputs_and_group(param, self.channels)
        if self.num_output <= 0:
            raise NetError(f"layer '{self.name}': convolution_param.num_output must be positive, "
                           f"got {self.num_output}")
        if self.group <= 0 or self.channels % self.group or self.num_output % self.group:
            raise NetError(
                f"layer '{self.name}': group {self.group} must divide both the input channels "
                f"({self.channels}, bottom shape {shape}) and num_output ({self.num_output})")
        self.bias_term = param.bias_term
        self.winograd = param.engine == caffe_pb2.ConvolutionParameter.WINOGRAD

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
        self._scratch = Scratch()  # the paths' work arrays, kept across shapes
        self._paths = {}           # path class -> its instance for self.shape

    def outputs_and_group(self, param, channels):
        """(num_output, group) for `channels` input channels: convolution_param's (a subclass hook)."""
        return param.num_output, param.group

    def reshape(self, bottom, top):
        shape, axis = bottom[0].shape, self.channel_axis
        if len(shape) != axis + 1 + len(self.kernel):
            raise NetError(f"layer '{self.name}': bottom '{bottom[0].name}' changed its number of axes (now shape "
                           f"{shape}, channel axis {axis}; set up for {len(self.kernel)} spatial axes)")
        if shape[axis] != self.channels:
            raise NetError(
                f"layer '{self.name}': bottom '{bottom[0].name}' has {shape[axis]} channels (shape {shape}) "
                f"but the weights were set up for {self.channels}")
        for b in bottom[1:]:
            if b.shape != shape:
                raise NetError(f"layer '{self.name}': all bottoms must have the same shape; "
                               f"'{bottom[0].name}' is {shape}, '{b.name}' is {b.shape}")
        image = shape[axis + 1:]
        out = tuple(_conv_out_dim(*dims) for dims in zip(image, self.kernel, self.pad, self.stride, self.dilation))
        if min(out) < 1:
            raise NetError(
                f"layer '{self.name}': input {'x'.join(map(str, image))} (bottom shape {shape}) is too small for "
                f"kernel {self.kernel}, dilation {self.dilation}, pad {self.pad}, stride {self.stride}; "
                f"output would be {'x'.join(map(str, out))}")
        self.num = math.prod(shape[:axis])
        conv_shape = ConvShape(self.num, self.channels, self.num_output, self.group, self.kernel, self.pad,
                               self.stride, self.dilation, image, out)
        if conv_shape != self.shape:
            self.shape, self._paths = conv_shape, {}
        for t in top:
            t.reshape(shape[:axis] + (self.num_output,) + out)

    # -- the hook for subclasses ------------------------------------------------
    def forward_cpu(self, bottom, top):
        if self.packed is not None and self.sparse_forward(bottom, top):
            return
        weight, bias = computing_params(self)
        self.conv_forward(bottom, top, weight, bias)

    def backward_cpu(self, top, propagate_down, bottom):
        if self.attached_masks is None:
            self.conv_backward(top, propagate_down, bottom, self.blobs[0].data)
        else:  # the gradient of W ⊙ T: none for a pruned weight (npcaffe.masks)
            self.conv_backward(top, propagate_down, bottom, computing_params(self)[0])
            mask_gradients(self)

    def conv_forward(self, bottom, top, weight, bias, csr=None):
        path = self.compute_path(csr)
        path.keep_for_backward = self.backward_expected
        path.forward(bottom, top, weight, bias, csr)

    def conv_backward(self, top, propagate_down, bottom, weight, csr=None):
        path = self.compute_path(csr)
        bias_diff = self.blobs[1].diff if self.bias_term and self.param_needs_backward(1) else None
        if not self.param_needs_backward(0):
            path.backward(top, propagate_down, bottom, weight, csr, None, bias_diff)
        elif path.writes_fresh_weight_diff:  # it may write over a deferred clear's zeros
            weight_diff, fresh = self.blobs[0].diff_to_accumulate()
            path.backward(top, propagate_down, bottom, weight, csr, weight_diff.reshape(self.blobs[0].shape),
                          bias_diff, fresh)
        else:
            path.backward(top, propagate_down, bottom, weight, csr, self.blobs[0].diff, bias_diff)

    # -- which path -------------------------------------------------------------
    def compute_path(self, csr=None):
        """The conv_paths path conv_forward / conv_backward take, for dense weights or `csr`."""
        if self.nd:
            return self._path(NdColumns)
        if csr is None:
            if self.winograd and Winograd.suits(self.shape):
                return self._path(Winograd)
            if Depthwise.suits(self.shape):
                return self._path(Depthwise)
            return self._path(ImageColumns if ImageColumns.suits(self.shape) else DenseColumns)
        if SparseBatchInner.suits(self.shape):
            return self._path(SparseBatchInner)
        return self._path(SparseStride1 if self.stride == (1, 1) else SparseColumns)

    def sparse_forward(self, bottom, top):
        """Forward with the packed weights (a TEST net, npcaffe.sparse.packing); False if the layer
        should run dense instead.  Weights written since packing are packed again first."""
        packed = self.packed
        if packed.verify and not packed.current(self):
            return repack(self) and self.sparse_forward(bottom, top)
        if self.num >= SMALL_BATCH:
            cls = PackedBatchInner
        else:
            cls = PackedStride1 if self.stride == (1, 1) else PackedColumns
        path = self._paths.get(cls) or self._path(cls)  # kept lean: at batch 1 a call costs ~1% of the forward
        path.forward(self.blob_views(bottom, top, _image_views), packed)
        return True

    def _path(self, cls):
        path = self._paths.get(cls)
        if path is None:
            path = self._paths[cls] = cls(self.shape, self._scratch)
        return path


def _conv_geometry(layer, param, bottom, any_axes=False):
    """kernel, stride, pad, dilation (each (h, w), or one per spatial axis with any_axes) and the
    channel axis, checked as Convolution does."""
    axis = bottom.canonical_axis(param.axis)
    spatial = bottom.num_axes - axis - 1
    if any_axes and spatial >= 1 and spatial != 2:
        return (*_spatial_nd(layer, param, spatial), axis)
    if spatial != 2:
        raise NetError(f"{_where(layer)}: bottom '{bottom.name}' {bottom.shape} with axis {param.axis} must have "
                       f"{'at least one spatial axis' if any_axes else 'exactly 2 spatial axes'} after the "
                       "channel axis")
    kernel = _spatial_pair(layer, param, "kernel", None)
    stride = _spatial_pair(layer, param, "stride", 1)
    pad = _spatial_pair(layer, param, "pad", 0)
    dilation = list(param.dilation)
    if len(dilation) not in (0, 1, 2):
        raise NetError(f"{_where(layer)}: dilation must be given once or once per spatial axis, got {dilation}")
    dilation = (dilation[0], dilation[-1]) if dilation else (1, 1)
    if min(kernel) <= 0 or min(stride) <= 0 or min(dilation) <= 0 or min(pad) < 0:
        raise NetError(f"{_where(layer)}: kernel {kernel}, stride {stride} and dilation {dilation} must be "
                       f"positive and pad {pad} non-negative")
    return kernel, stride, pad, dilation, axis


@register("Deconvolution")
class DeconvolutionLayer(Layer):
    """Transposed convolution (BVLC src/caffe/layers/deconv_layer.cpp).

    Forward is Convolution's backward-to-data and backward its forward.
    Shapes: bottom (..., C, H, W) -> top (..., num_output, OH, OW) with
        OH = stride_h (H - 1) + dilation_h (kernel_h - 1) + 1 - 2 pad_h
    blobs[0] the weight (C, num_output / group, kernel_h, kernel_w) (note
    the order: input channels first, as upstream), blobs[1] the bias
    (num_output,) when bias_term.  Parameters as Convolution
    (convolution_param).  The batch goes through one GEMM per group and one
    col2im, as our Convolution does; over other than 2 spatial axes, one image
    at a time through im2col_nd / col2im_nd (Caffe's N-D path).
    """
    min_bottom = 1
    min_top = 1
    equal_num_bottom_top = True

    def layer_setup(self, bottom, top):
        p = self.layer_param.convolution_param
        self.kernel, self.stride, self.pad, self.dilation, self.axis = _conv_geometry(self, p, bottom[0], True)
        self.nd = len(self.kernel) != 2  # 1-D, 3-D, ...: per image through im2col_nd / col2im_nd
        self.channels = bottom[0].shape[self.axis]
        self.num_output, self.group, self.bias_term = p.num_output, p.group, p.bias_term
        if self.num_output <= 0:
            raise NetError(f"{_where(self)}: convolution_param.num_output must be positive, got {self.num_output}")
        if self.group <= 0 or self.channels % self.group or self.num_output % self.group:
            raise NetError(f"{_where(self)}: group {self.group} must divide both the input channels "
                           f"({self.channels}, bottom {bottom[0].shape}) and num_output ({self.num_output})")
        shapes = [(self.channels, self.num_output // self.group) + tuple(self.kernel)]
        if self.bias_term:
            shapes.append((self.num_output,))
        if self.blobs:
            if [b.shape for b in self.blobs] != shapes:
                raise NetError(f"{_where(self)}: parameter blobs have shapes {[b.shape for b in self.blobs]}, "
                               f"expected {shapes}")
            return
        self.blobs = [Blob(shapes[0], name=f"{self.name}.weight")]
        fill(self.blobs[0], p.weight_filler, where=f"layer '{self.name}' weight_filler")
        if self.bias_term:
            self.blobs.append(Blob(shapes[1], name=f"{self.name}.bias"))
            fill(self.blobs[1], p.bias_filler, where=f"layer '{self.name}' bias_filler")

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        for b in bottom[1:]:
            if b.shape != shape:
                raise NetError(f"{_where(self)}: all bottoms must have the same shape; '{bottom[0].name}' is "
                               f"{shape}, '{b.name}' is {b.shape}")
        axes = len(self.kernel)
        if len(shape) != self.axis + 1 + axes or shape[self.axis] != self.channels:
            raise NetError(f"{_where(self)}: bottom '{bottom[0].name}' {shape} does not fit the weights set up "
                           f"for {self.channels} channels at axis {self.axis} and {axes} spatial axes")
        self.in_shape = shape[self.axis + 1:]
        out = [s * (i - 1) + d * (k - 1) + 1 - 2 * p
               for i, s, d, k, p in zip(self.in_shape, self.stride, self.dilation, self.kernel, self.pad)]
        if min(out) < 1:
            raise NetError(f"{_where(self)}: input {self.in_shape} gives output {tuple(out)} with kernel "
                           f"{self.kernel}, stride {self.stride}, pad {self.pad}, dilation {self.dilation}")
        self.out_shape = tuple(out)
        if not self.nd:
            self.in_h, self.in_w = self.in_shape
            self.out_h, self.out_w = out
        self.num = bottom[0].count_range(0, self.axis)
        for t in top:
            t.reshape(shape[:self.axis] + (self.num_output,) + self.out_shape)

    def _geometry(self):
        # im2col's "output grid" is this layer's input.
        return (*self.kernel, *self.pad, *self.stride, *self.dilation, self.in_h, self.in_w)

    def _grouped_input(self, array):
        """(N, C, H, W) -> (group, C / group, N * H * W)."""
        g = self.group
        x = array.reshape(self.num, self.channels, -1).transpose(1, 0, 2)
        return x.reshape(g, self.channels // g, -1)

    def _weights(self):
        g = self.group
        return self.blobs[0].data.reshape(g, self.channels // g, -1)

    def _top_image(self, array):
        return array.reshape(self.num, self.num_output, self.out_h, self.out_w)

    # -- other than 2 spatial axes: per image, as Caffe's N-D path ------------------------
    def _nd_geometry(self):
        return self.kernel, self.pad, self.stride, self.dilation, self.in_shape  # im2col's "output" is the input

    def _nd_forward(self, bottom, top):
        g, w = self.group, self._weights()
        for b, t in zip(bottom, top):
            x = b.data.reshape(self.num, g, self.channels // g, -1)
            y = t.data.reshape((self.num, self.num_output) + self.out_shape)
            for n in range(self.num):
                col = np.concatenate([np.dot(w[k].T, x[n, k]) for k in range(g)])
                col2im_nd(col, *self._nd_geometry(), y[n])
            if self.bias_term:
                y += self.blobs[1].data.reshape((1, -1) + (1,) * len(self.out_shape))

    def _nd_backward(self, top, propagate_down, bottom):
        g, w = self.group, self._weights()
        need_w = self.param_needs_backward(0)
        need_b = self.bias_term and self.param_needs_backward(1)
        col = np.empty((self.num_output * math.prod(self.kernel), math.prod(self.in_shape)), np.float32)
        for i, (t, b) in enumerate(zip(top, bottom)):
            dy = t.diff.reshape((self.num, self.num_output) + self.out_shape)
            if need_b:
                self.blobs[1].diff[...] += dy.reshape(self.num, self.num_output, -1).sum(axis=2, dtype=np.float32) \
                    .sum(axis=0, dtype=np.float32)
            if not (need_w or propagate_down[i]):
                continue
            x = b.data.reshape(self.num, g, self.channels // g, -1)
            dx = b.diff.reshape(self.num, g, self.channels // g, -1)
            grad = self.blobs[0].diff.reshape(w.shape)
            for n in range(self.num):
                im2col_nd(dy[n], *self._nd_geometry(), col)
                col_g = col.reshape(g, -1, col.shape[1])
                for k in range(g):
                    if need_w:
                        grad[k] += np.dot(x[n, k], col_g[k].T)
                    if propagate_down[i]:
                        np.dot(w[k], col_g[k], out=dx[n, k])

    def forward_cpu(self, bottom, top):
        if self.nd:
            return self._nd_forward(bottom, top)
        w = self._weights()
        for b, t in zip(bottom, top):
            col = np.matmul(w.transpose(0, 2, 1), self._grouped_input(b.data))
            y = self._top_image(t.data)
            col2im(col.reshape(-1, col.shape[2]), *self._geometry(), y)
            if self.bias_term:
                y += self.blobs[1].data.reshape(1, -1, 1, 1)

    def backward_cpu(self, top, propagate_down, bottom):
        if self.nd:
            return self._nd_backward(top, propagate_down, bottom)
        w = self._weights()
        need_w = self.param_needs_backward(0)
        need_b = self.bias_term and self.param_needs_backward(1)
        kk = self.kernel[0] * self.kernel[1]
        for i, (t, b) in enumerate(zip(top, bottom)):
            dy = self._top_image(t.diff)
            if need_b:
                self.blobs[1].diff[...] += dy.sum(axis=(0, 2, 3), dtype=np.float32)
            if not (need_w or propagate_down[i]):
                continue
            col = np.empty((self.num_output * kk, self.num * self.in_h * self.in_w), np.float32)
            im2col(np.ascontiguousarray(dy), *self._geometry(), col)
            col = col.reshape(self.group, -1, col.shape[1])
            if need_w:
                x = self._grouped_input(b.data)
                self.blobs[0].diff.reshape(w.shape)[...] += np.matmul(x, col.transpose(0, 2, 1))
            if propagate_down[i]:
                dx = np.matmul(w, col).reshape(self.channels, self.num, -1).transpose(1, 0, 2)
                b.diff.reshape(self.num, self.channels, -1)[...] = dx


@register("Im2col")
class Im2colLayer(Layer):
    """Unroll image patches into channels (BVLC src/caffe/layers/im2col_layer.cpp).

    Shapes: bottom (..., C, H, W) -> top (..., C kernel_h kernel_w, OH, OW),
    OH as Convolution's; channel (c, i, j) of the top at (y, x) holds
    bottom[c, y stride_h - pad_h + i dilation_h, x stride_w - pad_w + j dilation_w]
    (0 in the padding).  Parameters: convolution_param's kernel, stride, pad,
    dilation, axis.  Backward sums each top entry back into its pixel (col2im).
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        self.kernel, self.stride, self.pad, self.dilation, self.axis = _conv_geometry(
            self, self.layer_param.convolution_param, bottom[0])

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) != self.axis + 3:
            raise NetError(f"{_where(self)}: bottom '{bottom[0].name}' changed its number of axes (now {shape})")
        self.channels = shape[self.axis]
        self.in_h, self.in_w = shape[-2:]
        self.out_h, self.out_w = (_conv_out_dim(s, k, p, st, d) for s, k, p, st, d in
                                  zip(shape[-2:], self.kernel, self.pad, self.stride, self.dilation))
        if min(self.out_h, self.out_w) < 1:
            raise NetError(f"{_where(self)}: input {shape[-2:]} is too small for kernel {self.kernel}, "
                           f"pad {self.pad}, stride {self.stride}, dilation {self.dilation}")
        self.num = bottom[0].count_range(0, self.axis)
        self.rows = self.channels * self.kernel[0] * self.kernel[1]
        top[0].reshape(shape[:self.axis] + (self.rows, self.out_h, self.out_w))

    def _geometry(self):
        return (*self.kernel, *self.pad, *self.stride, *self.dilation, self.out_h, self.out_w)

    def _image(self, array):
        return array.reshape(self.num, self.channels, self.in_h, self.in_w)

    def forward_cpu(self, bottom, top):
        col = np.empty((self.rows, self.num * self.out_h * self.out_w), np.float32)
        im2col(self._image(bottom[0].data), *self._geometry(), col)
        top[0].data.reshape(self.num, self.rows, -1)[...] = col.reshape(self.rows, self.num, -1).transpose(1, 0, 2)

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            col = np.ascontiguousarray(top[0].diff.reshape(self.num, self.rows, -1).transpose(1, 0, 2))
            col2im(col.reshape(self.rows, -1), *self._geometry(), self._image(bottom[0].diff))
