"""The convolution family (after Caffe's test_convolution_layer.cpp and test_deconvolution_layer.cpp):
Convolution over 2 and over 1 or 3 spatial axes, Deconvolution, Im2col: shapes, values against the
reference convolution (tests/conv_reference.py), gradients, errors.  Each compute path on its own:
test_conv_paths.py."""
import numpy as np
import pytest

from conv_reference import reference_convolution
from gradient_check import check_gradient, check_gradient_exhaustive
from helpers import layer_param, make_blob
from npcaffe.blob import Blob
from npcaffe.errors import NetError
from npcaffe.layer import TRAIN, create_layer
from npcaffe.layerlib.convolution import Convolution


def conv_layer(params, name="conv", type_name="Convolution", extra=""):
    return create_layer(layer_param(f'name: "{name}" type: "{type_name}" convolution_param {{ {params} }} {extra}'))


def tops(n=1):
    return [Blob((1,), name=f"top{i}") for i in range(n)]


def make(text, phase=TRAIN):
    return create_layer(layer_param(f'name: "v" {text}'), phase)


def forward(layer, bottom, ntop=1):
    top = [Blob(()) for _ in range(ntop)]
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    return top[0] if ntop == 1 else top


# -- Convolution, 2 spatial axes ---------------------------------------------------------------

def test_conv_setup_shapes():
    bottom = [make_blob((2, 3, 6, 4), seed=1), make_blob((2, 3, 6, 4), seed=2)]
    top = tops(2)
    layer = conv_layer("num_output: 4 kernel_size: 3 stride: 2")
    layer.setup(bottom, top)
    assert top[0].shape == top[1].shape == (2, 4, 2, 1)
    assert layer.blobs[0].shape == (4, 3, 3, 3) and layer.blobs[1].shape == (4,)
    layer = conv_layer("num_output: 3 group: 3 kernel_size: 3 stride: 2")
    layer.setup(bottom, top)
    assert top[0].shape == (2, 3, 2, 1)
    assert layer.blobs[0].shape == (3, 1, 3, 3)


def test_conv_hand_values():
    bottom = [Blob((1, 1, 3, 3))]
    bottom[0].data[...] = np.arange(1, 10).reshape(1, 1, 3, 3)
    top = tops()
    layer = conv_layer('num_output: 1 kernel_size: 2 weight_filler { type: "constant" value: 1 } '
                       'bias_filler { type: "constant" value: 0.5 }')
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data[0, 0], [[12.5, 16.5], [24.5, 28.5]])
    # Pad 1, stride 2: windows at (-1,-1), (-1,1), (1,-1), (1,1).
    layer = conv_layer('num_output: 1 kernel_size: 2 pad: 1 stride: 2 bias_term: false '
                       'weight_filler { type: "constant" value: 1 }')
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data[0, 0], [[1, 2 + 3], [4 + 7, 5 + 6 + 8 + 9]])


@pytest.mark.parametrize("params, shape", [
    ("num_output: 4 kernel_size: 3 stride: 2", (2, 3, 6, 4)),                      # Caffe's TestSimpleConvolution
    ("num_output: 4 kernel_size: 3 dilation: 2", (2, 3, 8, 7)),                    # TestDilatedConvolution
    ("num_output: 3 group: 3 kernel_size: 3 stride: 2", (2, 3, 6, 4)),             # TestSimpleConvolutionGroup
    ("num_output: 4 kernel_size: 1", (2, 3, 6, 4)),                                # Test1x1Convolution
    ("num_output: 6 group: 2 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 2", (3, 4, 7, 5)),
    ("num_output: 2 kernel_size: 3 kernel_size: 2 stride: 1 stride: 3 pad: 2 pad: 0 dilation: 1 dilation: 2",
     (2, 2, 6, 9)),
    ("num_output: 2 kernel_size: 3 stride: 2 bias_term: false", (1, 2, 2, 2)),     # kernel larger than input
])
def test_conv_forward_matches_reference(params, shape):
    fillers = ' weight_filler { type: "gaussian" } bias_filler { type: "gaussian" }'
    bottom = [make_blob(shape, seed=3), make_blob(shape, seed=4)]
    top = tops(2)
    layer = conv_layer(params + fillers)
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    bias = layer.blobs[1].data if layer.bias_term else None
    for b, t in zip(bottom, top):
        expected = reference_convolution(b.data, layer.blobs[0].data, bias, layer.stride, layer.pad, layer.dilation,
                                         layer.group)
        assert t.shape == expected.shape
        np.testing.assert_allclose(t.data, expected, rtol=1e-4, atol=1e-4)


