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
