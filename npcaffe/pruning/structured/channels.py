"""Channel groups for structured pruning: which channels a scored layer stands for, and masks.

Selection works on the groups of npcaffe.pruning.groups (channels that must
go together across the whole graph: Eltwise, Concat offsets, BatchNorm /
Scale, grouped convolutions, Flatten into an InnerProduct, ...).  A scored
layer stands for one group (`scored_groups`):

- FILTERS / NEURONS: the group whose units are the layer's output channels
  (its "out" member); each channel's score goes to its unit, and the units
  of a group with several producers (a residual sum) are ranked by the
  scores of the one named.
- INPUT_CHANNELS: the group of the channels the layer reads (its "in"
  member); the layer must read one group's units one for one, in order.

`channel_masks(net, keeps, groups)` writes {scored layer: kept units} into
the net through groups.set_channel_masks (producers' rows and bias entries,
consumers' columns, through the mask core) and returns the masks of every
member ({layer: (weight mask, bias mask or None)}), which
npcaffe.pruning.select.set_masks puts on another copy of the net (the
schedule's fresh solver).

`producer_group` / `reading_group` follow the simple producer → consumer
chain only (through element-wise and pooling layers and Flatten to
Convolution / InnerProduct readers); NISP propagates its importance along
it.
"""
from collections import OrderedDict
from typing import NamedTuple

import numpy as np

from ... import masks as mask_core
from ...errors import NetError
from .. import groups as graph_groups
from . import INPUT_CHANNELS

# Layers that keep each channel apart: a removed channel stays removed through them.
PASS_THROUGH = ("ReLU", "Dropout", "Pooling", "Split", "Sigmoid", "TanH", "AbsVal", "ELU", "Power", "Flatten")
WEIGHT_TYPES = ("Convolution", "InnerProduct")


class Consumer(NamedTuple):
    """A layer reading the group's channels: `positions` inputs per channel (an InnerProduct reading a
    C x H x W blob reads H x W per channel; a Convolution 1, its weight's axis 1)."""
    name: str
    positions: int


class ChannelGroup(NamedTuple):
    """The output channels of `producer` (its weight rows and bias entries) and their readers."""
    name: str
    channels: int
    producers: tuple
    consumers: tuple


def _readers(net):
    """{blob name: [(layer index, layer)]} of the layers reading each blob (in-place layers too)."""
    out = {}
    for i, (name, layer) in enumerate(zip(net.layer_names, net.layers)):
        for blob in net.bottom_names[name]:
            out.setdefault(blob, []).append((i, layer))
    return out


def _simple_only(layer, reason):
    return NetError(f"layer '{layer.name}' ({layer.type}) {reason}; the simple producer -> consumer channel "
                    "grouping handles Convolution / InnerProduct readers through "
                    f"{', '.join(PASS_THROUGH)} only (npcaffe.pruning.groups handles the general graph)")


def producer_group(net, producer):
    """The ChannelGroup of layer `producer`'s output channels (see the module docstring)."""
    layer = net.layer_dict.get(producer)
    if layer is None:
        raise NetError(f"net '{net.name}' has no layer '{producer}'")
    if layer.type not in WEIGHT_TYPES:
        raise NetError(f"layer '{producer}' ({layer.type}): only Convolution / InnerProduct filters are pruned")
    if layer.type == "InnerProduct" and getattr(layer, "transpose", False):
        raise _simple_only(layer, "is transposed")
    readers = _readers(net)
    channels = layer.num_output
    start = net.layer_names.index(producer)
    consumers, pending, seen = [], [(net.top_names[producer][0], start)], set()
    while pending:
        blob, after = pending.pop()
        for index, reader in readers.get(blob, []):
            if index <= after or (blob, index) in seen:
                continue  # an earlier reader, or an in-place layer already followed
            seen.add((blob, index))
            if reader.type in WEIGHT_TYPES:
                consumers.append((index, _consumer(net, reader, blob, channels)))
            elif reader.type in PASS_THROUGH:
                for top in net.top_names[reader.name]:
                    pending.append((top, index))
            elif reader.type.endswith("Loss") or reader.type in ("Accuracy", "Softmax", "ArgMax"):
                raise NetError(f"layer '{producer}': its outputs reach '{reader.name}' ({reader.type}), so they "
                               "are the net's outputs (classes), which structured pruning does not remove")
            else:
                raise _simple_only(reader, f"reads the channels of '{producer}'")
    if not consumers:
        raise NetError(f"layer '{producer}': no Convolution / InnerProduct reads its outputs; pruning its "
                       "channels would change the net's outputs (a classifier's outputs are not pruned)")
    return ChannelGroup(producer, channels, (producer,), tuple(c for _, c in sorted(consumers)))


