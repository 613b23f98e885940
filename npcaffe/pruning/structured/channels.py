"""Channel groups for structured pruning, the simple case: one producer, its direct consumers.

A group is a set of channels that must be pruned together: the output
channels of one producing layer (Convolution / InnerProduct: rows of W and
bias entries) and, for each layer that reads them, the matching input
columns.  This module finds the group of the simple producer → consumer
chain only: from the producer's top blob through element-wise and pooling
layers (PASS_THROUGH) and Flatten to Convolution (group 1) and InnerProduct
(axis 1) consumers.  Anything else (Eltwise, Concat, BatchNorm / Scale,
grouped convolutions, a loss reading the channels) is refused with the layer
named: those are the general groups of npcaffe.pruning.groups.

`channel_masks(net, keeps)` turns {group: kept channel indices} into 0/1
masks for every member ({layer: (weight mask, bias mask or None)}), the
product of every group's masks where a layer is in several groups (a
convolution is a consumer of the group before it and the producer of its
own), ready for npcaffe.pruning.select.set_masks.
"""
from collections import OrderedDict
from typing import NamedTuple

import numpy as np

from ...errors import NetError

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


def channel_masks(net, keeps, groups):
    """{layer: (weight mask, bias mask or None)} (float32 0/1) for every member of the groups, from
    keeps {group name: kept channel indices} and groups {group name: ChannelGroup}."""
    masks = OrderedDict()

    def entry(name):
        if name not in masks:
            layer = net.layer_dict[name]
            has_bias = bool(getattr(layer, "bias_term", True)) and len(layer.blobs) > 1
            masks[name] = (np.ones(layer.blobs[0].shape, np.float32),
                           np.ones(layer.blobs[1].shape, np.float32) if has_bias else None)
        return masks[name]

    for group_name, keep in keeps.items():
        group = groups[group_name]
        removed = np.setdiff1d(np.arange(group.channels), np.asarray(keep, int))
        for producer in group.producers:
            weight_mask, bias_mask = entry(producer)
            weight_mask[removed] = 0
            if bias_mask is not None:
                bias_mask[removed] = 0
        for consumer in group.consumers:
            weight_mask, _ = entry(consumer.name)
            columns = (removed[:, None] * consumer.positions + np.arange(consumer.positions)).ravel()
            weight_mask[:, columns] = 0
    return masks
