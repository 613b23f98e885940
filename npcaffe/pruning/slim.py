"""npcaffe slim: a pruned net rewritten as a really smaller plain Caffe net.

Pruning with masks leaves every layer its full size; a channel whose
filters are all zero still costs its multiply-adds everywhere.  Slimming
removes such channels: fewer filters, fewer input channels, smaller
BatchNorm / Scale / PReLU parameters, new Slice points, and writes a
prototxt and caffemodel that BVLC Caffe loads unchanged.

What may go.  The channel groups (npcaffe.pruning.groups) say which
channels go together.  A unit of a prunable group is removed when, after
it is gone, the net still computes exactly what the masked net computed:
every layer that reads the unit with a nonzero weight must be able to do
without it.  Two cases make that so:

- nobody reads it: every consumer's weight columns for it are zero (the
  input channels no filter reads; what `set_channel_masks` leaves), or
- it carries a value that does not depend on the input, so a consumer adds
  that value's contribution to its bias instead.  The value of a unit whose
  producing filters are all zero is the producer's bias, shifted by
  BatchNorm / Scale / Bias and bent by ReLU and the other elementwise
  layers; max pooling keeps a constant constant, average pooling does when
  it has no padding (Caffe divides by the window with its padding).  An
  InnerProduct folds any input-independent value (its H×W columns times the
  values there); a Convolution folds a spatially constant value c as
  c · Σ kernel into each filter's bias, which is exact only without padding
  (the zero border would see 0, not c) or when c = 0; a Deconvolution
  folds only zeros.  A depthwise convolution that reads a unit feeds only
  that same unit, which goes with it.

Values are categorised by following the layer graph (`VARIABLE`,
`FIXED`: the same for every input, `UNIFORM`: also the same at every
spatial position), and the numbers come from one forward pass of the masked
net on generated inputs, checked against the categories (a value called
fixed that differs between two samples is a bug we report, not hide).

*Candidates* are the units the user pruned: all producing filters zero
(weights; the bias may stay), or all reading columns zero.  A candidate
that cannot go exactly — a padded convolution reads its nonzero constant,
or its group is blocked (LRN across channels, an unknown layer) — makes
slim refuse, naming the layers, unless `keep_unremovable`: then it stays.
Units of groups at the net's inputs and outputs stay silently, as does the
last unit of a group.

The written net has only BVLC layer types: DNS and DNS-CP layers become
Convolution / InnerProduct with W ⊙ T baked in, and the forks'
DepthwiseConvolution / ConvolutionDepthwise become Convolution with
group = channels; other fork types (ShuffleChannel, Axpy) stay as they are
and are named in the report.
"""
import json
import os
from collections import OrderedDict

import numpy as np

from .. import masks as mask_core
from ..errors import NetError
from ..proto import caffe_pb2
from .groups import CONVOLUTION_TYPES, INNER_PRODUCT_TYPES, channel_groups, weight_axes

VARIABLE, FIXED, UNIFORM = 0, 1, 2
# Types the forks added that are a plain Convolution with group = channels.
DEPTHWISE_TYPES = ("DepthwiseConvolution", "ConvolutionDepthwise")
# BVLC Caffe 1.0's layer types (what loads in upstream Caffe).
BVLC_TYPES = frozenset("""AbsVal Accuracy ArgMax BNLL BatchNorm BatchReindex Bias Clip Concat ContrastiveLoss
Convolution Crop Data Deconvolution Dropout DummyData ELU Eltwise Embed EuclideanLoss Exp Filter Flatten HDF5Data
HDF5Output HingeLoss Im2col ImageData InfogainLoss InnerProduct Input LRN LSTM LSTMUnit Log MVN MemoryData
MultinomialLogisticLoss PReLU Parameter Pooling Power Python RNN ReLU Reduction Reshape SPP Scale Sigmoid
SigmoidCrossEntropyLoss Silence Slice Softmax SoftmaxWithLoss Split Swish TanH Threshold Tile WindowData""".split())


class SlimError(NetError):
    """Slimming cannot remove what was pruned without changing the net's outputs."""


# -- following values through the net ------------------------------------------------------
def _capture_forward(net, graph):
    """Forward the net layer by layer; a copy of each weight layer's bottom as it read it."""
    seen = {}
    for i, record in enumerate(graph.layers):
        if record.rule in ("weights", "depthwise"):
            seen[i] = net.bottom_vecs[i][0].data.copy()
        net.forward_from_to(i, i)
    return seen


