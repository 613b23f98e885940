"""Per-channel affine passes behind BatchNorm (with its stored statistics) and Scale.

Arrays are viewed (outer, C, inner) as the layers view them.  NumPy computes
BatchNorm's (x - mean) / std and Scale's x * s + b as two whole-array passes
(and a temporary); these kernels make one pass with the same float32
operations in the same order - a subtraction then a division, a product then
a sum, no fused multiply-add - so the bits are NumPy's (tests/kernels/
test_channelwise.py compares them).  y may alias x (in place).
"""
import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def normalize(x, mean, std, y):
    """y[o, c, i] = (x[o, c, i] - mean[c]) / std[c]."""
    outer, channels, inner = x.shape
    for o in range(outer):
        for c in range(channels):
            m, s = mean[c], std[c]
            for i in range(inner):
                y[o, c, i] = (x[o, c, i] - m) / s


@njit(cache=True, nogil=True)
def scale_shift(x, scale, bias, has_bias, y):
    """y[o, c, i] = x[o, c, i] * scale[c] (+ bias[c])."""
    outer, channels, inner = x.shape
    for o in range(outer):
        for c in range(channels):
            s = scale[c]
            if has_bias:
                b = bias[c]
                for i in range(inner):
                    y[o, c, i] = x[o, c, i] * s + b
            else:
                for i in range(inner):
                    y[o, c, i] = x[o, c, i] * s


@njit(cache=True, nogil=True)
def normalize_scale_relu(x, mean, std, scale, bias, has_bias, relu, y):
    """BatchNorm (stored statistics) -> Scale -> ReLU (negative_slope 0) in one pass:
    y[o, c, i] = max((x[o, c, i] - mean[c]) / std[c] * scale[c] (+ bias[c]), 0), each operation
    rounded to float32 as the three layers round it, so the bits are theirs; `relu` false stops after
    Scale.  ReLU as Caffe's std::max: -0.0 and NaN pass through."""
    outer, channels, inner = x.shape
    zero = np.float32(0)
    for o in range(outer):
        for c in range(channels):
            m, s, g = mean[c], std[c], scale[c]
            b = bias[c] if has_bias else zero
            for i in range(inner):
                v = (x[o, c, i] - m) / s
                v = v * g + b if has_bias else v * g
                if relu and v < zero:
                    v = zero
                y[o, c, i] = v


@njit(cache=True, nogil=True, fastmath={"reassoc"})
def scale_backward(dy, x, scale, scale_sum, bias_sum, dx, with_scale_sum, with_bias_sum, with_dx):
    """Scale's backward in one pass over the top diff dy (outer, C, inner):
    scale_sum[c] = sum of dy * x, bias_sum[c] = sum of dy (over outer and inner), dx = dy * scale[c];
    each only when its `with_` flag is set.  The products are float32, as NumPy's; the sums run in
    float64 (reassociated, so vectorised) and are rounded to float32 once, where NumPy sums float32
    pairwise: the two agree to float32 rounding.  dx may alias dy (in place)."""
    outer, channels, inner = dy.shape
    scale_total = np.zeros(channels)
    bias_total = np.zeros(channels)
    for o in range(outer):
        for c in range(channels):
            s = scale[c]
            by_x = 0.0
            plain = 0.0
            for i in range(inner):
                d = dy[o, c, i]
                if with_scale_sum:
                    by_x += d * x[o, c, i]
                if with_bias_sum:
                    plain += d
                if with_dx:
                    dx[o, c, i] = d * s
            scale_total[c] += by_x
            bias_total[c] += plain
    if with_scale_sum:
        for c in range(channels):
            scale_sum[c] = scale_total[c]
    if with_bias_sum:
        for c in range(channels):
            bias_sum[c] = bias_total[c]
