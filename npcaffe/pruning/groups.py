"""Channel groups: the channels of a net that must be pruned together.

Removing channel c of a blob is only correct when everything that makes or
reads that channel loses it too: the producing filter (weight row and bias
entry), BatchNorm / Scale / Bias / PReLU entries, the other inputs of an
Eltwise sum, the matching input channel of a depthwise convolution, the
H×W consecutive inputs of an InnerProduct behind a Flatten, and the input
columns of every consumer.  `channel_groups(net)` works this out once, from
a built Net's layer graph (its NetParameter, with the Splits the Net
inserted, and its blob shapes), and returns a `ChannelGraph`.

Vocabulary
- A *unit* is a set of channels (blob positions on axis 1) that can only go
  together.  Usually one channel of each blob on the way from a producer to
  its consumers; across an Eltwise the units of all inputs merge; behind a
  Flatten a unit is the channel's H×W positions.
- A *group* (`ChannelGroup`) is the units of one producer's top (a
  Convolution's or InnerProduct's output), merged with every producer tied
  to it (the branches of a residual sum).  Units are numbered 0..size-1 in
  the order of the group's first producer's channels; a keep vector of
  length `size` says which survive.  Criteria rank units of a group,
  `set_channel_masks` writes a keep vector into masks, `npcaffe slim`
  removes the units that every member lets go.
- A *member* (`Member`) says where a group's units live in one layer:
  role "out" (weight rows = output channels, and bias entries, of a
  Convolution / Deconvolution / InnerProduct), "in" (input channels: the
  weight columns that read them; an InnerProduct reading a (N, C, H, W) blob
  reads channel c as columns c·H·W … (c+1)·H·W − 1, `Member.block`),
  "param" (per-channel parameters: BatchNorm mean and variance, Scale γ and
  β, Bias, PReLU slopes).  `positions[k]` (an index along that axis)
  belongs to unit `units[k]`.  A layer reading channels of several groups
  (behind a Concat) is a member of each, with the positions it takes
  from each.

Rules per layer type (`CHANNEL_RULES`; a new type is one line there)
- Convolution (and DNS's CConvolution, DNS-CP's CPConvolution, the forks'
  DepthwiseConvolution and ConvolutionDepthwise): "in" on its bottom's channels and
  "out" on fresh channels.  Depthwise (group == channels: each group reads
  one input channel) ties input channel c with its outputs (a multiplier k
  gives k outputs per channel), so the unit is both "in" and "out" of the
  same layer and the top shares the bottom's units.  Other group > 1: the
  groups must stay equal in size, so channel j of every group is one unit
  (inputs and outputs alike; ResNeXt's width, not its cardinality).
- Deconvolution: group 1 as a convolution with weights (C_in, C_out, …);
  grouped deconvolution blocks.
- InnerProduct (and CInnerProduct, CPInnerProduct; axis 1): "in" on its bottom (block H×W for a 4-D bottom),
  "out" on fresh channels; `transpose` handled.
- BatchNorm, Scale / Bias with one bottom, PReLU: "param" members, top =
  bottom's units.  Scale / Bias with two bottoms (SE blocks' x ⊙ s): the
  second bottom's channels are tied to the first's (axis 0 with s shaped
  (N, C, …)); other axes block.
- Eltwise (and Axpy when registered): all bottoms and the top tied channel
  for channel.  Concat on axis 1: the top is the bottoms' channels one
  after the other (offsets); on another axis the bottoms are tied.  Slice
  on axis 1: each top a range of the bottom's channels; Split: every top
  is the bottom.
- Pass-through (top = bottom's channels), listed in `ELEMENTWISE` (ReLU,
  Sigmoid, TanH, Dropout, Power, AbsVal, BNLL, ELU, …) and Pooling
  (max, average, global), LRN within a channel.
- Flatten (axis 1) and a Reshape to (N, C·H·W[, 1, 1]): each channel's
  units repeated H·W times (the rows an InnerProduct reads together); a
  Reshape keeping (N, C) is pass-through.
- ShuffleChannel (group g, C = g·n): out[j·g + i] = in[i·n + j]; the
  inputs j of every group are tied so the shuffle still holds after
  pruning.
- Silence reads nothing.  Everything else — an unknown layer, LRN across
  channels, Softmax, losses, Accuracy, MVN, Reduction, … — *blocks* the
  groups of every channel it reads, and its tops are new blocked groups;
  so are the net's inputs (the data's channels are not ours to remove) and
  the net's outputs (their channel count is the net's answer), and so does
  a layer sharing its parameters with another (ParamSpec names).  A blocked
  group lists why in `ChannelGroup.blocked` (the net's inputs and outputs
  also in `boundary`) and is not prunable.

`ChannelGraph.layers` keeps, per layer, the node of every bottom and top
position and the rule that applied (`LayerChannels`; `units_of` maps nodes
to (group, unit)): npcaffe slim follows values through it.
"""
from collections import OrderedDict
from typing import NamedTuple

