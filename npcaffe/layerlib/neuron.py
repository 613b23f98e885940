"""Neuron layers: element-wise, one bottom, one top of the same shape, in-place capable."""
import numpy as np

from ..errors import NetError
from ..kernels.activation import relu_backward, relu_backward_in_place, relu_forward
from ..layer import TRAIN, Layer, register
from ..rng import get_rng


class NeuronLayer(Layer):
    """Base of element-wise layers (BVLC src/caffe/layers/neuron_layer.cpp): top is shaped like bottom."""
    exact_num_bottom = 1
    exact_num_top = 1
    reshape_from_shapes = True

    def reshape(self, bottom, top):
        top[0].reshape_like(bottom[0])


def _scratch(buf, count):
    return buf if buf.size == count else np.zeros(count, np.float32)


@register("ReLU")
class ReLULayer(NeuronLayer):
    """Rectified linear unit (BVLC src/caffe/layers/relu_layer.cpp).

    Forward: top = max(x, 0) + negative_slope * min(x, 0).
    Backward: bottom_diff = top_diff * ((x > 0) + negative_slope * (x <= 0)),
    so the gradient at exactly 0 is negative_slope (0 for a plain ReLU).

    Mirrored from upstream on purpose: backward reads the *bottom* data, as
    Caffe does.  In place, that buffer already holds the top data; for
    negative_slope >= 0 the sign test gives the same answer on either, so
    in-place ReLU is exact.  With a negative slope, in-place backward is wrong
    in Caffe too (negative inputs come back positive), and we do not hide it.
    """

    def layer_setup(self, bottom, top):
        self.negative_slope = np.float32(self.layer_param.relu_param.negative_slope)
        self._a = np.zeros(0, np.float32)

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        if self.negative_slope != 0:
            self._a = _scratch(self._a, bottom[0].count)  # forward's negative part

    def forward_cpu(self, bottom, top):
        x = bottom[0].flat_data
        y = x if top[0] is bottom[0] else top[0].flat_data
        if self.negative_slope == 0:
            relu_forward(x, y)
            return
        # The negative part is taken before y is written: y may be x (in place).
        np.minimum(x, 0, out=self._a)
        self._a *= self.negative_slope
        np.maximum(x, 0, out=y)
        y += self._a

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        if top[0] is bottom[0]:
            relu_backward_in_place(bottom[0].flat_data, bottom[0].flat_diff, self.negative_slope)
        else:
            relu_backward(bottom[0].flat_data, top[0].flat_diff, self.negative_slope, bottom[0].flat_diff)


@register("Dropout")
class DropoutLayer(NeuronLayer):
    """Inverted dropout (BVLC src/caffe/layers/dropout_layer.cpp).

    TRAIN: mask ~ Bernoulli(1 - p) per element, drawn from npcaffe.rng;
    top = x * mask * scale with scale = 1 / (1 - p); backward:
    bottom_diff = top_diff * mask * scale with the same mask.
    TEST: top = x, bottom_diff = top_diff.

    Mirrored from upstream on purpose: scale is computed in double from the
    float32 ratio and then rounded to float32 (Caffe's `Dtype scale_ =
    1. / (1. - threshold_)`), and the product is taken left to right,
    (x * mask) * scale.  The mask values are seeded npcaffe draws, not
    Caffe's boost stream.  Caffe only DCHECKs 0 < p < 1; we reject p outside
    [0, 1) (p = 1 would give 0 * inf = NaN) and allow p = 0 (identity).
    Safe in place.
    """

    def layer_setup(self, bottom, top):
        p = self.layer_param.dropout_param.dropout_ratio
        if not 0 <= p < 1:
            raise NetError(f"layer '{self.name}' (Dropout): dropout_param.dropout_ratio must be in [0, 1), got {p}")
        self.threshold = p
        self.scale = np.float32(1.0 / (1.0 - p))
        self._uniform = np.zeros(0, np.float32)
        self.mask = np.zeros(0, np.float32)

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        self._uniform = _scratch(self._uniform, bottom[0].count)
        self.mask = _scratch(self.mask, bottom[0].count)

    def forward_cpu(self, bottom, top):
        x, y = bottom[0].flat_data, top[0].flat_data
        if self.phase != TRAIN:
            if top[0] is not bottom[0]:
                y[:] = x
            return
        get_rng().random(out=self._uniform, dtype=np.float32)
        np.less(self._uniform, 1.0 - self.threshold, out=self.mask)
        np.multiply(x, self.mask, out=y)
        y *= self.scale

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy, dx = top[0].flat_diff, bottom[0].flat_diff
        if self.phase != TRAIN:
            if top[0] is not bottom[0]:
                dx[:] = dy
            return
        np.multiply(dy, self.mask, out=dx)
        dx *= self.scale