def test_conv_output_size_truncates_like_c():
    # (2 - 3) / 2 truncates to 0 in C, so one output row/column, not zero.
    bottom, top = [make_blob((1, 1, 2, 2))], tops()
    conv_layer("num_output: 1 kernel_size: 3 stride: 2").setup(bottom, top)
    assert top[0].shape == (1, 1, 1, 1)
    with pytest.raises(NetError, match="too small"):
        conv_layer("num_output: 1 kernel_size: 5 stride: 1").setup(bottom, top)


def test_conv_axis_and_leading_dims():
    shape = (2, 3, 4, 6, 5)
    bottom, top = [make_blob(shape, seed=5)], tops()
    layer = conv_layer('axis: 2 num_output: 3 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" } '
                       'bias_filler { type: "gaussian" }')
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    assert top[0].shape == (2, 3, 3, 6, 5)
    expected = reference_convolution(bottom[0].data.reshape(6, 4, 6, 5), layer.blobs[0].data, layer.blobs[1].data,
                                     (1, 1), (1, 1), (1, 1), 1)
    np.testing.assert_allclose(top[0].data.reshape(expected.shape), expected, rtol=1e-4, atol=1e-4)


def test_conv_sobel_preset_weights_kept():
    # Caffe's TestSobelConvolution idea: blobs set before setup are used as they are.
    bottom, top = [make_blob((1, 1, 4, 4), seed=6)], tops()
    layer = conv_layer("num_output: 1 kernel_size: 3 bias_term: false")
    sobel = Blob((1, 1, 3, 3))
    sobel.data[...] = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
    layer.blobs = [sobel]
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    x = bottom[0].data[0, 0].astype(np.float64)
    gx = (x[:, 2:] - x[:, :-2])
    expected = gx[:-2] + 2 * gx[1:-1] + gx[2:]
    np.testing.assert_allclose(top[0].data[0, 0], expected, rtol=1e-5, atol=1e-5)


CONV_GRADIENT_CASES = [
    ("num_output: 2 kernel_size: 3 stride: 2", (2, 3, 6, 4), 2),                # TestGradient, two bottoms
    ("num_output: 2 kernel_size: 3 dilation: 2", (2, 3, 5, 6), 1),              # TestDilatedGradient
    ("num_output: 3 group: 3 kernel_size: 3 stride: 2", (2, 3, 6, 4), 1),       # TestGradientGroup
    ("num_output: 4 group: 2 kernel_h: 3 kernel_w: 2 pad: 1 stride: 2 bias_term: false", (2, 4, 5, 4), 1),
    ("num_output: 2 kernel_size: 1", (2, 3, 4, 3), 2),                          # Test1x1Gradient
]


@pytest.mark.parametrize("params, shape, nbottom", CONV_GRADIENT_CASES)
def test_conv_gradient(params, shape, nbottom):
    bottom = [make_blob(shape, seed=10 + i) for i in range(nbottom)]
    layer = conv_layer(params + ' weight_filler { type: "gaussian" } bias_filler { type: "gaussian" }')
    check_gradient_exhaustive(layer, bottom, tops(nbottom))


