"""Magnitude (Han, Pool, Tran & Dally 2015): a weight's score is |w|.

The baseline criterion: no data, no derivatives.  Han et al. prune the
weights below a per-layer threshold, quality x the standard deviation of the
layer's weights (npcaffe.pruning.select.quality_masks); a target sparsity
(select.layer_masks / global_masks) ranks the same scores.
"""
import numpy as np

from .common import pack, stored_params, weight_layers


def scores(net, layers=None, batches=None, bias=False):
    """{layer name: |W|} (float64, shaped like the weight); with bias=True, {name: (|W|, |b| or None)}.

    `batches` is accepted for the criteria's common signature and not used."""
    chosen = weight_layers(net, layers)
    weight_scores, bias_scores = {}, {} if bias else None
    for name, layer in chosen:
        weight, bias_values = stored_params(layer)
        weight_scores[name] = np.abs(weight)
        if bias:
            bias_scores[name] = None if bias_values is None else np.abs(bias_values)
    return pack([name for name, _ in chosen], weight_scores, bias_scores)
