"""How the spatial coordinates of two NetSpec tops relate, and the Crop that aligns them (pycaffe's coord_map).

Fully convolutional nets (FCN) upsample a coarse map with Deconvolution
and crop it back onto a finer one; the crop offset follows from the
layers in between.  Each layer maps its input coordinate x to its output
coordinate a * x + b on one axis:

    Convolution, Pooling, Im2col   a = 1 / stride,  b = (pad - (extent - 1) / 2) / stride
    Deconvolution                  a = stride,      b = (extent - 1) / 2 - pad
    Crop (on its first bottom)     a = 1,           b = -offset
    point-wise layers (ReLU, ...)  a = 1,           b = 0 (on any axis)

with extent = (kernel - 1) * dilation + 1.  A map is (axis, a, b), axis
None for the point-wise ones; maps compose along a path of tops.
`coord_map_from_to(top_from, top_to)` walks back from both tops to a common
ancestor and gives the map from top_from's coordinates to top_to's;
`crop(top_from, top_to)` returns the Crop layer that cuts top_from to
top_to's coordinates.  Parameters come from the layer's keyword arguments
(`L.Convolution(x, kernel_size=3, pad=1)`) or its convolution_param /
pooling_param / crop_param dict; the legacy *_h / *_w forms are refused,
as in pycaffe.  Arrays (one value per spatial axis) work as scalars do.
"""
import numpy as np

from .net_spec import layers as L

POINT_WISE = frozenset(("AbsVal", "BatchNorm", "Bias", "BNLL", "Dropout", "Eltwise", "ELU", "Log", "LRN", "Exp",
                        "MVN", "Power", "ReLU", "PReLU", "Scale", "Sigmoid", "Split", "TanH", "Threshold"))
_IDENTITY = (None, 1, 0)


class UndefinedMapException(Exception):
    """The layer's output coordinates do not follow from its input's (e.g. InnerProduct)."""


class AxisMismatchException(Exception):
    """Two maps on different axes were composed."""


class CropError(AssertionError, ValueError):
    """No integer, non-negative, unscaled crop aligns the two tops.  An AssertionError,
    as pycaffe's asserts raise, and a ValueError."""


def _spatial_params(fn, field):
    params = fn.params.get(field, fn.params)
    legacy = {"pad_h", "pad_w", "kernel_h", "kernel_w", "stride_h", "stride_w"} & set(params)
    if legacy:
        raise UndefinedMapException(f"{fn.type_name}: cropping does not support the legacy _h / _w "
                                    f"parameters ({', '.join(sorted(legacy))})")
    return params


def _conv_geometry(fn):
    """(axis, stride, kernel extent, pad) of a Convolution, Deconvolution, Im2col or Pooling."""
    field = "pooling_param" if fn.type_name == "Pooling" and "pooling_param" in fn.params else "convolution_param"
    params = _spatial_params(fn, field)
    if "kernel_size" not in params:
        raise UndefinedMapException(f"{fn.type_name}: no kernel_size to map coordinates with")
    kernel = np.array(params["kernel_size"], ndmin=1)
    dilation = np.array(params.get("dilation", 1), ndmin=1)
    return (params.get("axis", 1), np.array(params.get("stride", 1), ndmin=1), (kernel - 1) * dilation + 1,
            np.array(params.get("pad", 0), ndmin=1))


def coord_map(fn):
    """(axis, scale, shift) of one NetSpec layer: output coordinate = scale * input + shift."""
    kind = fn.type_name
    if kind in ("Convolution", "Pooling", "Im2col"):
        axis, stride, extent, pad = _conv_geometry(fn)
        return axis, 1 / stride, (pad - (extent - 1) / 2) / stride
    if kind == "Deconvolution":
        axis, stride, extent, pad = _conv_geometry(fn)
        return axis, stride, (extent - 1) / 2 - pad
    if kind in POINT_WISE:
        return _IDENTITY
    if kind == "Crop":
        params = fn.params.get("crop_param", fn.params)
        # crop_param.axis names the first cropped axis; maps name the one before the spatial ones.
        return params.get("axis", 2) - 1, 1, -np.array(params.get("offset", 0), ndmin=1)
    raise UndefinedMapException(f"{kind} layers have no coordinate map")


def compose(first, then):
    """The map of applying `first`, then `then`."""
    axis1, a1, b1 = first
    axis2, a2, b2 = then
    if axis1 is not None and axis2 is not None and axis1 != axis2:
        raise AxisMismatchException(f"cannot compose maps on axes {axis1} and {axis2}")
    return (axis2 if axis1 is None else axis1), a1 * a2, a1 * b2 + b1


def inverse(coord_map):
    axis, a, b = coord_map
    return axis, 1 / a, -b / a


def _mapped_bottoms(top):
    # Crop maps only its first bottom; its second gives the shape.
    bottoms = top.fn.inputs
    return bottoms[:1] if top.fn.type_name == "Crop" else bottoms


def _maps_to_ancestors(start):
    """{ancestor top: map from that ancestor's coordinates to start's}, over mapped layers."""
    maps = {start: _IDENTITY}
    frontier = [start]
    while frontier:
        top = frontier.pop()
        try:
            step = coord_map(top.fn)
        except UndefinedMapException:
            continue
        for bottom in _mapped_bottoms(top):
            maps[bottom] = compose(maps[top], step)
            frontier.append(bottom)
    return maps


def coord_map_from_to(top_from, top_to):
    """(axis, a, b) with top_to coordinate = a * top_from coordinate + b, through a common ancestor.

    Any common ancestor gives the same map in a consistent net; the one nearest top_to is used."""
    from_maps = _maps_to_ancestors(top_from)
    for top, to_map in _maps_to_ancestors(top_to).items():
        if top in from_maps:
            return compose(to_map, inverse(from_maps[top]))
    raise RuntimeError("could not compute the map between the tops: no common ancestor through spatial "
                       "layers (are they connected by Convolution / Pooling / Deconvolution / point-wise layers?)")


def crop(top_from, top_to):
    """A Crop layer cutting top_from to top_to's coordinates (pycaffe's coord_map.crop)."""
    axis, a, b = coord_map_from_to(top_from, top_to)
    a, b = np.asarray(a), np.asarray(b)
    if not (a == 1).all():
        raise CropError(f"scale mismatch on crop (a = {a}): the tops are not at the same resolution")
    if not (b <= 0).all():
        raise CropError(f"cannot crop a negative offset (b = {b}): top_from is smaller than top_to")
    if not (np.round(b) == b).all():
        raise CropError(f"cannot crop a non-integer offset (b = {b})")
    return L.Crop(top_from, top_to, crop_param=dict(axis=axis + 1, offset=[int(v) for v in -np.round(b)]))