import numpy as np

from .. import masks as mask_core
from ..errors import NetError
from ..graph import DATA_LAYER_TYPES


class Member(NamedTuple):
    """Where a group's units live in one layer (see the module docstring)."""
    layer: str
    type: str
    role: str               # "out", "in" or "param"
    positions: np.ndarray   # indices along the member's channel axis
    units: np.ndarray       # the group's unit of each position
    block: int = 1          # "in" of an InnerProduct on a (N, C, H, W) bottom: H·W columns per channel


class BlobChannels(NamedTuple):
    """A group's units in one blob version: `layer` wrote blob `name` (in place or not)."""
    name: str
    layer: str
    positions: np.ndarray
    units: np.ndarray


class ChannelGroup:
    """One group of units (see the module docstring).  `blocked`: why it may not be pruned (empty: it may)."""

    def __init__(self, index, name):
        self.index = index
        self.name = name
        self.size = 0
        self.members = []
        self.blobs = []
        self.blocked = []    # why the group may not be pruned (layers, the net's inputs and outputs)
        self.boundary = []   # those of the reasons that are the net's inputs or outputs

    @property
    def prunable(self):
        return not self.blocked and self.size > 1

    def members_of(self, role):
        return [m for m in self.members if m.role == role]

    @property
    def producers(self):
        """Layer names whose output channels (weight rows) are the group's units."""
        return list(OrderedDict.fromkeys(m.layer for m in self.members if m.role == "out"))

    @property
    def consumers(self):
        """Layer names whose input channels (weight columns) read the group's units."""
        return list(OrderedDict.fromkeys(m.layer for m in self.members if m.role == "in"))

    def __repr__(self):
        state = "prunable" if self.prunable else ("blocked" if self.blocked else "one unit")
        return (f"<ChannelGroup '{self.name}': {self.size} units, {state}, producers {self.producers}, "
                f"consumers {self.consumers}>")


class LayerChannels(NamedTuple):
    """A layer's channel bookkeeping: node ids of every bottom / top position on axis 1 (None for blobs
    with fewer than 2 axes) and the rule that handled it."""
    rule: str
    bottoms: list
    tops: list


class ChannelGraph:
    """The groups of a net (`groups`, `group(name)`, `prunable()`), and per node its (group, unit)."""

    def __init__(self, net, groups, node_group, node_unit, layers):
        self.net = net
        self.groups = groups
        self.node_group = node_group
        self.node_unit = node_unit
        self.layers = layers           # LayerChannels per layer index

    def group(self, name):
        for g in self.groups:
            if g.name == name:
                return g
        raise NetError(f"net '{self.net.name}' has no channel group '{name}' "
                       f"(groups: {', '.join(g.name for g in self.groups)})")

    def prunable(self):
        return [g for g in self.groups if g.prunable]

    def units_of(self, nodes):
        """(group index array, unit index array) of node ids."""
        nodes = np.asarray(nodes, np.int64)
        return self.node_group[nodes], self.node_unit[nodes]

    def describe(self):
        """One line per group: name, units, producers, consumers, prunable or why blocked."""
        lines = []
        for g in self.groups:
            state = "prunable" if g.prunable else ("; ".join(g.blocked) if g.blocked else "a single unit")
            lines.append(f"{g.name}: {g.size} units; out {', '.join(g.producers) or '-'}; "
                         f"in {', '.join(g.consumers) or '-'}; {state}")
        return "\n".join(lines)


