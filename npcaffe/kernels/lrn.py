"""Local response normalisation kernels over (N, C, H, W) float32 arrays.

ACROSS_CHANNELS (lrn_layer.cpp, CrossChannelForward_cpu / Backward_cpu):

    scale[n, c] = k + alpha / size * sum_{|c' - c| <= (size - 1) / 2} x[n, c']^2
    y = x * scale^-beta
    dx = dy * scale^-beta
         - 2 alpha beta / size * x * sum_{|c' - c| <= (size - 1) / 2} dy[c'] y[c'] / scale[c']

The Numba kernels keep upstream's running window along the channels (copy
the previous channel's scale, add the entering square, subtract the leaving
one), plane by plane, in upstream's order of float32 operations.

WITHIN_CHANNEL (upstream composes Split, Power, AVE Pooling, Power and
Eltwise PROD layers):

    avg[n, c, h, w] = sum over the size x size window centred on (h, w),
                      zeros outside the image, of x^2, divided by size^2
    p = (1 + alpha * avg)^-beta,   y = x * p            (k is not used)

and its exact gradient.  The `*_reference` functions compute the same sums
directly (no running window) for the tests.
"""
import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def lrn_across_forward(x, size, alpha, beta, k, scale, y):
    num, channels, height, width = x.shape
    plane = height * width
    pre_pad = (size - 1) // 2
    a = np.float32(alpha / np.float32(size))
    xs = x.reshape(num, channels, plane)
    sc = scale.reshape(num, channels, plane)
    for n in range(num):
        for i in range(plane):
            sc[n, 0, i] = k
        for c in range(-pre_pad, size - pre_pad):
            if 0 <= c < channels:
                for i in range(plane):
                    v = xs[n, c, i]
                    sc[n, 0, i] += a * (v * v)
        for c in range(1, channels):
            head = c + size - 1 - pre_pad
            tail = c - 1 - pre_pad
            for i in range(plane):
                s = sc[n, c - 1, i]
                if head < channels:
                    v = xs[n, head, i]
                    s += a * (v * v)
                if tail >= 0:
                    v = xs[n, tail, i]
                    s -= a * (v * v)
                sc[n, c, i] = s
    neg_beta = np.float32(-beta)
    ys = y.reshape(num, channels, plane)
    for n in range(num):
        for c in range(channels):
            for i in range(plane):
                ys[n, c, i] = sc[n, c, i] ** neg_beta * xs[n, c, i]


@numba.njit(cache=True, nogil=True)
def lrn_across_backward(x, y, scale, dy, size, alpha, beta, dx):
    num, channels, height, width = x.shape
    plane = height * width
    pre_pad = (size - 1) // 2
    cache_ratio = np.float32(2.0 * alpha * beta / size)
    neg_beta = np.float32(-beta)
    xs, ys = x.reshape(num, channels, plane), y.reshape(num, channels, plane)
    sc, dys = scale.reshape(num, channels, plane), dy.reshape(num, channels, plane)
    dxs = dx.reshape(num, channels, plane)
    ratio = np.zeros((channels + size - 1, plane), np.float32)
    accum = np.zeros(plane, np.float32)
    for n in range(num):
        for c in range(channels):
            for i in range(plane):
                dxs[n, c, i] = sc[n, c, i] ** neg_beta * dys[n, c, i]
                ratio[c + pre_pad, i] = dys[n, c, i] * ys[n, c, i] / sc[n, c, i]
        accum[:] = 0
        for c in range(size - 1):
            for i in range(plane):
                accum[i] += ratio[c, i]
        for c in range(channels):
            for i in range(plane):
                accum[i] += ratio[c + size - 1, i]
                dxs[n, c, i] += -cache_ratio * (xs[n, c, i] * accum[i])
                accum[i] -= ratio[c, i]


def lrn_across_forward_reference(x, size, alpha, beta, k, scale, y):
    pre_pad = (size - 1) // 2
    sq = np.pad(x.astype(np.float64) ** 2, ((0, 0), (pre_pad, size - 1 - pre_pad), (0, 0), (0, 0)))
    window = sum(sq[:, c:c + x.shape[1]] for c in range(size))
    scale[...] = k + alpha / size * window
    y[...] = x * scale.astype(np.float64) ** -beta