def _conv_reads(weight, group):
    """(outputs, channels) bool: output o reads bottom channel c with a nonzero weight (any group)."""
    outputs, per_group = weight.shape[0], weight.shape[1]
    nonzero = np.abs(weight.reshape(outputs, per_group, -1)).sum(axis=2) != 0
    reads = np.zeros((outputs, per_group * group), bool)
    out_per = outputs // group
    for k in range(group):
        reads[k * out_per:(k + 1) * out_per, k * per_group:(k + 1) * per_group] = nonzero[k * out_per:(k + 1) * out_per]
    return reads


def weight_reads(layer, bottom):
    """(outputs, bottom channels) bool: which output channel reads which bottom channel (axis 1) with a
    nonzero effective weight W ⊙ T."""
    weight = mask_core.effective_params(layer)[0]
    if layer.type in INNER_PRODUCT_TYPES:
        if weight_axes(layer)[0] == 1:
            weight = weight.T
        channels = bottom.shape[1]
        return np.abs(weight.reshape(weight.shape[0], channels, -1)).sum(axis=2) != 0
    if layer.type == "Deconvolution":
        return (np.abs(weight.reshape(weight.shape[0], weight.shape[1], -1)).sum(axis=2) != 0).T
    return _conv_reads(weight, layer.group)


def _padded(layer):
    return any(p != 0 for p in getattr(layer, "pad", ()))


