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
                 "DepthwiseConvolution": "convolution_param", "ConvolutionDepthwise": "convolution_param",
                 "CPConvolution": "convolution_param",
                 "InnerProduct": "inner_product_param", "CInnerProduct": "inner_product_param",
                 "CPInnerProduct": "inner_product_param"}


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
        # the layer's own count where it has one: ConvolutionDepthwise sizes its outputs by its input
        outputs = getattr(layer, "num_output", None) or getattr(layer.layer_param, field).num_output
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


def format_macs_table(rows, slim=None):
    """Multiply-adds per sample per layer: dense, with the kept (nonzero) weights, and, given `slim`
    ({layer: multiply-adds}, npcaffe.pruning.slim.predicted_counts), what the slim net computes."""
    width = max([len(r.name) for r in rows] + [5])
    head = f"{'layer':<{width}}  {'mult-adds dense':>16}  {'kept':>12}  {'kept %':>7}"
    lines = [head + (f"  {'slim':>12}  {'slim %':>7}" if slim is not None else "")]
    table = [(r.name, r.dense, r.kept, None if slim is None else slim.get(r.name, r.dense)) for r in rows]
    table.append(("total", sum(t[1] for t in table), sum(t[2] for t in table),
                  None if slim is None else sum(t[3] for t in table)))
    for name, dense, kept, slimmed in table:
        line = f"{name:<{width}}  {dense:>16}  {kept:>12}  {_percent(kept, dense):>7}"
        if slimmed is not None:
            line += f"  {slimmed:>12}  {_percent(slimmed, dense):>7}"
        lines.append(line)
    return "\n".join(lines)


def _percent(part, whole):
    return f"{100.0 * part / whole:.2f}%" if whole else "-"


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


LayerSlim = namedtuple("LayerSlim", "name type outputs outputs_kept inputs inputs_kept params params_slim macs macs_slim")


def count_slim(net):
    """LayerSlim per Convolution / InnerProduct (and DNS) layer: the output channels (filters, neurons)
    and input channels a slim net would keep, and the parameters and multiply-adds per sample it would
    have, from the effective weights W ⊙ T and b ⊙ T_b.

    A filter is kept when any of its weights or its bias is nonzero; an input of the layer (a channel of
    a Convolution's input, per convolution group; one input of an InnerProduct) when any kept filter
    reads it with a nonzero weight.  The slim layer is dense over what is kept: kept filters x kept
    inputs x kernel taps weights (+ a bias per kept filter), each used once per output position, so
    the counts are what removing whole rows and columns gives, not the nonzeros of `count_macs`."""
    from ..masks import effective_params
    rows = []
    for i, (name, layer) in enumerate(zip(net.layer_names, net.layers)):
        field = _WEIGHT_TYPES.get(layer.type)
        if field is None or not layer.blobs:
            continue
        weight, bias = effective_params(layer)
        transposed = layer.type.endswith("InnerProduct") and getattr(layer, "transpose", False)
        if transposed:
            weight = weight.T
        outputs = weight.shape[0]
        groups = getattr(layer, "group", 1) if field == "convolution_param" else 1
        taps = int(np.prod(weight.shape[2:])) if weight.ndim > 2 else 1
        flat = weight.reshape(outputs, weight.shape[1], taps)
        alive = np.abs(flat).sum(axis=(1, 2)) > 0
        if bias is not None:
            alive |= bias != 0
        per_group = outputs // groups
        outputs_kept = inputs_kept = params_slim = 0
        for g in range(groups):
            rows_g = alive[g * per_group:(g + 1) * per_group]
            block = flat[g * per_group:(g + 1) * per_group][rows_g]
            columns = int(np.count_nonzero(np.abs(block).sum(axis=(0, 2)) > 0)) if block.size else 0
            kept = int(np.count_nonzero(rows_g))
            outputs_kept += kept
            inputs_kept += columns
            params_slim += kept * columns * taps
        top = net.top_vecs[i][0]
        positions = top.count // (top.shape[0] * outputs)
        bias_count = 0 if bias is None else bias.size
        rows.append(LayerSlim(name, layer.type, outputs, outputs_kept, weight.shape[1] * groups, inputs_kept,
                              weight.size + bias_count, params_slim + (0 if bias is None else outputs_kept),
                              weight.size * positions, params_slim * positions))
    return rows


def format_slim(rows):
    """A table of what a slim net keeps per layer: filters, inputs, parameters, multiply-adds."""
    width = max([len(r.name) for r in rows] + [5])
    lines = [f"{'layer':<{width}}  {'filters':>11}  {'inputs':>11}  {'params slim':>19}  {'mult-adds slim':>21}"]
    for r in rows:
        lines.append(f"{r.name:<{width}}  {r.outputs_kept:>5} / {r.outputs:<4}  {r.inputs_kept:>5} / {r.inputs:<4}  "
                     f"{r.params_slim:>8} / {r.params:<8}  {r.macs_slim:>9} / {r.macs:<9}")
    params, slim = sum(r.params for r in rows), sum(r.params_slim for r in rows)
    macs, macs_slim = sum(r.macs for r in rows), sum(r.macs_slim for r in rows)
    lines.append(f"slim net: {slim} of {params} parameters ({100.0 * slim / params if params else 0:.2f}%), "
                 f"{macs_slim} of {macs} multiply-adds per sample ({100.0 * macs_slim / macs if macs else 0:.2f}%) "
                 "in its Convolution / InnerProduct layers")
    return "\n".join(lines)