def test_conv_param_diffs_accumulate_and_bottom_diff_is_overwritten():
    bottom, top = [make_blob((2, 3, 5, 5), seed=20)], tops()
    layer = conv_layer('num_output: 2 kernel_size: 3 weight_filler { type: "gaussian" } '
                       'bias_filler { type: "gaussian" }')
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    top[0].diff[...] = make_blob(top[0].shape, seed=21).data
    layer.backward(top, [True], bottom)
    w1, b1, x1 = layer.blobs[0].diff.copy(), layer.blobs[1].diff.copy(), bottom[0].diff.copy()
    assert np.abs(w1).sum() > 0 and np.abs(b1).sum() > 0
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(layer.blobs[0].diff, 2 * w1, rtol=1e-6)
    np.testing.assert_allclose(layer.blobs[1].diff, 2 * b1, rtol=1e-6)
    np.testing.assert_array_equal(bottom[0].diff, x1)


def test_conv_propagate_down_flags():
    bottom, top = [make_blob((1, 2, 4, 4), seed=22)], tops()
    layer = conv_layer('num_output: 2 kernel_size: 3 weight_filler { type: "gaussian" }')
    layer.setup(bottom, top)
    layer.set_param_propagate_down(0, False)
    layer.forward(bottom, top)
    top[0].diff[...] = 1
    bottom[0].diff[...] = 7
    layer.backward(top, [False], bottom)
    assert not layer.blobs[0].diff.any()
    np.testing.assert_array_equal(layer.blobs[1].diff, [4, 4])  # 2x2 outputs of diff 1
    assert (bottom[0].diff == 7).all()


def test_conv_hook_uses_given_weights():
    class MaskedConv(Convolution):
        type = "TestMaskedConvolution"

        def forward_cpu(self, bottom, top):
            self.conv_forward(bottom, top, self.blobs[0].data * self.mask, None)

        def backward_cpu(self, top, propagate_down, bottom):
            self.conv_backward(top, propagate_down, bottom, self.blobs[0].data * self.mask)

    param = 'num_output: 2 kernel_size: 2 bias_term: false weight_filler { type: "gaussian" }'
    bottom, top_a, top_b = [make_blob((2, 2, 4, 4), seed=23)], tops(), tops()
    masked = MaskedConv(layer_param(f'name: "m" type: "Convolution" convolution_param {{ {param} }}'))
    masked.setup(bottom, top_a)
    masked.mask = (np.arange(masked.blobs[0].count) % 3 != 0).reshape(masked.blobs[0].shape).astype(np.float32)
    plain = conv_layer(param)
    plain.setup(bottom, top_b)
    plain.blobs[0].data[...] = masked.blobs[0].data * masked.mask
    for layer, top in ((masked, top_a), (plain, top_b)):
        layer.forward(bottom, top)
        top[0].diff[...] = 1
    np.testing.assert_array_equal(top_a[0].data, top_b[0].data)
    masked.backward(top_a, [True], bottom)
    dx = bottom[0].diff.copy()
    plain.backward(top_b, [True], bottom)
    np.testing.assert_array_equal(dx, bottom[0].diff)
    np.testing.assert_array_equal(masked.blobs[0].diff, plain.blobs[0].diff)


@pytest.mark.parametrize("params, shape, match", [
    ("num_output: 4 group: 2 kernel_size: 3", (1, 3, 5, 5), r"group 2 .*channels \(3.*num_output \(4\)"),
    ("num_output: 3 group: 2 kernel_size: 3", (1, 4, 5, 5), "group 2 must divide"),
    ("num_output: 2 kernel_size: 3 kernel_h: 3 kernel_w: 3", (1, 1, 5, 5), "kernel_size or kernel_h/kernel_w"),
    ("num_output: 2 kernel_size: 3 stride: 1 stride_h: 2 stride_w: 2", (1, 1, 5, 5), "stride or stride_h"),
    ("num_output: 2", (1, 1, 5, 5), "kernel_size must be given once"),
    ("num_output: 2 kernel_size: 1 kernel_size: 2 kernel_size: 3", (1, 1, 5, 5), "given 3 times"),
    ("num_output: 2 kernel_h: 3", (1, 1, 5, 5), "kernel size must be positive"),
    ("kernel_size: 3", (1, 1, 5, 5), "num_output must be positive"),
    ("num_output: 2 kernel_size: 3", (4, 5), "no spatial axis"),
])
def test_conv_bad_parameters(params, shape, match):
    with pytest.raises(NetError, match=match):
        conv_layer(params).setup([make_blob(shape)], tops())


