"""Layer types of the efficient-architecture Caffe forks: DepthwiseConvolution, ConvolutionDepthwise,
ShuffleChannel and Axpy.

None of them is in BVLC Caffe; the published MobileNet, ShuffleNet and SENet
prototxts need them.  Each class names the fork and file it follows.  The
depthwise arithmetic is Convolution's Depthwise path
(npcaffe.layerlib.conv_paths, npcaffe.kernels.depthwise), which a plain
Convolution with group = channels takes too.
"""
import numpy as np

from ..errors import NetError
from ..layer import Layer, register
from .convolution import Convolution


def _where(layer):
    return f"layer '{layer.name}' ({layer.type})"


@register("DepthwiseConvolution")
class DepthwiseConvolution(Convolution):
    """MobileNet's depthwise layer of yonghenglh6/DepthwiseConvolution
    (caffe/src/caffe/layers/depthwise_conv_layer.cpp and .cu, caffe/include/caffe/layers/depthwise_conv_layer.hpp).

    Parameters, blobs and shapes are Convolution's (convolution_param;
    weight (num_output, C / group, kh, kw)); published nets set
    group = num_output = C.  The fork's CPU code is BaseConvolutionLayer's
    im2col + GEMM per group, i.e. Convolution with any group, and so is this
    class; with group = C it computes on the Depthwise path.  Not mirrored:
    the fork's GPU kernel, which reads weight slice o for input channel o (so
    is right only for group = num_output = C) and whose own comment says it is
    for stride 1 only.
    """


@register("ConvolutionDepthwise")
class ConvolutionDepthwise(Convolution):
    """The depthwise layer of farmingyard/caffe-mobilenet (conv_dw_layer.cpp, conv_dw_layer.hpp), which
    farmingyard/ShuffleNet's prototxts use.

    Shapes: bottom (N, C, H, W) -> top (N, C, OH, OW), OH as Convolution's;
    blobs[0] the weight (C, 1, kh, kw), blobs[1] the bias (C,) when
    bias_term.  top[n, c] = bias[c] + weight[c] correlated with bottom[n, c]
    (kernel, stride, pad, dilation from convolution_param, zeros outside).

    Mirrored from the fork: the output channels are the input channels
    (num_output and group are not used to size anything); exactly one bottom
    and one top; the blob layout, so its caffemodels load unchanged.
    Deliberate differences: num_output or group given and different from C
    is an error (the fork ignores it silently); stride and pad default to 1
    and 0 as in Convolution (the fork reads stride(0) / pad(0) even when they
    are absent); its Reshape calls caffe_gpu_set, which fails in a CPU-only
    build, where this runs anywhere.
    """
    exact_num_bottom = 1
    exact_num_top = 1
    equal_num_bottom_top = False

    def outputs_and_group(self, param, channels):
        for field in ("num_output", "group"):
            if param.HasField(field) and getattr(param, field) != channels:
                raise NetError(f"{_where(self)}: convolution_param.{field} is {getattr(param, field)}, but a "
                               f"ConvolutionDepthwise layer has one output channel per input channel "
                               f"({channels}); set {field}: {channels} or leave it out")
        return channels, channels


