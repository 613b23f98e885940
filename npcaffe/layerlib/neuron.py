"""Neuron layers: element-wise, one bottom, one top of the same shape, in-place capable."""
import numpy as np

from ..errors import NetError
from ..layer import TRAIN, Layer, register
from ..rng import get_rng


class NeuronLayer(Layer):
    """Base of element-wise layers (BVLC src/caffe/layers/neuron_layer.cpp): top is shaped like bottom."""
    exact_num_bottom = 1
    exact_num_top = 1

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
        self._b = np.zeros(0, np.float32)

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        self._a = _scratch(self._a, bottom[0].count)
        if self.negative_slope != 0:
            self._b = _scratch(self._b, bottom[0].count)

    def forward_cpu(self, bottom, top):
        x, y = bottom[0].flat_data, top[0].flat_data
        if self.negative_slope == 0:
            np.maximum(x, 0, out=y)
            return
        # The negative part is taken before y is written: y may be x (in place).
        np.minimum(x, 0, out=self._a)
        self._a *= self.negative_slope
        np.maximum(x, 0, out=y)
        y += self._a

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x = bottom[0].flat_data
        factor = self._a
        np.greater(x, 0, out=factor)
        if self.negative_slope != 0:
            np.less_equal(x, 0, out=self._b)
            self._b *= self.negative_slope
            factor += self._b
        np.multiply(top[0].flat_diff, factor, out=bottom[0].flat_diff)


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
