"""The paper's Table 4 for any net: parameters per layer, the share kept, compression.

A parameter is *kept* when it is nonzero after masking: for a layer stored with
four blobs (a DNS C-layer snapshot: weight, bias, weight mask, bias mask) that is
mask ⊙ W and mask_b ⊙ b; for plain two-blob layers it is the nonzero weights and
biases (the DNS release stores its pruned models that way).  Compression is
total parameters / kept parameters, weights and biases together, as in the
DNS paper and upstream-test-accuracy.txt.
"""
from collections import namedtuple

from ..fileio.caffemodel import blob_to_array, read_caffemodel
from ..masks import layer_kept, stored_kept

LayerCount = namedtuple("LayerCount", "name type params kept")


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
        rate = f"{r.params / r.kept:.2f}x" if r.kept else "inf"
        lines.append(f"{r.name:<{width}}  {r.type:<{type_width}}  {r.params:>10}  {r.kept:>10}  {share:>7.2f}%  {rate:>9}"
                     f"   ({short_count(r.params)} -> {short_count(r.kept)})")
    total = sum(r.params for r in rows)
    kept = sum(r.kept for r in rows)
    share = 100.0 * kept / total if total else 0.0
    rate = total / kept if kept else float("inf")
    lines.append(f"{'total':<{width}}  {'':<{type_width}}  {total:>10}  {kept:>10}  {share:>7.3f}%  {rate:>8.2f}x")
    lines.append(f"{kept} of {total} parameters kept ({short_count(kept)} of {short_count(total)}), "
                 f"compression {rate:.2f}x (~{rate:.0f}x)")
    return "\n".join(lines)