# -- the builder: union-find over channel positions --------------------------------------
class _Builder:
    def __init__(self, net):
        self.net = net
        self.parent = []       # union-find over nodes
        self.space = []        # node -> the space (producer top) it was made in
        self.space_parent = [] # union-find over spaces
        self.space_names = []
        self.blocks = []       # (nodes, reason)
        self.members = []      # (layer, type, role, positions, nodes, block)
        self.blob_versions = []  # (blob name, layer name, nodes)
        self.current = {}      # id(Blob) -> nodes of its current version

    # union-find
    def _find(self, parent, x):
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    def fresh(self, count, layer_name):
        space = len(self.space_parent)
        self.space_parent.append(space)
        self.space_names.append(layer_name)
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        self.space.extend([space] * count)
        return np.arange(start, start + count, dtype=np.int64)

    def tie(self, a, b):
        """Tie nodes a[k] and b[k] for every k (same length)."""
        if len(a) != len(b):
            raise NetError(f"internal: tying {len(a)} channels to {len(b)}")
        for x, y in zip(a.tolist(), b.tolist()):
            rx, ry = self._find(self.parent, x), self._find(self.parent, y)
            if rx != ry:
                self.parent[ry] = rx
            sx, sy = self._find(self.space_parent, self.space[x]), self._find(self.space_parent, self.space[y])
            if sx != sy:
                self.space_parent[sy] = sx

    def tie_all(self, nodes):
        nodes = np.asarray(nodes)
        if nodes.size > 1:
            self.tie(np.repeat(nodes[:1], nodes.size - 1), nodes[1:])

    def block(self, nodes, reason, boundary=False):
        if nodes is not None and len(nodes):
            self.blocks.append((nodes, reason, boundary))

    def member(self, layer, role, positions, nodes, block=1):
        self.members.append((layer.name, layer.type, role, np.asarray(positions, np.int64), nodes, block))


def _channels(blob):
    return blob.shape[1] if blob.num_axes >= 2 else None


class _Context:
    """What a rule sees: the builder, the layer, its bottom / top blobs and their current nodes."""

    def __init__(self, builder, layer, bottom, top):
        self.b, self.layer, self.bottom, self.top = builder, layer, bottom, top
        self.bottom_nodes = [builder.current.get(id(blob)) if blob.num_axes >= 2 else None for blob in bottom]
        self.top_nodes = [None] * len(top)

    @property
    def param(self):
        return self.layer.layer_param

    def where(self):
        return f"layer '{self.layer.name}' ({self.layer.type})"

    def set_top(self, j, nodes):
        self.top_nodes[j] = nodes

    def fresh_top(self, j):
        n = _channels(self.top[j])
        self.top_nodes[j] = None if n is None else self.b.fresh(n, self.layer.name)
        return self.top_nodes[j]

    def block(self, reason):
        """The layer is beyond the rules: every bottom channel's group and its new tops are blocked."""
        for name, nodes in zip(self.param.bottom, self.bottom_nodes):
            self.b.block(nodes, f"{self.where()} reads blob '{name}' {reason}")
        for j, name in enumerate(self.param.top):
            nodes = self.fresh_top(j)
            self.b.block(nodes, f"blob '{name}' is made by {self.where()}, which slimming cannot resize")
        return "block"


# -- rules ---------------------------------------------------------------------------------
def _conv(ctx):
    layer, p = ctx.layer, ctx.layer.layer_param.convolution_param
    bottom = ctx.bottom[0]
    if bottom.num_axes < 2 or (p.axis % bottom.num_axes) != 1:
        return ctx.block("with a channel axis other than 1")
    # the layer's own sizes: ConvolutionDepthwise takes them from its bottom, not from convolution_param
    channels, outputs, group = bottom.shape[1], layer.num_output, layer.group
    nodes = ctx.bottom_nodes[0]
    positions = np.arange(channels)
    if group > 1 and group == channels:  # depthwise: output o reads input channel o // k
        k = outputs // channels
        top = np.repeat(nodes, k)
        ctx.b.member(layer, "in", positions, nodes)
        ctx.b.member(layer, "out", np.arange(outputs), top)
        ctx.set_top(0, top)
        return "depthwise"
    top = ctx.fresh_top(0)
    if group > 1:
        in_per, out_per = channels // group, outputs // group
        for j in range(in_per):
            ctx.b.tie_all(nodes[j::in_per])
        for j in range(out_per):
            ctx.b.tie_all(top[j::out_per])
    ctx.b.member(layer, "in", positions, nodes)
    ctx.b.member(layer, "out", np.arange(outputs), top)
    return "weights"


