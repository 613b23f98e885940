"""Convolution over 1 or 3 spatial axes (Caffe's N-D im2col path): values, gradients, errors."""
import itertools

import numpy as np
import pytest

from gradient_check import check_gradient
from helpers import layer_param, make_blob
from npcaffe.blob import Blob
from npcaffe.errors import NetError
from npcaffe.kernels.im2col import col2im, col2im_nd, im2col, im2col_nd
from npcaffe.layer import create_layer


def conv_layer(params, type_name="Convolution", extra=""):
    return create_layer(layer_param(f'name: "c" type: "{type_name}" convolution_param {{ {params} }} {extra}'))


def reference(x, w, b, stride, pad, dilation, group):
    """Direct float64 loops: y[n, o, p...] = b[o] + sum over c in o's group and taps k of
    w[o, c, k] * x[n, c, p * stride - pad + k * dilation] (0 outside)."""
    num, spatial = x.shape[0], x.shape[2:]
    outputs, per_group, kernel = w.shape[0], w.shape[1], w.shape[2:]
    out_shape = tuple((n + 2 * p - (d * (k - 1) + 1)) // s + 1
                      for n, k, p, s, d in zip(spatial, kernel, pad, stride, dilation))
    y = np.zeros((num, outputs) + out_shape)
    for n, o in itertools.product(range(num), range(outputs)):
        g = o // (outputs // group)
        for pos in itertools.product(*map(range, out_shape)):
            total = float(b[o])
            for c in range(per_group):
                for k in itertools.product(*map(range, kernel)):
                    src = tuple(q * s - p + kk * d for q, s, p, kk, d in zip(pos, stride, pad, k, dilation))
                    if all(0 <= v < size for v, size in zip(src, spatial)):
                        total += float(w[(o, c) + k]) * float(x[(n, g * per_group + c) + src])
            y[(n, o) + pos] = total
    return y


@pytest.mark.parametrize("geometry", [((3, 3), (1, 1), (1, 1), (1, 1)), ((3, 2), (0, 1), (2, 1), (1, 2)),
                                      ((2, 4), (2, 0), (1, 3), (2, 1))])
