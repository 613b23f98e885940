"""Normalisation layers: BatchNorm, Scale, Bias, MVN, LRN.

ResNet-style nets chain them as Convolution -> BatchNorm (statistics only)
-> Scale (bias_term: true, the learned gamma and beta).  Sums over the
reduced axes are float32 NumPy reductions (pairwise) and Scale's gradient
sums float64 ones (one pass, npcaffe.kernels.channelwise.scale_backward),
where Caffe uses BLAS gemv: results agree to float rounding, not bit for
bit.  LRN (AlexNet's local response normalisation) has kernels of its own,
npcaffe.kernels.lrn.
"""
import numpy as np

from ..blob import Blob
from ..errors import NetError
from ..filler import fill
from ..kernels.channelwise import normalize, scale_backward, scale_shift
from ..kernels.lrn import lrn_across_backward, lrn_across_forward, lrn_within_backward, lrn_within_forward
from ..layer import TEST, Layer, register
from ..proto import caffe_pb2
from .neuron import InPlaceCopy

_LRN = caffe_pb2.LRNParameter
_UNUSED_3D = np.zeros((0, 0, 0), np.float32)


def _where(layer):
    return f"layer '{layer.name}' ({layer.type})"


@register("BatchNorm")
class BatchNormLayer(Layer):
    """Batch normalisation without the affine part (BVLC src/caffe/layers/batch_norm_layer.cpp).

    Shapes: bottom (N, C, ...) (or (N,), one channel), top the same.
    blobs: [0] running mean sum (C,), [1] running variance sum (C,),
    [2] the scale factor (1,); the stored statistics are blobs[0|1] / blobs[2]
    (0 when blobs[2] is 0).

    Forward: y = (x - mean) / sqrt(var + eps), per channel.  With
    use_global_stats (default: phase == TEST) mean and var are the stored
    ones; otherwise the batch's, over N and the spatial axes (biased var),
    and the running sums are updated:
        s <- s * f + 1,  mean_sum <- mean + f mean_sum,
        var_sum <- m / (m - 1) var + f var_sum    (m = count / C, f = moving_average_fraction)
    Backward: with global stats dx = dy / sqrt(var + eps); else
        dx = (dy - mean(dy) - mean(dy * y) * y) / sqrt(var + eps).

    Mirrored from upstream on purpose: setup appends `param { lr_mult: 0 }`
    to the layer parameter for every statistics blob that has no ParamSpec,
    and rejects a given one with lr_mult != 0, so solvers never update the
    statistics.  Like upstream's layer_param_, the appended specs are part
    of the layer's parameter and so of a saved net.  Safe in place.
    """
    exact_num_bottom = 1
    exact_num_top = 1
    reshape_from_shapes = True  # reshape reads the bottom's shape only

    def layer_setup(self, bottom, top):
        p = self.layer_param.batch_norm_param
        self.moving_average_fraction = np.float32(p.moving_average_fraction)
        self.use_global_stats = p.use_global_stats if p.HasField("use_global_stats") else self.phase == TEST
        self.channels = 1 if bottom[0].num_axes == 1 else bottom[0].shape[1]
        self.eps = np.float32(p.eps)
        if self.blobs:
            shapes = [b.shape for b in self.blobs]
            if shapes != [(self.channels,), (self.channels,), (1,)]:
                raise NetError(f"{_where(self)}: statistics blobs have shapes {shapes}, expected "
                               f"[({self.channels},), ({self.channels},), (1,)] for bottom {bottom[0].shape}")
        else:
            self.blobs = [Blob((self.channels,), name=f"{self.name}.mean"),
                          Blob((self.channels,), name=f"{self.name}.variance"),
                          Blob((1,), name=f"{self.name}.scale_factor")]
        specs = self.layer_param.param
        for i in range(3):
            if i == len(specs):
                specs.add().lr_mult = 0
            elif specs[i].lr_mult != 0:
                raise NetError(f"{_where(self)}: param {i} has lr_mult {specs[i].lr_mult}; BatchNorm's blobs are "
                               "statistics, not learned parameters: give lr_mult: 0 or no param at all "
                               "(use a Scale layer for a learned scale and bias)")

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        channels = 1 if len(shape) == 1 else shape[1]
        if channels != self.channels:
            raise NetError(f"{_where(self)}: bottom '{bottom[0].name}' {shape} has {channels} channels, "
                           f"the layer was set up for {self.channels}")
        top[0].reshape_like(bottom[0])
        self.view = (shape[0], self.channels, bottom[0].count // (shape[0] * self.channels))

    def forward_cpu(self, bottom, top):
        x = bottom[0].flat_data.reshape(self.view)
        y = top[0].flat_data.reshape(self.view)
        if self.use_global_stats:  # one pass; backward needs only std (no x_norm kept)
            mean, self.std = self.stored_statistics()
            normalize(x, mean, self.std, y, top[0] is bottom[0])
            self.x_norm = None
            return
        m = x.shape[0] * x.shape[2]
        mean = x.sum(axis=(0, 2), dtype=np.float32) / np.float32(m)
        np.subtract(x, mean.reshape(1, -1, 1), out=y)
        var = (y * y).sum(axis=(0, 2), dtype=np.float32) / np.float32(m)
        f = self.moving_average_fraction
        self.blobs[2].flat_data[0] = self.blobs[2].flat_data[0] * f + np.float32(1)
        stats = self.blobs[0].flat_data
        stats *= f
        stats += mean
        correction = np.float32(m / (m - 1)) if m > 1 else np.float32(1)
        stats = self.blobs[1].flat_data
        stats *= f
        stats += correction * var
        self.std = np.sqrt(var + self.eps).astype(np.float32)
        y /= self.std.reshape(1, -1, 1)
        self.x_norm = y.copy()  # a later in-place layer may overwrite y before backward

    def stored_statistics(self):
        """(mean, standard deviation) from the stored statistics, float32 as upstream computes them:
        sums / scale factor (0 when it is 0), sqrt(var + eps)."""
        s = self.blobs[2].flat_data[0]
        factor = np.float32(0) if s == 0 else np.float32(1) / s
        mean = self.blobs[0].flat_data * factor
        var = self.blobs[1].flat_data * factor
        return mean, np.sqrt(var + self.eps).astype(np.float32)

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].flat_diff.reshape(self.view)
        dx = bottom[0].flat_diff.reshape(self.view)
        std = self.std.reshape(1, -1, 1)
        if self.use_global_stats:
            np.divide(dy, std, out=dx)
            return
        y = self.x_norm
        m = np.float32(self.view[0] * self.view[2])
        mean_dy_y = (dy * y).sum(axis=(0, 2), dtype=np.float32).reshape(1, -1, 1) / m
        mean_dy = dy.sum(axis=(0, 2), dtype=np.float32).reshape(1, -1, 1) / m
        grad = dy - mean_dy - mean_dy_y * y
        np.divide(grad, std, out=dx)


