"""Structure layers: they move, combine or select values rather than compute new ones.

Concat, Slice, Eltwise, Reshape, Silence, ArgMax, Reduction, Crop, Tile and
Filter (BVLC include/caffe/layers/*_layer.hpp).  Everything here is plain
NumPy slicing and broadcasting: there is no arithmetic for a kernel to speed up.
"""
import math

import numpy as np

from ..errors import NetError
from ..kernels.eltwise import weighted_sum_of_two
from ..layer import Layer, register
from ..proto import caffe_pb2

_Elt = caffe_pb2.EltwiseParameter
_Red = caffe_pb2.ReductionParameter


def _where(layer):
    return f"layer '{layer.name}' ({layer.type})"


def _names_shapes(blobs):
    return ", ".join(f"'{b.name}' {b.shape}" for b in blobs)


def _legacy_or_axis(layer, param, legacy_field, bottom):
    """Axis from `axis`, or from the legacy concat_dim / slice_dim (not both)."""
    if param.HasField(legacy_field):
        if param.HasField("axis"):
            raise NetError(f"{_where(layer)}: give either {legacy_field} or axis, not both")
        value = getattr(param, legacy_field)
        if value >= bottom.num_axes:
            raise NetError(f"{_where(layer)}: {legacy_field} {value} out of range for bottom "
                           f"'{bottom.name}' of shape {bottom.shape}")
        return value
    try:
        return bottom.canonical_axis(param.axis)
    except NetError:
        raise NetError(f"{_where(layer)}: axis {param.axis} out of range for bottom '{bottom.name}' "
                       f"of shape {bottom.shape}") from None


@register("Concat")
class ConcatLayer(Layer):
    """Join bottoms along one axis (BVLC src/caffe/layers/concat_layer.cpp).

    Shapes: every bottom has the same shape except along `axis` (default 1;
    legacy concat_dim); top's axis size is the sum.  Backward hands each
    bottom its slice of the top diff.  With one bottom the top shares its data
    and diff, as upstream.
    """
    min_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        p = self.layer_param.concat_param
        axis = self.axis = _legacy_or_axis(self, p, "concat_dim", bottom[0])
        shape = list(bottom[0].shape)
        for b in bottom[1:]:
            same = b.num_axes == len(shape) and all(
                d == e for i, (d, e) in enumerate(zip(b.shape, shape)) if i != axis)
            if not same:
                raise NetError(f"{_where(self)}: bottoms must have the same shape except along the concat "
                               f"axis {axis}; got {_names_shapes(bottom)}")
        shape[axis] = sum(b.shape[axis] for b in bottom)
        top[0].reshape(shape)
        if len(bottom) == 1:
            top[0].share_data(bottom[0])
            top[0].share_diff(bottom[0])

    def _views(self, blob, attr):
        outer = blob.count_range(0, self.axis)
        return getattr(blob, attr).reshape(outer, blob.shape[self.axis], -1)

    def forward_cpu(self, bottom, top):
        if len(bottom) == 1:
            return
        out = self._views(top[0], "data")
        start = 0
        for b in bottom:
            n = b.shape[self.axis]
            out[:, start:start + n] = self._views(b, "data")
            start += n

    def backward_cpu(self, top, propagate_down, bottom):
        if len(bottom) == 1:
            return
        diff = self._views(top[0], "diff")
        start = 0
        for b, down in zip(bottom, propagate_down):
            n = b.shape[self.axis]
            if down:
                self._views(b, "diff")[...] = diff[:, start:start + n]
            start += n


