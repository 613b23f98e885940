"""npcaffe.kernels.depthwise: the Numba kernels against their NumPy twins, and the twins against the
reference grouped convolution (tests/conv_reference.py) with group = channels."""
import numpy as np
import pytest
from numba import njit

from conv_reference import reference_convolution, reference_convolution_backward
from npcaffe.kernels.depthwise import (depthwise_backward, depthwise_backward_reference, depthwise_forward,
                                       depthwise_forward_reference)

# (N, C, multiplier, (H, W), (kh, kw), pad, stride, dilation)
CASES = [
    (2, 3, 1, (7, 6), (3, 3), (1, 1), (1, 1), (1, 1)),
    (1, 5, 2, (9, 8), (3, 2), (1, 0), (2, 1), (1, 1)),
    (3, 4, 1, (5, 7), (3, 3), (2, 1), (2, 3), (2, 1)),
    (1, 2, 3, (2, 2), (3, 3), (0, 0), (2, 2), (1, 1)),  # kernel larger than the input
    (2, 6, 1, (4, 5), (1, 1), (0, 0), (1, 1), (1, 1)),
]


def out_size(image, kernel, pad, stride, dilation):
    return tuple(int((n + 2 * p - (d * (k - 1) + 1)) / s) + 1 for n, k, p, s, d in zip(image, kernel, pad, stride,
                                                                                        dilation))


@pytest.mark.parametrize("case", CASES)
def test_kernels_match_numpy_twins_and_reference_convolution(case):
    num, channels, multiplier, image, kernel, pad, stride, dilation = case
    rng = np.random.default_rng(sum(image) + channels)
    outputs = channels * multiplier
    out = out_size(image, kernel, pad, stride, dilation)
    x = rng.uniform(-1, 1, (num, channels) + image).astype(np.float32)
    w = rng.uniform(-1, 1, (outputs,) + kernel).astype(np.float32)
    b = rng.uniform(-1, 1, outputs).astype(np.float32)
    dy = rng.uniform(-1, 1, (num, outputs) + out).astype(np.float32)

    top = np.full((num, outputs) + out, np.nan, np.float32)
    depthwise_forward(x, w, b, True, *pad, *stride, *dilation, top)
    twin = depthwise_forward_reference(x, w, b, kernel, pad, stride, dilation, out)
    np.testing.assert_allclose(top, twin, rtol=1e-5, atol=1e-5)
    full = reference_convolution(x, w.reshape(outputs, 1, *kernel), b, stride, pad, dilation, channels)
    np.testing.assert_allclose(twin, full, rtol=1e-12, atol=1e-12)

    weight_diff = np.full_like(w, 0.5)  # accumulated into
    bottom_diff = np.full_like(x, np.nan)  # overwritten
    depthwise_backward(x, w, dy, *pad, *stride, *dilation, True, weight_diff, True, bottom_diff)
    dw, dx = depthwise_backward_reference(x, w, dy, kernel, pad, stride, dilation)
    np.testing.assert_allclose(weight_diff, dw + 0.5, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bottom_diff, dx, rtol=1e-5, atol=1e-5)
    full_dx, full_dw, _ = reference_convolution_backward(x, w.reshape(outputs, 1, *kernel), dy, stride, pad,
                                                         dilation, channels)
    np.testing.assert_allclose(dx, full_dx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, full_dw.reshape(dw.shape), rtol=1e-12, atol=1e-12)


def test_without_bias_nothing_is_added():
    x = np.ones((1, 2, 3, 3), np.float32)
    w = np.ones((2, 3, 3), np.float32)
    top = np.empty((1, 2, 1, 1), np.float32)
    depthwise_forward(x, w, np.full(2, 100, np.float32), False, 0, 0, 1, 1, 1, 1, top)
    np.testing.assert_array_equal(top.ravel(), [9, 9])