def test_conv_reshape_checks():
    layer = conv_layer("num_output: 2 kernel_size: 3")
    layer.setup([make_blob((1, 3, 5, 5))], tops())
    with pytest.raises(NetError, match="2 channels"):
        layer.forward([make_blob((1, 2, 5, 5))], tops())
    with pytest.raises(NetError, match="same shape"):
        layer.forward([make_blob((1, 3, 5, 5)), make_blob((1, 3, 6, 5))], tops(2))
    preset = conv_layer("num_output: 2 kernel_size: 3")
    preset.blobs = [Blob((2, 3, 2, 2)), Blob((2,))]
    with pytest.raises(NetError, match="expected"):
        preset.setup([make_blob((1, 3, 5, 5))], tops())


# -- Convolution over 1 or 3 spatial axes (Caffe's N-D im2col path) ---------------------------

@pytest.mark.parametrize("params, group", [
    ("num_output: 4 kernel_size: 2 kernel_size: 3 kernel_size: 2 pad: 1 pad: 0 pad: 1 stride: 2 stride: 1 stride: 1 "
     "dilation: 1 dilation: 1 dilation: 2", 2),
    ("num_output: 3 kernel_size: 2", 1),
])
def test_3d_forward_matches_reference(params, group):
    layer = conv_layer(f"{params} group: {group} weight_filler {{ type: 'gaussian' }} "
                       "bias_filler { type: 'gaussian' }")
    x, top = make_blob((2, 4, 4, 5, 6), seed=3), Blob(())
    layer.setup([x], [top])
    layer.forward([x], [top])
    w, b = layer.blobs[0].data, layer.blobs[1].data
    kernel = w.shape[2:]
    want = reference_convolution(x.data, w, b, layer.stride, layer.pad, layer.dilation, group)
    assert top.shape == want.shape and layer.kernel == kernel
    np.testing.assert_allclose(top.data, want, rtol=1e-5, atol=1e-5)


def test_1d_forward_and_gradient():
    layer = conv_layer("num_output: 2 kernel_size: 3 pad: 1 stride: 2 weight_filler { type: 'gaussian' } "
                       "bias_filler { type: 'gaussian' }")
    x, top = make_blob((2, 3, 9), seed=4), Blob(())
    layer.setup([x], [top])
    layer.forward([x], [top])
    assert top.shape == (2, 2, 5)
    want = reference_convolution(x.data, layer.blobs[0].data, layer.blobs[1].data, (2,), (1,), (1,), 1)
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
                       type_name="CConvolution", extra=f"cconvolution_param {{ {masks} iter_stop: 0 }}")
    x, top = make_blob((2, 2, 3, 4, 3), seed=6), Blob(())
    layer.setup([x], [top])
    layer.blobs[2].data[0] = 0  # output 0 pruned entirely
    layer.forward([x], [top])
    want = reference_convolution(x.data, layer.blobs[0].data * layer.blobs[2].data, layer.blobs[1].data, (1,) * 3,
                                 (0,) * 3, (1,) * 3, 1)
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


# -- Deconvolution ----------------------------------------------------------------------------

def deconv(param, bottom):
    layer = make(f'type: "Deconvolution" convolution_param {{ {param} weight_filler {{ type: "gaussian" std: 0.5 }} '
                 'bias_filler { type: "gaussian" std: 0.5 } }')
    return layer, forward(layer, [bottom])


@pytest.mark.parametrize("param", ["num_output: 3 kernel_size: 3 stride: 2 pad: 1",
                                   "num_output: 4 kernel_size: 2 stride: 1 group: 2",
                                   "num_output: 2 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 dilation: 2"])
