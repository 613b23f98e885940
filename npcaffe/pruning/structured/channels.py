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
"""
from collections import OrderedDict
from typing import NamedTuple

import numpy as np

from ... import masks as mask_core
from ...errors import NetError
from .. import groups as graph_groups
from . import INPUT_CHANNELS

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
