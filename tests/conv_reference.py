"""A plain NumPy reference convolution (the role of Caffe's caffe_conv in its tests), in float64,
over any number of spatial axes, with its gradients: what every convolution path is checked against.

    y[n, o, p] = b[o] + sum over c in o's group and kernel taps k of
                 w[o, c, k] * x[n, group(o) C/group + c, p stride - pad + k dilation]

with zeros outside the image and the output size by C's truncating division,
as Caffe (an input just smaller than the kernel extent still gives one output).
"""
import itertools

import numpy as np


def _out_shape(spatial, kernel, pad, stride, dilation):
    return tuple(int((n + 2 * p - (d * (k - 1) + 1)) / s) + 1
                 for n, k, p, s, d in zip(spatial, kernel, pad, stride, dilation))


def _padded(x, kernel, pad, stride, dilation, out_shape):
    """x with `pad` zeros before each spatial axis and as many after as the last window reads."""
    after = [max(p, (o - 1) * s + (k - 1) * d + 1 - n - p)
             for n, k, p, s, d, o in zip(x.shape[2:], kernel, pad, stride, dilation, out_shape)]
    return np.pad(np.asarray(x, np.float64), [(0, 0), (0, 0)] + list(zip(pad, after)))


def _taps(kernel, stride, dilation, out_shape):
    """(k, the slices of the padded input that tap k reads at every output position)."""
    for k in itertools.product(*map(range, kernel)):
        yield k, tuple(slice(i * d, i * d + (o - 1) * s + 1, s) for i, d, o, s in zip(k, dilation, out_shape, stride))


def reference_convolution(x, w, b, stride, pad, dilation, group):
    """y (N, O, out...) from x (N, C, spatial...), w (O, C / group, kernel...), b (O,) or None."""
    kernel = w.shape[2:]
    out_shape = _out_shape(x.shape[2:], kernel, pad, stride, dilation)
    padded = _padded(x, kernel, pad, stride, dilation, out_shape)
    outputs, per_group = w.shape[:2]
    per_output_group = outputs // group
    y = np.zeros((x.shape[0], outputs) + out_shape)
    for k, window in _taps(kernel, stride, dilation, out_shape):
        for g in range(group):
            patch = padded[(slice(None), slice(g * per_group, (g + 1) * per_group)) + window]
            taps = np.asarray(w[(slice(g * per_output_group, (g + 1) * per_output_group), slice(None)) + k],
                              np.float64)
            y[:, g * per_output_group:(g + 1) * per_output_group] += np.einsum("oc,nc...->no...", taps, patch)
    if b is not None:
        y += np.asarray(b, np.float64).reshape((1, -1) + (1,) * len(out_shape))
    return y


def reference_convolution_backward(x, w, dy, stride, pad, dilation, group):
    """(dx, dw, db) of sum(y * dy) for y = reference_convolution(x, w, b, ...)."""
    kernel = w.shape[2:]
    out_shape = dy.shape[2:]
    padded = _padded(x, kernel, pad, stride, dilation, out_shape)
    dpadded = np.zeros_like(padded)
    dw = np.zeros(w.shape)
    dy = np.asarray(dy, np.float64)
    outputs, per_group = w.shape[:2]
    per_output_group = outputs // group
    for k, window in _taps(kernel, stride, dilation, out_shape):
        for g in range(group):
            channels = (slice(None), slice(g * per_group, (g + 1) * per_group)) + window
            outs = slice(g * per_output_group, (g + 1) * per_output_group)
            dy_g = dy[:, outs]
            patch = padded[channels]
            dw[(outs, slice(None)) + k] += np.einsum("nop,ncp->oc", dy_g.reshape(dy_g.shape[:2] + (-1,)),
                                                     patch.reshape(patch.shape[:2] + (-1,)))
            dpadded[channels] += np.einsum("oc,no...->nc...", np.asarray(w[(outs, slice(None)) + k], np.float64),
                                           dy_g)
    image = tuple(slice(p, p + n) for p, n in zip(pad, x.shape[2:]))
    return dpadded[(slice(None), slice(None)) + image], dw, dy.sum(axis=(0,) + tuple(range(2, dy.ndim)))
