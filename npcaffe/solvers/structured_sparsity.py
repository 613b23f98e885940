"""Structured-sparsity regularisers in the solver: SSL's group lasso and network slimming's L1 on γ.

Set by SolverParameter.structured_sparsity_param (npcaffe's field 14150; caffe.proto says why the
number):

    structured_sparsity_param { filter_decay: 1e-4 channel_decay: 1e-4 shape_decay: 0
                                depth_decay: 0 scale_l1_decay: 0 layer: "conv1" ... }

SSL (Wen, Wu, Wang, Chen & Li, NIPS 2016, "Learning Structured Sparsity in Deep Neural
Networks") adds R(W) = Σ_kind λ_kind Σ_g ||w_g||₂ to the loss, for groups g of a weight:

    Convolution, W (N × C/G × kh × kw), G = group, viewed as (G, N/G, C/G, kh·kw):
      filter   W[n]                  one per output channel (a row)
      channel  W[rows of group γ, c]  one per input channel of the bottom
      shape    W[rows of group γ, c, i, j]  one per kernel position of an input channel
      depth    W                     the whole layer (SSL's depth-wise: with a shortcut
                                     around it, a layer gone to zero can be removed)
    InnerProduct, W (N × K) (transpose: stored K × N, the same groups): filter = a row (a
      neuron), channel = shape = a column (one input).

Its gradient ∂R/∂w = λ w_g / ||w_g||₂ (0 for a group already at zero: the subgradient SSL's
code uses, which leaves a zero group at zero) is added to the weight's diff in the solver's
Regularize step, after weight_decay, every iteration, as the authors' fork does
(wenwei202/caffe, sgd_solver.cpp GroupLassoRegularize); their λ are SolverParameter fields 41 /
42 there (breadth_decay, kernel_shape_decay) with per-parameter multipliers; ours are one
message and a `layer` list.

Network slimming (Liu, Li, Shen, Huang, Yan & Zhang, ICCV 2017, "Learning Efficient Convolutional
Networks through Network Slimming") adds λ Σ|γ| over the BatchNorm scale factors γ; in a Caffe
net γ is blob 0 of the Scale layer after each BatchNorm (Caffe's BatchNorm has no scale of its
own).  The gradient, as the paper's subgradient, is λ sign(γ).  Which Scale: one whose bottom a
BatchNorm wrote (in place or not).

What is regularised: the weight (blob 0) of every Convolution and InnerProduct layer for the SSL
terms and every Scale after a BatchNorm for scale_l1_decay, or of the named layers only
(`layer`).  DNS layers are left alone (their masks are DNS's business).  A parameter shared by
several layers is regularised once, with the groups of its owner.  Arithmetic in float64, the
gradient added to the float32 diff in one rounding.  With any term set, SGDSolver does not take
its fused update (fuses_update), so the term is always in the step.
"""
from typing import NamedTuple

import numpy as np

from ..errors import SolverError

KINDS = ("filter", "channel", "shape", "depth")
WEIGHT_TYPES = ("Convolution", "InnerProduct")


class Term(NamedTuple):
    """One layer's regularised parameter: its learnable id, its layer, and {kind: λ} (SSL's kinds, or
    'scale_l1' for a Scale's γ)."""
    learnable_id: int
    layer_name: str
    layer_type: str
    group: int
    decays: dict