@register("ShuffleChannel")
class ShuffleChannel(Layer):
    """ShuffleNet's channel shuffle, after farmingyard/ShuffleNet (shuffle_channel_layer.cpp, .hpp;
    shuffle_channel_param = 164, its README's number).

    Shapes: bottom (N, C, ...) -> top of the same shape.  With g =
    shuffle_channel_param.group (default 1), the channels are read as a
    (g, C / g) matrix and written transposed:

        top[n, j g + i] = bottom[n, i (C / g) + j]     0 <= i < g, 0 <= j < C / g

    Backward applies the inverse permutation to the diff.  g must be
    positive and divide C (the fork checks the division only at forward;
    here setup refuses it).  Works in place (top = bottom): NumPy copies
    through a temporary where the fork would overwrite its own input.
    """
    exact_num_bottom = 1
    exact_num_top = 1
    reshape_from_shapes = True

    def layer_setup(self, bottom, top):
        self.group = self.layer_param.shuffle_channel_param.group
        if self.group <= 0:
            raise NetError(f"{_where(self)}: shuffle_channel_param.group must be positive, got {self.group}")

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) < 2 or shape[1] % self.group:
            raise NetError(f"{_where(self)}: group {self.group} must divide the channels of bottom "
                           f"'{bottom[0].name}' {shape} (axis 1)")
        top[0].reshape(shape)

    def _grouped(self, array, rows):
        shape = array.shape
        return array.reshape(shape[0], rows, shape[1] // rows, -1)

    def forward_cpu(self, bottom, top):
        g = self.group
        source = self._grouped(bottom[0].data, g)  # (N, g, C/g, spatial)
        self._grouped(top[0].data, source.shape[2])[...] = source.transpose(0, 2, 1, 3)

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            g = self.group
            rows = top[0].shape[1] // g
            source = self._grouped(top[0].diff, rows)  # (N, C/g, g, spatial)
            self._grouped(bottom[0].diff, g)[...] = source.transpose(0, 2, 1, 3)


@register("Axpy")
class Axpy(Layer):
    """SENet's scale-and-add, after hujie-frank/SENet (src/caffe/layers/axpy_layer.cpp, .cu).

    Shapes: bottom[0] a (N, C) or (N, C, 1, 1), bottom[1] x and bottom[2] y
    (N, C, ...), the same shape; top like x:

        top[n, c, ...] = a[n, c] x[n, c, ...] + y[n, c, ...]

    the SE block's channel gate and its residual sum in one layer.  Backward:
    da[n, c] = sum over positions of dtop x, dx = a dtop, dy = dtop.
    No parameters and no parameter message.  In BVLC layers it is Flatten(a),
    Scale(x, flat a) with scale_param { axis: 0 }, Eltwise SUM with y (a test
    checks the two agree).

    Mirrored: the shape checks (a's first two axes equal x's, a 4-axis a must
    be 1 x 1 spatially, x and y equal).  Deliberate differences: when a needs
    a gradient and x does not, the fork leaves zeros in x's diff (it uses that
    buffer as scratch); here x's diff is not touched.  Computing in place on
    a or x (top named like bottom[0] or bottom[1]) is refused: backward needs
    both inputs as forward saw them.  In place on y (the residual) is fine.
    """
    exact_num_bottom = 3
    exact_num_top = 1
    reshape_from_shapes = True

    def layer_setup(self, bottom, top):
        p = self.layer_param
        if p.top and p.top[0] in list(p.bottom)[:2]:
            raise NetError(f"{_where(self)}: top '{p.top[0]}' overwrites bottom a or x in place; backward needs "
                           "them: give the top its own name (in place on y, the third bottom, is allowed)")

    def reshape(self, bottom, top):
        a, x, y = bottom
        if a.shape[:2] != x.shape[:2] or (a.num_axes == 4 and a.shape[2:] != (1, 1)) or a.num_axes not in (2, 4):
            raise NetError(f"{_where(self)}: bottom a '{a.name}' {a.shape} must be (N, C) or (N, C, 1, 1) with "
                           f"N, C those of x '{x.name}' {x.shape}")
        if x.shape != y.shape:
            raise NetError(f"{_where(self)}: x '{x.name}' {x.shape} and y '{y.name}' {y.shape} must have the same "
                           "shape")
        top[0].reshape(x.shape)

    def _scale(self, a, x):
        # a as (N, C, 1, ...) against x (N, C, ...)
        return a.data.reshape(x.shape[:2] + (1,) * (x.num_axes - 2))

    def forward_cpu(self, bottom, top):
        a, x, y = bottom
        np.add(self._scale(a, x) * x.data, y.data, out=top[0].data)

    def backward_cpu(self, top, propagate_down, bottom):
        a, x, y = bottom
        dtop = top[0].diff
        if propagate_down[0]:
            product = (dtop * x.data).reshape(x.shape[0], x.shape[1], -1)
            a.diff.reshape(x.shape[0], x.shape[1])[...] = product.sum(axis=2, dtype=np.float32)
        if propagate_down[1]:
            np.multiply(dtop, self._scale(a, x), out=x.diff)
        if propagate_down[2]:
            np.copyto(y.diff, dtop)  # the same memory when top is y in place: a no-op
