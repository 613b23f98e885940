"""The batch-innermost convolution kernels against NumPy references."""
import numpy as np
import pytest

from npcaffe import parallel
from npcaffe.kernels.batch_inner import (from_batch_inner, im2col_batch_inner, im2col_batch_inner_reference,
                                         sparse_conv_backward, sparse_conv_forward, to_batch_inner)
from npcaffe.kernels.im2col import col2im_reference, im2col_reference
from npcaffe.kernels.sparse import dense_to_csr

GEOMETRIES = [  # kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w
    (5, 5, 0, 0, 1, 1, 1, 1),
    (3, 2, 1, 0, 2, 1, 1, 1),
    (3, 3, 1, 2, 1, 2, 1, 1),
    (2, 3, 2, 1, 1, 1, 2, 2),
    (2, 2, 0, 0, 3, 3, 1, 1),   # stride beyond the kernel: some pixels are never read
]


def _out(size, kernel, pad, stride, dilation):
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


def _case(geometry, num=5, channels=3, height=11, width=9, outputs=4, density=0.3, seed=0):
    rng = np.random.default_rng(seed)
    kh, kw, ph, pw, sh, sw, dh, dw = geometry
    oh, ow = _out(height, kh, ph, sh, dh), _out(width, kw, pw, sw, dw)
    images = rng.standard_normal((num, channels, height, width)).astype(np.float32)
    weight = rng.standard_normal((outputs, channels * kh * kw)).astype(np.float32)
    weight *= rng.random(weight.shape) < density
    return images, weight, oh, ow


def _inner(array):
    out = np.empty(array.shape[1:] + array.shape[:1], np.float32)
    to_batch_inner(array, out)
    return out


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_im2col_batch_inner_matches_reference(geometry):
    images, _, oh, ow = _case(geometry)
    kh, kw = geometry[:2]
    inner = _inner(images)
    taps = images.shape[1] * kh * kw
    got = np.full((taps, oh, ow, images.shape[0]), np.nan, np.float32)
    im2col_batch_inner(inner, *geometry, ow, 0, got)
    want = np.empty_like(got)
    im2col_batch_inner_reference(inner, *geometry, ow, 0, want)
    np.testing.assert_array_equal(got, want)
    # and against the batch-first columns, rearranged
    flat = np.empty((taps, images.shape[0] * oh * ow), np.float32)
    im2col_reference(images, *geometry, oh, ow, flat)
    np.testing.assert_array_equal(got, np.moveaxis(flat.reshape(taps, -1, oh, ow), 1, -1))
    # a band of output rows
    if oh > 2:
        band = np.empty((taps, oh - 2, ow, images.shape[0]), np.float32)
        im2col_batch_inner(inner, *geometry, ow, 1, band)
        np.testing.assert_array_equal(band, got[:, 1:oh - 1])


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("density", [0.0, 0.3, 1.0])
def test_sparse_conv_forward_and_backward_match_dense(geometry, density):
    images, weight, oh, ow = _case(geometry, density=density)
    num, channels, height, width = images.shape
    taps = weight.shape[1]
    col = np.empty((taps, num * oh * ow), np.float32)
    im2col_reference(images, *geometry, oh, ow, col)
    want = np.dot(weight, col).reshape(-1, num, oh, ow).transpose(1, 0, 2, 3)
    planes = np.full((weight.shape[0], oh, ow, num), np.nan, np.float32)
    sparse_conv_forward(_inner(images), *dense_to_csr(weight), *geometry, planes)
    top = np.empty((num, weight.shape[0], oh, ow), np.float32)
    bias = np.arange(weight.shape[0], dtype=np.float32)
    from_batch_inner(planes, top, bias)
    np.testing.assert_allclose(top, want + bias.reshape(-1, 1, 1), rtol=1e-5, atol=1e-5)

    top_diff = np.random.default_rng(3).standard_normal(top.shape).astype(np.float32)
    want_diff = np.empty_like(images)
    dy = top_diff.transpose(1, 0, 2, 3).reshape(weight.shape[0], -1)
    col2im_reference(np.dot(weight.T, dy), *geometry, oh, ow, want_diff)
    images_diff = np.full((channels, height, width, num), np.nan, np.float32)
    sparse_conv_backward(_inner(top_diff), *dense_to_csr(weight), *geometry, images_diff)
    got_diff = np.empty_like(images)
    from_batch_inner(images_diff, got_diff)
    np.testing.assert_allclose(got_diff, want_diff, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(64, 20, 8, 8), (3, 5, 1, 1), (7, 1, 13, 3), (5, 6, 3, 3)])
def test_layout_round_trip(shape):
    data = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    inner = _inner(data)
    np.testing.assert_array_equal(inner, np.moveaxis(data, 0, -1))
    back = np.empty_like(data)
    from_batch_inner(inner, back)
    np.testing.assert_array_equal(back, data)
    bias = np.linspace(-1, 1, shape[1]).astype(np.float32)
    from_batch_inner(inner, back, bias)
    np.testing.assert_array_equal(back, data + bias.reshape((1, -1) + (1,) * (len(shape) - 2)))


@pytest.mark.parametrize("count", [1, 2, 3])
def test_results_do_not_depend_on_the_thread_count(count):
    geometry = GEOMETRIES[0]
    images, weight, oh, ow = _case(geometry, num=6, channels=7, height=13, width=12, outputs=5, density=0.5)
    csr = dense_to_csr(weight)
    before = parallel.num_threads()

    def compute():
        inner = _inner(images)
        planes = np.empty((weight.shape[0], oh, ow, images.shape[0]), np.float32)
        sparse_conv_forward(inner, *csr, *geometry, planes)
        back = np.empty_like(inner)
        sparse_conv_backward(planes, *csr, *geometry, back)
        col = np.empty((weight.shape[1], oh, ow, images.shape[0]), np.float32)
        im2col_batch_inner(inner, *geometry, ow, 0, col)
        top = np.empty((images.shape[0], weight.shape[0], oh, ow), np.float32)
        from_batch_inner(planes, top)
        return inner, planes, back, col, top

    try:
        parallel.set_num_threads(1)
        serial = compute()
        parallel.set_num_threads(count)
        split = compute()
    finally:
        parallel.set_num_threads(before)
    for a, b in zip(serial, split):
        np.testing.assert_array_equal(a, b)