def _categories(net, graph):
    """Per weight layer index, the category of each bottom channel it reads; per layer, of each top."""
    current, reads_of, bottom_cats = {}, {}, {}
    for i, (layer, bottom, top, record) in enumerate(zip(net.layers, net.bottom_vecs, net.top_vecs, graph.layers)):
        cats = [current.get(id(b)) if b.num_axes >= 2 else None for b in bottom]
        rule, tops = record.rule, [None] * len(top)
        first = cats[0] if cats else None
        if rule in ("same", "elementwise", "params") and first is not None:
            tops = [first.copy() for _ in top]
        elif rule == "spatial":
            tops = [np.minimum(first, FIXED)]
        elif rule == "pooling":
            p = layer.layer_param.pooling_param
            keeps = p.pool == p.MAX or (p.pool == p.AVE and (p.global_pooling or not _padded(layer)))
            tops = [first.copy() if keeps else np.minimum(first, FIXED)]
        elif rule in ("tie", "scale2"):
            merged = np.minimum.reduce([c for c in cats if c is not None])
            tops = [merged.copy() for _ in top]
        elif rule == "move":
            if layer.type == "Concat":
                tops = [np.concatenate(cats)]
            elif layer.type == "Slice":
                bounds = np.cumsum([t.shape[1] for t in top])[:-1]
                tops = list(np.split(first, bounds))
            elif layer.type == "ShuffleChannel":
                g = layer.layer_param.shuffle_channel_param.group
                tops = [first.reshape(g, -1).T.ravel()]
            else:  # Flatten / Reshape: each channel's positions, or the same channels
                tops = [np.repeat(first, top[0].shape[1] // len(first))]
        elif rule in ("weights", "depthwise"):
            reads = reads_of[i] = weight_reads(layer, bottom[0])
            bottom_cats[i] = first
            # an output is as fixed as the least fixed input it reads; reading nothing it is its bias
            out = np.where(reads, first[None, :], UNIFORM).min(axis=1) if reads.size else \
                np.full(reads.shape[0], UNIFORM)
            if layer.type in INNER_PRODUCT_TYPES:
                out = np.where(out >= FIXED, UNIFORM, VARIABLE)
            elif layer.type == "Deconvolution" or _padded(layer):
                out = np.where(reads.any(axis=1), np.minimum(out, FIXED), out)
            tops = [out.astype(np.int8)]
        for j, blob in enumerate(top):
            if blob.num_axes < 2:
                continue
            value = tops[j] if tops[j] is not None else np.full(blob.shape[1], VARIABLE, np.int8)
            current[id(blob)] = value.astype(np.int8)
    return bottom_cats, reads_of


def _check_categories(net, seen, bottom_cats):
    """Values the categories call fixed / uniform are so in the forward pass (within float32 rounding)."""
    for i, x in seen.items():
        cats = bottom_cats[i]
        flat = x.reshape(x.shape[0], x.shape[1], -1).astype(np.float64)
        ref = flat[:1, :, :1]
        tol = 1e-5 * (1.0 + np.abs(ref[0, :, 0]))
        spread_samples = np.abs(flat - flat[:1]).max(axis=(0, 2))
        spread_all = np.abs(flat - ref).max(axis=(0, 2))
        bad = ((cats >= FIXED) & (spread_samples > tol)) | ((cats == UNIFORM) & (spread_all > tol))
        if bad.any():
            c = int(np.flatnonzero(bad)[0])
            raise NetError(f"internal: layer '{net.layer_names[i]}' input channel {c} was judged "
                           f"{'uniform' if cats[c] == UNIFORM else 'fixed'} but its values vary by "
                           f"{max(spread_samples[c], spread_all[c]):.3g}; please report this net")


# -- the plan ------------------------------------------------------------------------------
class SlimPlan:
    """What slimming removes (`removed[group index]`: bool per unit) and the bias folds per layer."""

    def __init__(self, net, graph, removed, folds, notes):
        self.net, self.graph, self.removed, self.folds, self.notes = net, graph, removed, folds, notes

    def keep_vectors(self):
        """{layer name: {role: bool per channel}} for every layer that loses something: "out" per output
        channel, "in" and "param" per channel of its (first) bottom."""
        pending = OrderedDict()
        for g in self.graph.groups:
            gone = self.removed[g.index]
            if gone.any():
                for m in g.members:
                    pending.setdefault(m.layer, {}).setdefault(m.role, []).append((m.positions, ~gone[m.units]))
        layers = self.net.layer_dict
        bottoms = dict(zip(self.net.layer_names, self.net.bottom_vecs))
        out = OrderedDict()
        for name, roles in pending.items():
            out[name] = {}
            for role, parts in roles.items():
                size = layers[name].num_output if role == "out" else bottoms[name][0].shape[1]
                keep = np.ones(size, bool)
                for positions, kept in parts:
                    keep[positions] &= kept
                out[name][role] = keep
        return out

    def removed_units(self):
        """{group name: (removed, size)} of the groups that lose units."""
        return OrderedDict((g.name, (int(self.removed[g.index].sum()), g.size)) for g in self.graph.groups
                           if self.removed[g.index].any())


def plan(net, keep_unremovable=False, graph=None):
    """A SlimPlan for a net whose inputs are filled (two or more samples check the fixed values best);
    SlimError when a pruned unit cannot go exactly and `keep_unremovable` is off."""
    graph = graph or channel_groups(net)
    seen = _capture_forward(net, graph)
    bottom_cats, reads_of = _categories(net, graph)
    _check_categories(net, seen, bottom_cats)
    layers = net.layer_dict
    index_of = {name: i for i, name in enumerate(net.layer_names)}
    removable, candidate, why = {}, {}, {}
    for g in graph.groups:
        ok = np.ones(g.size, bool)
        out_zero = np.ones(g.size, bool)
        in_zero = np.ones(g.size, bool)
        has_out, has_in = np.zeros(g.size, bool), np.zeros(g.size, bool)
        reasons = {}
        for m in g.members:
            if m.role == "param":
                continue
            i = index_of[m.layer]
            reads = reads_of[i]
            layer = layers[m.layer]
            if m.role == "out":
                zero = ~reads[m.positions].any(axis=1)
                np.logical_and.at(out_zero, m.units, zero)
                has_out[m.units] = True
                continue
            zero = ~reads[:, m.positions].any(axis=0)
            np.logical_and.at(in_zero, m.units, zero)
            has_in[m.units] = True
            if graph.layers[i].rule == "depthwise":
                continue  # it feeds only the unit it reads, which goes with it
            cats = bottom_cats[i][m.positions]
            x = seen[i]
            values = x[:, m.positions].reshape(x.shape[0], len(m.positions), -1)
            is_zero = ~np.abs(values).any(axis=(0, 2))
            if layer.type in INNER_PRODUCT_TYPES:
                fine = zero | (cats >= FIXED)
                need = "input-independent"
            elif layer.type == "Deconvolution":
                fine = zero | ((cats == UNIFORM) & is_zero)
                need = "zero (a Deconvolution spreads a constant unevenly)"
            elif _padded(layer):
                fine = zero | ((cats == UNIFORM) & is_zero)
                need = f"zero (it pads by {tuple(layer.pad)}: its border would read 0 where the unit is constant)"
            else:
                fine = zero | (cats == UNIFORM)
                need = "the same everywhere"
            for k in np.flatnonzero(~fine):
                u = int(m.units[k])
                ok[u] = False
                state = "varies with the input" if cats[k] == VARIABLE else \
                    ("is input-independent but not constant over positions" if cats[k] == FIXED else
                     f"is the constant {float(values[0, k, 0]):.6g}")
                reasons.setdefault(u, f"layer '{m.layer}' ({layer.type}) reads it (input channel {m.positions[k]}), "
                                      f"where it {state}; slimming needs it {need}")
        cand = (has_out & out_zero) | (has_in & in_zero)
        layer_blocks = [r for r in g.blocked if r not in g.boundary]
        if g.blocked:
            ok[:] = False
            for u in range(g.size):
                reasons.setdefault(u, "; ".join(layer_blocks or g.boundary))
        removable[g.index] = ok
        # the net's inputs and outputs keep their channels without a word; a layer's block is refused
        candidate[g.index] = cand if (layer_blocks or not g.blocked) else np.zeros(g.size, bool)
        why[g.index] = reasons
    refusals = []
    for g in graph.groups:
        stuck = candidate[g.index] & ~removable[g.index]
        for u in np.flatnonzero(stuck):
            refusals.append(f"group '{g.name}' unit {u} (producers {', '.join(g.producers) or '-'}): "
                            f"{why[g.index].get(int(u), 'cannot be removed')}")
    if refusals and not keep_unremovable:
        shown = "\n  ".join(refusals[:12]) + (f"\n  ... and {len(refusals) - 12} more" if len(refusals) > 12 else "")
        raise SlimError(f"{len(refusals)} pruned channel(s) cannot be removed without changing the outputs:\n  "
                        f"{shown}\nZero the consumers' input channels too (npcaffe.pruning.groups.set_channel_masks "
                        "does), or pass --keep_unremovable to keep these channels and slim the rest.")
    _keep_one_per_blob(graph, removable)
    folds = _folds(net, graph, removable, seen, reads_of)
    return SlimPlan(net, graph, removable, folds, refusals)


def _keep_one_per_blob(graph, removed):
    """Every blob keeps at least one channel (a Slice top, a group's own output): where all would go,
    the unit of its first channel stays (exact: a kept unit computes as before)."""
    for record in graph.layers:
        for nodes in record.tops:
            if nodes is None or not len(nodes):
                continue
            groups, units = graph.units_of(nodes)
            gone = np.array([removed[g][u] for g, u in zip(groups.tolist(), units.tolist())])
            if gone.all():
                removed[int(groups[0])][int(units[0])] = False


def _folds(net, graph, removed, seen, reads_of):
    """{layer name: float64 per output channel}: what the removed units contributed, for its bias."""
    folds = OrderedDict()
    layers = net.layer_dict
    index_of = {name: i for i, name in enumerate(net.layer_names)}
    for g in graph.groups:
        gone = removed[g.index]
        if not gone.any():
            continue
        for m in g.members_of("in"):
            i = index_of[m.layer]
            if graph.layers[i].rule == "depthwise":
                continue
            pick = gone[m.units]
            positions = m.positions[pick]
            reads = reads_of[i][:, positions]
            if not reads.any():
                continue
            layer = layers[m.layer]
            if layer.type == "Deconvolution":
                continue  # the plan lets it lose only units that are zero, which contribute nothing
            weight = mask_core.effective_params(layer)[0].astype(np.float64)
            x = seen[i][0].astype(np.float64)  # sample 0: the values do not depend on the input
            fold = folds.setdefault(m.layer, np.zeros(layer.num_output))
            if layer.type in INNER_PRODUCT_TYPES:
                if weight_axes(layer)[0] == 1:
                    weight = weight.T
                w = weight.reshape(weight.shape[0], x.shape[0], -1)[:, positions]
                fold += np.einsum("ocb,cb->o", w, x.reshape(x.shape[0], -1)[positions])
            else:  # a convolution reading uniform values c: c times the kernel's sum, per filter
                c = x.reshape(x.shape[0], -1)[positions, 0]
                per_group, group = weight.shape[1], layer.group
                out_per = weight.shape[0] // group
                sums = weight.reshape(weight.shape[0], per_group, -1).sum(axis=2)
                for k, channel in enumerate(positions):
                    gk, column = divmod(int(channel), per_group)
                    rows = slice(gk * out_per, (gk + 1) * out_per)
                    fold[rows] += c[k] * sums[rows, column]
    return folds


# -- rewriting -----------------------------------------------------------------------------
def _new_arrays(net, plan_, keeps):
    """{layer name: (list of new blob arrays, LayerParameter edits dict)} for the layers that change."""
    out = OrderedDict()
    bottoms = dict(zip(net.layer_names, net.bottom_vecs))
    tops = dict(zip(net.layer_names, net.top_vecs))
    index_of = {name: i for i, name in enumerate(net.layer_names)}
    for name, layer in net.layer_dict.items():
        keep = keeps.get(name, {})
        fold = plan_.folds.get(name)
        masked = mask_core.is_masked(layer)
        non_bvlc = layer.type not in BVLC_TYPES and layer.blobs
        rule = plan_.graph.layers[index_of[name]].rule
        if rule in ("weights", "depthwise"):
            if not keep and fold is None and not masked and not non_bvlc:
                continue
            out[name] = _weight_layer(layer, bottoms[name][0], keep, fold, rule)
        elif keep.get("param") is not None:
            k = keep["param"]
            arrays = [b.data.copy() for b in layer.blobs]
            if layer.type == "BatchNorm":
                arrays = [arrays[0][k], arrays[1][k], arrays[2]]
            else:  # Scale, Bias, PReLU: per-channel blobs along their first axis
                arrays = [a[k] for a in arrays]
            out[name] = (arrays, {})
    # Slice points and Reshape dims follow the channels kept in their bottoms.
    kept_positions = _kept_positions(net, plan_)
    for name, layer in net.layer_dict.items():
        if layer.type == "Slice" and plan_.graph.layers[index_of[name]].rule == "move":
            keep = kept_positions.get(id(bottoms[name][0]))
            if keep is not None and not keep.all():
                sizes = [t.shape[1] for t in tops[name]]
                bounds = np.cumsum(sizes)[:-1]
                points = [int(keep[:b].sum()) for b in bounds]
                if any(int(keep[a:b].sum()) == 0 for a, b in zip([0] + list(bounds), list(bounds) + [sum(sizes)])):
                    raise SlimError(f"layer '{name}' (Slice): a top would lose all its channels")
                out[name] = ([], {"slice_point": points})
        elif layer.type == "Reshape":
            keep = kept_positions.get(id(tops[name][0]))
            if keep is not None and not keep.all():
                out[name] = ([], {"reshape_channels": int(keep.sum())})
    return out


def _kept_positions(net, plan_):
    """{id(Blob): bool per position on axis 1} for the blobs that lose positions (their last version)."""
    out = {}
    graph = plan_.graph
    for record, top in zip(graph.layers, net.top_vecs):
        for nodes, blob in zip(record.tops, top):
            if nodes is None:
                continue
            groups, units = graph.units_of(nodes)
            kept = np.ones(len(nodes), bool)
            for g in np.unique(groups):
                pick = groups == g
                kept[pick] = ~plan_.removed[int(g)][units[pick]]
            out[id(blob)] = kept
    return out


def _weight_layer(layer, bottom, keep, fold, rule):
    weight, bias = mask_core.effective_params(layer)
    out_keep = keep.get("out")
    in_keep = keep.get("in")
    outputs = layer.num_output
    out_keep = np.ones(outputs, bool) if out_keep is None else out_keep
    in_keep = np.ones(bottom.shape[1], bool) if in_keep is None else in_keep
    edits = {}
    if layer.type in INNER_PRODUCT_TYPES:
        transposed = weight_axes(layer)[0] == 1
        w = weight.T if transposed else weight
        block = w.shape[1] // bottom.shape[1]
        w = w[out_keep][:, np.repeat(in_keep, block)]
        new_weight = np.ascontiguousarray(w.T if transposed else w)
    elif layer.type == "Deconvolution":
        new_weight = weight[in_keep][:, out_keep]
    elif rule == "depthwise":
        k = outputs // layer.group
        if not np.array_equal(out_keep, np.repeat(in_keep, k)):
            raise NetError(f"internal: depthwise layer '{layer.name}' keeps outputs that do not match its inputs")
        new_weight = weight[out_keep]
        edits["group"] = int(in_keep.sum())
    else:
        group = layer.group
        per_group = weight.shape[1]
        columns = in_keep.reshape(group, per_group)
        if not (columns == columns[:1]).all():
            raise NetError(f"internal: grouped layer '{layer.name}' keeps different inputs in different groups")
        per_out = out_keep.reshape(group, -1).sum(axis=1)
        if not (per_out == per_out[0]).all():
            raise NetError(f"internal: grouped layer '{layer.name}' keeps different numbers of filters per group")
        new_weight = weight[out_keep][:, columns[0]]
    new_bias = None
    if bias is not None or (fold is not None and np.any(fold[out_keep] != 0)):
        total = np.zeros(outputs) if bias is None else bias.astype(np.float64)
        if fold is not None:
            total = total + fold
        new_bias = total[out_keep].astype(np.float32)
        if bias is None:
            edits["bias_term"] = True
    edits["num_output"] = int(out_keep.sum())
    return [new_weight.astype(np.float32)] + ([] if new_bias is None else [new_bias]), edits


def _edit_layer_param(lp, layer, edits):
    """Apply a layer's edits to its LayerParameter (and make it a BVLC type)."""
    if mask_core.is_masked(layer) or layer.type in ("CConvolution", "CInnerProduct", "CPConvolution",
                                                    "CPInnerProduct"):
        layer.plain_layer_param(lp)
        lp.ClearField("blobs")
    if lp.type in DEPTHWISE_TYPES:
        lp.type = "Convolution"
        lp.convolution_param.num_output = layer.num_output
        lp.convolution_param.group = layer.group
    if "num_output" in edits:
        if lp.type in ("InnerProduct",):
            lp.inner_product_param.num_output = edits["num_output"]
        else:
            lp.convolution_param.num_output = edits["num_output"]
    if "group" in edits:
        lp.convolution_param.group = edits["group"]
    if edits.get("bias_term"):
        field = lp.inner_product_param if lp.type == "InnerProduct" else lp.convolution_param
        field.bias_term = True
    if "slice_point" in edits:
        del lp.slice_param.slice_point[:]
        lp.slice_param.slice_point.extend(edits["slice_point"])
    if "reshape_channels" in edits:
        p = lp.reshape_param
        if p.axis != 0 or p.num_axes != -1 or len(p.shape.dim) < 2:
            raise SlimError(f"layer '{lp.name}' (Reshape): its channel count changes to "
                            f"{edits['reshape_channels']}, but slimming rewrites only reshape_param "
                            "shapes given from axis 0 (axis: 0, num_axes: -1)")
        if p.shape.dim[1] not in (0, -1):
            p.shape.dim[1] = edits["reshape_channels"]


def slim_param(net, plan_, original):
    """(slim NetParameter: `original` with the edits, {layer name: new blob arrays})."""
    keeps = plan_.keep_vectors()
    changes = _new_arrays(net, plan_, keeps)
    out = caffe_pb2.NetParameter()
    out.CopyFrom(original)
    layers = net.layer_dict
    for lp in out.layer:
        layer = layers.get(lp.name)
        if layer is None:
            continue
        edits = changes.get(lp.name, ([], {}))[1]
        _edit_layer_param(lp, layer, edits)
    arrays = OrderedDict((name, blobs) for name, (blobs, _) in changes.items() if blobs)
    return out, arrays


# -- the whole job -------------------------------------------------------------------------
def _input_shapes(net):
    return {name: tuple(net.blobs[name].shape) for name in net.inputs}


def build_slim_net(out_param, net, arrays):
    """The slim Net in TEST phase (data layers as Inputs shaped like `net`'s), with the old weights of
    unchanged layers and the new arrays of changed ones."""
    from ..graph import DATA_LAYER_TYPES, filter_net, replace_data_layers
    from ..net import Net
    shapes = _input_shapes(net)
    state = caffe_pb2.NetParameter()
    state.CopyFrom(out_param)
    state.state.phase = net.phase
    data_tops = {top for lp in filter_net(state).layer if lp.type in DATA_LAYER_TYPES for top in lp.top}
    runnable = replace_data_layers(out_param, shapes) if data_tops else out_param
    slim_net = Net(runnable, net.phase)
    old = net.layer_dict
    for name, layer in slim_net.layer_dict.items():
        if not layer.blobs:
            continue
        new = arrays.get(name)
        if new is None:
            source = old[name]
            new = [a for a in mask_core.effective_params(source) if a is not None] if mask_core.is_masked(source) \
                else [b.data for b in source.blobs]
        if len(new) != len(layer.blobs):
            raise NetError(f"internal: layer '{name}': {len(new)} arrays for {len(layer.blobs)} blobs")
        for blob, array in zip(layer.blobs, new):
            if tuple(blob.shape) != tuple(np.shape(array)):
                raise NetError(f"internal: layer '{name}': new array {np.shape(array)} for blob {blob.shape}")
            blob.data[...] = array
    for name in slim_net.inputs:
        if name in net.blobs:
            slim_net.blobs[name].data[...] = net.blobs[name].data
    return slim_net


def output_difference(net, slim_net):
    """{output blob: largest |slim - masked| / largest |masked|} after a forward of both (same inputs)."""
    net.forward()
    slim_net.forward()
    out = OrderedDict()
    for name in net.outputs:
        a = net.blobs[name].data.astype(np.float64)
        b = slim_net.blobs[name].data.astype(np.float64)
        if a.shape != b.shape:
            raise NetError(f"internal: output '{name}' is {b.shape} in the slim net, {a.shape} before")
        out[name] = float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-30))
    return out


