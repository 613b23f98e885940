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


@njit(cache=True, nogil=True)
def depthwise_forward(x, weight, bias, has_bias, pad_h, pad_w, stride_h, stride_w, dil_h, dil_w, top):
    """top (N, O, OH, OW) = the depthwise convolution of x (N, C, H, W) with weight (O, kh, kw) (+ bias (O,)).

    Each input channel is first copied into a zero-padded image split into phases modulo the stride:
    phase (a, b) holds the padded rows a, a + sh, ... and columns b, b + sw, ..., each phase laid out
    with the same row length.  Then tap (i, j) reads phase ((i dh) % sh, (j dw) % sw) shifted by
    ((i dh) // sh, (j dw) // sw), and every output row reads it at the same offset: one contiguous
    loop per tap over the whole output (the accumulator has the phases' row length; its extra
    columns are dropped), which vectorises even for 7 x 7 planes and strided layers.

    Each output sums its taps in (i, j) row-major order from +0, in float32, as the plain
    per-output loop does; the taps that fall on the padding add w * 0, which changes no bit of a
    sum that starts at +0 (it cannot become -0 in round-to-nearest), so the bits are that loop's
    for finite weights.  (A non-finite weight gives NaN there, as Caffe's grouped im2col + GEMM
    path gives.)  The bias is added after the sum."""
    num, channels, height, width = x.shape
    outputs, kernel_h, kernel_w = weight.shape
    out_h, out_w = top.shape[2], top.shape[3]
    multiplier = outputs // channels
    # Caffe's output size truncates toward zero, so a window may reach past the padded image.
    rows = max(height + 2 * pad_h, (out_h - 1) * stride_h + (kernel_h - 1) * dil_h + 1)
    cols = max(width + 2 * pad_w, (out_w - 1) * stride_w + (kernel_w - 1) * dil_w + 1)
    phase_h = (rows + stride_h - 1) // stride_h
    phase_w = (cols + stride_w - 1) // stride_w
    phases = np.zeros((stride_h, stride_w, phase_h * phase_w), np.float32)  # the padding stays 0
    size = (out_h - 1) * phase_w + out_w
    acc = np.empty(size, np.float32)
    for n in range(num):
        for o in range(outputs):
            if o % multiplier == 0:
                c = o // multiplier
                for r in range(height):
                    line = x[n, c, r]
                    padded_row = r + pad_h
                    base = (padded_row // stride_h) * phase_w
                    for b in range(stride_w):
                        # the padded columns t sw + b inside [pad_w, pad_w + width)
                        t_lo = max(0, (pad_w - b + stride_w - 1) // stride_w)
                        t_hi = (pad_w + width - 1 - b) // stride_w + 1
                        if t_hi <= t_lo:
                            continue
                        first = t_lo * stride_w + b - pad_w
                        phases[padded_row % stride_h, b, base + t_lo:base + t_hi] = (
                            line[first:first + (t_hi - t_lo - 1) * stride_w + 1:stride_w])
            acc[:] = 0
            for i in range(kernel_h):
                for j in range(kernel_w):
                    w = weight[o, i, j]
                    start = ((i * dil_h) // stride_h) * phase_w + (j * dil_w) // stride_w
                    # Slice first: an index k from 0 needs no negative-index wraparound test, which
                    # would keep LLVM from vectorising (6x on MobileNet's planes).
                    run = phases[(i * dil_h) % stride_h, (j * dil_w) % stride_w, start:start + size]
                    for k in range(size):
                        acc[k] += w * run[k]
            out = top[n, o]
            b = bias[o] if has_bias else np.float32(0)
            for y in range(out_h):
                row, part = out[y], acc[y * phase_w:y * phase_w + out_w]
                if has_bias:
                    for xx in range(out_w):
                        row[xx] = part[xx] + b
                else:
                    row[:] = part


@njit(cache=True, nogil=True)
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