def _deconv(ctx):
    p = ctx.param.convolution_param
    if p.group > 1:
        return ctx.block("through a grouped Deconvolution (not supported)")
    if (p.axis % max(1, ctx.bottom[0].num_axes)) != 1:
        return ctx.block("with a channel axis other than 1")
    ctx.b.member(ctx.layer, "in", np.arange(_channels(ctx.bottom[0])), ctx.bottom_nodes[0])
    ctx.b.member(ctx.layer, "out", np.arange(ctx.layer.num_output), ctx.fresh_top(0))
    return "weights"


def _inner_product(ctx):
    bottom = ctx.bottom[0]
    p = ctx.param.inner_product_param
    if bottom.num_axes < 2 or (p.axis % bottom.num_axes) != 1:
        return ctx.block("with an axis other than 1")
    block = int(np.prod(bottom.shape[2:], dtype=np.int64)) if bottom.num_axes > 2 else 1
    ctx.b.member(ctx.layer, "in", np.arange(bottom.shape[1]), ctx.bottom_nodes[0], block)
    ctx.b.member(ctx.layer, "out", np.arange(p.num_output), ctx.fresh_top(0))
    return "weights"


def _per_channel(ctx):
    """BatchNorm, Scale / Bias (one or two bottoms), PReLU: per-channel parameters."""
    layer, nodes = ctx.layer, ctx.bottom_nodes[0]
    if nodes is None:
        return ctx.block("without a channel axis")
    ctx.set_top(0, nodes)
    if layer.type == "PReLU" and ctx.param.prelu_param.channel_shared:
        return "elementwise"
    if layer.type in ("Scale", "Bias"):
        p = ctx.param.scale_param if layer.type == "Scale" else ctx.param.bias_param
        axis = p.axis % ctx.bottom[0].num_axes
        if len(ctx.bottom) == 2:
            other = ctx.bottom[1]
            # s covers bottom axes [axis, axis + s.num_axes); the tie needs s's axis 1 on the channel axis.
            if axis != 0 or other.num_axes < 2:
                return ctx.block(f"with a second bottom on axis {axis} (the channel tie needs axis 0 and "
                                 "a (N, C, ...) second bottom)")
            if layer.blobs:  # Caffe's bias of a 2-bottom Scale is shaped like s: (N, C, ...), per sample
                return ctx.block("with two bottoms and a bias term")
            ctx.b.tie(nodes, ctx.bottom_nodes[1])
            return "scale2"
        if not layer.blobs or layer.blobs[0].num_axes == 0:
            return "elementwise"  # a scalar: nothing per channel
        if axis != 1:
            return ctx.block(f"with per-position parameters from axis {axis}")
    if layer.blobs and layer.blobs[0].num_axes and layer.blobs[0].shape[0] != len(nodes):
        return ctx.block(f"with parameters shaped {layer.blobs[0].shape} for {len(nodes)} channels")
    ctx.b.member(layer, "param", np.arange(len(nodes)), nodes)
    return "params"


def _tie_bottoms(ctx):
    """Eltwise, Axpy, Concat / Slice off the channel axis: every bottom and top the same channels."""
    nodes = [n for n in ctx.bottom_nodes if n is not None]
    if not nodes:
        return ctx.block("without a channel axis")
    for other in nodes[1:]:
        if len(other) != len(nodes[0]):
            return ctx.block("with different channel counts")
        ctx.b.tie(nodes[0], other)
    for j in range(len(ctx.top)):
        ctx.set_top(j, nodes[0])
    return "tie"