def predicted_counts(net, plan_):
    """{layer name: (parameters, multiply-adds per sample)} the slim net's Convolution / InnerProduct
    layers should have, from the plan's kept channels (kept filters x kept inputs per group x kernel,
    plus a bias per kept filter; multiply-adds = weights x output positions)."""
    from .report import _WEIGHT_TYPES
    keeps = plan_.keep_vectors()
    out = OrderedDict()
    index_of = {name: i for i, name in enumerate(net.layer_names)}
    for name, layer in net.layer_dict.items():
        i = index_of[name]
        if layer.type not in _WEIGHT_TYPES:  # what report.count_macs counts (not Deconvolution)
            continue
        keep = keeps.get(name, {})
        bottom, top = net.bottom_vecs[i][0], net.top_vecs[i][0]
        outputs = int(keep["out"].sum()) if "out" in keep else layer.num_output
        inputs = int(keep["in"].sum()) if "in" in keep else bottom.shape[1]
        weight = layer.blobs[0]
        if layer.type in INNER_PRODUCT_TYPES:
            per_output = inputs * (weight.count // (layer.num_output * bottom.shape[1]))
            positions = 1
        else:
            taps = int(np.prod(weight.shape[2:], dtype=np.int64))
            group = inputs if plan_.graph.layers[i].rule == "depthwise" else layer.group
            per_output = (inputs // group) * taps
            positions = top.count // (top.shape[0] * layer.num_output)
        weights = outputs * per_output
        fold = plan_.folds.get(name)
        has_bias = (len(layer.blobs) > 1 and getattr(layer, "bias_term", True)) or \
            (fold is not None and np.any(fold[keep.get("out", np.ones(layer.num_output, bool))] != 0))
        out[name] = (weights + (outputs if has_bias else 0), weights * positions)
    return out


def count_rows(net):
    """{layer name: (type, parameters, multiply-adds per sample)} of a net's Convolution / InnerProduct
    layers, dense (every entry, zero or not): npcaffe.pruning.report's count_net and count_macs."""
    from .report import count_macs, count_net
    params = {r.name: r.params for r in count_net(net)}
    return OrderedDict((r.name, (r.type, params[r.name], r.dense)) for r in count_macs(net))


def format_report(before, after, predicted, removed, differences, notes):
    width = max([len(n) for n in before] + [5])
    lines = [f"{'layer':<{width}}  {'params before':>14}  {'after':>10}  {'mult-adds before':>17}  {'after':>12}"]
    for name, (type_, params, macs) in before.items():
        _, params_after, macs_after = after.get(name, (type_, 0, 0))
        lines.append(f"{name:<{width}}  {params:>14}  {params_after:>10}  {macs:>17}  {macs_after:>12}")
    totals = [sum(v[k] for v in before.values()) for k in (1, 2)]
    totals_after = [sum(v[k] for v in after.values()) for k in (1, 2)]
    lines.append(f"{'total':<{width}}  {totals[0]:>14}  {totals_after[0]:>10}  {totals[1]:>17}  {totals_after[1]:>12}")
    lines.append(f"parameters {totals_after[0]} of {totals[0]} ({_share(totals_after[0], totals[0])}), "
                 f"multiply-adds per sample {totals_after[1]} of {totals[1]} ({_share(totals_after[1], totals[1])}) "
                 "in the Convolution / InnerProduct layers")
    matches = all(predicted.get(n, (None, None)) == (v[1], v[2]) for n, v in after.items())
    lines.append("the slim net's counts are the predicted ones (kept filters x kept inputs x kernel)" if matches
                 else "the slim net's counts differ from the prediction: " + ", ".join(
                     f"{n} {predicted.get(n)} vs {(v[1], v[2])}" for n, v in after.items()
                     if predicted.get(n) != (v[1], v[2])))
    if removed:
        lines.append("channels removed: " + ", ".join(f"{g} {r}/{s}" for g, (r, s) in removed.items()))
    else:
        lines.append("channels removed: none (no filter is all zero and no input channel unread)")
    lines.append("largest output difference, slim vs masked net, of the largest output: " +
                 ", ".join(f"{n} {d:.2e}" for n, d in differences.items()))
    lines.extend(notes)
    return "\n".join(lines)


def _share(a, b):
    return f"{100.0 * a / b:.2f}%" if b else "-"


def slim_net(net, original, keep_unremovable=False):
    """Slim a built, masked Net (inputs filled).  `original`: the NetParameter to rewrite (the model file
    as read, all phases).  Returns a dict: param (the slim NetParameter), net (the slim Net, weights set),
    plan, before / after / predicted counts, removed units, output differences, notes."""
    plan_ = plan(net, keep_unremovable)
    before = count_rows(net)
    out_param, arrays = slim_param(net, plan_, original)
    slim = build_slim_net(out_param, net, arrays)
    differences = output_difference(net, slim)
    after = count_rows(slim)
    predicted = predicted_counts(net, plan_)
    notes = []
    if plan_.notes:
        notes.append(f"kept {len(plan_.notes)} pruned channel(s) that cannot be removed exactly "
                     f"(--keep_unremovable), e.g. {plan_.notes[0]}")
    foreign = sorted({lp.type for lp in out_param.layer if lp.type not in BVLC_TYPES})
    if foreign:
        notes.append(f"layer types not in BVLC Caffe remain (not weight layers slimming can rewrite): "
                     f"{', '.join(foreign)}")
    return {"param": out_param, "net": slim, "plan": plan_, "before": before, "after": after,
            "predicted": predicted, "removed": plan_.removed_units(), "differences": differences, "notes": notes}


def load_weights(net, weights):
    """Copy weights by layer name, as Net.copy_from; a plain layer given a DNS 4-blob layer's arrays gets
    W ⊙ T and b ⊙ T_b (the mask core's stored_effective)."""
    from ..fileio.caffemodel import blob_to_array, read_caffemodel
    source = read_caffemodel(weights)
    plain = net.layer_dict
    for lp in source.layer:
        layer = plain.get(lp.name)
        if layer is None or mask_core.is_masked(layer) or len(lp.blobs) <= len(layer.blobs):
            continue
        arrays = [blob_to_array(b, f"{weights}: layer '{lp.name}'") for b in lp.blobs]
        effective = mask_core.stored_effective(lp.type, arrays)
        del lp.blobs[:]
        for array in effective:
            blob = lp.blobs.add()
            blob.shape.dim.extend(array.shape)
            blob.data.extend(np.asarray(array, np.float32).ravel().tolist())
    net.copy_from(source, pack=False)


def run(model, weights, out_model, out_weights, data_shapes=None, keep_unremovable=False, report=None, seed=0):
    """npcaffe slim: read, slim, check, write the prototxt, caffemodel and report (text and JSON).

    The net runs in its TEST phase on generated inputs (`data_shapes` for data layers that read a
    dataset); inputs of batch 1 run as batch 2, so the check that a folded value does not depend on
    the input compares two samples."""
    from ..fileio.caffemodel import write_caffemodel
    from ..fileio.prototxt import read_net, write_text
    from ..graph import DATA_LAYER_TYPES, filter_net, replace_data_layers
    from ..layer import TEST
    from ..net import Net
    from ..synthetic import fill_inputs, with_label_shapes
    original = read_net(model)
    test_param = caffe_pb2.NetParameter()
    test_param.CopyFrom(original)
    test_param.state.phase = TEST
    readers = [lp.name for lp in filter_net(test_param).layer if lp.type in DATA_LAYER_TYPES and lp.type != "Input"]
    if readers and not data_shapes:
        raise SlimError(f"{model}: data layer(s) {', '.join(readers)} read a dataset; give their tops' shapes "
                        "with --data_shape TOP=N,C,H,W (slimming runs the net on generated inputs)")
    runnable = replace_data_layers(original, with_label_shapes(original, data_shapes)) if data_shapes else original
    net = Net(runnable, TEST)
    shapes = _input_shapes(net)
    if shapes and all(shape and shape[0] == 1 for shape in shapes.values()):
        net = Net(replace_data_layers(runnable, {name: (2,) + shape[1:] for name, shape in shapes.items()}), TEST)
    if weights:
        load_weights(net, weights)
    fill_inputs(net, seed)
    result = slim_net(net, original, keep_unremovable)
    write_text(result["param"], out_model)
    write_caffemodel(_weights_param(result["net"]), out_weights)
    text = format_report(result["before"], result["after"], result["predicted"], result["removed"],
                         result["differences"], result["notes"])
    text += f"\nwrote {out_model} and {out_weights}"
    report = report or os.path.splitext(out_model)[0] + ".report.txt"
    with open(report, "w") as f:
        f.write(text + "\n")
    summary = {"model": model, "weights": weights, "out_model": out_model, "out_weights": out_weights,
               "layers": {n: {"type": t, "params_before": p, "macs_before": m,
                              "params_after": result["after"].get(n, (t, 0, 0))[1],
                              "macs_after": result["after"].get(n, (t, 0, 0))[2]}
                          for n, (t, p, m) in result["before"].items()},
               "removed": {g: {"removed": r, "units": s} for g, (r, s) in result["removed"].items()},
               "output_difference": result["differences"], "notes": result["notes"]}
    with open(os.path.splitext(report)[0] + ".json", "w") as f:
        json.dump(summary, f, indent=2)
    print(text)
    return result


def _weights_param(slim):
    """The slim net's weights as a NetParameter (the layers with parameters)."""
    out = caffe_pb2.NetParameter()
    out.name = slim.name
    for lp, layer in zip(slim.param.layer, slim.layers):
        if not layer.blobs:
            continue
        entry = out.layer.add()
        entry.name, entry.type = lp.name, lp.type
        for blob in layer.blobs:
            proto = entry.blobs.add()
            proto.shape.dim.extend(blob.shape)
            proto.data.extend(blob.flat_data.tolist())
    return out