# -- the rest of Caffe's neuron layers -------------------------------------------------

def _activation():
    from ..kernels import activation
    return activation


class InPlaceCopy:
    """Keeps a copy of the bottom data when a layer runs in place and its
    backward needs the input (Caffe's bottom_memory_)."""

    def __init__(self):
        self.buffer = np.zeros(0, np.float32)

    def save(self, bottom, top):
        if top[0] is bottom[0]:
            self.reserve(bottom[0].count)[:] = bottom[0].flat_data

    def reserve(self, count):
        """The buffer, sized for `count` values, for a pass that writes the copy itself (npcaffe.plan)."""
        self.buffer = _scratch(self.buffer, count)
        return self.buffer

    def input(self, bottom, top):
        return self.buffer if top[0] is bottom[0] else bottom[0].flat_data


@register("Sigmoid")
class SigmoidLayer(NeuronLayer):
    """Logistic sigmoid (BVLC src/caffe/layers/sigmoid_layer.cpp).

    Forward: y = 0.5 tanh(0.5 x) + 0.5 (upstream's formulation, evaluated in
    double and rounded to float32).  Backward: dx = dy * y * (1 - y), from
    the top data, so safe in place.
    """

    def forward_cpu(self, bottom, top):
        _activation().sigmoid_forward(bottom[0].flat_data, top[0].flat_data)

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y = top[0].flat_data
            np.multiply(top[0].flat_diff, y * (np.float32(1) - y), out=bottom[0].flat_diff)


@register("TanH")
class TanHLayer(NeuronLayer):
    """Hyperbolic tangent (BVLC src/caffe/layers/tanh_layer.cpp).

    Forward: y = tanhf(x).  Backward: dx = dy * (1 - y^2), from the top data,
    so safe in place.
    """

    def forward_cpu(self, bottom, top):
        _activation().tanh_forward(bottom[0].flat_data, top[0].flat_data)

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y = top[0].flat_data
            np.multiply(top[0].flat_diff, np.float32(1) - y * y, out=bottom[0].flat_diff)


@register("AbsVal")
class AbsValLayer(NeuronLayer):
    """Absolute value (BVLC src/caffe/layers/absval_layer.cpp).

    Forward: y = |x|.  Backward: dx = sign(x) * dy, with sign(0) = 0.  As
    upstream, in-place use is an error (backward needs the sign of x).
    """

    def layer_setup(self, bottom, top):
        if top[0] is bottom[0]:
            raise NetError(f"layer '{self.name}' (AbsVal) cannot run in place; give its top its own name")

    def forward_cpu(self, bottom, top):
        np.abs(bottom[0].flat_data, out=top[0].flat_data)

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            np.multiply(np.sign(bottom[0].flat_data), top[0].flat_diff, out=bottom[0].flat_diff)


