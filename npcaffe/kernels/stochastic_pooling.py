"""Stochastic pooling (Zeiler & Fergus 2013) over (N, C, H, W) float32 arrays.

Upstream has it on the GPU only (pooling_layer.cu, StoPoolForwardTrain /
StoPoolForwardTest); these kernels follow those, window by window.  Windows
start at (y stride_h, x stride_w) and are clipped to the image: padding is
ignored, as upstream.  Inputs are expected to be non-negative (e.g. after
a ReLU): each value is drawn with probability proportional to itself.

TRAIN: given u (uniform in [0, 1), one per output), pick the first window
position, in row-major order, where the running sum reaches u * (window
sum); top = that value; `index` records h * W + w (the last position when
none qualifies, e.g. negative inputs).  Backward routes the top diff there.
TEST: top = sum x^2 / sum x over the window (0 when sum x <= 0), the
probability-weighted average.
"""
import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def stochastic_pool_train(x, kernel_h, kernel_w, stride_h, stride_w, u, top, index):
    num, channels, height, width = x.shape
    pooled_h, pooled_w = top.shape[2], top.shape[3]
    for n in range(num):
        for c in range(channels):
            for ph in range(pooled_h):
                h0 = ph * stride_h
                h1 = min(h0 + kernel_h, height)
                for pw in range(pooled_w):
                    w0 = pw * stride_w
                    w1 = min(w0 + kernel_w, width)
                    total = np.float32(0)
                    for h in range(h0, h1):
                        for w in range(w0, w1):
                            total += x[n, c, h, w]
                    threshold = np.float32(u[n, c, ph, pw] * total)
                    running = np.float32(0)
                    chosen = (h1 - 1) * width + (w1 - 1)
                    found = False
                    for h in range(h0, h1):
                        for w in range(w0, w1):
                            running += x[n, c, h, w]
                            if running >= threshold:
                                chosen = h * width + w
                                found = True
                                break
                        if found:
                            break
                    index[n, c, ph, pw] = chosen
                    top[n, c, ph, pw] = x[n, c, chosen // width, chosen % width]


@numba.njit(cache=True, nogil=True)
def stochastic_pool_test(x, kernel_h, kernel_w, stride_h, stride_w, top):
    num, channels, height, width = x.shape
    pooled_h, pooled_w = top.shape[2], top.shape[3]
    for n in range(num):
        for c in range(channels):
            for ph in range(pooled_h):
                h0 = ph * stride_h
                h1 = min(h0 + kernel_h, height)
                for pw in range(pooled_w):
                    w0 = pw * stride_w
                    w1 = min(w0 + kernel_w, width)
                    total = np.float32(0)
                    squares = np.float32(0)
                    for h in range(h0, h1):
                        for w in range(w0, w1):
                            v = x[n, c, h, w]
                            total += v
                            squares += v * v
                    top[n, c, ph, pw] = squares / total if total > 0 else np.float32(0)


@numba.njit(cache=True, nogil=True)
def stochastic_pool_train_backward(top_diff, index, bottom_diff):
    num, channels, height, width = bottom_diff.shape
    bottom_diff[...] = 0
    for n in range(num):
        for c in range(channels):
            for ph in range(top_diff.shape[2]):
                for pw in range(top_diff.shape[3]):
                    i = index[n, c, ph, pw]
                    bottom_diff[n, c, i // width, i % width] += top_diff[n, c, ph, pw]


@numba.njit(cache=True, nogil=True)
def stochastic_pool_test_backward(x, kernel_h, kernel_w, stride_h, stride_w, top, top_diff, bottom_diff):
    """Gradient of the TEST-time average y = sum x^2 / sum x: dy/dx = (2 x - y) / sum x."""
    num, channels, height, width = x.shape
    bottom_diff[...] = 0
    for n in range(num):
        for c in range(channels):
            for ph in range(top.shape[2]):
                h0 = ph * stride_h
                h1 = min(h0 + kernel_h, height)
                for pw in range(top.shape[3]):
                    w0 = pw * stride_w
                    w1 = min(w0 + kernel_w, width)
                    total = np.float32(0)
                    for h in range(h0, h1):
                        for w in range(w0, w1):
                            total += x[n, c, h, w]
                    if not total > 0:
                        continue
                    y = top[n, c, ph, pw]
                    g = top_diff[n, c, ph, pw] / total
                    for h in range(h0, h1):
                        for w in range(w0, w1):
                            bottom_diff[n, c, h, w] += g * (np.float32(2) * x[n, c, h, w] - y)


def _windows(x, kernel_h, kernel_w, stride_h, stride_w, pooled_h, pooled_w):
    height, width = x.shape[2:]
    for ph in range(pooled_h):
        h0 = ph * stride_h
        h1 = min(h0 + kernel_h, height)
        for pw in range(pooled_w):
            w0 = pw * stride_w
            w1 = min(w0 + kernel_w, width)
            yield ph, pw, h0, h1, w0, w1


def stochastic_pool_train_reference(x, kernel_h, kernel_w, stride_h, stride_w, u, top, index):
    width = x.shape[3]
    for ph, pw, h0, h1, w0, w1 in _windows(x, kernel_h, kernel_w, stride_h, stride_w, *top.shape[2:]):
        win = x[:, :, h0:h1, w0:w1].reshape(x.shape[0], x.shape[1], -1)
        running = np.cumsum(win, axis=2, dtype=np.float32)
        threshold = (u[:, :, ph, pw] * running[:, :, -1]).astype(np.float32)
        hit = running >= threshold[:, :, None]
        k = np.where(hit.any(axis=2), hit.argmax(axis=2), win.shape[2] - 1)
        rows, cols = h0 + k // (w1 - w0), w0 + k % (w1 - w0)
        index[:, :, ph, pw] = rows * width + cols
        top[:, :, ph, pw] = np.take_along_axis(win, k[:, :, None], axis=2)[:, :, 0]


def stochastic_pool_test_reference(x, kernel_h, kernel_w, stride_h, stride_w, top):
    for ph, pw, h0, h1, w0, w1 in _windows(x, kernel_h, kernel_w, stride_h, stride_w, *top.shape[2:]):
        win = x[:, :, h0:h1, w0:w1].astype(np.float64)
        total = win.sum(axis=(2, 3))
        squares = (win * win).sum(axis=(2, 3))
        top[:, :, ph, pw] = np.where(total > 0, squares / np.where(total > 0, total, 1), 0)
