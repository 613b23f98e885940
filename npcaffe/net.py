"""Net: the layer graph built once from a NetParameter, as Caffe's net.cpp.

Also the pycaffe-compatible face of it (`npcaffe.Net(model, weights, phase)`,
`net.blobs`, `net.params`, `net.forward(**inputs)`, ...).
"""
import os
from collections import OrderedDict

import numpy as np

from . import glog
from .blob import Blob, LayoutClock
from .errors import NetError, NpcaffeError, WeightsError
from .fileio.caffemodel import blob_diff_to_array, blob_shape, blob_to_array, read_caffemodel, write_caffemodel
from .fileio.prototxt import read_net
from .fileio.solverstate import read_net_hdf5, write_net_hdf5
from .graph import filter_net, insert_splits
from .plan import ForwardPlan
from .layer import TEST, TRAIN, create_layer
from . import masks, memory
from .fileio import compressed
from .sparse import packing
from .proto import caffe_pb2


def _phase_value(phase):
    if phase in (TRAIN, TEST):
        return phase
    if isinstance(phase, str) and phase.upper() in ("TRAIN", "TEST"):
        return caffe_pb2.Phase.Value(phase.upper())
    raise NetError(f"phase must be npcaffe.TRAIN or npcaffe.TEST, got {phase!r}")


