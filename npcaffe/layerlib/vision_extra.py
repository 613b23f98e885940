"""More vision layers: LRN, Deconvolution, Im2col, SPP and stochastic pooling.

They share Convolution's parameter parsing and its im2col / col2im kernels
(npcaffe.layerlib.vision, npcaffe.kernels.im2col); LRN and stochastic
pooling have kernels of their own (npcaffe.kernels.lrn,
npcaffe.kernels.stochastic_pooling).
"""
import math

import numpy as np

from ..blob import Blob
from ..errors import NetError
from ..filler import fill
from ..kernels.im2col import col2im, col2im_nd, im2col, im2col_nd
from ..kernels.lrn import lrn_across_backward, lrn_across_forward, lrn_within_backward, lrn_within_forward
from ..kernels.stochastic_pooling import (stochastic_pool_test, stochastic_pool_test_backward,
                                          stochastic_pool_train, stochastic_pool_train_backward)
from ..layer import TRAIN, Layer, create_layer, register, register_variant
from ..proto import caffe_pb2
from ..rng import get_rng
from .vision import Pooling, _conv_out_dim, _spatial_nd, _spatial_pair

_LRN = caffe_pb2.LRNParameter
_Pool = caffe_pb2.PoolingParameter
_SPP = caffe_pb2.SPPParameter


def _where(layer):
    return f"layer '{layer.name}' ({layer.type})"


def _need_4d(layer, blob):
    if blob.num_axes != 4:
        raise NetError(f"{_where(layer)}: bottom '{blob.name}' must have 4 axes (num, channels, height, width), "
                       f"got shape {blob.shape}")


