"""The Layer contract and the one registry of layer types.

Every layer follows Caffe's setup order (layer.hpp): check the number of
bottom/top blobs, `layer_setup` (read parameters, create `blobs`), `reshape`
(size the tops), then loss weights.  `forward` reshapes again and returns the
layer's weighted loss; `backward` writes bottom diffs and *accumulates* into
parameter diffs (the solver clears them), which is what makes shared
parameters and iter_size work as in Caffe.
"""
import numpy as np

from .errors import NetError
from .proto import caffe_pb2

TRAIN = caffe_pb2.TRAIN
TEST = caffe_pb2.TEST
_NO_LOSS = np.float32(0)

_REGISTRY = {}
_VARIANTS = {}


def register(*type_names):
    """Class decorator: make a layer class constructible by its Caffe type string(s)."""
    def wrap(cls):
        for name in type_names:
            if name in _REGISTRY and _REGISTRY[name] is not cls:
                raise RuntimeError(f"layer type '{name}' registered twice")
            _REGISTRY[name] = cls
        if cls.__dict__.get("type") is None:
            cls.type = type_names[0]
        return cls
    return wrap


def register_variant(type_name, applies):
    """Class decorator: build this class instead of `type_name`'s registered one
    for the LayerParameters where applies(param) is true (Caffe's layer creator
    functions, such as GetPoolingLayer choosing an engine by parameter)."""
    def wrap(cls):
        _VARIANTS.setdefault(type_name, []).append((applies, cls))
        if cls.__dict__.get("type") is None:
            cls.type = type_name
        return cls
    return wrap


def registered_class(type_name):
    """The layer class registered for a Caffe type string, or None."""
    return _REGISTRY.get(type_name)


def layer_type_list():
    """Sorted list of registered layer type strings (pycaffe's caffe.layer_type_list)."""
    return sorted(_REGISTRY)


def create_layer(param, phase=None):
    """Construct the layer for a LayerParameter (Caffe's LayerRegistry::CreateLayer).

    The layer families register themselves when the package imports
    npcaffe.layerlib (npcaffe/__init__.py), once, before any call here."""
    cls = _REGISTRY.get(param.type)
    for applies, variant in _VARIANTS.get(param.type, ()):
        if applies(param):
            cls = variant
            break
    if cls is None:
        raise NetError(
            f"layer '{param.name}': unknown layer type '{param.type}'. "
            f"Known types: {', '.join(sorted(_REGISTRY))}")
    return cls(param, phase)


def _shared_clock(bottom, top):
    """The LayoutClock every blob of bottom and top holds, or None if they hold different ones."""
    blobs = bottom or top
    if not blobs:
        return None
    clock = blobs[0].clock
    for blob in bottom:
        if blob.clock is not clock:
            return None
    for blob in top:
        if blob.clock is not clock:
            return None
    return clock