def reading_group(net, consumer):
    """The ChannelGroup of the channels layer `consumer` reads (its bottom's producer's group)."""
    layer = net.layer_dict.get(consumer)
    if layer is None:
        raise NetError(f"net '{net.name}' has no layer '{consumer}'")
    index = net.layer_names.index(consumer)
    blob = net.bottom_names[consumer][0]
    while True:
        writers = [i for i in range(index) if blob in net.top_names[net.layer_names[i]]]
        if not writers:
            raise NetError(f"layer '{consumer}' reads blob '{blob}', which no layer before it writes")
        index = writers[-1]
        writer = net.layers[index]
        if writer.type in WEIGHT_TYPES:
            group = producer_group(net, writer.name)
            if consumer not in [c.name for c in group.consumers]:
                raise NetError(f"layer '{consumer}' is not among the readers of '{writer.name}'")
            return group
        if not net.bottom_names[writer.name]:
            raise NetError(f"layer '{consumer}' reads the net's input (blob '{blob}' of '{writer.name}' "
                           f"({writer.type})): no filters produce those channels, so none can be pruned with them")
        if writer.type not in PASS_THROUGH:
            raise _simple_only(writer, f"writes the channels '{consumer}' reads (its input channels have no "
                               "Convolution / InnerProduct producer to prune with them)")
        blob = net.bottom_names[writer.name][0]


def _consumer(net, reader, blob, channels):
    shape = net.blobs[blob].shape
    if reader.type == "Convolution":
        if reader.group != 1 or getattr(reader, "channel_axis", 1) != 1:
            raise _simple_only(reader, "is a grouped convolution (or has its channels off axis 1)")
        if shape[1] != channels:
            raise _simple_only(reader, f"reads blob '{blob}' of {shape[1]} channels, not {channels}")
        return Consumer(reader.name, 1)
    if getattr(reader, "transpose", False) or getattr(reader, "axis", 1) != 1:
        raise _simple_only(reader, "is transposed or has axis != 1")
    inputs = reader.blobs[0].shape[1]
    if inputs % channels:
        raise _simple_only(reader, f"reads {inputs} inputs from blob '{blob}', not a multiple of its {channels} "
                           "channels")
    return Consumer(reader.name, inputs // channels)


class ScoredGroup(NamedTuple):
    """The group a scored layer stands for: `channels` units; `positions` (the layer's channel indices,
    as its scores are indexed) belong to `units`."""
    name: str
    channels: int
    group: object
    positions: np.ndarray
    units: np.ndarray


def scored_groups(net, names, ranks, graph=None):
    """{scored layer: ScoredGroup} (see the module docstring); a NetError naming the layer for one
    whose channels cannot be pruned (the group is blocked: the reason), and for two layers naming
    the same group."""
    graph = graph or graph_groups.channel_groups(net)
    role = "in" if ranks == INPUT_CHANNELS else "out"
    out, owner = OrderedDict(), {}
    for name in names:
        if name not in net.layer_dict:
            raise NetError(f"net '{net.name}' has no layer '{name}'")
        found = [(g, m) for g in graph.groups for m in g.members if m.layer == name and m.role == role]
        what = "the channels it reads" if role == "in" else "its output channels"
        if not found:
            raise NetError(f"layer '{name}' ({net.layer_dict[name].type}): no channel group holds {what}")
        if len(found) > 1:
            raise NetError(f"layer '{name}' reads the channels of several groups "
                           f"({', '.join(g.name for g, _ in found)}); input-channel methods rank one group per layer")
        group, member = found[0]
        if group.blocked:
            raise NetError(f"layer '{name}': {what} cannot be pruned: {'; '.join(group.blocked)}")
        if role == "in" and not (np.array_equal(member.positions, np.arange(group.size))
                                 and np.array_equal(member.units, np.arange(group.size))):
            raise NetError(f"layer '{name}' reads channel group '{group.name}' in another order or with tied "
                           "channels; input-channel methods need a layer reading one group's channels as they are")
        if group.name in owner:
            raise NetError(f"layers '{owner[group.name]}' and '{name}' name the same channels (group "
                           f"'{group.name}'); give one of them")
        owner[group.name] = name
        out[name] = ScoredGroup(group.name, group.size, group, np.asarray(member.positions), np.asarray(member.units))
    return out


def unit_scores(scored, scores):
    """A scored layer's per-channel scores as per-unit scores of its group (channels of one unit summed)."""
    scores = np.asarray(scores, np.float64)
    total = np.zeros(scored.channels)
    np.add.at(total, scored.units, scores[scored.positions])
    return total


def channel_masks(net, keeps, groups):
    """Write {scored layer: kept units} into `net` (groups.set_channel_masks) and return the masks of
    every member of those groups, {layer: (weight mask, bias mask or None)}."""
    touched = []
    for name, keep in keeps.items():
        scored = groups[name]
        graph_groups.set_channel_masks(net, scored.group, np.asarray(keep, np.int64))
        touched += [m.layer for m in scored.group.members if m.role in ("in", "out")]
    out = OrderedDict()
    for layer_name in [n for n in net.layer_names if n in set(touched)]:
        blobs = mask_core.mask_blobs(net.layer_dict[layer_name])
        if blobs is not None:
            out[layer_name] = (blobs[0].data.copy(), None if blobs[1] is None else blobs[1].data.copy())
    return out