def grouped_view(weight, layer_type, group=1, transpose=False):
    """The weight as (G, N/G, C/G, kernel positions), the layout the SSL groups are norms over.

    An InnerProduct's (N, K) weight (stored (K, N) with transpose) is (1, N, K, 1)."""
    w = np.asarray(weight, np.float64)
    if layer_type == "InnerProduct":
        w = w.T if transpose else w
        return w.reshape(1, w.shape[0], -1, 1)
    n, c = w.shape[:2]
    return w.reshape(group, n // group, c, -1)


# The axes of the grouped view each kind's norm runs over (what is left indexes the groups).
_NORM_AXES = {"filter": (2, 3), "channel": (1, 3), "shape": (1,), "depth": (0, 1, 2, 3)}


def group_norms(weight, kind, layer_type, group=1, transpose=False):
    """||w_g||₂ of every group of `kind` (SSL): filter (G, N/G), channel (G, C/G), shape (G, C/G, k),
    depth a scalar; for an InnerProduct filter (1, N), channel / shape (1, K)."""
    view = grouped_view(weight, layer_type, group, transpose)
    axes = _NORM_AXES["channel" if kind == "shape" and layer_type == "InnerProduct" else kind]
    return np.sqrt(np.sum(view ** 2, axis=axes))


def group_lasso_value(weight, decays, layer_type, group=1, transpose=False):
    """R(W) = Σ_kind λ_kind Σ_g ||w_g||₂."""
    return float(sum(lam * group_norms(weight, kind, layer_type, group, transpose).sum()
                     for kind, lam in decays.items() if lam))


def group_lasso_gradient(weight, decays, layer_type, group=1, transpose=False):
    """∂R/∂W (shaped like `weight`, float64): Σ_kind λ_kind w_g / ||w_g||₂, 0 where ||w_g|| = 0."""
    weight = np.asarray(weight, np.float64)
    view = grouped_view(weight, layer_type, group, transpose)
    grad = np.zeros_like(view)
    for kind, lam in decays.items():
        if not lam:
            continue
        axes = _NORM_AXES["channel" if kind == "shape" and layer_type == "InnerProduct" else kind]
        norms = np.sqrt(np.sum(view ** 2, axis=axes, keepdims=True))
        grad += lam * np.divide(view, norms, out=np.zeros_like(view), where=norms > 0)
    if layer_type == "InnerProduct" and transpose:
        return grad.reshape(weight.shape[1], weight.shape[0]).T.copy()
    return grad.reshape(weight.shape)


def scale_l1_gradient(gamma, lam):
    """∂(λ Σ|γ|)/∂γ = λ sign(γ) (the subgradient 0 at γ = 0)."""
    return lam * np.sign(np.asarray(gamma, np.float64))


def bn_scale_layers(net):
    """[names] of the Scale layers whose first bottom a BatchNorm wrote (network slimming's γ)."""
    writer = {}
    out = []
    for name, layer in zip(net.layer_names, net.layers):
        bottoms = net.bottom_names[name]
        if layer.type == "Scale" and bottoms and writer.get(bottoms[0]) == "BatchNorm":
            out.append(name)
        for top in net.top_names[name]:
            writer[top] = layer.type
    return out


class StructuredSparsity:
    """The regularisers of one solver's train net: `regularize(learnable_id, blob)` adds the
    gradient to the blob's diff; `value()` is the regulariser's current value."""

    def __init__(self, param, net, where="<solver>"):
        self.param = param
        decays = {kind: float(getattr(param, f"{kind}_decay")) for kind in KINDS}
        scale_decay = float(param.scale_l1_decay)
        for field, value in list(decays.items()) + [("scale_l1", scale_decay)]:
            if not (value >= 0 and np.isfinite(value)):
                raise SolverError(f"{where}: field 'structured_sparsity_param.{field}_decay' must be >= 0, got {value}")
        names = list(param.layer)
        layers = net.layer_dict
        for name in names:
            if name not in layers:
                raise SolverError(f"{where}: field 'structured_sparsity_param.layer': the train net has no layer "
                                  f"'{name}' (layers: {', '.join(net.layer_names)})")
        scales = set(bn_scale_layers(net))
        if scale_decay and not scales:
            raise SolverError(f"{where}: field 'structured_sparsity_param.scale_l1_decay' is set but the train net "
                              "has no Scale layer after a BatchNorm (network slimming's gamma)")
        for name in names:
            kind = layers[name].type
            if kind not in WEIGHT_TYPES and name not in scales:
                raise SolverError(f"{where}: field 'structured_sparsity_param.layer': layer '{name}' ({kind}) is "
                                  "neither a Convolution / InnerProduct nor a Scale after a BatchNorm")
        chosen = set(names) if names else set(net.layer_names)
        owner_of = {}
        for net_param_id, (layer_id, blob_id) in enumerate(net.param_layer_indices):
            if blob_id == 0 and net.param_owners[net_param_id] < 0:
                owner_of[layer_id] = net.learnable_param_ids[net_param_id]
        self.terms = {}
        for layer_id, (name, layer) in enumerate(zip(net.layer_names, net.layers)):
            if name not in chosen or layer_id not in owner_of:
                continue
            if layer.type in WEIGHT_TYPES and any(decays.values()):
                group = getattr(layer, "group", 1) if layer.type == "Convolution" else 1
                if layer.type == "Convolution" and (getattr(layer, "nd", False) or len(layer.blobs[0].shape) != 4):
                    raise SolverError(f"{where}: structured_sparsity_param: layer '{name}' is not a 2-D convolution; "
                                      "SSL's groups are defined for N x C x kh x kw weights")
                term_decays = {k: v for k, v in decays.items() if v}
            elif name in scales and scale_decay:
                group, term_decays = 1, {"scale_l1": scale_decay}
            else:
                continue
            self.terms[owner_of[layer_id]] = Term(owner_of[layer_id], name, layer.type, group, term_decays)
        self.net = net

    def __bool__(self):
        return bool(self.terms)

    def _transpose(self, term):
        return term.layer_type == "InnerProduct" and bool(getattr(self.net.layer_dict[term.layer_name], "transpose",
                                                                   False))

    def gradient(self, term, data):
        if "scale_l1" in term.decays:
            return scale_l1_gradient(data, term.decays["scale_l1"])
        return group_lasso_gradient(data, term.decays, term.layer_type, term.group, self._transpose(term))

    def regularize(self, learnable_id, blob):
        """diff += ∂R/∂w for this learnable parameter (nothing when it is not regularised)."""
        term = self.terms.get(learnable_id)
        if term is None:
            return
        grad = self.gradient(term, blob.data)
        blob.diff[...] = (blob.diff.astype(np.float64) + grad).astype(np.float32)

    def value(self):
        """The regulariser's value Σ λ ||w_g|| (+ λ Σ|γ|) at the current weights."""
        total = 0.0
        for term in self.terms.values():
            data = self.net.learnable_params[term.learnable_id].data
            if "scale_l1" in term.decays:
                total += term.decays["scale_l1"] * float(np.abs(data.astype(np.float64)).sum())
            else:
                total += group_lasso_value(data, term.decays, term.layer_type, term.group, self._transpose(term))
        return total


def from_solver(param, net, where="<solver>"):
    """The solver's StructuredSparsity, or None when structured_sparsity_param is not set (or sets
    nothing)."""
    if not param.HasField("structured_sparsity_param"):
        return None
    regularizer = StructuredSparsity(param.structured_sparsity_param, net, where)
    return regularizer or None
