"""What every criterion shares: which layers it scores, how it feeds the net, how it packs scores.

Scored layers are the weight layers a mask can sit on: Convolution and
InnerProduct (masks attached or not) and the DNS layers CConvolution and
CInnerProduct.  Scores rate the *stored* weight w (blob 0) and bias (blob 1);
derivatives are taken at the weights the layer computes with, W ⊙ T
(npcaffe.masks).  For a plain layer, and for attached masks (which zero the
pruned W), the two are the same.  For a DNS layer, whose pruned weights keep
their values, a pruned entry is rated as the change of splicing it back.

`batches` is the data a criterion looks at: a number of forward passes over
the net's own data layers (or over whatever its Input blobs hold), or an
iterable of {input blob name: array} dicts, each fed to the net's Input blobs
(reshaping them when the batch size differs) before one forward pass.  A
forward in TRAIN phase is a training forward: Dropout draws, and DNS layers
run their surgery (a gate draw from the glibc stream, maybe a mask update);
score a TEST-phase net to leave them alone.
"""
from collections import OrderedDict

import numpy as np

from ...errors import NetError, NpcaffeError
from ...layerlib.dns import is_dns_layer

PLAIN_TYPES = ("Convolution", "InnerProduct")


def is_scored(layer):
    """The layer has a weight a criterion can rate: Convolution, InnerProduct or a DNS layer."""
    return layer.type in PLAIN_TYPES or is_dns_layer(layer)


def weight_layers(net, layers=None):
    """[(name, layer)] of the net's scored layers in net order, or of the named ones (checked)."""
    if layers is None:
        return [(name, layer) for name, layer in zip(net.layer_names, net.layers) if is_scored(layer)]
    if isinstance(layers, str):
        layers = [layers]
    by_name = net.layer_dict
    chosen = []
    for name in layers:
        layer = by_name.get(name)
        if layer is None:
            raise NetError(f"net '{net.name}' has no layer '{name}' (layers: {', '.join(net.layer_names)})")
        if not is_scored(layer):
            raise NetError(f"layer '{name}' ({layer.type}) has no weights a pruning criterion can score; "
                           "criteria score Convolution, InnerProduct, CConvolution and CInnerProduct layers")
        chosen.append((name, layer))
    order = {name: i for i, name in enumerate(net.layer_names)}
    return sorted(chosen, key=lambda item: order[item[0]])


def has_bias(layer):
    return bool(getattr(layer, "bias_term", True)) and len(layer.blobs) > 1


def stored_params(layer):
    """(W, b or None) as float64 copies of the stored weight and bias (blobs 0 and 1)."""
    weight = layer.blobs[0].data.astype(np.float64)
    return weight, layer.blobs[1].data.astype(np.float64) if has_bias(layer) else None


def feed(net, batch):
    """Write {input blob name: array} into the net's Input blobs, reshaping them if needed."""
    inputs = net.inputs
    reshaped = False
    for name, value in batch.items():
        if name not in inputs:
            raise NpcaffeError(
                f"batch blob '{name}' is not an input of net '{net.name}' (its Input blobs: "
                f"{', '.join(inputs) or 'none'}); a net with data layers reads its own data: "
                "pass batches=<number of forward passes>")
        value = np.asarray(value, np.float32)
        blob = net.blobs[name]
        if value.shape != blob.shape:
            blob.reshape(*value.shape)
            reshaped = True
        blob.data[...] = value
    if reshaped:
        net.reshape()


def forward_batches(net, batches):
    """Run one forward pass per batch (see the module docstring); yields the loss after each."""
    if isinstance(batches, (int, np.integer)) and not isinstance(batches, bool):
        if batches < 1:
            raise NpcaffeError(f"batches must be at least 1 forward pass, got {batches}")
        for _ in range(int(batches)):
            yield net.forward_from_to()
        return
    if isinstance(batches, dict):
        batches = [batches]
    count = 0
    for batch in batches:
        feed(net, batch)
        count += 1
        yield net.forward_from_to()
    if count == 0:
        raise NpcaffeError("batches is empty: a data-driven criterion needs at least one batch")


def pack(names, weight_scores, bias_scores=None):
    """{name: weight scores} or, with bias scores given, {name: (weight scores, bias scores or None)}."""
    if bias_scores is None:
        return OrderedDict((name, weight_scores[name]) for name in names)
    return OrderedDict((name, (weight_scores[name], bias_scores.get(name))) for name in names)


def conv_geometry(layer, what):
    """(kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w, group) of a
    2-D convolution with channels on axis 1; a NetError naming `what` for any other."""
    if getattr(layer, "nd", False) or getattr(layer, "channel_axis", 1) != 1:
        raise NetError(f"layer '{layer.name}' ({layer.type}): {what} handles 2-D convolutions with channels "
                       "on axis 1 only")
    return (*layer.kernel, *layer.pad, *layer.stride, *layer.dilation, layer.group)

