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


@njit(cache=True)
def normalize(x, mean, std, y):
    """y[o, c, i] = (x[o, c, i] - mean[c]) / std[c]."""
    outer, channels, inner = x.shape
    for o in range(outer):
        for c in range(channels):
            m, s = mean[c], std[c]
            for i in range(inner):
                y[o, c, i] = (x[o, c, i] - m) / s


@njit(cache=True)
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