@register("Power")
class PowerLayer(NeuronLayer):
    """y = (shift + scale * x) ^ power (BVLC src/caffe/layers/power_layer.cpp).

    Backward: dx = dy * power * scale * (shift + scale x)^(power - 1).
    Mirrored from upstream on purpose: when power * scale == 0 the output is
    the constant shift^power (1 if power == 0) and the gradient 0; when
    power == 1 the gradient is the constant scale; power == 2 uses
    2 scale (shift + scale x); shift == 0 uses power * y / x (so x == 0 gives
    NaN / inf, as upstream); otherwise power scale y / (shift + scale x).
    Safe in place only in the cases whose gradient does not read x, as upstream.
    """

    def layer_setup(self, bottom, top):
        p = self.layer_param.power_param
        self.power = np.float32(p.power)
        self.scale = np.float32(p.scale)
        self.shift = np.float32(p.shift)
        self.diff_scale = np.float32(self.power * self.scale)

    def forward_cpu(self, bottom, top):
        y = top[0].flat_data
        if self.diff_scale == 0:
            y[:] = np.float32(1) if self.power == 0 else np.power(self.shift, self.power)
            return
        x = bottom[0].flat_data
        if self.scale != 1:
            np.multiply(x, self.scale, out=y)
        elif y is not x:
            y[:] = x
        if self.shift != 0:
            y += self.shift
        if self.power != 1:
            np.power(y, self.power, out=y)

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dx = bottom[0].flat_diff
        if self.diff_scale == 0:
            dx[:] = 0
            return
        if self.power == 1:
            np.multiply(top[0].flat_diff, self.diff_scale, out=dx)
            return
        x = bottom[0].flat_data
        if self.power == 2:
            grad = np.float32(self.diff_scale * self.scale) * x
            if self.shift != 0:
                grad += np.float32(self.diff_scale * self.shift)
        elif self.shift == 0:
            with np.errstate(divide="ignore", invalid="ignore"):
                grad = top[0].flat_data / x
            grad *= self.power
        else:
            base = x * self.scale if self.scale != 1 else x.copy()
            base += self.shift
            with np.errstate(divide="ignore", invalid="ignore"):
                grad = top[0].flat_data / base
            if self.diff_scale != 1:
                grad *= self.diff_scale
        np.multiply(top[0].flat_diff, grad, out=dx)


def _log_base(layer, base, what):
    if base != -1 and not base > 0:
        raise NetError(f"layer '{layer.name}' ({layer.type}): {what}.base must be strictly positive "
                       f"(or -1 for e), got {base}")
    log_base = np.float32(1) if base == -1 else np.float32(np.log(np.float32(base)))
    if not np.isfinite(log_base):
        raise NetError(f"layer '{layer.name}' ({layer.type}): log({what}.base = {base}) is {log_base}")
    return log_base


@register("Exp")
class ExpLayer(NeuronLayer):
    """y = base ^ (shift + scale x) (BVLC src/caffe/layers/exp_layer.cpp).

    base -1 (default) means e.  Computed as upstream: y = outer * expf(inner x)
    with inner = ln(base) * scale and outer = base^shift (e^shift for base e;
    exactly 1 when shift is 0).  Backward: dx = dy * y * inner, from the top
    data, so safe in place.
    """

    def layer_setup(self, bottom, top):
        p = self.layer_param.exp_param
        log_base = _log_base(self, p.base, "exp_param")
        self.inner_scale = np.float32(log_base * np.float32(p.scale))
        if p.shift == 0:
            self.outer_scale = np.float32(1)
        elif p.base != -1:
            self.outer_scale = np.float32(np.power(np.float32(p.base), np.float32(p.shift)))
        else:
            self.outer_scale = np.float32(np.exp(np.float32(p.shift)))

    def forward_cpu(self, bottom, top):
        _activation().exp_forward(bottom[0].flat_data, self.inner_scale, self.outer_scale, top[0].flat_data)

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dx = bottom[0].flat_diff
            np.multiply(top[0].flat_data, top[0].flat_diff, out=dx)
            if self.inner_scale != 1:
                dx *= self.inner_scale


@register("Log")
class LogLayer(NeuronLayer):
    """y = log_base(shift + scale x) (BVLC src/caffe/layers/log_layer.cpp).

    base -1 (default) means e.  Forward: y = logf(scale x + shift) / ln(base).
    Backward: dx = dy * scale / ln(base) / (scale x + shift).  Reads x, so not
    safe in place (as upstream).
    """

    def layer_setup(self, bottom, top):
        p = self.layer_param.log_param
        log_base = _log_base(self, p.base, "log_param")
        self.base_scale = np.float32(np.float32(1) / log_base)
        self.scale = np.float32(p.scale)
        self.shift = np.float32(p.shift)
        self.backward_scale = np.float32(self.scale / log_base)

    def forward_cpu(self, bottom, top):
        _activation().log_forward(bottom[0].flat_data, self.scale, self.shift, self.base_scale, top[0].flat_data)

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dx = bottom[0].flat_diff
        np.multiply(bottom[0].flat_data, self.scale, out=dx)
        dx += self.shift
        np.reciprocal(dx, out=dx)
        if self.backward_scale != 1:
            dx *= self.backward_scale
        dx *= top[0].flat_diff