def _affine_geometry(layer, bottom, param_blob, axis_param):
    """(outer, dim, inner) for broadcasting a parameter blob over bottom[0] from axis on."""
    x = bottom[0]
    axis = 0 if param_blob.num_axes == 0 else x.canonical_axis(axis_param)
    n = param_blob.num_axes
    if x.num_axes < axis + n or x.shape[axis:axis + n] != param_blob.shape:
        raise NetError(f"{_where(layer)}: parameter shape {param_blob.shape} does not match bottom "
                       f"'{x.name}' {x.shape} from axis {axis} (needs bottom dims {x.shape[axis:axis + n]})")
    return x.count_range(0, axis), param_blob.count, x.count_range(axis + n)


def _param_shape(layer, bottom, axis_param, num_axes):
    x = bottom[0]
    axis = x.canonical_axis(axis_param)
    if num_axes < -1:
        raise NetError(f"{_where(layer)}: num_axes must be >= -1 (-1: to the last axis), got {num_axes}")
    if num_axes >= 0 and x.num_axes < axis + num_axes:
        raise NetError(f"{_where(layer)}: axis {axis} + num_axes {num_axes} runs past bottom '{x.name}' {x.shape}")
    return x.shape[axis:] if num_axes == -1 else x.shape[axis:axis + num_axes]


