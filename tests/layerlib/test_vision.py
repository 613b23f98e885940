"""Convolution and Pooling layers (after Caffe's test_convolution_layer.cpp and
test_pooling_layer.cpp): shapes, hand-computed values, gradients, errors."""
import numpy as np
import pytest

from gradient_check import check_gradient, check_gradient_exhaustive
from helpers import layer_param, make_blob
from npcaffe.blob import Blob
from npcaffe.errors import NetError
from npcaffe.layer import create_layer
from npcaffe.layerlib.vision import Convolution

MAGIC6 = np.array([[35, 1, 6, 26, 19, 24],
                   [3, 32, 7, 21, 23, 25],
                   [31, 9, 2, 22, 27, 20],
                   [8, 28, 33, 17, 10, 15],
                   [30, 5, 34, 12, 14, 16],
                   [4, 36, 29, 13, 18, 11]], np.float32)


def conv_layer(params, name="conv"):
    return create_layer(layer_param(f'name: "{name}" type: "Convolution" convolution_param {{ {params} }}'))


def pool_layer(params, name="pool"):
    return create_layer(layer_param(f'name: "{name}" type: "Pooling" pooling_param {{ {params} }}'))


def tops(n=1):
    return [Blob((1,), name=f"top{i}") for i in range(n)]


def naive_conv(x, weight, bias, stride, pad, dilation, group):
    """Direct-loop convolution in float64 (the role of Caffe's caffe_conv)."""
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    oh = int((h + 2 * pad[0] - (dilation[0] * (kh - 1) + 1)) / stride[0]) + 1
    ow = int((w + 2 * pad[1] - (dilation[1] * (kw - 1) + 1)) / stride[1]) + 1
    out = np.zeros((n, o, oh, ow))
    og = o // group
    for oc in range(o):
        g = oc // og
        for ic in range(cg):
            for i in range(kh):
                for j in range(kw):
                    for y in range(oh):
                        for xx in range(ow):
                            hh = y * stride[0] - pad[0] + i * dilation[0]
                            ww = xx * stride[1] - pad[1] + j * dilation[1]
                            if 0 <= hh < h and 0 <= ww < w:
                                out[:, oc, y, xx] += x[:, g * cg + ic, hh, ww] * float(weight[oc, ic, i, j])
    if bias is not None:
        out += np.asarray(bias, np.float64)[None, :, None, None]
    return out


# ---------------------------------------------------------------- Convolution

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
def test_conv_forward_matches_naive(params, shape):
    fillers = ' weight_filler { type: "gaussian" } bias_filler { type: "gaussian" }'
    bottom = [make_blob(shape, seed=3), make_blob(shape, seed=4)]
    top = tops(2)
    layer = conv_layer(params + fillers)
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    bias = layer.blobs[1].data if layer.bias_term else None
    for b, t in zip(bottom, top):
        expected = naive_conv(b.data, layer.blobs[0].data, bias, layer.stride, layer.pad, layer.dilation, layer.group)
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
    expected = naive_conv(bottom[0].data.reshape(6, 4, 6, 5), layer.blobs[0].data, layer.blobs[1].data,
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


# -------------------------------------------------------------------- Pooling

def square_input(num=2, channels=2):
    b = Blob((num, channels, 3, 5))
    b.data[...] = np.array([[1, 2, 5, 2, 3], [9, 4, 1, 4, 8], [1, 2, 5, 2, 3]], np.float32)
    return b


@pytest.mark.parametrize("with_mask", [False, True])
def test_pool_max_square(with_mask):
    bottom, top = [square_input()], tops(2 if with_mask else 1)
    layer = pool_layer("pool: MAX kernel_size: 2")
    layer.setup(bottom, top)
    assert top[0].shape == (2, 2, 2, 4)
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, np.broadcast_to([[9, 5, 5, 8], [9, 5, 5, 8]], (2, 2, 2, 4)))
    if with_mask:
        np.testing.assert_array_equal(top[1].data, np.broadcast_to([[5, 2, 2, 9], [5, 12, 12, 9]], (2, 2, 2, 4)))
    # Backward routes each diff to its argmax; windows sharing an argmax add up.
    top[0].diff[...] = np.arange(1, 9, dtype=np.float32).reshape(2, 4)
    layer.backward(top, [True], bottom)
    expected = np.zeros(15)
    for value, index in zip(range(1, 9), [5, 2, 2, 9, 5, 12, 12, 9]):
        expected[index] += value
    np.testing.assert_array_equal(bottom[0].diff[1, 1].ravel(), expected)


