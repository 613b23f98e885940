"""The paper's Table 4 for any net: parameters per layer, the share kept, compression.

A parameter is *kept* when it is nonzero after masking: for a layer stored with
four blobs (a DNS C-layer snapshot: weight, bias, weight mask, bias mask) that is
mask ⊙ W and mask_b ⊙ b; for plain two-blob layers it is the nonzero weights and
biases (the DNS release stores its pruned models that way).  Compression is
total parameters / kept parameters, weights and biases together, as in the
DNS paper and upstream-test-accuracy.txt.

Multiply-adds (`count_macs`): per sample, each weight of a Convolution /
InnerProduct layer (plain or DNS) is used once per output position (the
top's spatial size for a convolution, 1 for an InnerProduct over axis 1),
so a layer costs weights x positions, and a pruned one kept weights x
positions (biases, activations and pooling not counted): the FLOPs a sparse
kernel would skip, not a measured speed.
"""
import json
import os
from collections import namedtuple

import numpy as np

from ..fileio.caffemodel import blob_to_array, read_caffemodel
from ..masks import layer_kept, stored_kept

LayerCount = namedtuple("LayerCount", "name type params kept")
LayerMacs = namedtuple("LayerMacs", "name type dense kept")
_WEIGHT_TYPES = {"Convolution": "convolution_param", "CConvolution": "convolution_param",
                 "InnerProduct": "inner_product_param", "CInnerProduct": "inner_product_param"}


def count_net(net, weights=None):
    """LayerCount per layer with parameters; blobs from `weights` (a caffemodel) where it has the layer."""
    stored = {}
    if weights is not None:
        for layer in read_caffemodel(weights).layer:
            if len(layer.blobs):
                stored[layer.name] = (layer.type, [blob_to_array(b, f"{weights}: layer '{layer.name}'")
                                                   for b in layer.blobs])
    rows = []
    for name, layer in zip(net.layer_names, net.layers):
        if not layer.blobs or layer.type == "Split":
            continue
        if name in stored:
            counts = stored_kept(*stored[name])
        else:
            counts = layer_kept(layer)
        rows.append(LayerCount(name, layer.type, *counts))
    return rows


def count_macs(net):
    """LayerMacs per Convolution / InnerProduct (and DNS) layer: multiply-adds per sample of the dense
    layer and with only its kept (nonzero W ⊙ T) weights, from the net's current top shapes."""
    from ..masks import effective_params
    rows = []
    for i, (name, layer) in enumerate(zip(net.layer_names, net.layers)):
        field = _WEIGHT_TYPES.get(layer.type)
        if field is None or not layer.blobs:
            continue
        top = net.top_vecs[i][0]
        outputs = getattr(layer.layer_param, field).num_output
        positions = top.count // (top.shape[0] * outputs)
        weight = effective_params(layer)[0]
        rows.append(LayerMacs(name, layer.type, weight.size * positions, int(np.count_nonzero(weight)) * positions))
    return rows


def format_macs(rows):
    """One line: multiply-adds per sample, dense and kept, over the rows' layers."""
    dense, kept = sum(r.dense for r in rows), sum(r.kept for r in rows)
    share = 100.0 * kept / dense if dense else 0.0
    return (f"multiply-adds per sample (Convolution / InnerProduct weights): {kept} of {dense} kept "
            f"({short_count(kept)} of {short_count(dense)}, {share:.2f}%)")


def short_count(n):
    """431080 -> '431K', 3993 -> '4.0K', 37752832 -> '38M', 4097000 -> '4M' (the DNS paper's tables)."""
    if n >= 1e6:
        return f"{n / 1e6:.0f}M"
    if n >= 1e3:
        value = n / 1e3
        return f"{value:.1f}K" if value < 10 else f"{value:.0f}K"
    return str(n)


def format_report(rows):
    width = max([len(r.name) for r in rows] + [5])
    type_width = max([len(r.type) for r in rows] + [4])
    lines = [f"{'layer':<{width}}  {'type':<{type_width}}  {'params':>10}  {'kept':>10}  {'kept %':>8}  {'rate':>9}"]
    for r in rows:
        share = 100.0 * r.kept / r.params if r.params else 0.0
        rate = f"{r.params / r.kept:.2f}x" if r.kept else "none kept"
        lines.append(f"{r.name:<{width}}  {r.type:<{type_width}}  {r.params:>10}  {r.kept:>10}  {share:>7.2f}%  {rate:>9}"
                     f"   ({short_count(r.params)} -> {short_count(r.kept)})")
    total = sum(r.params for r in rows)
    kept = sum(r.kept for r in rows)
    share = 100.0 * kept / total if total else 0.0
    rate = f"{total / kept:.2f}x" if kept else "none kept"
    lines.append(f"{'total':<{width}}  {'':<{type_width}}  {total:>10}  {kept:>10}  {share:>7.3f}%  {rate:>9}")
    summary = f"compression {total / kept:.2f}x (~{total / kept:.0f}x)" if kept else "every parameter is zero"
    lines.append(f"{kept} of {total} parameters kept ({short_count(kept)} of {short_count(total)}), {summary}")
    return "\n".join(lines)


def write_report(out, summary, text):
    """A run's report.json (the summary dict) and report.txt (its text) in `out`; the text is printed too."""
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(out, "report.txt"), "w") as f:
        f.write(text + "\n")
    print(text)
