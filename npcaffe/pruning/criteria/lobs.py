"""L-OBS (Dong, Chen & Pan, NIPS 2017): layer-wise Optimal Brain Surgeon.

Each layer is pruned on its own error E = 1/(2n) Σ_j ||ŷ_j - y_j||², the
change of its output over the n input vectors y_j it saw (for a
convolution, every im2col column of every image: one vector per output
position).  For one output unit with weights θ (its weight row and, if the
layer has one, its bias, on an input with a constant 1 appended) the Hessian
of E is the input covariance

    H = (1/n) Σ_j y_j y_jᵀ  (+ δ I, see below),

the same for every output unit of the layer (of the group, for a grouped
convolution), which is what makes OBS affordable per layer.

Sensitivity of weight q (the paper's L_q), the least increase of E when θ_q
is removed and the rest of its row compensates:  L_q = θ_q² / (2 [H⁻¹]_qq).

Compensation (`compensation`): for the entries S of a row that a mask
removes, the optimal update is

    δθ = -H⁻¹[:, S] (H⁻¹[S, S])⁻¹ θ_S     (δθ_S = -θ_S),

which for one entry is the paper's δθ = -θ_q / [H⁻¹]_qq · H⁻¹ e_q.  It is
the least-squares fit of the layer's old outputs by the kept inputs
(damped: min (1/n)||Y δθ||² + δ||δθ||²).  The authors prune one weight at a
time and reuse H⁻¹ without removing the pruned rows; we solve the joint
problem for the whole mask at once (when S is the larger part of a row, in
the equivalent form δθ_R = H_RR⁻¹ H_RS θ_S on the kept entries R).

Damping: H is singular whenever some input direction never occurs (a dead
ReLU feeding the layer, duplicated features, fewer samples than inputs).
The paper computes H⁻¹ by the Woodbury recursion
H⁻¹_{j+1} = H⁻¹_j - H⁻¹_j y yᵀ H⁻¹_j / (n + yᵀ H⁻¹_j y) from H⁻¹_0 = δ⁻¹ I,
which ends at exactly (H + δI)⁻¹; the authors' code starts from 10⁶ I, so
δ = 1e-6 is our default.  An input direction that never occurs then costs
nothing to prune (L_q ≈ δ θ_q²) and is never used to compensate.

Scores rate the stored weights (see common); the compensation starts from
the weights the layer computes with, W ⊙ T.  Cost: one (K+1)² float64
matrix and its inverse per layer (group), K the inputs per output unit:
0.7 GB each for AlexNet's fc6 (K = 9216), kilobytes to megabytes for LeNets.
"""
from typing import NamedTuple

import numpy as np

from ... import masks
from ...errors import NetError
from ...kernels.im2col import im2col_reference
from .common import conv_geometry, forward_batches, has_bias, pack, stored_params, weight_layers

DAMPING = 1e-6


class LayerHessian(NamedTuple):
    """The damped input covariance of one layer: one (K+1, K+1) (or (K, K) without bias) matrix per
    group, its inverse, and the number of input vectors n it was averaged over."""
    hessians: list
    inverses: list
    bias: bool
    samples: int


class Compensation(NamedTuple):
    """The L-OBS update Δ of one layer's weight and bias (None without one), to add to the weights
    it computes with (`apply_compensation`); `error` is the layer-wise error ½ Σ_rows δθᵀ H δθ it
    leaves (E above, summed over output units)."""
    weight: np.ndarray
    bias: np.ndarray
    error: float


def _inputs(layer, bottom, top):
    """[(group, Y)]: the layer's input vectors as columns of Y, float64, per group."""
    if layer.type in ("InnerProduct", "CInnerProduct"):
        axis = bottom[0].canonical_axis(layer.layer_param.inner_product_param.axis)
        x = bottom[0].data.reshape(bottom[0].count_range(0, axis), -1).astype(np.float64)
        return [(0, x.T)]
    kh, kw, ph, pw, sh, sw, dh, dw, group = conv_geometry(layer, "L-OBS")
    out = []
    for b, t in zip(bottom, top):
        num, channels = b.shape[:2]
        out_h, out_w = t.shape[2:]
        col = np.empty((channels * kh * kw, num * out_h * out_w))
        im2col_reference(b.data.astype(np.float64), kh, kw, ph, pw, sh, sw, dh, dw, out_h, out_w, col)
        rows = col.shape[0] // group
        out.extend((g, col[g * rows:(g + 1) * rows]) for g in range(group))
    return out


def _groups(layer):
    return 1 if layer.type in ("InnerProduct", "CInnerProduct") else layer.group


def layer_hessians(net, layers=None, batches=1, damping=DAMPING):
    """{layer name: LayerHessian} from the inputs each layer sees over the batches."""
    if damping < 0:
        raise NetError(f"L-OBS damping must be >= 0, got {damping}")
    chosen = weight_layers(net, layers)
    sums, samples = {}, {}
    for _ in forward_batches(net, batches):
        for name, layer in chosen:
            index = net.layer_names.index(name)
            for g, y in _inputs(layer, net.bottom_vecs[index], net.top_vecs[index]):
                if has_bias(layer):
                    y = np.vstack([y, np.ones((1, y.shape[1]))])
                key = (name, g)
                sums[key] = sums.get(key, 0.0) + y @ y.T
                samples[key] = samples.get(key, 0) + y.shape[1]
    out = {}
    for name, layer in chosen:
        hessians, inverses = [], []
        for g in range(_groups(layer)):
            h = sums[(name, g)] / samples[(name, g)]
            h = h + damping * np.eye(h.shape[0])
            hessians.append(h)
            try:
                inverses.append(np.linalg.inv(h))
            except np.linalg.LinAlgError:
                raise NetError(f"layer '{name}': the input covariance is singular; L-OBS needs damping > 0 "
                               "(the paper's H_0^-1 = I / damping)") from None
        out[name] = LayerHessian(hessians, inverses, has_bias(layer), samples[(name, 0)])
    return out


