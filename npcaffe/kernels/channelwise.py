"""Per-channel affine passes behind BatchNorm (with its stored statistics) and Scale.

Arrays are viewed (outer, C, inner) as the layers view them.  NumPy computes
BatchNorm's (x - mean) / std and Scale's x * s + b as two whole-array passes
(and a temporary); these kernels make one pass with the same float32
operations in the same order - a subtraction then a division, a product then
a sum, no fused multiply-add - so the bits are NumPy's (tests/kernels/
test_channelwise.py compares them).  y may be x (in place: say so, below).
"""
import numpy as np
from numba import njit


# Each kernel takes `in_place` (y is x): a row is then passed as both source and destination, so
# LLVM sees one pointer and vectorises; two arrays that may overlap are vectorised only behind a
# runtime test, which exact aliasing fails (an in-place BatchNorm or Scale ran 2-4x slower).

@njit(cache=True, nogil=True, inline="always")
def _normalize_row(src, m, s, dst):
    for i in range(src.size):
        dst[i] = (src[i] - m) / s


@njit(cache=True, nogil=True)
def normalize(x, mean, std, y, in_place=False):
    """y[o, c, i] = (x[o, c, i] - mean[c]) / std[c]."""
    outer, channels, inner = x.shape
    for o in range(outer):
        for c in range(channels):
            if in_place:
                _normalize_row(x[o, c], mean[c], std[c], x[o, c])
            else:
                _normalize_row(x[o, c], mean[c], std[c], y[o, c])


@njit(cache=True, nogil=True, inline="always")
def _scale_shift_row(src, s, b, has_bias, dst):
    if has_bias:
        for i in range(src.size):
            dst[i] = src[i] * s + b
    else:
        for i in range(src.size):
            dst[i] = src[i] * s


@njit(cache=True, nogil=True)
def scale_shift(x, scale, bias, has_bias, y, in_place=False):
    """y[o, c, i] = x[o, c, i] * scale[c] (+ bias[c])."""
    outer, channels, inner = x.shape
    for o in range(outer):
        for c in range(channels):
            b = bias[c] if has_bias else np.float32(0)
            if in_place:
                _scale_shift_row(x[o, c], scale[c], b, has_bias, x[o, c])
            else:
                _scale_shift_row(x[o, c], scale[c], b, has_bias, y[o, c])


@njit(cache=True, nogil=True, inline="always")
def _normalize_scale_relu_row(src, m, s, g, b, has_bias, relu, dst, keep, kept):
    zero = np.float32(0)
    for i in range(src.size):
        v = (src[i] - m) / s
        if keep:
            kept[i] = v
        v = v * g + b if has_bias else v * g
        if relu and v < zero:
            v = zero
        dst[i] = v


def normalize_scale_relu(x, mean, std, scale, bias, has_bias, relu, y, in_place=False, normalized=None):
    """BatchNorm (stored statistics) -> Scale -> ReLU (negative_slope 0) in one pass:
    y[o, c, i] = max((x[o, c, i] - mean[c]) / std[c] * scale[c] (+ bias[c]), 0), each operation
    rounded to float32 as the three layers round it, so the bits are theirs; `relu` false stops after
    Scale.  ReLU as Caffe's std::max: -0.0 and NaN pass through.  `normalized` (shaped as x), if
    given, receives BatchNorm's output: what an in-place Scale keeps for its backward."""
    keep = normalized is not None
    _normalize_scale_relu(x, mean, std, scale, bias, has_bias, relu, y, in_place, keep, normalized if keep else x)


@njit(cache=True, nogil=True)
def _normalize_scale_relu(x, mean, std, scale, bias, has_bias, relu, y, in_place, keep, normalized):
    outer, channels, inner = x.shape
    for o in range(outer):
        for c in range(channels):
            b = bias[c] if has_bias else np.float32(0)
            kept = normalized[o, c]  # written only with keep
            if in_place:
                _normalize_scale_relu_row(x[o, c], mean[c], std[c], scale[c], b, has_bias, relu, x[o, c], keep, kept)
            else:
                _normalize_scale_relu_row(x[o, c], mean[c], std[c], scale[c], b, has_bias, relu, y[o, c], keep, kept)


@njit(cache=True, nogil=True, fastmath={"reassoc"})
def scale_backward(dy, x, scale, scale_sum, bias_sum, dx, with_scale_sum, with_bias_sum, with_dx, in_place=False):
    """Scale's backward in one pass over the top diff dy (outer, C, inner):
    scale_sum[c] = sum of dy * x, bias_sum[c] = sum of dy (over outer and inner), dx = dy * scale[c];
    each only when its `with_` flag is set (x, dx: any array of the right rank when not).  The
    products are float32, as NumPy's; the sums run in float64 (reassociated, so vectorised) and are
    rounded to float32 once, where NumPy sums float32 pairwise: the two agree to float32 rounding.
    With `in_place` the bottom diff is dy itself (dx unused): LLVM vectorises a loop over two arrays
    that may overlap only behind a runtime test, which exact aliasing fails; no other overlap."""
    outer, channels, inner = dy.shape
    in_place = in_place and with_dx
    scale_total = np.zeros(channels)
    bias_total = np.zeros(channels)
    for o in range(outer):
        for c in range(channels):
            s = scale[c]
            by_x = 0.0
            plain = 0.0
            # Two copies of the loop, on purpose: the in-place one writing dy itself vectorises (3x
            # faster than the same loop behind a row helper taking dy twice, measured), the other
            # writes dx.
            if in_place:
                for i in range(inner):
                    d = dy[o, c, i]
                    if with_scale_sum:
                        by_x += d * x[o, c, i]
                    if with_bias_sum:
                        plain += d
                    dy[o, c, i] = d * s
            else:
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