def _concat(ctx):
    axis = ctx.param.concat_param.axis if ctx.param.concat_param.HasField("axis") or \
        not ctx.param.concat_param.HasField("concat_dim") else ctx.param.concat_param.concat_dim
    if axis % ctx.bottom[0].num_axes != 1:
        return _tie_bottoms(ctx)
    ctx.set_top(0, np.concatenate(ctx.bottom_nodes))
    return "move"


def _slice(ctx):
    p = ctx.param.slice_param
    axis = p.axis if p.HasField("axis") or not p.HasField("slice_dim") else p.slice_dim
    if axis % ctx.bottom[0].num_axes != 1:
        return _tie_bottoms(ctx)
    nodes, start = ctx.bottom_nodes[0], 0
    for j, blob in enumerate(ctx.top):
        ctx.set_top(j, nodes[start:start + blob.shape[1]])
        start += blob.shape[1]
    return "move"


def _same(ctx):
    """Split and pass-through layers: every top has the first bottom's channels."""
    if ctx.bottom_nodes[0] is None:
        for j in range(len(ctx.top)):
            ctx.fresh_top(j)
        return "same"
    for j in range(len(ctx.top)):
        ctx.set_top(j, ctx.bottom_nodes[0])
    return "same"


def _elementwise(ctx):
    _same(ctx)
    return "elementwise"


def _pooling(ctx):
    _same(ctx)
    return "pooling"


def _lrn(ctx):
    if ctx.param.lrn_param.norm_region == ctx.param.lrn_param.ACROSS_CHANNELS:
        return ctx.block("across channels (LRN ACROSS_CHANNELS mixes neighbouring channels)")
    _same(ctx)
    return "spatial"


def _flatten(ctx):
    """Flatten and Reshape: a top (N, C·H·W[, 1, ...]) repeats channel c's nodes H·W times; a top keeping
    (N, C) keeps them; any other reshape mixes channels with positions and blocks."""
    bottom, top = ctx.bottom[0], ctx.top[0]
    if ctx.bottom_nodes[0] is None or top.num_axes < 2 or top.shape[0] != bottom.shape[0] \
            or top.shape[1] != int(np.prod(bottom.shape[1:], dtype=np.int64)) or any(d != 1 for d in top.shape[2:]):
        if ctx.bottom_nodes[0] is not None and tuple(top.shape[:2]) == tuple(bottom.shape[:2]):
            ctx.set_top(0, ctx.bottom_nodes[0])  # only the spatial axes change
            return "move"
        return ctx.block(f"reshaping {bottom.shape} to {top.shape} (only (N, C, ...) -> (N, C*H*W) or "
                         "spatial-only reshapes keep channels apart)")
    ctx.set_top(0, np.repeat(ctx.bottom_nodes[0], int(np.prod(bottom.shape[2:], dtype=np.int64))))
    return "move"


def _shuffle_channel(ctx):
    field = "shuffle_channel_param"
    known = field in ctx.param.DESCRIPTOR.fields_by_name
    group = getattr(ctx.param, field).group if known else 0
    nodes = ctx.bottom_nodes[0]
    if not known or nodes is None or group < 1 or len(nodes) % group:
        return ctx.block("with no shuffle_channel_param group that divides its channels")
    per = len(nodes) // group
    for j in range(per):
        ctx.b.tie_all(nodes[j::per])
    # out[j*g + i] = in[i*per + j]
    ctx.set_top(0, nodes.reshape(group, per).T.ravel())
    return "move"


def _softmax(ctx):
    axis = ctx.param.softmax_param.axis % max(1, ctx.bottom[0].num_axes)
    if axis == 1:
        return ctx.block("across channels (Softmax normalises over them)")
    return ctx.block(f"along axis {axis} (Softmax normalises over positions; a removed constant channel "
                     "would not stay constant)")


def _silence(ctx):
    return "silence"


def _source(ctx):
    for j, name in enumerate(ctx.param.top):
        nodes = ctx.fresh_top(j)
        ctx.b.block(nodes, f"blob '{name}' is a net input (layer '{ctx.layer.name}'); its channels are the data's",
                    boundary=True)
    return "source"


