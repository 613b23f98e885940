"""Eltwise's SUM of two bottoms in one pass (ResNet's shortcut additions).

Caffe sets the top to 0 and adds each bottom times its coefficient
(caffe_set, then caffe_axpy per bottom); NumPy does the same as three
whole-array passes.  This kernel makes one pass with the same float32
operations in the same order - starting from +0.0, so a -0.0 sum comes out
+0.0 as there - so the bits are Caffe's.  y may alias either bottom.
"""
import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def weighted_sum_of_two(x0, c0, x1, c1, y):
    """y = (0 + c0 x0) + c1 x1, a coefficient of 1 adding the bottom itself (caffe_axpy with alpha 1)."""
    zero, one = np.float32(0), np.float32(1)
    for i in range(y.size):
        a, b = x0[i], x1[i]
        v = zero + (a if c0 == one else c0 * a)
        y[i] = v + (b if c1 == one else c1 * b)
