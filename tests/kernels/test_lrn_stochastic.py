"""LRN and stochastic pooling kernels against their NumPy references."""
import numpy as np
import pytest

from npcaffe.kernels import lrn, stochastic_pooling as sp


@pytest.mark.parametrize("shape, size", [((2, 7, 3, 5), 5), ((1, 3, 4, 4), 5), ((2, 4, 1, 3), 1), ((1, 9, 2, 2), 3)])
def test_lrn_across(shape, size):
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    args = (size, np.float32(0.7), np.float32(0.75), np.float32(2.0))
    scale, y = np.empty_like(x), np.empty_like(x)
    rscale, ry = np.empty_like(x), np.empty_like(x)
    lrn.lrn_across_forward(x, *args, scale, y)
    lrn.lrn_across_forward_reference(x, *args, rscale, ry)
    np.testing.assert_allclose(scale, rscale, rtol=1e-5)
    np.testing.assert_allclose(y, ry, rtol=1e-5, atol=1e-6)
    dx, rdx = np.empty_like(x), np.empty_like(x)
    lrn.lrn_across_backward(x, y, scale, dy, size, np.float32(0.7), np.float32(0.75), dx)
    lrn.lrn_across_backward_reference(x, y, scale, dy, size, np.float32(0.7), np.float32(0.75), rdx)
    np.testing.assert_allclose(dx, rdx, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape, size", [((2, 2, 5, 6), 3), ((1, 1, 3, 3), 5), ((1, 2, 7, 4), 1)])
def test_lrn_within(shape, size):
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    scale, y, rscale, ry = (np.empty_like(x) for _ in range(4))
    lrn.lrn_within_forward(x, size, np.float32(0.9), np.float32(0.6), scale, y)
    lrn.lrn_within_forward_reference(x, size, np.float32(0.9), np.float32(0.6), rscale, ry)
    np.testing.assert_allclose(y, ry, rtol=1e-5, atol=1e-6)
    dx, rdx = np.empty_like(x), np.empty_like(x)
    lrn.lrn_within_backward(x, scale, dy, size, np.float32(0.9), np.float32(0.6), dx)
    lrn.lrn_within_backward_reference(x, scale, dy, size, np.float32(0.9), np.float32(0.6), rdx)
    np.testing.assert_allclose(dx, rdx, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape, kernel, stride", [((2, 3, 5, 7), (3, 2), (2, 2)), ((1, 2, 4, 4), (2, 2), (2, 2)),
                                                   ((1, 1, 6, 5), (3, 3), (1, 2))])
def test_stochastic_pooling(shape, kernel, stride):
    rng = np.random.default_rng(sum(shape))
    x = rng.random(shape).astype(np.float32)
    x[0, 0, 0, :] = 0
    ph = -(-(shape[2] - kernel[0]) // stride[0]) + 1
    pw = -(-(shape[3] - kernel[1]) // stride[1]) + 1
    out = (shape[0], shape[1], ph, pw)
    u = rng.random(out).astype(np.float32)
    top, rtop = np.empty(out, np.float32), np.empty(out, np.float32)
    idx, ridx = np.empty(out, np.int64), np.empty(out, np.int64)
    sp.stochastic_pool_train(x, *kernel, *stride, u, top, idx)
    sp.stochastic_pool_train_reference(x, *kernel, *stride, u, rtop, ridx)
    np.testing.assert_array_equal(idx, ridx)
    np.testing.assert_array_equal(top, rtop)
    sp.stochastic_pool_test(x, *kernel, *stride, top)
    sp.stochastic_pool_test_reference(x, *kernel, *stride, rtop)
    np.testing.assert_allclose(top, rtop, rtol=1e-5)


def test_stochastic_pooling_draws_in_proportion():
    x = np.array([[[[1.0, 3.0]]]], np.float32)  # one 1x2 window: P(3) = 0.75
    u = np.random.default_rng(0).random((4000, 1, 1, 1)).astype(np.float32)
    xs = np.repeat(x, 4000, axis=0)
    top, idx = np.empty((4000, 1, 1, 1), np.float32), np.empty((4000, 1, 1, 1), np.int64)
    sp.stochastic_pool_train(xs, 1, 2, 1, 2, u, top, idx)
    assert abs((top == 3).mean() - 0.75) < 0.03
