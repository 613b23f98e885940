"""The efficient-architecture fork layers (npcaffe/layerlib/efficient.py): DepthwiseConvolution,
ConvolutionDepthwise, ShuffleChannel, Axpy - shapes, values against NumPy references, gradient checks,
errors - and the Depthwise path a plain grouped Convolution takes."""
import numpy as np
import pytest

from conv_reference import reference_convolution
from gradient_check import check_gradient_exhaustive
from helpers import layer_param, make_blob
from npcaffe.blob import Blob
from npcaffe.errors import NetError
from npcaffe.layer import create_layer
from npcaffe.layerlib.conv_paths import DenseColumns, Depthwise


def make(text):
    return create_layer(layer_param(f'name: "l" {text}'))


def tops(n=1):
    return [Blob((1,), name=f"top{i}") for i in range(n)]


def conv(type_name, params):
    return make(f'type: "{type_name}" convolution_param {{ {params} weight_filler {{ type: "gaussian" std: 0.5 }} '
                'bias_filler { type: "gaussian" std: 0.5 } }')


# -- depthwise convolutions --------------------------------------------------------------------------

@pytest.mark.parametrize("type_name, params", [
    ("Convolution", "num_output: 4 group: 4 kernel_size: 3 pad: 1 stride: 2"),
    ("DepthwiseConvolution", "num_output: 4 group: 4 kernel_size: 3 pad: 1 stride: 2"),
    ("ConvolutionDepthwise", "kernel_size: 3 pad: 1 stride: 2"),
    ("ConvolutionDepthwise", "num_output: 4 kernel_h: 3 kernel_w: 2 pad_h: 1 pad_w: 0 dilation: 2"),
])
def test_depthwise_types_compute_a_depthwise_convolution_on_the_depthwise_path(type_name, params):
    bottom, top = [make_blob((2, 4, 7, 6), seed=1)], tops()
    layer = conv(type_name, params)
    layer.setup(bottom, top)
    assert layer.blobs[0].shape[:2] == (4, 1) and layer.blobs[1].shape == (4,)
    assert isinstance(layer.compute_path(), Depthwise)
    top[0].data[...] = np.nan
    layer.forward(bottom, top)
    want = reference_convolution(bottom[0].data, layer.blobs[0].data, layer.blobs[1].data, layer.stride, layer.pad,
                                 layer.dilation, 4)
    assert top[0].shape == want.shape
    np.testing.assert_allclose(top[0].data, want, rtol=1e-5, atol=1e-5)


def test_a_one_channel_input_with_group_1_is_an_ordinary_convolution():
    """MNIST's first layer (1 input channel, group 1) has group = channels but is no depthwise
    layer: Caffe's columns and one GEMM (the depthwise loop took it 11x longer at batch 100)."""
    bottom, top = [make_blob((3, 1, 9, 9), seed=3)], tops()
    layer = conv("Convolution", "num_output: 5 kernel_size: 5")
    layer.setup(bottom, top)
    assert isinstance(layer.compute_path(), DenseColumns)
    layer.forward(bottom, top)
    want = reference_convolution(bottom[0].data, layer.blobs[0].data, layer.blobs[1].data, (1, 1), (0, 0), (1, 1), 1)
    np.testing.assert_allclose(top[0].data, want, rtol=1e-5, atol=1e-5)