@register("BNLL")
class BNLLLayer(NeuronLayer):
    """Binomial normal log likelihood, softplus (BVLC src/caffe/layers/bnll_layer.cpp).

    Forward: y = log(1 + e^x), as x + log(1 + e^-x) for x > 0.  Backward:
    dx = dy * e / (1 + e), e = exp(min(x, 50)).  Reads x: not safe in place.
    """

    def forward_cpu(self, bottom, top):
        _activation().bnll_forward(bottom[0].flat_data, top[0].flat_data)

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            _activation().bnll_backward(bottom[0].flat_data, top[0].flat_diff, bottom[0].flat_diff)


@register("Threshold")
class ThresholdLayer(NeuronLayer):
    """y = 1 if x > threshold else 0 (BVLC src/caffe/layers/threshold_layer.cpp).

    No backward pass (upstream's is NOT_IMPLEMENTED): asking for one is an error.
    """

    def layer_setup(self, bottom, top):
        self.threshold = np.float32(self.layer_param.threshold_param.threshold)

    def forward_cpu(self, bottom, top):
        np.greater(bottom[0].flat_data, self.threshold, out=top[0].flat_data)


@register("ELU")
class ELULayer(NeuronLayer):
    """Exponential linear unit (BVLC src/caffe/layers/elu_layer.cpp).

    Forward: y = max(x, 0) + alpha (exp(min(x, 0)) - 1).  Backward:
    dx = dy * (1 if x > 0 else y + alpha).  Reads x (as upstream, so in place
    the sign test sees y, which has the same sign: safe for alpha >= 0).
    """

    def layer_setup(self, bottom, top):
        self.alpha = np.float32(self.layer_param.elu_param.alpha)

    def forward_cpu(self, bottom, top):
        _activation().elu_forward(bottom[0].flat_data, self.alpha, top[0].flat_data)

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            x, y = bottom[0].flat_data, top[0].flat_data
            grad = np.where(x > 0, np.float32(1), y + self.alpha).astype(np.float32)
            np.multiply(top[0].flat_diff, grad, out=bottom[0].flat_diff)


@register("PReLU")
class PReLULayer(NeuronLayer):
    """Parametric ReLU (BVLC src/caffe/layers/prelu_layer.cpp).

    Shapes: bottom (N, C, ...) with at least 2 axes; blobs[0] the slopes,
    (C,), or a scalar () with channel_shared.  Filler: prelu_param.filler,
    default constant 0.25.
    Forward: y = max(x, 0) + a_c min(x, 0).
    Backward: da_c += sum over N and spatial of dy * x * (x <= 0);
    dx = dy * ((x > 0) + a_c (x <= 0)).  In place, the input is saved
    before forward (upstream's bottom_memory_).
    """

    def layer_setup(self, bottom, top):
        if bottom[0].num_axes < 2:
            raise NetError(f"layer '{self.name}' (PReLU): bottom '{bottom[0].name}' must have at least 2 axes "
                           f"(num, channels, ...), got shape {bottom[0].shape}")
        p = self.layer_param.prelu_param
        self.channel_shared = p.channel_shared
        channels = bottom[0].shape[1]
        want = () if self.channel_shared else (channels,)
        if self.blobs:
            if self.blobs[0].count != (1 if self.channel_shared else channels):
                raise NetError(f"layer '{self.name}' (PReLU): slope blob has shape {self.blobs[0].shape}, "
                               f"expected {want} (channel_shared: {self.channel_shared}, bottom {bottom[0].shape})")
        else:
            from ..blob import Blob
            from ..filler import fill
            from ..proto import caffe_pb2
            self.blobs = [Blob(want, name=f"{self.name}.slope")]
            filler = p.filler if p.HasField("filler") else caffe_pb2.FillerParameter(type="constant", value=0.25)
            fill(self.blobs[0], filler, where=f"layer '{self.name}' prelu_param.filler")
        self._saved = InPlaceCopy()

    def reshape(self, bottom, top):
        if bottom[0].num_axes < 2:
            raise NetError(f"layer '{self.name}' (PReLU): bottom '{bottom[0].name}' must have at least 2 axes, "
                           f"got shape {bottom[0].shape}")
        super().reshape(bottom, top)

    def _view(self, flat, shape):
        return flat.reshape(shape[0], shape[1], -1)

    def _slopes(self):
        a = self.blobs[0].flat_data
        return a.reshape(1, 1, 1) if self.channel_shared else a.reshape(1, -1, 1)

    def forward_cpu(self, bottom, top):
        self._saved.save(bottom, top)
        shape = bottom[0].shape
        x = self._view(bottom[0].flat_data, shape)
        neg = np.minimum(x, 0) * self._slopes()
        y = self._view(top[0].flat_data, shape)
        np.maximum(x, 0, out=y)
        y += neg

    def backward_cpu(self, top, propagate_down, bottom):
        shape = bottom[0].shape
        x = self._view(self._saved.input(bottom, top), shape)
        dy = self._view(top[0].flat_diff, shape)
        negative = x <= 0
        if self.param_needs_backward(0):
            contrib = (dy * x * negative).sum(axis=(0, 2), dtype=np.float32)
            if self.channel_shared:
                self.blobs[0].flat_diff[0] += contrib.sum(dtype=np.float32)
            else:
                self.blobs[0].flat_diff[:] += contrib
        if propagate_down[0]:
            factor = (x > 0) + self._slopes() * negative
            np.multiply(dy, factor, out=self._view(bottom[0].flat_diff, shape))