def test_nd_columns_equal_the_2d_ones(geometry):
    kernel, pad, stride, dilation = geometry
    im = make_blob((1, 3, 7, 8), seed=1).data
    out = tuple((n + 2 * p - (d * (k - 1) + 1)) // s + 1 for n, k, p, s, d in zip((7, 8), kernel, pad, stride, dilation))
    want = np.empty((3 * kernel[0] * kernel[1], out[0] * out[1]), np.float32)
    im2col(im, *kernel, *pad, *stride, *dilation, *out, want)
    got = np.empty_like(want)
    im2col_nd(im[0], kernel, pad, stride, dilation, out, got)
    np.testing.assert_array_equal(got, want)
    back_want, back_got = np.empty_like(im), np.empty_like(im[0])
    col2im(want, *kernel, *pad, *stride, *dilation, *out, back_want)
    col2im_nd(want, kernel, pad, stride, dilation, out, back_got)
    np.testing.assert_array_equal(back_got, back_want[0])


@pytest.mark.parametrize("params, group", [
    ("num_output: 4 kernel_size: 2 kernel_size: 3 kernel_size: 2 pad: 1 pad: 0 pad: 1 stride: 2 stride: 1 stride: 1 "
     "dilation: 1 dilation: 1 dilation: 2", 2),
    ("num_output: 3 kernel_size: 2", 1),
])
def test_3d_forward_matches_direct_loops(params, group):
    layer = conv_layer(f"{params} group: {group} weight_filler {{ type: 'gaussian' }} "
                       "bias_filler { type: 'gaussian' }")
    x, top = make_blob((2, 4, 4, 5, 6), seed=3), Blob(())
    layer.setup([x], [top])
    layer.forward([x], [top])
    w, b = layer.blobs[0].data, layer.blobs[1].data
    kernel = w.shape[2:]
    want = reference(x.data, w, b, layer.stride, layer.pad, layer.dilation, group)
    assert top.shape == want.shape and layer.kernel == kernel
    np.testing.assert_allclose(top.data, want, rtol=1e-5, atol=1e-5)


def test_1d_forward_and_gradient():
    layer = conv_layer("num_output: 2 kernel_size: 3 pad: 1 stride: 2 weight_filler { type: 'gaussian' } "
                       "bias_filler { type: 'gaussian' }")
    x, top = make_blob((2, 3, 9), seed=4), Blob(())
    layer.setup([x], [top])
    layer.forward([x], [top])
    assert top.shape == (2, 2, 5)
    want = reference(x.data, layer.blobs[0].data, layer.blobs[1].data, (2,), (1,), (1,), 1)
    np.testing.assert_allclose(top.data, want, rtol=1e-5, atol=1e-5)
    check_gradient(conv_layer("num_output: 2 kernel_size: 3 pad: 1 stride: 2 weight_filler { type: 'gaussian' } "
                              "bias_filler { type: 'gaussian' }"), [make_blob((2, 3, 9), seed=4)], [Blob(())])


def test_3d_gradient_with_groups():
    layer = conv_layer("num_output: 4 group: 2 kernel_size: 2 pad: 1 stride: 2 stride: 1 stride: 1 "
                       "weight_filler { type: 'gaussian' } bias_filler { type: 'gaussian' }")
    check_gradient(layer, [make_blob((2, 4, 3, 3, 4), seed=5)], [Blob(())])


def test_dns_layer_over_3_axes_computes_with_the_masked_weights():
    masks = "weight_mask_filler { type: 'constant' value: 1 } bias_mask_filler { type: 'constant' value: 1 }"
    layer = conv_layer("num_output: 3 kernel_size: 2 weight_filler { type: 'gaussian' } bias_filler { type: 'gaussian' }",
                       "CConvolution", f"cconvolution_param {{ {masks} iter_stop: 0 }}")
    x, top = make_blob((2, 2, 3, 4, 3), seed=6), Blob(())
    layer.setup([x], [top])
    layer.blobs[2].data[0] = 0  # output 0 pruned entirely
    layer.forward([x], [top])
    want = reference(x.data, layer.blobs[0].data * layer.blobs[2].data, layer.blobs[1].data, (1,) * 3, (0,) * 3,
                     (1,) * 3, 1)
    np.testing.assert_allclose(top.data, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("params, message", [
    ("num_output: 2 kernel_h: 2 kernel_w: 2", "can only be used for 2-D convolution"),
    ("num_output: 2 kernel_size: 2 kernel_size: 3", "kernel_size must be given once, or once per spatial dimension \\(3\\)"),
    ("num_output: 2 kernel_size: 2 stride: 0", "must be positive"),
])
def test_bad_nd_parameters_name_the_field(params, message):
    with pytest.raises(NetError, match=message):
        conv_layer(params).setup([make_blob((1, 2, 4, 4, 4))], [Blob(())])
    with pytest.raises(NetError, match="too small"):
        conv_layer("num_output: 2 kernel_size: 5").setup([make_blob((1, 2, 4, 4, 4))], [Blob(())])


@pytest.mark.parametrize("geometry, shape", [
    ("kernel_size: 3 stride: 2 pad: 1", (2, 4, 5)),                                   # 1-D
    ("kernel_size: 2 kernel_size: 3 kernel_size: 2 stride: 2 stride: 1 stride: 2 pad: 0 pad: 1 pad: 0 "
     "dilation: 1 dilation: 2 dilation: 1", (2, 4, 3, 4, 3)),                           # 3-D
])
def test_deconvolution_is_the_adjoint_of_convolution(geometry, shape):
    """<deconv(x), z> = <x, conv(z)> for the same weight blob (Caffe's Deconvolution is
    Convolution's backward-to-data), over 1 and 3 spatial axes, with groups."""
    deconv = conv_layer(f"num_output: 6 group: 2 bias_term: false {geometry} weight_filler {{ type: 'gaussian' }}",
                        "Deconvolution")
    x, y = make_blob(shape, seed=7), Blob(())
    deconv.setup([x], [y])
    deconv.forward([x], [y])
    conv = conv_layer(f"num_output: {shape[1]} group: 2 bias_term: false {geometry}")
    z, cz = make_blob(y.shape, seed=8), Blob(())
    conv.setup([z], [cz])
    conv.blobs[0].data[...] = deconv.blobs[0].data
    conv.forward([z], [cz])
    assert cz.shape == x.shape
    np.testing.assert_allclose(np.dot(y.data.ravel(), z.data.ravel()), np.dot(x.data.ravel(), cz.data.ravel()),
                               rtol=1e-4)


def test_deconvolution_3d_gradient():
    layer = conv_layer("num_output: 4 group: 2 kernel_size: 2 stride: 2 stride: 1 stride: 1 pad: 0 pad: 1 pad: 0 "
                       "weight_filler { type: 'gaussian' } bias_filler { type: 'gaussian' }", "Deconvolution")
    check_gradient(layer, [make_blob((2, 4, 2, 3, 2), seed=9)], [Blob(())])
