"""Blob: Caffe's N-d float32 array pair (data, diff).

`data` and `diff` are numpy views onto flat storage, so `blob.data[...] = x`
writes into the blob, as in pycaffe.  Storage grows on reshape but never
shrinks (Caffe's capacity rule), so reshaping back and forth does not
allocate.  Parameters shared between layers share one storage object.

`data_stamp()` lets a cache of values derived from the data (the packed
sparse weights, npcaffe.sparse) know, without reading the data, that it
cannot have changed: every hand-out of the data (`data`, `flat_data`, the
setter) and every reallocation gives the storage a new stamp from one
process-wide counter, and the stamp is only offered while no view of the
storage is alive (its reference count).  Writing needs a view, so two equal
stamps mean that nothing wrote the data in between.  (Raw pointers taken
through ctypes and kept past the view's life are not seen.)
"""
import itertools
import math
import sys

import numpy as np

from .errors import NetError


_stamps = itertools.count()


# Called as allocation_check(blob, count) before a blob's storage grows to count elements, while
# npcaffe.memory.budget is active (a Net being built); None otherwise.
allocation_check = None


class _Storage:
    """A float32 array and, in `flat`, a view of its first elements (the size
    the blobs on it last asked for), kept so that handing out the flat data
    makes no new view: at batch 1 that costs as much as a small layer.  `zero_pending`: a
    deferred clear (Blob.clear_diff) promised zeros not written yet; `settle` writes them."""
    __slots__ = ("array", "stamp", "flat", "zero_pending")

    def __init__(self, size=0):
        self.array = np.zeros(size, dtype=np.float32)
        self.flat = self.array[:size]
        self.stamp = next(_stamps)
        self.zero_pending = False

    def ensure(self, size):
        if self.array.size < size:
            self.array = np.zeros(size, dtype=np.float32)
            self.flat = self.array[:size]
            self.stamp = next(_stamps)
            self.zero_pending = False

    def settle(self):
        self.array[...] = 0
        self.zero_pending = False

    def view(self, count):
        flat = self.flat
        if flat.size != count:
            flat = self.flat = self.array[:count]
        return flat

    # Copies (copy, pickle) rebuild `flat` as a view of their own array.
    def __getstate__(self):
        if self.zero_pending:
            self.settle()
        return self.array, self.stamp

    def __setstate__(self, state):
        self.array, self.stamp = state
        self.zero_pending = False
        self.flat = self.array[:]

    def unviewed(self):
        """No view of the array is alive but `flat` itself (their reference counts)."""
        return _getrefcount(self.array) <= _UNVIEWED_REFS and _getrefcount(self.flat) <= _UNVIEWED_FLAT_REFS


# References to a storage's array and to its `flat` when no other view is alive, as
# sys.getrefcount counts them (the array's include `flat`'s base).
_getrefcount = sys.getrefcount
_probe = _Storage(1)
_UNVIEWED_REFS = sys.getrefcount(_probe.array)
_UNVIEWED_FLAT_REFS = sys.getrefcount(_probe.flat)
del _probe


class LayoutClock:
    """A count of shape and storage changes (reshape, share_data, share_diff) of the blobs that
    hold it.  A Net gives one to all its blobs, so that while its `version` holds, every blob of
    that net keeps the shape and storage it had: what the Net's forward plan (npcaffe.plan) and a
    layer's kept views (Layer.blob_views) rely on.  A blob outside a net has one of its own."""
    __slots__ = ("version",)

    def __init__(self):
        self.version = 0