ELEMENTWISE = ("ReLU", "Sigmoid", "TanH", "Dropout", "Power", "AbsVal", "BNLL", "ELU", "Exp", "Log",
               "Threshold", "Clip", "Swish")
CONVOLUTION_TYPES = ("Convolution", "CConvolution", "CPConvolution", "DepthwiseConvolution", "ConvolutionDepthwise")
INNER_PRODUCT_TYPES = ("InnerProduct", "CInnerProduct", "CPInnerProduct")
CHANNEL_RULES = {
    **{t: _conv for t in CONVOLUTION_TYPES},
    "Deconvolution": _deconv,
    **{t: _inner_product for t in INNER_PRODUCT_TYPES},
    "BatchNorm": _per_channel, "Scale": _per_channel, "Bias": _per_channel, "PReLU": _per_channel,
    "Eltwise": _tie_bottoms, "Axpy": _tie_bottoms,
    "Concat": _concat, "Slice": _slice, "Split": _same,
    **{t: _elementwise for t in ELEMENTWISE},
    "Pooling": _pooling, "LRN": _lrn,
    "Flatten": _flatten, "Reshape": _flatten,
    "ShuffleChannel": _shuffle_channel,
    "Softmax": _softmax,
    "Silence": _silence,
    **{t: _source for t in DATA_LAYER_TYPES},
}


# -- building the graph ------------------------------------------------------------------
def _sharing(net):
    """{layer index: name of a layer it shares parameters with} (ParamSpec names)."""
    out = {}
    for (layer_id, _), owner in zip(net.param_layer_indices, net.param_owners):
        if owner != -1:
            owner_layer = net.param_layer_indices[owner][0]
            out.setdefault(layer_id, net.layer_names[owner_layer])
            out.setdefault(owner_layer, net.layer_names[layer_id])
    return out


def channel_groups(net):
    """The ChannelGraph of a built Net (any phase; the groups depend on the layer graph and shapes)."""
    b = _Builder(net)
    records = []
    shared = _sharing(net)
    for i, (layer, bottom, top) in enumerate(zip(net.layers, net.bottom_vecs, net.top_vecs)):
        ctx = _Context(b, layer, bottom, top)
        rule = CHANNEL_RULES.get(layer.type)
        if rule is None:
            kind = ctx.block("and is not a layer type slimming knows (npcaffe.pruning.groups.CHANNEL_RULES)")
        elif layer.type not in DATA_LAYER_TYPES and bottom and ctx.bottom_nodes[0] is None and rule is not _silence:
            kind = ctx.block("without a channel axis") if any(t.num_axes >= 2 for t in top) else "none"
        else:
            kind = rule(ctx)
        if i in shared:  # removing channels from one of two layers sharing parameters breaks the sharing
            reason = f"layer '{layer.name}' ({layer.type}) shares parameters with layer '{shared[i]}'"
            for nodes in ctx.bottom_nodes + ctx.top_nodes:
                b.block(nodes, reason)
        for j, blob in enumerate(top):
            if ctx.top_nodes[j] is None and blob.num_axes >= 2:
                b.block(ctx.fresh_top(j), f"blob '{layer.layer_param.top[j]}' is made by layer '{layer.name}' "
                                          f"({layer.type}) from no channels slimming follows")
        for j, (blob, nodes) in enumerate(zip(top, ctx.top_nodes)):
            if nodes is not None:
                if len(nodes) != blob.shape[1]:
                    raise NetError(f"internal: layer '{layer.name}' top {j}: {len(nodes)} channel nodes for "
                                   f"shape {blob.shape}")
                b.current[id(blob)] = nodes
                b.blob_versions.append((layer.layer_param.top[j], layer.name, nodes))
        records.append(LayerChannels(kind, ctx.bottom_nodes, ctx.top_nodes))
    for name in net.outputs:
        nodes = b.current.get(id(net.blobs[name]))
        b.block(nodes, f"blob '{name}' is an output of the net", boundary=True)
    return _resolve(net, b, records)