# -- BVLC master's neuron layers (after 1.0): Clip, Swish ---------------------------

@register("Clip")
class ClipLayer(NeuronLayer):
    """Clamp to [min, max] (BVLC master src/caffe/layers/clip_layer.cpp, after 1.0).

    Forward: y = std::max(min, std::min(x, max)).  Backward:
    dx = dy * (x >= min && x <= max): the gradient passes at min and max
    themselves and is 0 outside.

    Mirrored from upstream on purpose:
    - std::min / std::max order: NaN inputs give min, and min > max gives
      min everywhere.  Both bounds are required in BVLC's ClipParameter; our
      prototxt reader does not enforce that, so setup does.
    - dy is multiplied by the 0/1 test, so a NaN or inf dy outside the range
      still gives NaN.
    - Backward reads the bottom data and runs in place without complaint, as
      upstream: in place it sees the clipped values, all inside [min, max],
      so every gradient passes (wrong, in Caffe too, and not hidden here).
    """

    def layer_setup(self, bottom, top):
        p = self.layer_param.clip_param
        for field in ("min", "max"):
            if not p.HasField(field):
                raise NetError(f"layer '{self.name}' (Clip): clip_param.{field} is required "
                               "(BVLC's ClipParameter declares both min and max required)")
        self.min = np.float32(p.min)
        self.max = np.float32(p.max)

    def forward_cpu(self, bottom, top):
        x = bottom[0].flat_data
        below_max = np.where(self.max < x, self.max, x)
        top[0].flat_data[:] = np.where(self.min < below_max, below_max, self.min)

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            x = bottom[0].flat_data
            inside = (x >= self.min) & (x <= self.max)
            np.multiply(top[0].flat_diff, inside, out=bottom[0].flat_diff)


@register("Swish")
class SwishLayer(NeuronLayer):
    """Swish, y = x sigmoid(beta x) (BVLC master src/caffe/layers/swish_layer.cpp, after 1.0).

    swish_param.beta defaults to 1.  Forward as upstream: s = sigmoid of the
    float32 product beta * x, by the Sigmoid layer's formula (0.5 tanh(0.5 v)
    + 0.5 in double, rounded to float32), kept for backward; y = x * s in
    float32.  Backward from the top data and the kept s:
    dx = dy * (beta y + s (1 - beta y)), with beta * y a float32 product and
    the rest in double (upstream's `1.` literal), rounded to float32 once.
    Reads no bottom data in backward, so safe in place.
    """

    def layer_setup(self, bottom, top):
        self.beta = np.float32(self.layer_param.swish_param.beta)
        self.sigmoid_output = np.zeros(0, np.float32)

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        self.sigmoid_output = _scratch(self.sigmoid_output, bottom[0].count)

    def forward_cpu(self, bottom, top):
        x, s = bottom[0].flat_data, self.sigmoid_output
        np.multiply(x, self.beta, out=s)
        _activation().sigmoid_forward(s, s)
        np.multiply(x, s, out=top[0].flat_data)

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            beta_y = (self.beta * top[0].flat_data).astype(np.float64)
            grad = top[0].flat_diff * (beta_y + self.sigmoid_output * (1.0 - beta_y))
            bottom[0].flat_diff[:] = grad