def test_deconvolution_is_convolution_transposed(param):
    x = make_blob((2, 4, 3, 4), seed=1)
    layer, top = deconv(param + " bias_term: false", x)
    p = layer
    assert top.shape[2] == p.stride[0] * (3 - 1) + p.dilation[0] * (p.kernel[0] - 1) + 1 - 2 * p.pad[0]
    # <deconv(x), y> == <x, conv(y)>: deconvolution is the adjoint of convolution.
    # A Convolution from the deconvolution's output back to its input has the same weight shape.
    conv_param = param.replace(f"num_output: {layer.num_output}", f"num_output: {x.shape[1]}")
    conv = make(f'type: "Convolution" convolution_param {{ {conv_param} bias_term: false }}')
    y = make_blob(top.shape, seed=2)
    conv_top = Blob(())
    conv.setup([y], [conv_top])
    conv.blobs[0].data[...] = layer.blobs[0].data
    assert conv_top.shape == x.shape
    conv.forward([y], [conv_top])
    lhs = np.dot(top.data.ravel().astype(np.float64), y.data.ravel())
    rhs = np.dot(x.data.ravel().astype(np.float64), conv_top.data.ravel())
    assert lhs == pytest.approx(rhs, rel=1e-5)


def test_deconvolution_hand_values():
    # 1x1 input of value 2, 2x2 kernel, stride 1: the output is 2 * kernel + bias.
    x = Blob((1, 1, 1, 1))
    x.data[...] = 2
    layer, top = deconv("num_output: 1 kernel_size: 2", x)
    np.testing.assert_allclose(top.data[0, 0], 2 * layer.blobs[0].data[0, 0] + layer.blobs[1].data[0], rtol=1e-6)


@pytest.mark.parametrize("param", ["num_output: 3 kernel_size: 3 stride: 2 pad: 1",
                                   "num_output: 4 kernel_size: 2 group: 2"])
def test_deconvolution_gradient(param):
    layer = make(f'type: "Deconvolution" convolution_param {{ {param} weight_filler {{ type: "gaussian" }} '
                 'bias_filler { type: "gaussian" } }')
    check_gradient(layer, [make_blob((2, 4, 3, 3), seed=4)], [Blob(())], threshold=2e-3)


def test_deconvolution_bad_group():
    with pytest.raises(NetError, match=r"group 2 must divide both the input channels \(3"):
        deconv("num_output: 4 kernel_size: 2 group: 2", make_blob((1, 3, 2, 2)))


@pytest.mark.parametrize("geometry, shape", [
    ("kernel_size: 3 stride: 2 pad: 1", (2, 4, 5)),                                   # 1-D
    ("kernel_size: 2 kernel_size: 3 kernel_size: 2 stride: 2 stride: 1 stride: 2 pad: 0 pad: 1 pad: 0 "
     "dilation: 1 dilation: 2 dilation: 1", (2, 4, 3, 4, 3)),                           # 3-D
])
def test_deconvolution_is_the_adjoint_of_convolution(geometry, shape):
    """<deconv(x), z> = <x, conv(z)> for the same weight blob (Caffe's Deconvolution is
    Convolution's backward-to-data), over 1 and 3 spatial axes, with groups."""
    deconv = conv_layer(f"num_output: 6 group: 2 bias_term: false {geometry} weight_filler {{ type: 'gaussian' }}",
                        type_name="Deconvolution")
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
                       "weight_filler { type: 'gaussian' } bias_filler { type: 'gaussian' }", type_name="Deconvolution")
    check_gradient(layer, [make_blob((2, 4, 2, 3, 2), seed=9)], [Blob(())])


# -- Im2col -------------------------------------------------------------------------------------

def test_im2col_layer():
    x = Blob((2, 1, 3, 3))
    x.data[...] = np.arange(18, dtype=np.float32).reshape(2, 1, 3, 3)
    top = forward(make('type: "Im2col" convolution_param { kernel_size: 2 }'), [x])
    assert top.shape == (2, 4, 2, 2)
    np.testing.assert_array_equal(top.data[0, :, 0, 0], [0, 1, 3, 4])
    np.testing.assert_array_equal(top.data[1, :, 1, 1], [13, 14, 16, 17])
    check_gradient(make('type: "Im2col" convolution_param { kernel_size: 3 stride: 2 pad: 1 }'),
                   [make_blob((2, 2, 4, 5), seed=5)], [Blob(())])