@register("Slice")
class SliceLayer(Layer):
    """Cut the bottom into pieces along one axis (BVLC src/caffe/layers/slice_layer.cpp).

    `slice_point` (one per boundary, len(top) - 1 of them, strictly
    increasing inside (0, size)) gives the cuts; without it the axis is split
    into len(top) equal parts and must divide evenly.  Axis: `axis` (default
    1) or legacy slice_dim.  Backward writes each top's diff into its slice.
    With one top the top shares data and diff.
    """
    exact_num_bottom = 1
    min_top = 1

    def reshape(self, bottom, top):
        p = self.layer_param.slice_param
        axis = self.axis = _legacy_or_axis(self, p, "slice_dim", bottom[0])
        size = bottom[0].shape[axis]
        points = list(p.slice_point)
        if points:
            if len(points) != len(top) - 1:
                raise NetError(f"{_where(self)}: {len(points)} slice_point values for {len(top)} tops; "
                               f"give exactly {len(top) - 1} (one per boundary)")
            bounds = [0] + points + [size]
            if any(a >= b for a, b in zip(bounds, bounds[1:])):
                raise NetError(f"{_where(self)}: slice_point {points} out of range for axis {axis} of size "
                               f"{size} (bottom '{bottom[0].name}' {bottom[0].shape}); points must be strictly "
                               f"increasing and inside (0, {size})")
        else:
            if size % len(top):
                raise NetError(f"{_where(self)}: axis {axis} of size {size} (bottom '{bottom[0].name}' "
                               f"{bottom[0].shape}) does not split evenly into {len(top)} tops; give slice_point")
            step = size // len(top)
            bounds = [i * step for i in range(len(top) + 1)]
        self.bounds = bounds
        for t, a, b in zip(top, bounds, bounds[1:]):
            shape = list(bottom[0].shape)
            shape[axis] = b - a
            t.reshape(shape)
        if len(top) == 1:
            top[0].share_data(bottom[0])
            top[0].share_diff(bottom[0])

    def _view(self, blob, attr):
        return getattr(blob, attr).reshape(blob.count_range(0, self.axis), blob.shape[self.axis], -1)

    def forward_cpu(self, bottom, top):
        if len(top) == 1:
            return
        src = self._view(bottom[0], "data")
        for t, a, b in zip(top, self.bounds, self.bounds[1:]):
            self._view(t, "data")[...] = src[:, a:b]

    def backward_cpu(self, top, propagate_down, bottom):
        if len(top) == 1 or not propagate_down[0]:
            return
        dst = self._view(bottom[0], "diff")
        for t, a, b in zip(top, self.bounds, self.bounds[1:]):
            dst[:, a:b] = self._view(t, "diff")


@register("Eltwise")
class EltwiseLayer(Layer):
    """Element-wise PROD, SUM (default) or MAX of bottoms of one shape
    (BVLC src/caffe/layers/eltwise_layer.cpp).

    SUM: top = sum_i coeff_i x_i (coeff: none, meaning all 1, or one per
    bottom); backward dx_i = coeff_i dy.  PROD: top = prod_i x_i; backward
    dx_i = dy * prod_{j != i} x_j (stable_prod_grad, default) or
    dy * top / x_i.  MAX: backward routes dy to the bottom holding the max,
    the first one on ties (upstream compares with '>').  coeff is only for SUM.
    """
    min_bottom = 2
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.eltwise_param
        self.op = p.operation
        n = len(p.coeff)
        if n not in (0, len(bottom)):
            raise NetError(f"{_where(self)}: eltwise_param.coeff must be given once per bottom "
                           f"({len(bottom)} bottoms) or not at all; got {n}")
        if n and self.op != _Elt.SUM:
            raise NetError(f"{_where(self)}: coeff is only for operation SUM, not "
                           f"{_Elt.EltwiseOp.Name(self.op)}")
        self.coeffs = [np.float32(c) for c in p.coeff] or [np.float32(1)] * len(bottom)
        self.stable_prod_grad = p.stable_prod_grad

    def reshape(self, bottom, top):
        for b in bottom[1:]:
            if b.shape != bottom[0].shape:
                raise NetError(f"{_where(self)}: all bottoms must have the same shape; got "
                               f"{_names_shapes(bottom)}")
        top[0].reshape_like(bottom[0])
        if self.op == _Elt.MAX:
            self.mask = np.zeros(bottom[0].count, np.int32)

    def forward_cpu(self, bottom, top):
        y = top[0].flat_data
        xs = [b.flat_data for b in bottom]
        if self.op == _Elt.PROD:
            np.multiply(xs[0], xs[1], out=y)
            for x in xs[2:]:
                y *= x
        elif self.op == _Elt.SUM and len(xs) == 2:
            weighted_sum_of_two(xs[0], self.coeffs[0], xs[1], self.coeffs[1], y)
        elif self.op == _Elt.SUM:
            y[:] = 0
            for c, x in zip(self.coeffs, xs):
                y += x if c == 1 else c * x
        else:
            mask = self.mask
            mask[:] = 0
            best = xs[0].copy()
            for i, x in enumerate(xs[1:], start=1):
                better = x > best
                best[better] = x[better]
                mask[better] = i
            y[:] = best

    def backward_cpu(self, top, propagate_down, bottom):
        dy = top[0].flat_diff
        for i, (b, down) in enumerate(zip(bottom, propagate_down)):
            if not down:
                continue
            dx = b.flat_diff
            if self.op == _Elt.PROD:
                if self.stable_prod_grad:
                    others = [o.flat_data for j, o in enumerate(bottom) if j != i]
                    grad = others[0].copy()
                    for o in others[1:]:
                        grad *= o
                else:
                    grad = top[0].flat_data / b.flat_data
                np.multiply(grad, dy, out=dx)
            elif self.op == _Elt.SUM:
                if self.coeffs[i] == 1:
                    np.copyto(dx, dy)
                else:
                    np.multiply(dy, self.coeffs[i], out=dx)
            else:
                np.multiply(dy, self.mask == i, out=dx)