def test_pool_max_rect_high_and_wide():
    bottom = [Blob((1, 1, 6, 6))]
    bottom[0].data[...] = MAGIC6
    top = tops(2)
    layer = pool_layer("pool: MAX kernel_h: 3 kernel_w: 2")
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data[0, 0], [[35, 32, 26, 27, 27], [32, 33, 33, 27, 27],
                                                      [31, 34, 34, 27, 27], [36, 36, 34, 18, 18]])
    np.testing.assert_array_equal(top[1].data[0, 0], [[0, 7, 3, 16, 16], [7, 20, 20, 16, 16],
                                                      [12, 26, 26, 16, 16], [31, 31, 26, 34, 34]])
    layer = pool_layer("pool: MAX kernel_h: 2 kernel_w: 3")
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data[0, 0], [[35, 32, 26, 26], [32, 32, 27, 27], [33, 33, 33, 27],
                                                      [34, 34, 34, 17], [36, 36, 34, 18]])
    np.testing.assert_array_equal(top[1].data[0, 0], [[0, 7, 3, 3], [7, 7, 16, 16], [20, 20, 20, 16],
                                                      [26, 26, 26, 21], [31, 31, 26, 34]])


def test_pool_max_padded():
    bottom = [Blob((1, 1, 3, 3))]
    bottom[0].data[...] = [[1, 2, 4], [2, 3, 2], [4, 2, 1]]
    top = tops()
    layer = pool_layer("pool: MAX kernel_size: 3 stride: 2 pad: 2")
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data[0, 0], [[1, 4, 4], [4, 4, 4], [4, 4, 1]])


def test_pool_ave_padded_divides_by_padded_window():
    bottom = [Blob((1, 1, 3, 3))]
    bottom[0].data[...] = 2
    top = tops()
    layer = pool_layer("pool: AVE kernel_size: 3 stride: 1 pad: 1")
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data[0, 0], [[8 / 9, 4 / 3, 8 / 9], [4 / 3, 2, 4 / 3], [8 / 9, 4 / 3, 8 / 9]],
                               rtol=1e-6)
    # Beyond the far edge the window is clipped to H + pad, not to H: the last
    # window of a 4x4 input (kernel 3, stride 2, pad 1) spans rows 3..4 -> size 2.
    bottom = [Blob((1, 1, 4, 4))]
    bottom[0].data[...] = 1
    layer = pool_layer("pool: AVE kernel_size: 3 stride: 2 pad: 1")
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data[0, 0], [[4 / 9, 6 / 9, 2 / 6], [6 / 9, 1, 3 / 6], [2 / 6, 3 / 6, 1 / 4]],
                               rtol=1e-6)
    top[0].diff[...] = 0
    top[0].diff[0, 0, 2, 2] = 1
    layer.backward(top, [True], bottom)
    expected = np.zeros((4, 4))
    expected[3, 3] = 1 / 4
    np.testing.assert_array_equal(bottom[0].diff[0, 0], expected)