class Layer:
    """Base of all layers.

    Subclasses set the blob-count constraints below and override
    `layer_setup`, `reshape`, `forward_cpu` and, if they have one,
    `backward_cpu`.  `self.blobs` holds the learnable parameters.
    """
    type = None
    exact_num_bottom = -1
    min_bottom = -1
    max_bottom = -1
    exact_num_top = -1
    min_top = -1
    max_top = -1
    equal_num_bottom_top = False
    auto_top_blobs = False
    # True when `reshape` reads nothing but the bottom and top shapes and
    # storages (and fixed parameters): a Net's forward then skips it while they
    # are the ones the last reshape left (npcaffe.plan).  Not for layers whose top
    # shape depends on bottom values (Caffe's Filter) or on anything else that can change.
    reshape_from_shapes = False
    # False when the layer's Net will never run its backward (a deploy net without force_backward:
    # Net.layer_need_backward), so forward need not keep what only backward reads.  A layer outside
    # a net keeps it.
    backward_expected = True

    def __init__(self, param, phase=None):
        self.layer_param = param
        self.name = param.name
        # Net sets param.phase; a bare LayerParameter defaults to TRAIN, as in Caffe.
        self.phase = param.phase if phase is None else phase
        self.blobs = []
        self.param_propagate_down = []
        self.loss_weights = []
        self.iter = 0  # the DNS fork's current_iter_, set by the solver before each step

    # -- the setup contract ----------------------------------------------------
    def setup(self, bottom, top):
        self.check_blob_counts(bottom, top)
        self.layer_setup(bottom, top)
        self.reshape(bottom, top)
        self.set_loss_weights(top)

    def check_blob_counts(self, bottom, top):
        def fail(what, n, want):
            raise NetError(f"layer '{self.name}' of type {self.type} takes {want} {what} blob(s), got {n}")
        nb, nt = len(bottom), len(top)
        if self.exact_num_bottom >= 0 and nb != self.exact_num_bottom:
            fail("bottom", nb, f"exactly {self.exact_num_bottom}")
        if self.min_bottom >= 0 and nb < self.min_bottom:
            fail("bottom", nb, f"at least {self.min_bottom}")
        if self.max_bottom >= 0 and nb > self.max_bottom:
            fail("bottom", nb, f"at most {self.max_bottom}")
        if self.exact_num_top >= 0 and nt != self.exact_num_top:
            fail("top", nt, f"exactly {self.exact_num_top}")
        if self.min_top >= 0 and nt < self.min_top:
            fail("top", nt, f"at least {self.min_top}")
        if self.max_top >= 0 and nt > self.max_top:
            fail("top", nt, f"at most {self.max_top}")
        if self.equal_num_bottom_top and nb != nt:
            raise NetError(f"layer '{self.name}' of type {self.type} needs as many tops as bottoms, got {nb} bottoms and {nt} tops")

    def layer_setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        raise NotImplementedError

    def set_loss_weights(self, top):
        weights = list(self.layer_param.loss_weight)
        self.loss_weights = [0.0] * len(top)
        if not weights:
            return
        if len(weights) != len(top):
            raise NetError(
                f"layer '{self.name}': loss_weight must be unspecified or given once per top blob "
                f"({len(top)} tops, {len(weights)} loss_weight values)")
        for i, w in enumerate(weights):
            if w == 0:
                continue
            self.loss_weights[i] = float(np.float32(w))
            # As in Caffe, the loss weight lives in the top's diff: backward reads it there.
            top[i].diff[...] = np.float32(w)

    def loss(self, top_index):
        return self.loss_weights[top_index] if top_index < len(self.loss_weights) else 0.0

    # -- forward / backward ----------------------------------------------------
    def forward(self, bottom, top):
        """Reshape, compute, and return the weighted loss (Caffe's Layer::Forward)."""
        self.reshape(bottom, top)
        return self.forward_reshaped(bottom, top)

    def forward_reshaped(self, bottom, top):
        """`forward` without the reshape, for a caller that knows it would change nothing
        (the Net's forward plan).  Kept lean: at batch 1 a layer's bookkeeping costs as
        much as its arithmetic."""
        self.forward_cpu(bottom, top)
        if not any(self.loss_weights):
            return _NO_LOSS
        loss = np.float32(0)
        for t, weight in zip(top, self.loss_weights):
            if weight:
                loss += np.float32(np.dot(t.flat_data, t.flat_diff))
        return loss

    def forward_cpu(self, bottom, top):
        raise NotImplementedError

    _kept_views = None  # blob_views' cache

    def blob_views(self, bottom, top, make):
        """make(self, bottom, top), kept while the bottom and top blobs all share one
        LayoutClock (a Net's) whose version has not moved, for these same bottom / top
        lists; made again otherwise (blobs outside a net: every call).

        For views of the layer's bottom and top data (never of parameter blobs,
        whose data_stamp a live view would disable): at batch 1 making them
        costs as much as a layer's arithmetic.  `make` is a plain function,
        compared by identity."""
        views = self._kept_views
        if views is not None and views[1] is bottom and views[2] is top and views[3] is make \
                and views[0] is not None and views[0].version == views[5]:
            return views[4]
        clock = _shared_clock(bottom, top)
        made = make(self, bottom, top)
        self._kept_views = (clock, bottom, top, make, made, None if clock is None else clock.version)
        return made

    def backward(self, top, propagate_down, bottom):
        self.backward_cpu(top, propagate_down, bottom)

    def backward_cpu(self, top, propagate_down, bottom):
        if any(propagate_down):
            raise NetError(f"layer '{self.name}' of type {self.type} has no backward pass")

    # -- masks (the mask core, npcaffe.masks, is the one place that reads these) ----------
    # Parameter blobs that are masks (DNS layers: 2 and 3): learnable to the solver, never updated by the Net.
    mask_param_indices = ()
    # (weight mask, bias mask or None) Blobs given to a plain weight layer by masks.attach_masks.
    attached_masks = None

    def mask_blobs(self):
        """(weight mask, bias mask or None) when the layer computes with W ⊙ T, else None."""
        return self.attached_masks

    @classmethod
    def stored_mask_arrays(cls, arrays):
        """(weight mask, bias mask or None) arrays held by this type's stored blob arrays, or None.

        Layers with two mask blobs (DNS: `mask_param_indices` 2 and 3) hold them as they are when
        stored with them; a type that stores its mask in another form (DNS-CP's channel mask)
        turns it into the weight-shaped T here."""
        if len(cls.mask_param_indices) != 2:
            return None
        weight_index, bias_index = cls.mask_param_indices
        if len(arrays) <= max(weight_index, bias_index) or arrays[weight_index] is None:
            return None
        return arrays[weight_index], arrays[bias_index]

    def plain_layer_param(self, layer_param):
        """Rewrite this layer's LayerParameter into BVLC Caffe's plain form once its masks are
        baked into the weights (masks.plain_model); a plain layer keeps its type."""

    def allow_force_backward(self, bottom_index):
        return True

    def set_param_propagate_down(self, index, value):
        while len(self.param_propagate_down) <= index:
            self.param_propagate_down.append(True)
        self.param_propagate_down[index] = bool(value)

    def param_needs_backward(self, index):
        return index >= len(self.param_propagate_down) or self.param_propagate_down[index]

    def __repr__(self):
        return f"<{type(self).__name__} '{self.name}' ({self.type})>"
