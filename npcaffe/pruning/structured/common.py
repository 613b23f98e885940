"""What the structured criteria share: the layers they rate, a layer's filters, the data passes.

A *filter* of a Convolution is one output channel: the weight's row W[i]
(shape channels/group x kernel) and the bias entry b[i]; a filter of an
InnerProduct is a neuron: row W[i] of the (num_output x inputs) weight, or
column W[:, i] when the layer is `transpose: true`.  Scores rate the weights
the layer computes with (W ⊙ T, npcaffe.masks), so a filter pruned earlier
scores as removed.
"""
from collections import OrderedDict

import numpy as np

from ...errors import NetError
from ...masks import effective_params


def rated_layers(net, layers, types, method):
    """[(name, layer)] of the named layers (checked: they exist and have a type in `types`), or of
    every layer of those types, in net order."""
    by_name = net.layer_dict
    if layers is None:
        return [(name, layer) for name, layer in zip(net.layer_names, net.layers) if layer.type in types]
    if isinstance(layers, str):
        layers = [layers]
    chosen = []
    for name in layers:
        layer = by_name.get(name)
        if layer is None:
            raise NetError(f"net '{net.name}' has no layer '{name}' (layers: {', '.join(net.layer_names)})")
        if layer.type not in types:
            raise NetError(f"layer '{name}' ({layer.type}): {method} rates the channels of "
                           f"{' / '.join(types)} layers only")
        chosen.append((name, layer))
    order = {name: i for i, name in enumerate(net.layer_names)}
    return sorted(chosen, key=lambda item: order[item[0]])


def filters(layer):
    """The layer's effective weight (W ⊙ T) as one row per filter / neuron, float64:
    (num_output, everything else)."""
    weight = effective_params(layer)[0].astype(np.float64)
    if layer.type == "InnerProduct" and getattr(layer, "transpose", False):
        weight = weight.T
    return weight.reshape(weight.shape[0], -1)


def output_blob(net, name):
    """The name of the blob layer `name` writes (its first top)."""
    return net.top_names[name][0]


def channel_values(array):
    """A blob's values (N, C, ...) as (C, N, positions): one row block per channel (axis 1)."""
    array = np.asarray(array, np.float64)
    if array.ndim < 2:
        raise NetError(f"a blob of shape {array.shape} has no channel axis (axis 1)")
    n, c = array.shape[:2]
    return array.reshape(n, c, -1).transpose(1, 0, 2)


def pack(names, values):
    return OrderedDict((name, values[name]) for name in names)


# -- activations over data ---------------------------------------------------------------------
def passed_on_blob(net, name):
    """The blob holding layer `name`'s output as the net passes it on: its top, after any in-place
    layers (an in-place ReLU leaves the rectified values there), or the top of a ReLU that alone reads
    it into a blob of its own."""
    top = output_blob(net, name)
    index = net.layer_names.index(name)
    readers = [i for i, n in enumerate(net.layer_names) if i > index and top in net.bottom_names[n]]
    if len(readers) == 1:
        reader = net.layer_names[readers[0]]
        if net.layers[readers[0]].type == "ReLU" and net.top_names[reader][0] != top:
            return net.top_names[reader][0]
    return top


def channel_outputs(net, names, batches):
    """For each forward pass over `batches` (criteria.common.forward_batches), {layer: its output as passed
    on (passed_on_blob), float64 (N, C, positions)}: a generator."""
    from ..criteria.common import forward_batches
    blobs = {name: passed_on_blob(net, name) for name in names}
    for _ in forward_batches(net, batches):
        yield {name: channel_values(net.blobs[blob].data).transpose(1, 0, 2) for name, blob in blobs.items()}