def test_depthwise_convolution_with_fewer_groups_is_a_grouped_convolution():
    """The fork's CPU code is BaseConvolutionLayer's: any group works, as in Convolution."""
    bottom, top = [make_blob((1, 4, 5, 5), seed=2)], tops()
    layer = conv("DepthwiseConvolution", "num_output: 6 group: 2 kernel_size: 3")
    layer.setup(bottom, top)
    assert isinstance(layer.compute_path(), DenseColumns) and layer.blobs[0].shape == (6, 2, 3, 3)
    layer.forward(bottom, top)
    want = reference_convolution(bottom[0].data, layer.blobs[0].data, layer.blobs[1].data, (1, 1), (0, 0), (1, 1), 2)
    np.testing.assert_allclose(top[0].data, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("type_name, params", [
    ("Convolution", "num_output: 6 group: 3 kernel_size: 3 pad: 1 stride: 2"),  # channel multiplier 2
    ("DepthwiseConvolution", "num_output: 3 group: 3 kernel_size: 2 stride: 1"),
    ("ConvolutionDepthwise", "kernel_size: 3 pad: 1 dilation: 2"),
])
def test_depthwise_gradients(type_name, params):
    bottom = [make_blob((2, 3, 5, 4), seed=3)]
    check_gradient_exhaustive(conv(type_name, params), bottom, tops(), stepsize=1e-2, threshold=1e-2)


@pytest.mark.parametrize("params, match", [
    ("num_output: 8 kernel_size: 3", "num_output is 8, but a ConvolutionDepthwise layer has one output channel "
                                     "per input channel .4."),
    ("group: 2 kernel_size: 3", "convolution_param.group is 2"),
])
def test_convolution_depthwise_refuses_other_channel_counts(params, match):
    with pytest.raises(NetError, match=match):
        conv("ConvolutionDepthwise", params).setup([make_blob((1, 4, 5, 5))], tops())


def test_convolution_depthwise_takes_one_bottom():
    with pytest.raises(NetError, match="exactly 1 bottom"):
        conv("ConvolutionDepthwise", "kernel_size: 3").setup([make_blob((1, 4, 5, 5)), make_blob((1, 4, 5, 5))],
                                                             tops(2))


# -- ShuffleChannel ---------------------------------------------------------------------------------

def shuffle(group):
    return make(f'type: "ShuffleChannel" shuffle_channel_param {{ group: {group} }}')


def test_shuffle_channel_hand_values():
    """Six channels in two groups [0 1 2 | 3 4 5] interleave to 0 3 1 4 2 5."""
    bottom, top = [Blob((1, 6, 1, 2))], tops()
    bottom[0].data[...] = np.arange(6).reshape(1, 6, 1, 1) * 10 + np.arange(2)
    layer = shuffle(2)
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data[0, :, 0, 0], [0, 30, 10, 40, 20, 50])
    np.testing.assert_array_equal(top[0].data[0, :, 0, 1], [1, 31, 11, 41, 21, 51])