def lrn_across_backward_reference(x, y, scale, dy, size, alpha, beta, dx):
    pre_pad = (size - 1) // 2
    ratio = dy.astype(np.float64) * y / scale
    padded = np.pad(ratio, ((0, 0), (pre_pad, size - 1 - pre_pad), (0, 0), (0, 0)))
    window = sum(padded[:, c:c + x.shape[1]] for c in range(size))
    dx[...] = dy * scale.astype(np.float64) ** -beta - 2.0 * alpha * beta / size * x * window


@numba.njit(cache=True, nogil=True)
def lrn_within_forward(x, size, alpha, beta, scale, y):
    """scale = 1 + alpha * boxavg(x^2), y = x * scale^-beta."""
    num, channels, height, width = x.shape
    pre_pad = (size - 1) // 2
    area = np.float32(size * size)
    one = np.float32(1)
    neg_beta = np.float32(-beta)
    for n in range(num):
        for c in range(channels):
            for h in range(height):
                for w in range(width):
                    s = np.float32(0)
                    for i in range(max(h - pre_pad, 0), min(h - pre_pad + size, height)):
                        for j in range(max(w - pre_pad, 0), min(w - pre_pad + size, width)):
                            v = x[n, c, i, j]
                            s += v * v
                    b = alpha * (s / area) + one
                    scale[n, c, h, w] = b
                    y[n, c, h, w] = x[n, c, h, w] * b ** neg_beta


@numba.njit(cache=True, nogil=True)
def lrn_within_backward(x, scale, dy, size, alpha, beta, dx):
    num, channels, height, width = x.shape
    pre_pad = (size - 1) // 2
    area = np.float32(size * size)
    neg_beta = np.float32(-beta)
    # g[i, j]: the loss gradient with respect to the window sum at (i, j)
    g = np.empty((height, width), np.float32)
    for n in range(num):
        for c in range(channels):
            for h in range(height):
                for w in range(width):
                    b = scale[n, c, h, w]
                    g[h, w] = dy[n, c, h, w] * x[n, c, h, w] * neg_beta * alpha * (b ** neg_beta / b) / area
            for h in range(height):
                for w in range(width):
                    acc = np.float32(0)
                    # the window centred on (i, j) holds (h, w) iff i - pre_pad <= h < i - pre_pad + size
                    for i in range(max(h - (size - 1 - pre_pad), 0), min(h + pre_pad + 1, height)):
                        for j in range(max(w - (size - 1 - pre_pad), 0), min(w + pre_pad + 1, width)):
                            acc += g[i, j]
                    b = scale[n, c, h, w]
                    dx[n, c, h, w] = dy[n, c, h, w] * b ** neg_beta + np.float32(2) * x[n, c, h, w] * acc


def _box_sum(a, size):
    pre_pad = (size - 1) // 2
    padded = np.pad(a, ((0, 0), (0, 0), (pre_pad, size - 1 - pre_pad), (pre_pad, size - 1 - pre_pad)))
    h, w = a.shape[2:]
    return sum(padded[:, :, i:i + h, j:j + w] for i in range(size) for j in range(size))


def lrn_within_forward_reference(x, size, alpha, beta, scale, y):
    avg = _box_sum(x.astype(np.float64) ** 2, size) / (size * size)
    scale[...] = 1 + alpha * avg
    y[...] = x * (1 + alpha * avg) ** -beta


def lrn_within_backward_reference(x, scale, dy, size, alpha, beta, dx):
    xd = x.astype(np.float64)
    avg = _box_sum(xd ** 2, size) / (size * size)
    p = (1 + alpha * avg) ** -beta
    g = dy * xd * (-beta) * alpha * (1 + alpha * avg) ** (-beta - 1) / (size * size)
    # the box is symmetric only for odd size, which LRN requires
    dx[...] = dy * p + 2 * xd * _box_sum(g, size)