@register("Reshape")
class ReshapeLayer(Layer):
    """Change the shape, not the data (BVLC src/caffe/layers/reshape_layer.cpp).

    reshape_param.shape replaces bottom axes [axis, axis + num_axes)
    (axis default 0, num_axes default -1 meaning to the end; negative axis
    counts from the end, -1 being *after* the last axis).  In `shape`, 0
    copies the bottom dimension at that position and one -1 is inferred from
    the count.  The top shares the bottom's data and diff.
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        if top[0] is bottom[0]:
            raise NetError(f"{_where(self)}: cannot run in place; give the top its own name")
        dims = list(self.layer_param.reshape_param.shape.dim)
        if dims.count(-1) > 1:
            raise NetError(f"{_where(self)}: at most one dimension may be -1 (inferred), got shape {dims}")
        if any(d < -1 for d in dims):
            raise NetError(f"{_where(self)}: dimensions must be >= -1, got shape {dims}")

    def reshape(self, bottom, top):
        p = self.layer_param.reshape_param
        dims = list(p.shape.dim)
        shape = bottom[0].shape
        n = len(shape)
        axis = p.axis
        if not -(n + 1) <= axis <= n:
            raise NetError(f"{_where(self)}: axis {axis} out of range for bottom '{bottom[0].name}' {shape}")
        start = axis + n + 1 if axis < 0 else axis
        if p.num_axes < -1:
            raise NetError(f"{_where(self)}: num_axes must be >= -1, got {p.num_axes}")
        end = n if p.num_axes == -1 else start + p.num_axes
        if end > n:
            raise NetError(f"{_where(self)}: axis {axis} + num_axes {p.num_axes} runs past bottom "
                           f"'{bottom[0].name}' of shape {shape}")
        new = list(dims)
        for i, d in enumerate(dims):
            if d == 0:
                if start + i >= n:
                    raise NetError(f"{_where(self)}: shape {dims} copies dimension {start + i} (a 0 at "
                                   f"position {i}) which bottom '{bottom[0].name}' {shape} does not have")
                new[i] = shape[start + i]
        full = list(shape[:start]) + new + list(shape[end:])
        if -1 in full:
            known = math.prod(d for d in full if d != -1)
            if known == 0 or bottom[0].count % known:
                raise NetError(f"{_where(self)}: cannot infer the -1 in shape {dims}: bottom "
                               f"'{bottom[0].name}' {shape} has {bottom[0].count} elements, not a multiple of {known}")
            full[full.index(-1)] = bottom[0].count // known
        if math.prod(full) != bottom[0].count:
            raise NetError(f"{_where(self)}: shape {dims} gives top shape {tuple(full)} with {math.prod(full)} "
                           f"elements, but bottom '{bottom[0].name}' {shape} has {bottom[0].count}")
        top[0].reshape(full)
        top[0].share_data(bottom[0])
        top[0].share_diff(bottom[0])

    def forward_cpu(self, bottom, top):
        pass

    def backward_cpu(self, top, propagate_down, bottom):
        pass


@register("Silence")
class SilenceLayer(Layer):
    """Swallow bottoms nobody else reads, so they are not net outputs
    (BVLC src/caffe/layers/silence_layer.cpp).  Backward zeroes their diffs."""
    min_bottom = 1
    exact_num_top = 0

    def reshape(self, bottom, top):
        pass

    def forward_cpu(self, bottom, top):
        pass

    def backward_cpu(self, top, propagate_down, bottom):
        for b, down in zip(bottom, propagate_down):
            if down:
                b.flat_diff[:] = 0


@register("ArgMax")
class ArgMaxLayer(Layer):
    """Indices (and optionally values) of the top_k largest entries
    (BVLC src/caffe/layers/argmax_layer.cpp).

    With `axis`: top is the bottom's shape with that axis of size top_k,
    holding indices, or the values when out_max_val.  Without: each item n
    is flattened, top is (N, 1, top_k, ...) padded to at least 3 axes, or
    (N, 2, top_k) with indices then values when out_max_val.  Ties rank the
    larger index first (upstream partial_sorts (value, index) pairs with
    std::greater).  No backward.
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.argmax_param
        self.out_max_val, self.top_k, self.has_axis = p.out_max_val, p.top_k, p.HasField("axis")
        if self.top_k < 1:
            raise NetError(f"{_where(self)}: top_k must be at least 1, got {self.top_k}")

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if self.has_axis:
            self.axis = bottom[0].canonical_axis(self.layer_param.argmax_param.axis)
            limit = shape[self.axis]
        else:
            limit = bottom[0].count_range(1)
        if self.top_k > limit:
            raise NetError(f"{_where(self)}: top_k {self.top_k} exceeds the {limit} values to rank "
                           f"(bottom '{bottom[0].name}' {shape})")
        if self.has_axis:
            out = list(shape)
            out[self.axis] = self.top_k
        else:
            out = [1] * max(3, len(shape))
            out[0], out[1], out[2] = shape[0], 2 if self.out_max_val else 1, self.top_k
        top[0].reshape(out)

    def forward_cpu(self, bottom, top):
        x = bottom[0].data
        k = self.top_k
        if self.has_axis:
            v = np.moveaxis(x, self.axis, -1)
        else:
            v = x.reshape(x.shape[0], -1)
        # Sort by (value desc, index desc): reverse a stable ascending sort.
        order = np.argsort(v, axis=-1, kind="stable")[..., ::-1][..., :k]
        values = np.take_along_axis(v, order, axis=-1)
        if self.has_axis:
            result = values if self.out_max_val else order.astype(np.float32)
            top[0].data[...] = np.moveaxis(result, -1, self.axis)
        else:
            out = top[0].flat_data.reshape(x.shape[0], -1)
            out[:, :k] = order
            if self.out_max_val:
                out[:, k:2 * k] = values