def _resolve(net, b, records):
    count = len(b.parent)
    roots = np.fromiter((b._find(b.parent, x) for x in range(count)), np.int64, count)
    space_roots = np.fromiter((b._find(b.space_parent, b.space[x]) for x in range(count)), np.int64, count)
    node_group = np.full(count, -1, np.int64)
    node_unit = np.full(count, -1, np.int64)
    groups, group_of_space, unit_of_root = [], {}, {}
    for x in range(count):  # nodes in creation order: a group's first space numbers its units
        space = space_roots[x]
        g = group_of_space.get(space)
        if g is None:
            g = group_of_space[space] = len(groups)
            groups.append(ChannelGroup(g, b.space_names[b.space[x]]))
        root = roots[x]
        if root not in unit_of_root:
            unit_of_root[root] = groups[g].size
            groups[g].size += 1
        node_group[x], node_unit[x] = g, unit_of_root[root]
    # a unique name per group: the first producer's layer name, then name#2, ...
    seen = {}
    for g in groups:
        seen[g.name] = seen.get(g.name, 0) + 1
        if seen[g.name] > 1:
            g.name = f"{g.name}#{seen[g.name]}"
    for nodes, reason, boundary in b.blocks:
        for g in np.unique(node_group[nodes]).tolist():
            if reason not in groups[g].blocked:
                groups[g].blocked.append(reason)
                if boundary:
                    groups[g].boundary.append(reason)
    for layer, type_, role, positions, nodes, block in b.members:
        owner = node_group[nodes]
        for g in np.unique(owner).tolist():
            pick = owner == g
            groups[g].members.append(Member(layer, type_, role, positions[pick], node_unit[nodes][pick], block))
    for name, layer, nodes in b.blob_versions:
        owner = node_group[nodes]
        for g in np.unique(owner).tolist():
            pick = owner == g
            groups[g].blobs.append(BlobChannels(name, layer, np.flatnonzero(pick), node_unit[nodes][pick]))
    return ChannelGraph(net, groups, node_group, node_unit, records)


# -- channel masks through the mask core ---------------------------------------------------
def _keep_vector(group, keep):
    """A bool vector over the group's units from a bool / 0-1 float vector or integer indices."""
    keep = np.asarray(keep)
    if keep.dtype == bool or np.issubdtype(keep.dtype, np.floating):
        if keep.shape != (group.size,) or not np.isin(keep, (0, 1)).all():
            raise NetError(f"channel group '{group.name}' has {group.size} units; a keep vector must be "
                           f"{group.size} values of 0/1 (got shape {keep.shape})")
        return keep.astype(bool)
    vector = np.zeros(group.size, bool)
    if keep.size and (keep.min() < 0 or keep.max() >= group.size):
        raise NetError(f"channel group '{group.name}' has {group.size} units; keep indices "
                       f"{keep.ravel().tolist()} are out of range")
    vector[keep.astype(np.int64).ravel()] = True
    return vector


def weight_axes(layer):
    """(output axis, input axis) of a weight layer's weight blob: Convolution (O, I/g, ...),
    Deconvolution (I, O/g, ...), InnerProduct (O, K) or with transpose (K, O)."""
    if layer.type == "Deconvolution":
        return 1, 0
    if layer.type in INNER_PRODUCT_TYPES and layer.layer_param.inner_product_param.transpose:
        return 1, 0
    return 0, 1


def row_col_keep(layer, out_keep, in_keep, block=1):
    """A 0/1 array shaped like the layer's weight: 1 where output channel and input channel are both
    kept.  out_keep: per output channel; in_keep: per bottom channel (an InnerProduct reading a 4-D
    bottom repeats it `block` times; a grouped convolution maps channel c of group k to column
    c − k·C/g of group k's filters)."""
    weight = layer.blobs[0]
    out_axis, in_axis = weight_axes(layer)
    outputs, columns = weight.shape[out_axis], weight.shape[in_axis]
    rows = np.asarray(out_keep, bool)
    if layer.type in INNER_PRODUCT_TYPES:
        cols = np.repeat(np.asarray(in_keep, bool), block)
        grid = rows[:, None] & cols[None, :]
    else:
        group = layer.group
        in_keep = np.asarray(in_keep, bool).reshape(group, columns)
        out_group = np.arange(outputs) // (outputs // group)
        grid = rows[:, None] & in_keep[out_group]
    if out_axis == 1:
        grid = grid.T
    shape = [1] * weight.num_axes
    shape[out_axis], shape[in_axis] = weight.shape[out_axis], weight.shape[in_axis]
    return np.broadcast_to(grid.reshape(shape), weight.shape)