@pytest.mark.parametrize("shape, group", [((2, 12, 3, 5), 3), ((3, 8, 2, 2), 4), ((2, 6), 2), ((1, 5, 2, 3), 1)])
def test_shuffle_channel_against_reference_and_its_inverse(shape, group):
    bottom, top = [make_blob(shape, seed=4)], tops()
    layer = shuffle(group)
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    channels = shape[1]
    order = [i * (channels // group) + j for j in range(channels // group) for i in range(group)]
    np.testing.assert_array_equal(top[0].data, bottom[0].data[:, order])
    top[0].diff[...] = np.random.default_rng(5).uniform(-1, 1, shape)
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff[:, order], top[0].diff)


def test_shuffle_channel_gradient():
    check_gradient_exhaustive(shuffle(3), [make_blob((2, 6, 2, 3), seed=6)], tops())


def test_shuffle_channel_in_place():
    blob = make_blob((2, 6, 2, 2), seed=7)
    before = blob.data.copy()
    layer = shuffle(3)
    layer.setup([blob], [blob])
    layer.forward([blob], [blob])
    np.testing.assert_array_equal(blob.data, before[:, [0, 2, 4, 1, 3, 5]])


@pytest.mark.parametrize("group, shape, match", [
    (4, (1, 6, 2, 2), "group 4 must divide the channels"),
    (0, (1, 6, 2, 2), "group must be positive"),
])
def test_shuffle_channel_errors(group, shape, match):
    with pytest.raises(NetError, match=match):
        shuffle(group).setup([make_blob(shape)], tops())


# -- Axpy -----------------------------------------------------------------------------------------

def axpy(top="t"):
    return make(f'type: "Axpy" bottom: "a" bottom: "x" bottom: "y" top: "{top}"')


@pytest.mark.parametrize("a_shape", [(2, 3, 1, 1), (2, 3)])
def test_axpy_forward(a_shape):
    a, x, y = make_blob(a_shape, seed=8), make_blob((2, 3, 4, 5), seed=9), make_blob((2, 3, 4, 5), seed=10)
    top = tops()
    layer = axpy()
    layer.setup([a, x, y], top)
    layer.forward([a, x, y], top)
    want = a.data.reshape(2, 3, 1, 1).astype(np.float64) * x.data + y.data
    np.testing.assert_allclose(top[0].data, want, rtol=1e-6)


@pytest.mark.parametrize("a_shape", [(2, 3, 1, 1), (2, 3)])
def test_axpy_gradient(a_shape):
    bottom = [make_blob(a_shape, seed=11), make_blob((2, 3, 3, 2), seed=12), make_blob((2, 3, 3, 2), seed=13)]
    check_gradient_exhaustive(axpy(), bottom, tops())


def test_axpy_gradient_of_a_alone_leaves_x_diff_alone():
    """Where the fork zeroes x's diff (it uses it as scratch), npcaffe leaves it as it was."""
    a, x, y = make_blob((1, 2, 1, 1), seed=14), make_blob((1, 2, 2, 2), seed=15), make_blob((1, 2, 2, 2), seed=16)
    top = tops()
    layer = axpy()
    layer.setup([a, x, y], top)
    layer.forward([a, x, y], top)
    top[0].diff[...] = 1
    x.diff[...] = 7
    layer.backward(top, [True, False, False], [a, x, y])
    np.testing.assert_allclose(a.diff.ravel(), x.data.sum(axis=(2, 3)).ravel(), rtol=1e-6)
    assert (x.diff == 7).all()


@pytest.mark.parametrize("shapes, match", [
    (((2, 4, 1, 1), (2, 3, 4, 4), (2, 3, 4, 4)), r"bottom a '' \(2, 4, 1, 1\) must be \(N, C\) or \(N, C, 1, 1\)"),
    (((2, 3, 2, 2), (2, 3, 4, 4), (2, 3, 4, 4)), "must be"),
    (((2, 3), (2, 3, 4, 4), (2, 3, 4, 5)), "must have the same shape"),
])
def test_axpy_shape_errors(shapes, match):
    with pytest.raises(NetError, match=match):
        axpy().setup([make_blob(s) for s in shapes], tops())


def test_axpy_refuses_to_overwrite_x_in_place():
    with pytest.raises(NetError, match="overwrites bottom a or x in place"):
        axpy(top="x").setup([make_blob((1, 2)), make_blob((1, 2, 2, 2)), make_blob((1, 2, 2, 2))], tops())


@pytest.mark.parametrize("type_name, params", [
    ("DepthwiseConvolution", "num_output: 3 group: 3 kernel_size: 3 pad: 1"),
    ("ConvolutionDepthwise", "kernel_size: 3 pad: 1"),
])
def test_depthwise_types_take_attached_masks(type_name, params):
    """The mask core's fixed masks: forward with W * T, no gradient for a pruned weight."""
    from npcaffe.masks import attach_masks
    bottom, top = [make_blob((2, 3, 5, 5), seed=17)], tops()
    layer = conv(type_name, params)
    layer.setup(bottom, top)
    keep = np.ones((3, 1, 3, 3), np.float32)
    keep[1] = 0  # channel 1's filter pruned
    attach_masks(layer, keep)
    assert (layer.blobs[0].data[1] == 0).all()
    layer.forward(bottom, top)
    want = reference_convolution(bottom[0].data, layer.blobs[0].data * keep, layer.blobs[1].data, (1, 1), (1, 1),
                                 (1, 1), 3)
    np.testing.assert_allclose(top[0].data, want, rtol=1e-5, atol=1e-5)
    top[0].diff[...] = 1
    layer.blobs[0].diff[...] = 0
    layer.backward(top, [True], bottom)
    assert (layer.blobs[0].diff[1] == 0).all() and (layer.blobs[0].diff[0] != 0).any()


def test_axpy_equals_its_bvlc_spelling():
    """Axpy(a, x, y) is BVLC's Flatten(a) -> Scale(x, a, axis 0) -> Eltwise SUM with y: what a tool writing
    BVLC-only layer types can replace it with."""
    from google.protobuf import text_format

    import npcaffe
    from npcaffe.proto import caffe_pb2
    inputs = ('layer { name: "in" type: "Input" top: "a" top: "x" top: "y" input_param { shape { dim: 2 dim: 3 '
              'dim: 1 dim: 1 } shape { dim: 2 dim: 3 dim: 4 dim: 5 } shape { dim: 2 dim: 3 dim: 4 dim: 5 } } }\n')
    fused = inputs + 'layer { name: "axpy" type: "Axpy" bottom: "a" bottom: "x" bottom: "y" top: "out" }\n'
    plain = inputs + ('layer { name: "flat" type: "Flatten" bottom: "a" top: "a2" }\n'
                      'layer { name: "gate" type: "Scale" bottom: "x" bottom: "a2" top: "ax" scale_param { axis: 0 } }\n'
                      'layer { name: "sum" type: "Eltwise" bottom: "ax" bottom: "y" top: "out" }\n')
    outputs = []
    for text in (fused, plain):
        net = npcaffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), npcaffe.TEST)
        for name, seed in (("a", 18), ("x", 19), ("y", 20)):
            net.blobs[name].data[...] = np.random.default_rng(seed).uniform(-1, 1, net.blobs[name].shape)
        net.forward()
        outputs.append(net.blobs["out"].data.copy())
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-6, atol=1e-7)