@register("Reduction")
class ReductionLayer(Layer):
    """Reduce the trailing axes [axis, end) to one number per leading position
    (BVLC src/caffe/layers/reduction_layer.cpp).

    operation SUM (default), ASUM (sum of |x|), SUMSQ (sum of x^2) or MEAN,
    times coeff (default 1).  axis default 0: the whole blob gives a scalar
    top ().  Backward: dx = coeff * dy * (1, sign(x), 2x or 1/dim).
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.reduction_param
        self.op = p.operation
        self.coeff = np.float32(p.coeff)

    def reshape(self, bottom, top):
        axis = self.axis = bottom[0].canonical_axis(self.layer_param.reduction_param.axis)
        top[0].reshape(bottom[0].shape[:axis])
        self.num = bottom[0].count_range(0, axis)
        self.dim = bottom[0].count_range(axis)

    def forward_cpu(self, bottom, top):
        x = bottom[0].flat_data.reshape(self.num, self.dim)
        if self.op == _Red.ASUM:
            x = np.abs(x)
        elif self.op == _Red.SUMSQ:
            x = x * x
        total = x.sum(axis=1, dtype=np.float32)
        if self.op == _Red.MEAN:
            total /= np.float32(self.dim)
        top[0].flat_data[:] = total * self.coeff if self.coeff != 1 else total

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x = bottom[0].flat_data.reshape(self.num, self.dim)
        dx = bottom[0].flat_diff.reshape(self.num, self.dim)
        scale = self.coeff * top[0].flat_diff.reshape(self.num, 1)
        if self.op == _Red.SUM:
            dx[...] = scale
        elif self.op == _Red.MEAN:
            dx[...] = scale / np.float32(self.dim)
        elif self.op == _Red.ASUM:
            np.multiply(np.sign(x), scale, out=dx)
        else:
            np.multiply(x, 2 * scale, out=dx)


@register("Crop")
class CropLayer(Layer):
    """Crop bottom[0] to the shape of bottom[1] from `axis` on (BVLC src/caffe/layers/crop_layer.cpp).

    Axes before crop_param.axis (default 2) keep bottom[0]'s size; later ones
    take bottom[1]'s, starting at `offset` (none: 0; one: every cropped axis;
    else one per cropped axis).  Backward: zeros, then the top diff in the
    cropped window.  bottom[1] gives only its shape and gets no gradient.
    """
    exact_num_bottom = 2
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.crop_param
        n = bottom[0].num_axes
        self.start = bottom[0].canonical_axis(p.axis)
        if len(p.offset) > 1 and self.start + len(p.offset) != n:
            raise NetError(f"{_where(self)}: {len(p.offset)} offsets given for {n - self.start} cropped axes "
                           f"(axis {self.start} to {n - 1} of bottom '{bottom[0].name}' {bottom[0].shape})")

    def reshape(self, bottom, top):
        p = self.layer_param.crop_param
        a, b = bottom[0].shape, bottom[1].shape
        if len(b) != len(a):
            raise NetError(f"{_where(self)}: bottoms must have the same number of axes; got {_names_shapes(bottom)}")
        self.slices, shape = [], list(a)
        for i in range(len(a)):
            if i < self.start:
                self.slices.append(slice(None))
                continue
            offset = p.offset[0] if len(p.offset) == 1 else (p.offset[i - self.start] if len(p.offset) else 0)
            if offset + b[i] > a[i]:
                raise NetError(f"{_where(self)}: crop of axis {i} out of range: size {b[i]} at offset {offset} "
                               f"does not fit in {a[i]} (bottoms {_names_shapes(bottom)})")
            shape[i] = b[i]
            self.slices.append(slice(offset, offset + b[i]))
        self.slices = tuple(self.slices)
        top[0].reshape(shape)

    def forward_cpu(self, bottom, top):
        top[0].data[...] = bottom[0].data[self.slices]

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = 0
            bottom[0].diff[self.slices] = top[0].diff


@register("Tile")
class TileLayer(Layer):
    """Repeat the block from `axis` on `tiles` times (BVLC src/caffe/layers/tile_layer.cpp).

    Top shape: bottom's with axis (default 1) multiplied by tiles.  For each
    leading position the whole trailing block is copied tiles times in a row.
    Backward sums the copies.
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.tile_param
        if p.tiles < 1:
            raise NetError(f"{_where(self)}: tile_param.tiles must be at least 1, got {p.tiles}")
        self.tiles = p.tiles

    def reshape(self, bottom, top):
        axis = self.axis = bottom[0].canonical_axis(self.layer_param.tile_param.axis)
        shape = list(bottom[0].shape)
        shape[axis] *= self.tiles
        top[0].reshape(shape)
        self.outer, self.inner = bottom[0].count_range(0, axis), bottom[0].count_range(axis)

    def forward_cpu(self, bottom, top):
        src = bottom[0].flat_data.reshape(self.outer, 1, self.inner)
        top[0].flat_data.reshape(self.outer, self.tiles, self.inner)[...] = src

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dy = top[0].flat_diff.reshape(self.outer, self.tiles, self.inner)
            dy.sum(axis=1, dtype=np.float32, out=bottom[0].flat_diff.reshape(self.outer, self.inner))