@register("Bias")
class BiasLayer(Layer):
    """Add a bias broadcast over bottom[0] (BVLC src/caffe/layers/bias_layer.cpp).

    The bias is bottom[1] if given, else blobs[0] of shape
    bottom[0].shape[axis : axis + num_axes] (axis default 1, num_axes default
    1, -1 meaning to the end; bias_param.filler, default constant 0).  A
    scalar bias (num_axes 0) applies everywhere.
    Forward: y = x + b.  Backward: dx = dy; db = sum of dy over the outer and
    inner axes (accumulated into the parameter, written into bottom[1]).
    """
    min_bottom = 1
    max_bottom = 2
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.bias_param
        if len(bottom) == 1 and not self.blobs:
            shape = _param_shape(self, bottom, p.axis, p.num_axes)
            self.blobs = [Blob(shape, name=f"{self.name}.bias")]
            fill(self.blobs[0], p.filler, where=f"layer '{self.name}' bias_param.filler")

    def _bias(self, bottom):
        return bottom[1] if len(bottom) > 1 else self.blobs[0]

    def reshape(self, bottom, top):
        self.geometry = _affine_geometry(self, bottom, self._bias(bottom), self.layer_param.bias_param.axis)
        if top[0] is not bottom[0]:
            top[0].reshape_like(bottom[0])

    def forward_cpu(self, bottom, top):
        b = self._bias(bottom).flat_data.reshape(1, -1, 1)
        np.add(bottom[0].flat_data.reshape(self.geometry), b, out=top[0].flat_data.reshape(self.geometry))

    def backward_cpu(self, top, propagate_down, bottom):
        dy = top[0].flat_diff.reshape(self.geometry)
        if len(bottom) > 1 and propagate_down[1]:
            bottom[1].flat_diff[:] = dy.sum(axis=(0, 2), dtype=np.float32)
        elif len(bottom) == 1 and self.param_needs_backward(0):
            self.blobs[0].flat_diff[:] += dy.sum(axis=(0, 2), dtype=np.float32)
        if propagate_down[0] and bottom[0] is not top[0]:
            bottom[0].flat_diff[:] = top[0].flat_diff