def set_channel_masks(net, group, keep):
    """Mask a group's pruned units on every Convolution / InnerProduct member: weight rows and bias
    entries of producers, weight columns of consumers.

    `keep`: a bool vector of the group's `size`, or the indices of the units to keep.  Masks go
    through the mask core (attached fixed masks on plain layers, the mask blobs of DNS layers) and
    combine with the other groups' channel masks on the same layer and with whatever mask the layer
    had before its first channel mask (kept as its base): calling again for a group replaces that
    group's part of the masks only (fixed masks zero the weights they prune, and those stay zero).  BatchNorm / Scale / Bias / PReLU members keep their values (a pruned unit's
    constant output is folded away by npcaffe slim).  A blocked group is refused."""
    from ..layerlib.dns import is_dns_layer
    if isinstance(group, str):
        group = channel_groups(net).group(group)
    if group.blocked:
        raise NetError(f"channel group '{group.name}' is not prunable: {'; '.join(group.blocked)}")
    vector = _keep_vector(group, keep)
    by_name = net.layer_dict
    touched = OrderedDict()
    for m in group.members:
        if m.role == "param":
            continue
        layer = by_name[m.layer]
        if layer.type not in mask_core.MASKABLE_TYPES and not is_dns_layer(layer):
            if vector[m.units].all():
                continue
            raise NetError(f"layer '{m.layer}' ({m.type}) of channel group '{group.name}' cannot carry masks "
                           f"(only {', '.join(mask_core.MASKABLE_TYPES)} and DNS layers do)")
        state = _channel_state(layer)
        if m.role == "out":
            state["out"][m.positions] = vector[m.units]
        else:
            if state["in"] is None:
                columns = layer.blobs[0].shape[weight_axes(layer)[1]]
                state["in"] = np.ones(columns // m.block, bool)
                state["block"] = m.block
            state["in"][m.positions] = vector[m.units]
        touched[m.layer] = layer
    for layer in touched.values():
        _write_channel_masks(layer, is_dns_layer(layer))


def _channel_state(layer):
    """The per-layer record of channel masks: output and input channel keep vectors and the
    layer's own mask from before (its base)."""
    state = layer.__dict__.get("channel_keep")
    if state is None:
        out_axis, in_axis = weight_axes(layer)
        weight = layer.blobs[0]
        channels = None  # an InnerProduct's bottom channels: known from its first "in" member's block
        if layer.type not in INNER_PRODUCT_TYPES:
            channels = weight.shape[in_axis] * layer.group
        masks = mask_core.mask_blobs(layer)
        base = (None, None) if masks is None else (masks[0].data.copy(),
                                                   None if masks[1] is None else masks[1].data.copy())
        state = layer.channel_keep = {"out": np.ones(weight.shape[out_axis], bool), "block": 1, "base": base,
                                      "in": None if channels is None else np.ones(channels, bool)}
    return state


def _write_channel_masks(layer, dns):
    state = layer.channel_keep
    in_keep = state["in"]
    if in_keep is None:
        in_keep = np.ones(layer.blobs[0].shape[weight_axes(layer)[1]], bool)
    grid = row_col_keep(layer, state["out"], in_keep, state["block"]).astype(np.float32)
    base_w, base_b = state["base"]
    weight_mask = grid if base_w is None else grid * base_w
    has_bias = len(layer.blobs) > 1 and getattr(layer, "bias_term", True)
    bias_mask = state["out"].astype(np.float32) if has_bias else None
    if bias_mask is not None and base_b is not None:
        bias_mask = bias_mask * base_b
    if dns:
        weight_blob, bias_blob = mask_core.mask_blobs(layer)
        weight_blob.data[...] = weight_mask
        if bias_blob is not None and bias_mask is not None:
            bias_blob.data[...] = bias_mask
    else:
        mask_core.attach_masks(layer, weight_mask, bias_mask)