@register("LRN")
class LRNLayer(Layer):
    """Local response normalisation (BVLC src/caffe/layers/lrn_layer.cpp).

    Shapes: bottom (N, C, H, W), top the same.  lrn_param: local_size n
    (default 5, must be odd), alpha (1), beta (0.75), k (1), norm_region.

    ACROSS_CHANNELS (default):
        y = x * (k + alpha / n * sum_{c' in window(c)} x_{c'}^2) ^ -beta
    over the n channels centred on c (fewer at the ends; missing ones count 0).
    WITHIN_CHANNEL:
        y = x * (1 + alpha / n^2 * sum_{n x n window} x^2) ^ -beta
    over the n x n spatial window centred on the pixel, zeros outside the
    image.  Mirrored from upstream on purpose: k is ignored here (the shift
    is 1) and alpha is divided by n^2 (upstream averages with a padded AVE
    pooling).  Backward is the exact gradient of each (kernels in
    npcaffe.kernels.lrn, which keep upstream's running-window arithmetic for
    ACROSS_CHANNELS).  Deliberate difference: in-place use is an error
    (upstream accepts it and then computes its backward from the output).
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.lrn_param
        self.size = p.local_size
        if self.size % 2 != 1 or self.size < 1:
            raise NetError(f"{_where(self)}: lrn_param.local_size must be odd (the window is centred), got "
                           f"{self.size}; use e.g. {self.size + 1 if self.size > 0 else 1}")
        self.alpha, self.beta, self.k = np.float32(p.alpha), np.float32(p.beta), np.float32(p.k)
        self.region = p.norm_region
        if self.region not in (_LRN.ACROSS_CHANNELS, _LRN.WITHIN_CHANNEL):
            raise NetError(f"{_where(self)}: unknown norm_region {self.region}")
        self.scale = np.zeros(0, np.float32)

    def reshape(self, bottom, top):
        _need_4d(self, bottom[0])
        if top[0] is bottom[0]:
            raise NetError(f"{_where(self)}: cannot run in place (backward needs the input); give the top its own name")
        top[0].reshape_like(bottom[0])
        if self.scale.size != bottom[0].count:
            self.scale = np.zeros(bottom[0].count, np.float32)

    def forward_cpu(self, bottom, top):
        x = bottom[0].data
        scale = self.scale.reshape(x.shape)
        if self.region == _LRN.ACROSS_CHANNELS:
            lrn_across_forward(x, self.size, self.alpha, self.beta, self.k, scale, top[0].data)
        else:
            lrn_within_forward(x, self.size, self.alpha, self.beta, scale, top[0].data)

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x = bottom[0].data
        scale = self.scale.reshape(x.shape)
        if self.region == _LRN.ACROSS_CHANNELS:
            lrn_across_backward(x, top[0].data, scale, top[0].diff, self.size, self.alpha, self.beta, bottom[0].diff)
        else:
            lrn_within_backward(x, scale, top[0].diff, self.size, self.alpha, self.beta, bottom[0].diff)


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


@register_variant("Pooling", lambda param: param.pooling_param.pool == _Pool.STOCHASTIC)
class StochasticPooling(Pooling):
    """Pooling with pool: STOCHASTIC (BVLC pooling_layer.cu, StoPoolForwardTrain / Test;
    upstream's CPU path is NOT_IMPLEMENTED).

    Shapes and parameters as Pooling (the output size counts the padding, the
    windows ignore it, as upstream).  Inputs should be non-negative.
    TRAIN: each output draws one position of its window with probability
    proportional to the value there (u from npcaffe.rng, so seeded runs
    repeat) and outputs that value; backward routes the top diff to the
    drawn positions.  TEST: output sum x^2 / sum x over the window (0 when
    the sum is not positive).  Deliberate difference: TEST-phase backward is
    the exact gradient of that average, (2 x - y) / sum x; upstream reuses
    the indices of the last TRAIN draw.  No mask top.
    """
    max_top = 1

    def layer_setup(self, bottom, top):
        # Pooling's checks, with a method it accepts; this class only changes the arithmetic.
        self.method = _Pool.AVE
        super().layer_setup(bottom, top)
        self.method = _Pool.STOCHASTIC

    def forward_cpu(self, bottom, top):
        (kh, kw), (sh, sw) = self.kernel, self.stride
        x, y = bottom[0].data, top[0].data
        if self.phase == TRAIN:
            u = get_rng().random(y.shape, dtype=np.float32)
            self.index = np.empty(y.shape, np.int64)
            stochastic_pool_train(x, kh, kw, sh, sw, u, y, self.index)
        else:
            stochastic_pool_test(x, kh, kw, sh, sw, y)

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        if self.phase == TRAIN:
            stochastic_pool_train_backward(top[0].diff, self.index, bottom[0].diff)
        else:
            (kh, kw), (sh, sw) = self.kernel, self.stride
            stochastic_pool_test_backward(bottom[0].data, kh, kw, sh, sw, top[0].data, top[0].diff, bottom[0].diff)


@register("SPP")
class SPPLayer(Layer):
    """Spatial pyramid pooling (BVLC src/caffe/layers/spp_layer.cpp).

    Shapes: bottom (N, C, H, W) -> top (N, C * sum_{l < L} 4^l) for
    pyramid_height L > 1, the levels' pooled maps flattened and concatenated
    in level order; for L = 1 the single level's (N, C, 1, 1).  Level l pools
    into 2^l x 2^l bins with kernel = ceil(H / 2^l), stride = kernel,
    pad = (kernel 2^l - H + 1) / 2 (integer division), and likewise for W,
    with spp_param.pool (MAX, AVE or STOCHASTIC) through our Pooling layer
    (so upstream's checks apply: some small inputs need a pad as large as the
    kernel, which Pooling rejects, as upstream does).  The pyramid is rebuilt
    when H or W change.  Backward sums the levels' gradients.
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        self.height_levels = self.layer_param.spp_param.pyramid_height
        if self.height_levels < 1:
            raise NetError(f"{_where(self)}: spp_param.pyramid_height must be at least 1, got {self.height_levels}")
        self._built_for = None

    def _pooling_param(self, level, height, width):
        bins = 2 ** level
        param = caffe_pb2.LayerParameter(name=f"{self.name}_level{level}", type="Pooling")
        param.phase = self.phase
        pp = param.pooling_param
        pp.pool = {_SPP.MAX: _Pool.MAX, _SPP.AVE: _Pool.AVE, _SPP.STOCHASTIC: _Pool.STOCHASTIC}[
            self.layer_param.spp_param.pool]
        kh, kw = -(-height // bins), -(-width // bins)
        pp.kernel_h, pp.kernel_w = kh, kw
        pp.stride_h, pp.stride_w = kh, kw
        pp.pad_h, pp.pad_w = (kh * bins - height + 1) // 2, (kw * bins - width + 1) // 2
        return param

    def reshape(self, bottom, top):
        _need_4d(self, bottom[0])
        num, channels, height, width = bottom[0].shape
        if self._built_for != (height, width):
            self.levels = []
            for level in range(self.height_levels):
                layer = create_layer(self._pooling_param(level, height, width), self.phase)
                source = Blob(bottom[0].shape, name=bottom[0].name)
                source.share_data(bottom[0])
                pooled = Blob((), name=f"{self.name}_level{level}")
                try:
                    layer.setup([source], [pooled])
                except NetError as e:
                    raise NetError(f"{_where(self)}: pyramid level {level} for input {height}x{width}: {e}") from None
                self.levels.append((layer, source, pooled))
            self._built_for = (height, width)
        for layer, source, pooled in self.levels:
            source.reshape(bottom[0].shape)
            source.share_data(bottom[0])
            layer.reshape([source], [pooled])
        if self.height_levels == 1:
            top[0].reshape(self.levels[0][2].shape)
        else:
            top[0].reshape(num, sum(p.count_range(1) for _, _, p in self.levels))

    def forward_cpu(self, bottom, top):
        out = top[0].data.reshape(top[0].shape[0], -1)
        start = 0
        for layer, source, pooled in self.levels:
            layer.forward([source], [pooled])
            n = pooled.count_range(1)
            out[:, start:start + n] = pooled.data.reshape(pooled.shape[0], -1)
            start += n

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff.reshape(top[0].shape[0], -1)
        dx = bottom[0].diff
        start = 0
        for i, (layer, source, pooled) in enumerate(self.levels):
            n = pooled.count_range(1)
            pooled.diff.reshape(pooled.shape[0], -1)[...] = dy[:, start:start + n]
            start += n
            layer.backward([pooled], [True], [source])
            if i == 0:
                dx[...] = source.diff
            else:
                dx += source.diff
