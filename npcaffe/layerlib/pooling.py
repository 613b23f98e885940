"""The pooling family: Pooling (MAX, AVE), its STOCHASTIC variant and SPP over (N, C, H, W) blobs.

The arithmetic lives in npcaffe.kernels.pooling and
npcaffe.kernels.stochastic_pooling; this module reads the parameters,
checks them as Caffe does and sizes the tops.
"""
import math

import numpy as np

from ..blob import Blob
from ..errors import NetError
from ..kernels.pooling import ave_pool_backward, ave_pool_forward, max_pool_backward, max_pool_forward
from ..kernels.stochastic_pooling import (stochastic_pool_test, stochastic_pool_test_backward,
                                          stochastic_pool_train, stochastic_pool_train_backward)
from ..layer import TRAIN, Layer, create_layer, register, register_variant
from ..proto import caffe_pb2
from ..rng import get_rng

_Pool = caffe_pb2.PoolingParameter
_SPP = caffe_pb2.SPPParameter


def _where(layer):
    return f"layer '{layer.name}' ({layer.type})"


def _need_4d(layer, blob):
    if blob.num_axes != 4:
        raise NetError(f"{_where(layer)}: bottom '{blob.name}' must have 4 axes (num, channels, height, width), "
                       f"got shape {blob.shape}")


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

    The forks' `ceil_mode` (BVLC pull request #3057, e.g.
    foss-for-synopsys-dwc-arc-processors/synopsys-caffe's pooling_layer.cpp;
    used by DenseNet-Caffe and other published prototxts) says the same:
    true (its default) is CEIL, false FLOOR, with the same pad clipping below.
    Giving both fields is an error.  (Its field number is 1013 here, not the
    forks' 13: caffe.proto's header says why.)

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
        if p.HasField("ceil_mode"):
            if p.HasField("round_mode"):
                fail(f"give round_mode (BVLC) or ceil_mode (forks), not both (round_mode: "
                     f"{_Pool.RoundMode.Name(p.round_mode)}, ceil_mode: {str(p.ceil_mode).lower()})")
            self.ceil_mode = p.ceil_mode
        else:
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