@register("Filter")
class FilterLayer(Layer):
    """Keep the items whose selector is nonzero (BVLC src/caffe/layers/filter_layer.cpp).

    Bottoms: k blobs to filter, then the selector (N,) or (N, 1, ...);
    tops: k blobs, each with the selected items (in order) of its bottom.
    As upstream, the first reshape (at setup) sizes the tops to the whole
    batch; later ones to the number selected, which may be 0.  Backward: the
    selected items get their top diff, the others 0; the selector gets none.
    """
    min_bottom = 2
    min_top = 1

    def layer_setup(self, bottom, top):
        if len(top) != len(bottom) - 1:
            raise NetError(f"{_where(self)}: needs one top per filtered bottom ({len(bottom) - 1}, the last "
                           f"bottom being the selector), got {len(top)}")
        self.first_reshape = True

    def reshape(self, bottom, top):
        selector = bottom[-1]
        if any(d != 1 for d in selector.shape[1:]):
            raise NetError(f"{_where(self)}: the selector (last bottom '{selector.name}' {selector.shape}) must "
                           "have singleton dimensions after the first")
        for b in bottom[:-1]:
            if b.shape[:1] != selector.shape[:1]:
                raise NetError(f"{_where(self)}: bottom '{b.name}' {b.shape} and selector '{selector.name}' "
                               f"{selector.shape} must have the same first dimension")
        self.indices = np.flatnonzero(selector.flat_data)
        n = selector.shape[0] if self.first_reshape else len(self.indices)
        self.first_reshape = False
        for t, b in zip(top, bottom):
            t.reshape((n,) + b.shape[1:])

    def forward_cpu(self, bottom, top):
        for t, b in zip(top, bottom):
            t.data[...] = b.data[self.indices]

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[-1]:
            raise NetError(f"{_where(self)} cannot backpropagate to its selector (last bottom)")
        for t, b, down in zip(top, bottom, propagate_down):
            if down:
                b.diff[...] = 0
                b.diff[self.indices] = t.diff

    def allow_force_backward(self, bottom_index):
        # Upstream allows it and then aborts in backward; refusing keeps force_backward usable.
        return bottom_index != len(self.layer_param.bottom) - 1
