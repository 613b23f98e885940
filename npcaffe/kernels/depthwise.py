"""Depthwise convolution: each output channel reads one input channel, without im2col.

Shapes: x (N, C, H, W), weight (O, kh, kw) with O = m C (m the channel
multiplier: output channel o reads input channel o // m), top (N, O, OH, OW).

    top[n, o, y, x] = bias[o] + sum_{i, j} weight[o, i, j]
                      * x[n, o // m, y sh - ph + i dh, x sw - pw + j dw]

with zeros outside the image.  This is Convolution with group = C (Caffe's
grouped im2col + one GEMM per group computes the same; here the windows are
read in place, which for one input channel per group is the whole work).
Sums run in float32 over (i, j) in row-major order, as
farmingyard/caffe-mobilenet's conv_dw_layer.cpp CPU loop does; the bias is
added after the sum.

Each Numba kernel has its NumPy reference beside it (`*_reference`, float64
inside); tests/kernels/test_depthwise.py compares them on awkward sizes.
"""
import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def _valid_columns(offset, stride, width, out_w):
    """The output columns xx whose input column xx * stride + offset lies inside [0, width)."""
    lo = 0 if offset >= 0 else (-offset + stride - 1) // stride
    last = width - 1 - offset
    hi = 0 if last < 0 else min(out_w, last // stride + 1)
    return lo, max(lo, hi)


@njit(cache=True)
def depthwise_forward(x, weight, bias, has_bias, pad_h, pad_w, stride_h, stride_w, dil_h, dil_w, top):
    """top (N, O, OH, OW) = the depthwise convolution of x (N, C, H, W) with weight (O, kh, kw) (+ bias (O,)).

    One output row at a time, tap by tap: row[xx] += w[i, j] * x[iy, xx sw + j dw - pw] over the
    columns where the tap lies inside the image, so the inner loop has no test and vectorises.
    Each output still sums its taps in (i, j) row-major order from 0, skipping those outside the
    image, in float32: the bits of the plain per-output loop."""
    num, channels, height, width = x.shape
    outputs, kernel_h, kernel_w = weight.shape
    out_h, out_w = top.shape[2], top.shape[3]
    multiplier = outputs // channels
    row = np.empty(out_w, np.float32)
    for n in range(num):
        for o in range(outputs):
            c = o // multiplier
            for y in range(out_h):
                y0 = y * stride_h - pad_h
                row[:] = 0
                for i in range(kernel_h):
                    iy = y0 + i * dil_h
                    if iy < 0 or iy >= height:
                        continue
                    line = x[n, c, iy]
                    for j in range(kernel_w):
                        w = weight[o, i, j]
                        offset = j * dil_w - pad_w
                        lo, hi = _valid_columns(offset, stride_w, width, out_w)
                        if stride_w == 1:
                            for xx in range(lo, hi):
                                row[xx] += w * line[xx + offset]
                        else:
                            for xx in range(lo, hi):
                                row[xx] += w * line[xx * stride_w + offset]
                out = top[n, o, y]
                if has_bias:
                    b = bias[o]
                    for xx in range(out_w):
                        out[xx] = row[xx] + b
                else:
                    out[:] = row


@njit(cache=True)
def depthwise_backward(x, weight, top_diff, pad_h, pad_w, stride_h, stride_w, dil_h, dil_w,
                       want_weight, weight_diff, want_bottom, bottom_diff):
    """weight_diff (O, kh, kw) += d/dweight; bottom_diff (N, C, H, W) = d/dx (overwritten), each if wanted."""
    num, channels, height, width = x.shape
    outputs, kernel_h, kernel_w = weight.shape
    out_h, out_w = top_diff.shape[2], top_diff.shape[3]
    multiplier = outputs // channels
    if want_bottom:
        bottom_diff[...] = 0
    for n in range(num):
        for o in range(outputs):
            c = o // multiplier
            for y in range(out_h):
                y0 = y * stride_h - pad_h
                for xx in range(out_w):
                    x0 = xx * stride_w - pad_w
                    dy = top_diff[n, o, y, xx]
                    for i in range(kernel_h):
                        iy = y0 + i * dil_h
                        if iy < 0 or iy >= height:
                            continue
                        for j in range(kernel_w):
                            ix = x0 + j * dil_w
                            if 0 <= ix < width:
                                if want_weight:
                                    weight_diff[o, i, j] += dy * x[n, c, iy, ix]
                                if want_bottom:
                                    bottom_diff[n, c, iy, ix] += dy * weight[o, i, j]


def _windows(x, kernel, pad, stride, dilation, out):
    """(N, C, OH, OW, kh, kw) float64 view of every window of x, zeros outside the image."""
    (kh, kw), (ph, pw), (sh, sw), (dh, dw), (oh, ow) = kernel, pad, stride, dilation, out
    n, c, h, w = x.shape
    padded = np.zeros((n, c, h + 2 * ph + sh * oh + dh * kh, w + 2 * pw + sw * ow + dw * kw))
    padded[:, :, ph:ph + h, pw:pw + w] = x
    windows = np.empty((n, c, oh, ow, kh, kw))
    for i in range(kh):
        for j in range(kw):
            windows[..., i, j] = padded[:, :, i * dh:i * dh + sh * oh:sh, j * dw:j * dw + sw * ow:sw]
    return windows


def depthwise_forward_reference(x, weight, bias, kernel, pad, stride, dilation, out):
    """NumPy twin of depthwise_forward, returning the top as float64."""
    multiplier = weight.shape[0] // x.shape[1]
    windows = np.repeat(_windows(x, kernel, pad, stride, dilation, out), multiplier, axis=1)
    top = np.einsum("ncyxij,cij->ncyx", windows, weight.astype(np.float64))
    if bias is not None:
        top += bias.reshape(1, -1, 1, 1)
    return top


def depthwise_backward_reference(x, weight, top_diff, kernel, pad, stride, dilation):
    """NumPy twin of depthwise_backward: (weight gradient (O, kh, kw), bottom gradient (N, C, H, W)), float64."""
    out = top_diff.shape[2:]
    multiplier = weight.shape[0] // x.shape[1]
    windows = np.repeat(_windows(x, kernel, pad, stride, dilation, out), multiplier, axis=1)
    dy = top_diff.astype(np.float64)
    weight_grad = np.einsum("ncyxij,ncyx->cij", windows, dy)
    # The bottom gradient: scatter each output's dy * weight back over its window.
    (kh, kw), (ph, pw), (sh, sw), (dh, dw) = kernel, pad, stride, dilation
    n, c, h, w = x.shape
    oh, ow = out
    padded = np.zeros((n, c, h + 2 * ph + sh * oh + dh * kh, w + 2 * pw + sw * ow + dw * kw))
    per_output = dy[:, :, :, :, None, None] * weight.astype(np.float64)[None, :, None, None]
    per_input = per_output.reshape(n, c, multiplier, oh, ow, kh, kw).sum(axis=2)
    for i in range(kh):
        for j in range(kw):
            padded[:, :, i * dh:i * dh + sh * oh:sh, j * dw:j * dw + sw * ow:sw] += per_input[..., i, j]
    return weight_grad, padded[:, :, ph:ph + h, pw:pw + w]
