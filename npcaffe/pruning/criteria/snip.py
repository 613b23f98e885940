"""SNIP (Lee, Ajanthan & Torr, ICLR 2019): single-shot connection sensitivity |g ⊙ w|.

Each weight gets a mask entry c (the layer computes with w ⊙ c, c = 1); its
sensitivity is |∂L/∂c| = |g w|, g the gradient of the loss with respect to
the weight the layer computes with.  The paper scores once, on one batch, at
initialisation, keeps the top κ across all layers (select.global_masks) and
trains the sparse net from scratch; the normalisation s / Σ s it divides by
changes no ranking (`normalize=True` applies it).

g comes from the engine's own backward (Net.backward_from_to after each
forward), averaged over the batches.  For a DNS layer the gradient reaches
every weight, pruned or not, so a pruned entry scores |g w| at c = 0 (the
derivative of splicing it back); attached masks zero their pruned weights,
which therefore score 0.  The net's parameter diffs are restored afterwards.
"""
import numpy as np

from ...errors import NetError
from .common import forward_batches, has_bias, pack, stored_params, weight_layers


def gradients(net, layers=None, batches=1):
    """{layer name: (g_W, g_b or None)}: the loss gradient with respect to the weights each layer
    computes with, float64, averaged over the batches."""
    chosen = weight_layers(net, layers)
    for name, layer in chosen:
        index = net.layer_names.index(name)
        if not net.layer_need_backward[index] or not layer.param_needs_backward(0):
            raise NetError(f"layer '{name}' ({layer.type}): the net computes no gradient for its weights "
                           "(lr_mult 0, or it feeds no loss); SNIP needs that gradient")
    with_bias = {name: has_bias(layer) and layer.param_needs_backward(1) for name, layer in chosen}
    saved = [blob.flat_diff.copy() for blob in net.learnable_params]
    total = {name: [0.0, 0.0] for name, _ in chosen}
    count = 0
    try:
        for _ in forward_batches(net, batches):
            # Cleared before each backward: DNS layers mask the diff they find before adding theirs.
            net.clear_param_diffs()
            net.backward_from_to()
            for name, layer in chosen:
                total[name][0] = total[name][0] + layer.blobs[0].diff.astype(np.float64)
                if with_bias[name]:
                    total[name][1] = total[name][1] + layer.blobs[1].diff.astype(np.float64)
            count += 1
    finally:
        for blob, diff in zip(net.learnable_params, saved):
            blob.flat_diff[:] = diff
    return {name: (g_w / count, g_b / count if with_bias[name] else None) for name, (g_w, g_b) in total.items()}


def scores(net, layers=None, batches=1, bias=False, normalize=False):
    """{layer name: |g ⊙ w|} (float64, shaped like the weight); with bias=True, (weight, bias or None)
    pairs.  normalize=True divides by the sum over every score returned (the paper's s_j / Σ s_k)."""
    grads = gradients(net, layers, batches)
    weight_scores, bias_scores = {}, {}
    for name, (g_w, g_b) in grads.items():
        weight, bias_values = stored_params(net.layer_dict[name])
        weight_scores[name] = np.abs(g_w * weight)
        bias_scores[name] = None if g_b is None else np.abs(g_b * bias_values)
    if normalize:
        total = sum(s.sum() for s in weight_scores.values())
        if bias:
            total += sum(s.sum() for s in bias_scores.values() if s is not None)
        if total > 0:
            weight_scores = {n: s / total for n, s in weight_scores.items()}
            bias_scores = {n: None if s is None else s / total for n, s in bias_scores.items()}
    return pack(list(grads), weight_scores, bias_scores if bias else None)