@register("Scale")
class ScaleLayer(Layer):
    """Multiply by a scale broadcast over bottom[0], optionally add a bias
    (BVLC src/caffe/layers/scale_layer.cpp).

    The scale is bottom[1] if given, else blobs[0] of shape
    bottom[0].shape[axis : axis + num_axes] (axis default 1, num_axes default
    1, -1 to the end; scale_param.filler, default constant 1).  With
    bias_term a bias of the same shape follows as the last blob
    (bias_filler, default constant 0), exactly as a Bias layer.
    Forward: y = x * s (+ b).  Backward: dx = dy * s; ds = sum of dy * x over
    outer and inner axes (accumulated into the parameter, written into
    bottom[1]); db as Bias.  In place, the input is saved for ds.

    Deliberate difference: upstream overwrites, instead of accumulating, the
    scale parameter's diff in two corner cases (scale as large as the bottom,
    or a single outer position); here parameter diffs always accumulate, as
    the Layer contract says.
    """
    min_bottom = 1
    max_bottom = 2
    exact_num_top = 1
    reshape_from_shapes = True  # reshape reads the bottoms' shapes and its own blobs' (fixed at setup)

    def layer_setup(self, bottom, top):
        p = self.layer_param.scale_param
        self.kept_input = InPlaceCopy()
        self.bias_term = p.bias_term
        want = (1 if len(bottom) == 1 else 0) + (1 if self.bias_term else 0)
        if self.blobs:
            if len(self.blobs) != want:
                raise NetError(f"{_where(self)}: has {len(self.blobs)} parameter blobs, expected {want}")
            return
        if len(bottom) == 1:
            shape = _param_shape(self, bottom, p.axis, p.num_axes)
            self.blobs.append(Blob(shape, name=f"{self.name}.scale"))
            filler = p.filler if p.HasField("filler") else caffe_pb2.FillerParameter(type="constant", value=1)
            fill(self.blobs[0], filler, where=f"layer '{self.name}' scale_param.filler")
        if self.bias_term:
            num_axes = bottom[1].num_axes if len(bottom) > 1 else p.num_axes
            shape = _param_shape(self, bottom, p.axis, num_axes)
            bias = Blob(shape, name=f"{self.name}.bias")
            fill(bias, p.bias_filler, where=f"layer '{self.name}' scale_param.bias_filler")
            self.blobs.append(bias)

    def _scale(self, bottom):
        return bottom[1] if len(bottom) > 1 else self.blobs[0]

    def forward_input(self, bottom, top):
        """The input forward scaled, viewed as self.geometry (in place: the copy forward kept)."""
        return self.kept_input.input(bottom, top).reshape(self.geometry)

    def reshape(self, bottom, top):
        axis = self.layer_param.scale_param.axis
        self.geometry = _affine_geometry(self, bottom, self._scale(bottom), axis)
        if self.bias_term:
            self.bias_geometry = _affine_geometry(self, bottom, self.blobs[-1], axis)
        if top[0] is not bottom[0]:
            top[0].reshape_like(bottom[0])

    def forward_cpu(self, bottom, top):
        x = bottom[0].flat_data.reshape(self.geometry)
        if len(bottom) > 1 or self.param_needs_backward(0):
            self.kept_input.save(bottom, top)  # in place: the input, for the scale's gradient
        y = top[0].flat_data.reshape(self.geometry)
        scale = self._scale(bottom).flat_data
        if self.bias_term and self.bias_geometry == self.geometry:  # one pass (the usual BN + Scale)
            scale_shift(x, scale, self.blobs[-1].flat_data, True, y, top[0] is bottom[0])
            return
        scale_shift(x, scale, scale, False, y, top[0] is bottom[0])
        if self.bias_term:
            b = top[0].flat_data.reshape(self.bias_geometry)
            b += self.blobs[-1].flat_data.reshape(1, -1, 1)

    def backward_cpu(self, top, propagate_down, bottom):
        dy = top[0].flat_diff.reshape(self.geometry)
        scale = self._scale(bottom)
        from_bottom = len(bottom) > 1
        with_bias = self.bias_term and self.param_needs_backward(len(self.blobs) - 1)
        with_scale = (from_bottom and propagate_down[1]) or (not from_bottom and self.param_needs_backward(0))
        one_pass_bias = with_bias and self.bias_geometry == self.geometry
        if with_bias and not one_pass_bias:
            db = top[0].flat_diff.reshape(self.bias_geometry).sum(axis=(0, 2), dtype=np.float32)
            self.blobs[-1].flat_diff[:] += db
        unused = _UNUSED_3D  # stands for x / dx when they are not needed (apart from dy: see the kernel)
        x = self.forward_input(bottom, top) if with_scale else unused
        sums = np.zeros((2, dy.shape[1]), np.float32)
        dx = bottom[0].flat_diff.reshape(self.geometry) if propagate_down[0] else unused
        # One pass: both parameter sums and the bottom diff (the top diff itself, in place).
        scale_backward(dy, x, scale.flat_data, sums[0], sums[1], dx, with_scale, one_pass_bias, propagate_down[0],
                       top[0] is bottom[0])
        if one_pass_bias:
            self.blobs[-1].flat_diff[:] += sums[1]
        if with_scale:
            if from_bottom:
                scale.flat_diff[:] = sums[0]
            else:
                scale.flat_diff[:] += sums[0]