@pytest.mark.parametrize("params, hw, expected", [
    ("kernel_size: 3 stride: 2", (6, 5), (3, 2)),                        # Caffe's TestSetup
    ("pool: AVE kernel_size: 3 stride: 2 pad: 1", (6, 5), (4, 3)),       # TestSetupPadded
    ("pool: AVE global_pooling: true", (6, 5), (1, 1)),                  # TestSetupGlobalPooling
    ("kernel_size: 3 stride: 2 pad: 1", (7, 7), (4, 4)),                 # last window starts inside: kept
    ("kernel_size: 2 stride: 2 pad: 1", (5, 5), (3, 3)),                 # ceil gives 4; last starts at H+pad: clipped
    ("kernel_size: 2 stride: 2 pad_h: 1 pad_w: 0", (5, 6), (3, 3)),      # clipping applies to both axes
    ("kernel_size: 3 stride: 2", (6, 6), (3, 3)),                        # CEIL: ceil(1.5) + 1
    ("kernel_size: 3 stride: 2 round_mode: FLOOR", (6, 6), (2, 2)),      # FLOOR: floor(1.5) + 1
    ("kernel_size: 1 stride: 3", (5, 5), (3, 3)),                        # last window empty, as upstream
])
def test_pool_output_shapes(params, hw, expected):
    bottom, top = [make_blob((2, 3) + hw)], tops()
    pool_layer(params).setup(bottom, top)
    assert top[0].shape == (2, 3) + expected


def test_pool_global_matches_mean():
    bottom, top = [make_blob((2, 3, 4, 5), seed=30)], tops()
    layer = pool_layer("pool: AVE global_pooling: true")
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data[:, :, 0, 0], bottom[0].data.mean(axis=(2, 3)), rtol=1e-5)


@pytest.mark.parametrize("params", [
    "pool: MAX kernel_h: 3 kernel_w: 3 stride: 2 pad: 1",
    "pool: MAX kernel_h: 4 kernel_w: 3 stride: 2 pad: 1",
])
def test_pool_max_gradient(params):
    # Caffe's TestGradientMax: step 1e-4, threshold 1e-2.
    bottom = [make_blob((2, 2, 6, 5), seed=31)]
    check_gradient_exhaustive(pool_layer(params), bottom, tops(), stepsize=1e-4, threshold=1e-2)


def test_pool_max_gradient_with_mask_top():
    bottom = [make_blob((1, 2, 6, 5), seed=32)]
    check_gradient_exhaustive(pool_layer("pool: MAX kernel_h: 3 kernel_w: 4 stride: 2"), bottom, tops(2),
                              stepsize=1e-4, threshold=1e-2)


@pytest.mark.parametrize("params", [
    "pool: AVE kernel_h: 3 kernel_w: 4 stride: 2",
    "pool: AVE kernel_h: 4 kernel_w: 3 stride: 2 pad: 2",
    "pool: AVE kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR",
])
def test_pool_ave_gradient(params):
    bottom = [make_blob((2, 2, 6, 5), seed=33)]
    check_gradient(pool_layer(params), bottom, tops(), stepsize=1e-2, threshold=1e-2)


@pytest.mark.parametrize("params, ntop, match", [
    ("pool: MAX kernel_size: 3 pad: 3", 1, r"pad \(3, 3\) must be smaller than the kernel"),
    ("pool: AVE kernel_h: 2 kernel_w: 3 pad_h: 1 pad_w: 3", 1, "must be smaller than the kernel"),
    ("kernel_size: 3 kernel_h: 3 kernel_w: 3", 1, "kernel_size, or as both kernel_h and kernel_w"),
    ("kernel_h: 3", 1, "not neither"),
    ("pool: AVE global_pooling: true kernel_size: 2", 1, "remove kernel_size"),
    ("pool: AVE global_pooling: true stride: 2", 1, "global_pooling needs pad 0 and stride 1"),
    ("kernel_size: 2 pad: 1 pad_h: 1 pad_w: 1", 1, "give pad, or both pad_h and pad_w"),
    ("kernel_size: 2 stride_h: 2", 1, "give stride, or both"),
    ("pool: AVE kernel_size: 2", 2, "at most 1 top"),
])
def test_pool_bad_parameters(params, ntop, match):
    with pytest.raises(NetError, match=match):
        pool_layer(params).setup([make_blob((1, 1, 6, 6))], tops(ntop))


def test_pool_needs_4_axes():
    with pytest.raises(NetError, match="4 axes"):
        pool_layer("kernel_size: 2").setup([make_blob((1, 6, 6))], tops())