class Blob:
    def __init__(self, *shape, name=""):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        self.name = name
        self.clock = LayoutClock()
        self._data = _Storage()
        self._diff = _Storage()
        self._shape = None  # matches no shape: the first reshape sizes the storage
        self._count = 1
        self.reshape(shape)

    # -- shape ---------------------------------------------------------------
    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list, np.ndarray)):
            shape = shape[0]
        if shape is self._shape:
            return  # reshape_like of a blob whose shape this one already took
        if type(shape) is not tuple or not all(type(d) is int for d in shape):
            shape = tuple(int(d) for d in shape)
        if shape == self._shape:
            return  # layers reshape their tops every forward; most often nothing changes
        for d in shape:
            if d < 0:
                raise NetError(f"blob '{self.name}': negative dimension in shape {shape}")
        count = math.prod(shape)  # Python ints: kernel_size 2147483647 squared would wrap NumPy's int64
        if count > np.iinfo(np.int32).max:
            raise NetError(f"blob '{self.name}': shape {shape} has {count} elements, more than Caffe's INT_MAX")
        if allocation_check is not None and count > self._data.array.size:
            self.pending_shape = shape
            allocation_check(self, count)  # a Net being built counts its bytes first (npcaffe.memory)
        self._shape = shape
        self._count = count
        self._data.ensure(count)
        self._diff.ensure(count)
        self.clock.version += 1

    def capacity(self):
        """Elements the data storage holds now (it grows, never shrinks)."""
        return self._data.array.size

    def reshape_like(self, other):
        self.reshape(other.shape)

    @property
    def shape(self):
        return self._shape

    @property
    def count(self):
        return self._count

    def count_range(self, start, end=None):
        dims = self._shape[start:end]
        return int(np.prod(dims, dtype=np.int64)) if dims else 1

    @property
    def num_axes(self):
        return len(self._shape)

    def canonical_axis(self, axis):
        n = len(self._shape)
        if not -n <= axis < max(n, 1):
            raise NetError(f"blob '{self.name}': axis {axis} out of range for {n}-D blob of shape {self._shape}")
        return axis + n if axis < 0 else axis

    def _legacy(self, i):
        # Caffe's num/channels/height/width (Blob::LegacyShape): shape(i), and 1 for the
        # axes a blob of fewer than 4 has not: a (N, C) blob has num N, channels C, height 1.
        n = len(self._shape)
        if n > 4:
            raise NetError(f"blob '{self.name}': legacy accessor used on {n}-D shape {self._shape}")
        return self._shape[i] if i < n else 1

    num = property(lambda self: self._legacy(0))
    channels = property(lambda self: self._legacy(1))
    height = property(lambda self: self._legacy(2))
    width = property(lambda self: self._legacy(3))

    # -- contents ------------------------------------------------------------
    # The flat accessors return the storage's kept view (see _Storage), the same
    # object each time: use it, do not reshape it in place (assigning .shape).
    @property
    def data(self):
        storage = self._data
        storage.stamp = next(_stamps)
        return storage.view(self._count).reshape(self._shape)

    @data.setter
    def data(self, value):
        self.data[...] = value

    @property
    def diff(self):
        storage = self._diff
        if storage.zero_pending:
            storage.settle()
        return storage.view(self._count).reshape(self._shape)

    @diff.setter
    def diff(self, value):
        self.diff[...] = value

    @property
    def flat_data(self):
        storage = self._data
        storage.stamp = next(_stamps)
        return storage.view(self._count)

    def data_stamp(self):
        """None while a view of the data may be alive, else the storage's stamp:
        equal stamps at two moments mean the data was not written in between."""
        storage = self._data
        return storage.stamp if storage.unviewed() else None

    @property
    def flat_diff(self):
        storage = self._diff
        if storage.zero_pending:
            storage.settle()
        return storage.view(self._count)

    def clear_diff(self, deferred=False):
        """Zero the diff.  deferred: only promise the zeros; they are written when the diff is
        next read, unless a layer first takes it with `diff_to_accumulate` and writes its
        gradient in their place.  (Caffe clears every parameter diff before each backward and
        then adds into it; at batch 1 a fully connected layer's weight gradient is an outer
        product written at memory speed, so the clear and the add cost more than the product.)"""
        storage = self._diff
        if deferred:
            storage.zero_pending = True
        elif storage.zero_pending:
            storage.settle()
        else:
            storage.view(self._count)[:] = 0

    def diff_known_zero(self):
        """The diff is a deferred clear's zeros, not written yet (reading it would write them)."""
        return self._diff.zero_pending

    def diff_to_accumulate(self):
        """(flat diff, fresh) for a layer about to add its gradient into the diff.  fresh: the
        diff is all zeros by a deferred clear, not written yet; the caller then writes its
        gradient instead of adding it, and must write every element (x, not 0 + x: the same
        number but for the sign of a zero)."""
        storage = self._diff
        fresh = storage.zero_pending
        storage.zero_pending = False
        return storage.view(self._count), fresh

    def share_data(self, other):
        """Use other's data storage (shared parameters, Split tops)."""
        self._check_same_count(other)
        if self._data is not other._data:
            self._data = other._data
            self.clock.version += 1

    def share_diff(self, other):
        self._check_same_count(other)
        if self._diff is not other._diff:
            self._diff = other._diff
            self.clock.version += 1

    def shares_data_with(self, other):
        return self._data is other._data

    def _check_same_count(self, other):
        if other.count != self.count:
            raise NetError(f"cannot share blob '{other.name}' {other.shape} with '{self.name}' {self.shape}: counts differ")

    def __repr__(self):
        return f"Blob({self.name!r}, shape={self._shape})"