# The plain per-output loops the kernels were first written as (for n, o, y, x, then the taps i, j):
# the kernels (the forward now over padded phase planes) must give their bits exactly, forward and backward.
@njit
def _plain_forward(x, weight, bias, has_bias, pad_h, pad_w, stride_h, stride_w, dil_h, dil_w, top):
    num, channels, height, width = x.shape
    outputs, kernel_h, kernel_w = weight.shape
    multiplier = outputs // channels
    for n in range(num):
        for o in range(outputs):
            for y in range(top.shape[2]):
                for xx in range(top.shape[3]):
                    acc = np.float32(0)
                    for i in range(kernel_h):
                        iy = y * stride_h - pad_h + i * dil_h
                        if iy < 0 or iy >= height:
                            continue
                        for j in range(kernel_w):
                            ix = xx * stride_w - pad_w + j * dil_w
                            if 0 <= ix < width:
                                acc += weight[o, i, j] * x[n, o // multiplier, iy, ix]
                    if has_bias:
                        acc += bias[o]
                    top[n, o, y, xx] = acc


@njit
def _plain_backward(x, weight, top_diff, pad_h, pad_w, stride_h, stride_w, dil_h, dil_w, weight_diff, bottom_diff):
    num, channels, height, width = x.shape
    outputs, kernel_h, kernel_w = weight.shape
    multiplier = outputs // channels
    bottom_diff[...] = 0
    for n in range(num):
        for o in range(outputs):
            c = o // multiplier
            for y in range(top_diff.shape[2]):
                for xx in range(top_diff.shape[3]):
                    dy = top_diff[n, o, y, xx]
                    for i in range(kernel_h):
                        iy = y * stride_h - pad_h + i * dil_h
                        if iy < 0 or iy >= height:
                            continue
                        for j in range(kernel_w):
                            ix = xx * stride_w - pad_w + j * dil_w
                            if 0 <= ix < width:
                                weight_diff[o, i, j] += dy * x[n, c, iy, ix]
                                bottom_diff[n, c, iy, ix] += dy * weight[o, i, j]


@pytest.mark.parametrize("case", CASES + [
    (2, 8, 1, (17, 15), (3, 3), (1, 1), (1, 1), (1, 1)),   # MobileNet's 3x3 stride 1
    (1, 8, 1, (16, 16), (3, 3), (1, 1), (2, 2), (1, 1)),   # and stride 2
    (2, 3, 2, (13, 11), (5, 3), (2, 1), (1, 1), (2, 3)),   # dilated, multiplier 2
    (1, 2, 1, (6, 9), (3, 5), (3, 4), (3, 2), (1, 1)),     # pads wider than the kernel's reach
])
def test_kernels_give_the_plain_loops_bits(case):
    num, channels, multiplier, image, kernel, pad, stride, dilation = case
    rng = np.random.default_rng(7 + sum(image))
    outputs = channels * multiplier
    out = out_size(image, kernel, pad, stride, dilation)
    x = rng.normal(size=(num, channels) + image).astype(np.float32)
    w = rng.normal(size=(outputs,) + kernel).astype(np.float32)
    b = rng.normal(size=outputs).astype(np.float32)
    dy = rng.normal(size=(num, outputs) + out).astype(np.float32)
    for has_bias in (True, False):
        fast, plain = (np.full((num, outputs) + out, np.nan, np.float32) for _ in range(2))
        depthwise_forward(x, w, b, has_bias, *pad, *stride, *dilation, fast)
        _plain_forward(x, w, b, has_bias, *pad, *stride, *dilation, plain)
        np.testing.assert_array_equal(fast, plain)
    fast_dw, plain_dw = np.full_like(w, 0.25), np.full_like(w, 0.25)
    fast_dx, plain_dx = np.full_like(x, np.nan), np.full_like(x, np.nan)
    depthwise_backward(x, w, dy, *pad, *stride, *dilation, True, fast_dw, True, fast_dx)
    _plain_backward(x, w, dy, *pad, *stride, *dilation, plain_dw, plain_dx)
    np.testing.assert_array_equal(fast_dw, plain_dw)
    np.testing.assert_array_equal(fast_dx, plain_dx)
    only_dx = np.full_like(x, np.nan)  # one without the other
    depthwise_backward(x, w, dy, *pad, *stride, *dilation, False, np.empty((0, 0, 0), np.float32), True, only_dx)
    np.testing.assert_array_equal(only_dx, plain_dx)