class Net:
    """A Caffe net for one phase.

    Constructors, as pycaffe:
        Net(model, phase)                  Net(model, phase, weights=W)
        Net(model, weights, phase)         Net(net_parameter, phase, level=0, stages=())
    `model` is a .prototxt path or a NetParameter.
    """

    def __init__(self, model, *args, weights=None, phase=None, level=0, stages=(), verbose=False):
        args = list(args)
        if args and isinstance(args[0], (str, os.PathLike)):
            weights = args.pop(0)
        if args:
            phase = args.pop(0)
        if args:
            raise TypeError("Net(model, [weights,] phase, weights=None, level=0, stages=())")
        if phase is None:
            raise TypeError("Net needs a phase: npcaffe.TRAIN or npcaffe.TEST")
        self.phase = _phase_value(phase)
        if isinstance(model, caffe_pb2.NetParameter):
            param = caffe_pb2.NetParameter()
            param.CopyFrom(model)
            from .fileio.upgrade import upgrade_net
            upgrade_net(param, f"net '{param.name}'")
            self.source = f"<NetParameter '{param.name}'>"
        else:
            param = read_net(model)
            self.source = os.fspath(model)
        param.state.phase = self.phase
        param.state.level = level
        del param.state.stage[:]
        param.state.stage.extend(stages)
        self.verbose = verbose
        self.layout = LayoutClock()  # every blob of the net holds it (npcaffe.blob)
        self.forward_hooks = []  # called as hook(net) after every full forward pass (e.g. the DNS trace)
        self.debug_info = param.debug_info  # Caffe's per-layer value lines (npcaffe.debug_info)
        try:
            with memory.budget() as self._budget:  # bytes counted before they are allocated
                self._init(param)
        except NpcaffeError as e:
            _name_the_source(e, self.source)
            raise
        del self._budget
        if weights is not None:
            self.copy_from(weights)

    # -- construction (Net::Init) ----------------------------------------------
    def _init(self, in_param):
        param = insert_splits(filter_net(in_param))
        self.name = param.name
        self.param = param
        self.layers = []
        self.layer_names = []
        self._blobs = []            # all blobs, in creation order
        self._blob_names = []
        self._blob_index = {}
        self.blob_need_backward = []
        self.bottom_vecs, self.top_vecs = [], []
        self.bottom_id_vecs, self.top_id_vecs = [], []
        self.bottom_need_backward = []
        self.layer_need_backward = []
        self._blob_loss_weights = []
        self._input_indices = []
        # parameter bookkeeping (Net::AppendParam)
        self.params_list = []        # every param blob, layer by layer
        self.param_layer_indices = []
        self.param_owners = []
        self.param_display_names = []
        self.learnable_params = []   # owners only
        self.learnable_param_ids = []
        self.params_lr = []
        self.params_weight_decay = []
        self.has_params_lr = []
        self.has_params_decay = []
        self.mask_learnable_ids = set()
        self._param_names_index = {}
        available = set()

        for layer_id, layer_param in enumerate(param.layer):
            if not layer_param.HasField("phase"):
                layer_param.phase = self.phase
            if len(layer_param.propagate_down) and len(layer_param.propagate_down) != len(layer_param.bottom):
                raise NetError(f"layer '{layer_param.name}': propagate_down must be given for every bottom "
                               f"({len(layer_param.bottom)} bottoms, {len(layer_param.propagate_down)} values)")
            self._budget.layer = layer_param.name
            layer = create_layer(layer_param)
            self.layers.append(layer)
            self.layer_names.append(layer_param.name)
            self.bottom_vecs.append([])
            self.top_vecs.append([])
            self.bottom_id_vecs.append([])
            self.top_id_vecs.append([])
            self.bottom_need_backward.append([])
            need_backward = False
            for bottom_id, name in enumerate(layer_param.bottom):
                blob_id = self._append_bottom(layer_id, bottom_id, available)
                need_backward |= self.blob_need_backward[blob_id]
            for top_id in range(len(layer_param.top)):
                self._append_top(layer_id, top_id, available)
                if layer_param.type == "Input":
                    self._input_indices.append(self.top_id_vecs[layer_id][-1])
            if layer.auto_top_blobs:
                needed = max(layer.min_top, layer.exact_num_top)
                for top_id in range(len(layer_param.top), needed):
                    self._append_top(layer_id, top_id, None)
            try:
                layer.setup(self.bottom_vecs[layer_id], self.top_vecs[layer_id])
            except NetError as e:
                raise NetError(f"{self.source}: {e}") from None
            for top_id, blob_id in enumerate(self.top_id_vecs[layer_id]):
                while len(self._blob_loss_weights) <= blob_id:
                    self._blob_loss_weights.append(0.0)
                self._blob_loss_weights[blob_id] = layer.loss(top_id)
            if len(layer_param.param) > len(layer.blobs):
                raise NetError(f"layer '{layer_param.name}': {len(layer_param.param)} param specs given "
                               f"but the layer has only {len(layer.blobs)} parameter blobs")
            for param_id in range(len(layer.blobs)):
                spec = layer_param.param[param_id] if param_id < len(layer_param.param) else caffe_pb2.ParamSpec()
                need = spec.lr_mult != 0
                need_backward |= need
                layer.set_param_propagate_down(param_id, need)
            for param_id in range(len(layer.blobs)):
                self._append_param(layer_id, param_id)
            self.layer_need_backward.append(need_backward)
            if need_backward:
                for blob_id in self.top_id_vecs[layer_id]:
                    self.blob_need_backward[blob_id] = True

        self._prune_backward()
        if param.force_backward:
            for layer_id, layer in enumerate(self.layers):
                self.layer_need_backward[layer_id] = True
                for bottom_id, blob_id in enumerate(self.bottom_id_vecs[layer_id]):
                    flag = self.bottom_need_backward[layer_id][bottom_id] or layer.allow_force_backward(bottom_id)
                    self.bottom_need_backward[layer_id][bottom_id] = flag
                    self.blob_need_backward[blob_id] = self.blob_need_backward[blob_id] or flag
                for param_id in range(len(layer.blobs)):
                    layer.set_param_propagate_down(param_id, True)
        for layer, need in zip(self.layers, self.layer_need_backward):
            layer.backward_expected = need
        # Caffe keeps remaining blobs in a std::set: outputs come out sorted by name.
        self._output_indices = [self._blob_index[name] for name in sorted(available)]
        self._share_weights()
        self.plan = ForwardPlan(self)

    def _append_bottom(self, layer_id, bottom_id, available):
        layer_param = self.param.layer[layer_id]
        name = layer_param.bottom[bottom_id]
        if name not in available:
            raise NetError(f"{self.source}: layer '{layer_param.name}': unknown bottom blob '{name}' "
                           f"(bottom index {bottom_id}); no earlier layer produces it in phase "
                           f"{caffe_pb2.Phase.Name(self.phase)}")
        blob_id = self._blob_index[name]
        self.bottom_vecs[layer_id].append(self._blobs[blob_id])
        self.bottom_id_vecs[layer_id].append(blob_id)
        available.discard(name)
        need = self.blob_need_backward[blob_id]
        if len(layer_param.propagate_down):
            need = layer_param.propagate_down[bottom_id]
        self.bottom_need_backward[layer_id].append(need)
        return blob_id

    def _append_top(self, layer_id, top_id, available):
        layer_param = self.param.layer[layer_id]
        name = layer_param.top[top_id] if top_id < len(layer_param.top) else "(automatic)"
        if available is not None and top_id < len(layer_param.bottom) and name == layer_param.bottom[top_id]:
            blob_id = self._blob_index[name]  # in-place
        elif available is not None and name in self._blob_index:
            raise NetError(f"{self.source}: layer '{layer_param.name}': top blob '{name}' is produced by "
                           "multiple sources (in-place layers must name the same blob as bottom and top at the same index)")
        else:
            blob_id = len(self._blobs)
            blob = Blob(name=name)
            blob.clock = self.layout
            self._blobs.append(blob)
            self._blob_names.append(name)
            self.blob_need_backward.append(False)
            if available is not None:
                self._blob_index[name] = blob_id
        self.top_vecs[layer_id].append(self._blobs[blob_id])
        self.top_id_vecs[layer_id].append(blob_id)
        if available is not None:
            available.add(name)

    def _append_param(self, layer_id, param_id):
        layer_param = self.param.layer[layer_id]
        layer = self.layers[layer_id]
        spec = layer_param.param[param_id] if param_id < len(layer_param.param) else caffe_pb2.ParamSpec()
        name = spec.name
        self.param_display_names.append(name if name else str(param_id))
        net_param_id = len(self.params_list)
        blob = layer.blobs[param_id]
        blob.clock = self.layout  # sharing a parameter's storage (share_with, a Parameter layer's top) is seen
        self.params_list.append(blob)
        self.param_layer_indices.append((layer_id, param_id))
        is_mask = param_id in layer.mask_param_indices
        if not name or name not in self._param_names_index:
            self.param_owners.append(-1)
            if name:
                self._param_names_index[name] = net_param_id
            learnable_id = len(self.learnable_params)
            self.learnable_params.append(blob)
            self.learnable_param_ids.append(learnable_id)
            self.has_params_lr.append(spec.HasField("lr_mult"))
            self.has_params_decay.append(spec.HasField("decay_mult"))
            self.params_lr.append(spec.lr_mult)
            self.params_weight_decay.append(spec.decay_mult)
        else:
            owner_id = self._param_names_index[name]
            self.param_owners.append(owner_id)
            owner_layer, owner_param = self.param_layer_indices[owner_id]
            owner_blob = self.layers[owner_layer].blobs[owner_param]
            if spec.share_mode == caffe_pb2.ParamSpec.PERMISSIVE:
                if blob.count != owner_blob.count:
                    raise NetError(f"layer '{layer_param.name}': shared parameter '{name}' has {blob.count} elements "
                                   f"{blob.shape}, its owner in layer '{self.layer_names[owner_layer]}' has "
                                   f"{owner_blob.count} {owner_blob.shape}")
            elif blob.shape != owner_blob.shape:
                raise NetError(f"layer '{layer_param.name}': shared parameter '{name}' has shape {blob.shape}, its owner "
                               f"in layer '{self.layer_names[owner_layer]}' has {owner_blob.shape} "
                               "(use share_mode: PERMISSIVE to compare counts only)")
            learnable_id = self.learnable_param_ids[owner_id]
            self.learnable_param_ids.append(learnable_id)
            for has, values, field, label in ((self.has_params_lr, self.params_lr, "lr_mult", "lr_mult"),
                                              (self.has_params_decay, self.params_weight_decay, "decay_mult", "decay_mult")):
                if spec.HasField(field):
                    value = getattr(spec, field)
                    if has[learnable_id]:
                        if value != values[learnable_id]:
                            raise NetError(f"layer '{layer_param.name}': shared param '{name}' has mismatched {label} "
                                           f"({value} here, {values[learnable_id]} at its owner)")
                    else:
                        has[learnable_id] = True
                        values[learnable_id] = value
        if is_mask:
            self.mask_learnable_ids.add(self.learnable_param_ids[-1])

    def _prune_backward(self):
        under_loss, skip_backprop = set(), set()
        for layer_id in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[layer_id]
            contributes = False
            skip = True
            for top_id, blob_id in enumerate(self.top_id_vecs[layer_id]):
                name = self._blob_names[blob_id]
                if layer.loss(top_id) or name in under_loss:
                    contributes = True
                if name not in skip_backprop:
                    skip = False
                if contributes and not skip:
                    break
            if self.layer_need_backward[layer_id] and skip:
                self.layer_need_backward[layer_id] = False
                self.bottom_need_backward[layer_id] = [False] * len(self.bottom_vecs[layer_id])
            if not contributes:
                self.layer_need_backward[layer_id] = False
            for bottom_id, blob_id in enumerate(self.bottom_id_vecs[layer_id]):
                name = self._blob_names[blob_id]
                if contributes:
                    under_loss.add(name)
                else:
                    self.bottom_need_backward[layer_id][bottom_id] = False
                if not self.bottom_need_backward[layer_id][bottom_id]:
                    skip_backprop.add(name)

    def _share_weights(self):
        for i, owner in enumerate(self.param_owners):
            if owner >= 0:
                self.params_list[i].share_data(self.params_list[owner])
                self.params_list[i].share_diff(self.params_list[owner])

    # -- running -----------------------------------------------------------------
    def set_iter(self, iteration):
        """Tell every layer the solver's iteration (the DNS fork's set_current_iter_num)."""
        for layer in self.layers:
            layer.iter = iteration

    def forward_from_to(self, start=0, end=None):
        """Forward layers start..end (all by default) through the net's plan (npcaffe.plan)."""
        last = len(self.layers) - 1
        end = last if end is None else end
        if self.debug_info:
            loss = self._forward_with_debug_info(start, end)
        else:
            loss = self.plan.forward(start, end)
        if self.forward_hooks and start == 0 and end == last:
            for hook in self.forward_hooks:
                hook(self)
        return loss

    def _forward_with_debug_info(self, start, end):
        """Forward layer by layer (no plan), printing Caffe's debug_info lines (npcaffe.debug_info)."""
        from . import debug_info
        loss = np.float32(0)
        for i in range(start, end + 1):
            loss = loss + self.layers[i].forward(self.bottom_vecs[i], self.top_vecs[i])
            debug_info.forward(self, i)
        return loss

    def backward_from_to(self, start=None, end=0):
        start = len(self.layers) - 1 if start is None else start
        for i in range(start, end - 1, -1):
            if self.layer_need_backward[i]:
                self.layers[i].backward(self.top_vecs[i], self.bottom_need_backward[i], self.bottom_vecs[i])
                if self.debug_info:
                    from . import debug_info
                    debug_info.backward(self, i)
        if self.debug_info and start == len(self.layers) - 1 and end == 0:
            from . import debug_info
            debug_info.net_norms(self)

    def forward_backward(self):
        loss = self.forward_from_to()
        self.backward_from_to()
        return loss

    def clear_param_diffs(self, deferred=False):
        """Zero every parameter diff (Net::ClearParamDiffs).  deferred (the solver's step): the
        zeros are promised, and a layer whose gradient covers the whole diff writes it in their
        place (Blob.clear_diff)."""
        for blob in self.learnable_params:
            blob.clear_diff(deferred)

    def updates_param(self, learnable_id):
        """Whether an update changes this learnable parameter: all but DNS masks, which are
        learnable (regularised, with history) but never updated, as in the fork's Net::Update."""
        return learnable_id not in self.mask_learnable_ids

    def update(self):
        """data -= diff for every parameter `updates_param` allows, then `enforce_masks`."""
        for learnable_id, blob in enumerate(self.learnable_params):
            if self.debug_info:
                from . import debug_info
                debug_info.update(self, learnable_id)
            if self.updates_param(learnable_id):
                np.subtract(blob.flat_data, blob.flat_diff, out=blob.flat_data)
        self.enforce_masks()

    def enforce_masks(self):
        """Set the pruned weights of layers with attached (fixed) masks back to zero (npcaffe.masks)."""
        for layer in self.layers:
            if layer.attached_masks is not None:
                masks.apply_masks(layer)

    def reshape(self):
        for i, layer in enumerate(self.layers):
            layer.reshape(self.bottom_vecs[i], self.top_vecs[i])

    # -- weights -----------------------------------------------------------------
    def copy_from(self, source, pack=True):
        """Copy weights by layer name from a .caffemodel path or NetParameter (CopyTrainedLayersFrom).

        DNS fork rule: a CConvolution/CInnerProduct layer may receive fewer
        blobs than it has (weight, bias only); its masks then keep their
        filler values.  A TEST net then packs its pruned layers
        (npcaffe.sparse.packing.sparsify); pack=False leaves that to the caller.

        As net.cpp: a source layer goes to the first layer of the net with its name (two
        layers of one name: the first gets the weights), and source layers the net lacks are
        skipped; we log each of those (Caffe's debug builds do), and warn when no layer with
        weights matched at all (a caffemodel for another net loads nothing).
        """
        if compressed.is_compressed(source):  # `npcaffe compress` output
            shapes = {}
            for name, layer in zip(self.layer_names, self.layers):
                shapes.setdefault(name, [b.shape for b in layer.blobs])
            source = compressed.read_compressed(source, shapes)
        elif isinstance(source, (str, os.PathLike)) and os.fspath(source).endswith(".h5"):
            self.load_hdf5(source, pack=pack)  # as Caffe's CopyTrainedLayersFrom
            return
        if isinstance(source, caffe_pb2.NetParameter):
            net_param, where = source, f"<NetParameter '{source.name}'>"
        else:
            where = os.fspath(source)
            net_param = read_caffemodel(where)
        index = {}
        for i, name in enumerate(self.layer_names):
            index.setdefault(name, i)  # the first of a name, as CopyTrainedLayersFrom's search
        copied = 0
        for source_layer in net_param.layer:
            target_id = index.get(source_layer.name)
            if target_id is None:
                glog.info(f"Ignoring source layer {source_layer.name}")
                continue
            copied += bool(len(source_layer.blobs))
            layer = self.layers[target_id]
            targets = layer.blobs
            n = len(source_layer.blobs)
            partial_ok = getattr(layer, "accepts_fewer_blobs", False) and n < len(targets)
            if n != len(targets) and not partial_ok:
                raise WeightsError(f"{where}: layer '{source_layer.name}' has {n} blobs in the file but "
                                   f"{len(targets)} in the net ({layer.type}); incompatible number of blobs")
            for j in range(n):
                proto = source_layer.blobs[j]
                if not _shape_equals(targets[j].shape, proto):
                    raise WeightsError(
                        f"{where}: cannot copy param {j} of layer '{source_layer.name}': shape mismatch. "
                        f"Source shape {blob_shape(proto)}; target shape {targets[j].shape}. To learn this "
                        "layer's parameters from scratch rather than copying from a saved net, rename the layer.")
                targets[j].data[...] = blob_to_array(proto, f"{where}: layer '{source_layer.name}' blob {j}").reshape(targets[j].shape)
                diff = blob_diff_to_array(proto, f"{where}: layer '{source_layer.name}' blob {j}")
                if diff is not None:
                    targets[j].diff[...] = diff.reshape(targets[j].shape)
        _warn_if_nothing_matched(where, copied, sum(bool(len(lp.blobs)) for lp in net_param.layer), self)
        if self.phase == TEST and pack:
            packing.sparsify(self)  # pruned layers compute with packed sparse weights

    def share_with(self, other):
        """Share weights with another net by layer name (ShareTrainedLayersWith)."""
        index = {name: i for i, name in enumerate(self.layer_names)}
        for source_layer, name in zip(other.layers, other.layer_names):
            target_id = index.get(name)
            if target_id is None:
                continue
            targets = self.layers[target_id].blobs
            if len(targets) != len(source_layer.blobs):
                raise WeightsError(f"layer '{name}': {len(source_layer.blobs)} blobs in the source net, "
                                   f"{len(targets)} here; incompatible number of blobs")
            for j, (target, src) in enumerate(zip(targets, source_layer.blobs)):
                if target.shape != src.shape:
                    raise WeightsError(f"layer '{name}' param {j}: shape {src.shape} in the source net, {target.shape} here")
                target.share_data(src)

    def to_proto(self, write_diff=False):
        """NetParameter of this net with its weights (Net::ToProto)."""
        out = caffe_pb2.NetParameter()
        out.name = self.name
        for layer_param, layer in zip(self.param.layer, self.layers):
            lp = out.layer.add()
            lp.CopyFrom(layer_param)
            del lp.blobs[:]
            for blob in layer.blobs:
                bp = lp.blobs.add()
                bp.shape.dim.extend(blob.shape)
                bp.data.extend(blob.flat_data.tolist())
                if write_diff:
                    bp.diff.extend(blob.flat_diff.tolist())
        return out

    def save(self, path, write_diff=False):
        write_caffemodel(self.to_proto(write_diff), path)

    def _param_owned(self):
        # {(layer index, param index): True when the layer owns that parameter (not shared from another)}
        return {where: owner == -1 for where, owner in zip(self.param_layer_indices, self.param_owners)}

    def save_hdf5(self, path, write_diff=False):
        """Weights as Caffe's Net::ToHDF5 (pycaffe net.save_hdf5): data/<layer>/<i> for the
        parameters each layer owns (shared ones are stored once, by their owner), and with
        write_diff diff/<layer>/<i> for all."""
        owned = self._param_owned()
        layers = []
        for layer_id, (name, layer) in enumerate(zip(self.layer_names, self.layers)):
            data = {j: b.data for j, b in enumerate(layer.blobs) if owned[(layer_id, j)]}
            diff = {j: b.diff for j, b in enumerate(layer.blobs)} if write_diff else None
            layers.append((name, data, diff))
        write_net_hdf5(layers, path)

    def load_hdf5(self, path, pack=True):
        """Copy weights by layer name from a Net::ToHDF5 file (CopyTrainedLayersFromHDF5, pycaffe
        net.load_hdf5): layers the net lacks are skipped; a parameter the file lacks is an error
        unless the net shares it from another layer.  Datasets are checked against the net's
        shapes before they are read; ignored layers are logged as in copy_from.  Two layers of
        one name: the first gets the weights, as in copy_from (Caffe's HDF5 reader takes the
        last, through its name index; one rule for both formats here)."""
        where = os.fspath(path)
        index = {}
        for i, name in enumerate(self.layer_names):
            index.setdefault(name, i)
        owned = self._param_owned()
        expected = {name: [b.shape for b in self.layers[i].blobs] for name, i in index.items()}
        ignored = []
        loaded = read_net_hdf5(where, expected, ignored)
        for name in ignored:
            glog.info(f"Ignoring source layer {name}")
        _warn_if_nothing_matched(where, sum(bool(arrays) for _, arrays in loaded),
                                 sum(bool(arrays) for _, arrays in loaded) + len(ignored), self)
        for name, arrays in loaded:
            layer_id = index[name]
            layer = self.layers[layer_id]
            targets = layer.blobs
            # DNS layers may come without their masks (trailing blobs), as in copy_from.
            partial_ok = getattr(layer, "accepts_fewer_blobs", False)
            if len(arrays) > len(targets) or any(j >= len(targets) for j in arrays):
                raise WeightsError(f"{where}: layer '{name}' has {len(arrays)} blobs in the file but "
                                   f"{len(targets)} in the net; incompatible number of blobs")
            for j, target in enumerate(targets):
                array = arrays.get(j)
                if array is None:
                    if partial_ok and j >= len(arrays) and arrays:
                        continue  # keeps its filler values
                    if owned[(layer_id, j)]:
                        raise WeightsError(f"{where}: layer '{name}' has no dataset data/{name}/{j} for its "
                                           f"param {j} {target.shape}; incompatible number of blobs")
                    continue  # shared from another layer, stored by its owner
                if array.shape != target.shape:
                    raise WeightsError(f"{where}: cannot copy param {j} of layer '{name}': shape mismatch. "
                                       f"Source shape {array.shape}; target shape {target.shape}")
                target.data[...] = array
        if self.phase == TEST and pack:
            packing.sparsify(self)

    # -- pycaffe face --------------------------------------------------------------
    @property
    def _layer_names(self):
        # pycaffe's name for layer_names; its scripts read it.
        return self.layer_names

    @property
    def blobs(self):
        return OrderedDict((name, self._blobs[i]) for name, i in self._blob_index.items())

    @property
    def params(self):
        return OrderedDict((name, layer.blobs) for name, layer in zip(self.layer_names, self.layers) if layer.blobs)

    @property
    def layer_dict(self):
        return OrderedDict(zip(self.layer_names, self.layers))

    @property
    def blob_loss_weights(self):
        return OrderedDict((name, self._blob_loss_weights[i]) for name, i in self._blob_index.items())

    @property
    def inputs(self):
        return [self._blob_names[i] for i in self._input_indices]

    @property
    def outputs(self):
        return [self._blob_names[i] for i in self._output_indices]

    @property
    def top_names(self):
        return OrderedDict((n, [self._blob_names[i] for i in ids]) for n, ids in zip(self.layer_names, self.top_id_vecs))

    @property
    def bottom_names(self):
        return OrderedDict((n, [self._blob_names[i] for i in ids]) for n, ids in zip(self.layer_names, self.bottom_id_vecs))

    def forward(self, blobs=None, start=None, end=None, **kwargs):
        """Run forward; returns {output name: data} (pycaffe's Net.forward)."""
        blobs = list(blobs or [])
        start_ind = self.layer_names.index(start) if start is not None else 0
        if end is not None:
            end_ind = self.layer_names.index(end)
            outputs = set(self.top_names[end] + blobs)
        else:
            end_ind = len(self.layers) - 1
            outputs = set(self.outputs + blobs)
        if kwargs:
            if set(kwargs) != set(self.inputs):
                raise NetError(f"input blob arguments {sorted(kwargs)} do not match the net inputs {self.inputs}")
            for name, value in kwargs.items():
                value = np.asarray(value)
                blob = self.blobs[name]
                if value.shape[0] != blob.shape[0]:
                    raise NetError(f"input '{name}' has batch size {value.shape[0]}, the net expects {blob.shape[0]} "
                                   f"(call net.blobs['{name}'].reshape(...) and net.reshape() first)")
                blob.data[...] = value
        self.forward_from_to(start_ind, end_ind)
        return {name: self.blobs[name].data for name in outputs}

    def backward(self, diffs=None, start=None, end=None, **kwargs):
        """Run backward; returns {input name: diff} (pycaffe's Net.backward)."""
        diffs = list(diffs or [])
        start_ind = self.layer_names.index(start) if start is not None else len(self.layers) - 1
        if end is not None:
            end_ind = self.layer_names.index(end)
            outputs = set(self.bottom_names[end] + diffs)
        else:
            end_ind = 0
            outputs = set(self.inputs + diffs)
        if kwargs:
            if set(kwargs) != set(self.outputs):
                raise NetError(f"top diff arguments {sorted(kwargs)} do not match the net outputs {self.outputs}")
            for name, value in kwargs.items():
                self.blobs[name].diff[...] = value
        self.backward_from_to(start_ind, end_ind)
        return {name: self.blobs[name].diff for name in outputs}

    def _batch(self, arrays):
        """Split {input: array} into batches of the net's batch size, the last one zero-padded."""
        num = len(next(iter(arrays.values())))
        batch_size = next(iter(self.blobs.values())).shape[0]
        for start in range(0, num - num % batch_size, batch_size):
            yield {name: a[start:start + batch_size] for name, a in arrays.items()}
        remainder = num % batch_size
        if remainder:
            yield {name: np.concatenate([a[-remainder:], np.zeros((batch_size - remainder,) + a.shape[1:], a.dtype)])
                   for name, a in arrays.items()}

    def forward_all(self, blobs=None, **kwargs):
        """Forward any number of inputs in batches; returns {output: stacked data} (pycaffe)."""
        outputs = {name: [] for name in set(self.outputs + list(blobs or []))}
        for batch in self._batch(kwargs):
            for name, data in self.forward(blobs=blobs, **batch).items():
                outputs[name].extend(data.copy())
        outputs = {name: np.asarray(values) for name, values in outputs.items()}
        pad = len(next(iter(outputs.values()))) - len(next(iter(kwargs.values())))
        return {name: values[:-pad] for name, values in outputs.items()} if pad else outputs

    def forward_backward_all(self, blobs=None, diffs=None, **kwargs):
        """forward_all and backward_all together: returns (outputs, input diffs) (pycaffe)."""
        forward_args = {k: v for k, v in kwargs.items() if k in self.inputs}
        backward_args = {k: v for k, v in kwargs.items() if k in self.outputs}
        outs = {name: [] for name in set(self.outputs + list(blobs or []))}
        grads = {name: [] for name in set(self.inputs + list(diffs or []))}
        batches = zip(self._batch(forward_args), self._batch(backward_args) if backward_args else iter(dict, None))
        for fb, bb in batches:
            for name, data in self.forward(blobs=blobs, **fb).items():
                outs[name].extend(data.copy())
            for name, diff in self.backward(diffs=diffs, **bb).items():
                grads[name].extend(diff.copy())
        outs = {k: np.asarray(v) for k, v in outs.items()}
        grads = {k: np.asarray(v) for k, v in grads.items()}
        pad = len(next(iter(outs.values()))) - len(next(iter(forward_args.values())))
        if pad:
            outs = {k: v[:-pad] for k, v in outs.items()}
            grads = {k: v[:-pad] for k, v in grads.items()}
        return outs, grads

    def set_input_arrays(self, data, labels):
        """Feed the first layer, a MemoryData layer (pycaffe's Net.set_input_arrays)."""
        if not self.layers or self.layers[0].type != "MemoryData":
            raise NetError("set_input_arrays needs a MemoryData layer as the net's first layer")
        self.layers[0].set_input_arrays(data, labels)

    def _forward(self, start, end):
        return self.forward_from_to(start, end)

    def _backward(self, start, end):
        self.backward_from_to(start, end)

    def __repr__(self):
        return f"<npcaffe.Net '{self.name}' {caffe_pb2.Phase.Name(self.phase)}: {len(self.layers)} layers>"


def _name_the_source(error, source):
    """Put the net's file in front of an error's message (once) that does not name it yet."""
    if error.args and isinstance(error.args[0], str) and source not in error.args[0]:
        error.args = (f"{source}: {error.args[0]}",) + error.args[1:]


def _warn_if_nothing_matched(where, copied, with_weights, net):
    if with_weights and not copied:
        glog.warning(f"{where}: none of its {with_weights} layers with weights matched a layer of net "
                     f"'{net.name}' by name: no weights were copied (weights for another net?)")


def _shape_equals(shape, proto):
    """Blob::ShapeEquals: legacy 4-D protos match blobs of <= 4 axes padded with leading 1s."""
    if proto.HasField("num") or proto.HasField("channels") or proto.HasField("height") or proto.HasField("width"):
        if len(shape) > 4:
            return False
        padded = (1,) * (4 - len(shape)) + tuple(shape)
        return padded == (proto.num, proto.channels, proto.height, proto.width)
    return tuple(shape) == tuple(proto.shape.dim)