def _rows(layer, weight, bias):
    """(θ rows (units, K [+1]), group of each row) for a layer's weight and bias arrays."""
    if layer.type in ("InnerProduct", "CInnerProduct"):
        w = weight.T if layer.transpose else weight
        groups = np.zeros(w.shape[0], int)
    else:
        w = weight.reshape(weight.shape[0], -1)
        groups = np.arange(w.shape[0]) // (w.shape[0] // layer.group)
    if bias is not None:
        w = np.hstack([w, bias[:, None]])
    return w, groups


def _unrows(layer, rows, weight_shape, has_bias):
    w = rows[:, :-1] if has_bias else rows
    b = rows[:, -1].copy() if has_bias else None
    if layer.type in ("InnerProduct", "CInnerProduct"):
        w = w.T if layer.transpose else w
    return np.ascontiguousarray(w).reshape(weight_shape), b


def scores(net, layers=None, batches=1, bias=False, damping=DAMPING, hessians=None):
    """L-OBS sensitivities θ_q² / (2 [H⁻¹]_qq) of the stored weights: {name: array}, or (weight,
    bias or None) pairs with bias=True.  `hessians` (from layer_hessians) saves the forward passes."""
    chosen = weight_layers(net, layers)
    if hessians is None:
        hessians = layer_hessians(net, [name for name, _ in chosen], batches, damping)
    weight_scores, bias_scores = {}, {}
    for name, layer in chosen:
        weight, bias_values = stored_params(layer)
        rows, groups = _rows(layer, weight, bias_values)
        inv_diag = np.stack([np.diag(hessians[name].inverses[g]) for g in groups])
        s = rows ** 2 / (2 * inv_diag)
        weight_scores[name], bias_scores[name] = _unrows(layer, s, weight.shape, bias_values is not None)
    return pack([name for name, _ in chosen], weight_scores, bias_scores if bias else None)


def _split_mask(value):
    if isinstance(value, tuple):
        return value
    return value, None


def compensation(net, layer_masks, batches=1, damping=DAMPING, hessians=None):
    """{layer name: Compensation} for pruning each named layer to `layer_masks[name]` (a 0/1 weight
    mask, or a (weight mask, bias mask or None) pair; an absent bias mask keeps the bias).

    The update takes the layer from the weights it computes with now (W ⊙ T) to the optimal
    ones that are zero where the mask is 0; `apply_compensation` adds it."""
    names = list(layer_masks)
    chosen = weight_layers(net, names)
    if hessians is None:
        hessians = layer_hessians(net, names, batches, damping)
    out = {}
    for name, layer in chosen:
        weight_mask, bias_mask = _split_mask(layer_masks[name])
        weight, bias_values = masks.effective_params(layer)
        weight = weight.astype(np.float64)
        has_bias = bias_values is not None
        bias_values = None if not has_bias else bias_values.astype(np.float64)
        weight_mask = np.asarray(weight_mask, np.float64)
        if weight_mask.shape != weight.shape:
            raise NetError(f"layer '{name}': weight mask of shape {weight_mask.shape} does not fit the weight "
                           f"{weight.shape}")
        if has_bias:
            bias_mask = np.ones(bias_values.shape) if bias_mask is None else np.asarray(bias_mask, np.float64)
        elif bias_mask is not None:
            raise NetError(f"layer '{name}': a bias mask was given but the layer has no bias")
        theta, groups = _rows(layer, weight, bias_values)
        keep, _ = _rows(layer, weight_mask, bias_mask)
        delta = np.zeros_like(theta)
        error = 0.0
        for r in range(theta.shape[0]):
            pruned = np.flatnonzero(keep[r] == 0)
            if pruned.size == 0:
                continue
            kept = np.flatnonzero(keep[r] != 0)
            h, h_inv = hessians[name].hessians[groups[r]], hessians[name].inverses[groups[r]]
            if pruned.size <= kept.size:
                step = -h_inv[:, pruned] @ np.linalg.solve(h_inv[np.ix_(pruned, pruned)], theta[r, pruned])
            else:
                step = np.zeros(theta.shape[1])
                if kept.size:
                    step[kept] = np.linalg.solve(h[np.ix_(kept, kept)], h[np.ix_(kept, pruned)] @ theta[r, pruned])
            step[pruned] = -theta[r, pruned]
            delta[r] = step
            error += 0.5 * float(step @ h @ step)
        dw, db = _unrows(layer, delta, weight.shape, has_bias)
        out[name] = Compensation(dw, db, error)
    return out


def apply_compensation(net, updates):
    """Write W ⊙ T + Δ (and b ⊙ T_b + Δ_b) into each layer's stored weight and bias, in place.

    For a plain layer that is W + Δ.  A DNS layer's pruned weights are replaced as well (by Δ,
    zero where the new mask prunes), since the update was computed for the weights it computes with."""
    for name, update in updates.items():
        layer = net.layer_dict[name]
        weight, bias = masks.effective_params(layer)
        layer.blobs[0].data[...] = (weight.astype(np.float64) + update.weight).astype(np.float32)
        if update.bias is not None:
            layer.blobs[1].data[...] = (bias.astype(np.float64) + update.bias).astype(np.float32)