@register("MVN")
class MVNLayer(Layer):
    """Mean-variance normalisation (BVLC src/caffe/layers/mvn_layer.cpp).

    Shapes: bottom (N, C, H, W) (legacy 4-D accessors, as upstream), top the
    same.  Per (n, c), or per n with across_channels:
        y = x - mean(x)                          (normalize_variance: false)
        y = (x - mean(x)) / (sqrt(var(x)) + eps)  (default; eps 1e-9, added to
                                                   the standard deviation)
    Backward: dx = dy - mean(dy) without variance normalisation; with it
    upstream's dx = (dy - mean(dy) - mean(dy * y) * y) / (std + eps), which
    treats eps as 0 in the derivative, as we do.
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        b = bottom[0]
        top[0].reshape_like(b)
        p = self.layer_param.mvn_param
        num = b.num if p.across_channels else b.num * b.channels
        self.view = (num, b.count // num if num else 0)

    def forward_cpu(self, bottom, top):
        p = self.layer_param.mvn_param
        x = bottom[0].flat_data.reshape(self.view)
        y = top[0].flat_data.reshape(self.view)
        dim = np.float32(self.view[1])
        mean = x.sum(axis=1, dtype=np.float32, keepdims=True) / dim
        np.subtract(x, mean, out=y)
        if p.normalize_variance:
            var = (y * y).sum(axis=1, dtype=np.float32, keepdims=True) / dim
            self.std = np.sqrt(var) + np.float32(p.eps)
            y /= self.std

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        p = self.layer_param.mvn_param
        dy = top[0].flat_diff.reshape(self.view)
        dx = bottom[0].flat_diff.reshape(self.view)
        dim = np.float32(self.view[1])
        mean_dy = dy.sum(axis=1, dtype=np.float32, keepdims=True) / dim
        if not p.normalize_variance:
            np.subtract(dy, mean_dy, out=dx)
            return
        y = top[0].flat_data.reshape(self.view)
        mean_dy_y = (dy * y).sum(axis=1, dtype=np.float32, keepdims=True) / dim
        np.divide(dy - mean_dy - mean_dy_y * y, self.std, out=dx)


@register("LRN")
class LRNLayer(Layer):
    """Local response normalisation (BVLC src/caffe/layers/lrn_layer.cpp).

    Shapes: bottom (N, C, H, W), top the same.  lrn_param: local_size n
    (default 5, must be odd), alpha (1), beta (0.75), k (1), norm_region.

    ACROSS_CHANNELS (default):
        y = x * (k + alpha / n * sum_{c' in window(c)} x_{c'}^2) ^ -beta
    over the n channels centred on c (fewer at the ends; missing ones count 0).
    WITHIN_CHANNEL:
        y = x * (1 + alpha / n^2 * sum_{n x n window} x^2) ^ -beta
    over the n x n spatial window centred on the pixel, zeros outside the
    image.  Mirrored from upstream on purpose: k is ignored here (the shift
    is 1) and alpha is divided by n^2 (upstream averages with a padded AVE
    pooling).  Backward is the exact gradient of each (kernels in
    npcaffe.kernels.lrn, which keep upstream's running-window arithmetic for
    ACROSS_CHANNELS).  Deliberate difference: in-place use is an error
    (upstream accepts it and then computes its backward from the output).
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.lrn_param
        self.size = p.local_size
        if self.size % 2 != 1 or self.size < 1:
            raise NetError(f"{_where(self)}: lrn_param.local_size must be odd (the window is centred), got "
                           f"{self.size}; use e.g. {self.size + 1 if self.size > 0 else 1}")
        self.alpha, self.beta, self.k = np.float32(p.alpha), np.float32(p.beta), np.float32(p.k)
        self.region = p.norm_region
        if self.region not in (_LRN.ACROSS_CHANNELS, _LRN.WITHIN_CHANNEL):
            raise NetError(f"{_where(self)}: unknown norm_region {self.region}")
        self.scale = np.zeros(0, np.float32)

    def reshape(self, bottom, top):
        if bottom[0].num_axes != 4:
            raise NetError(f"{_where(self)}: bottom '{bottom[0].name}' must have 4 axes (num, channels, height, "
                           f"width), got shape {bottom[0].shape}")
        if top[0] is bottom[0]:
            raise NetError(f"{_where(self)}: cannot run in place (backward needs the input); give the top its own name")
        top[0].reshape_like(bottom[0])
        if self.scale.size != bottom[0].count:
            self.scale = np.zeros(bottom[0].count, np.float32)

    def forward_cpu(self, bottom, top):
        x = bottom[0].data
        scale = self.scale.reshape(x.shape)
        if self.region == _LRN.ACROSS_CHANNELS:
            lrn_across_forward(x, self.size, self.alpha, self.beta, self.k, scale, top[0].data)
        else:
            lrn_within_forward(x, self.size, self.alpha, self.beta, scale, top[0].data)

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x = bottom[0].data
        scale = self.scale.reshape(x.shape)
        if self.region == _LRN.ACROSS_CHANNELS:
            lrn_across_backward(x, top[0].data, scale, top[0].diff, self.size, self.alpha, self.beta, bottom[0].diff)
        else:
            lrn_within_backward(x, scale, top[0].diff, self.size, self.alpha, self.beta, bottom[0].diff)
