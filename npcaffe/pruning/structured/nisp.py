"""NISP, Neuron Importance Score Propagation (Yu, Li, Chen, Lai, Morariu, Han, Gao, Lin & Davis, CVPR
2018): the importance of the final response layer's neurons is propagated backwards, layer by layer,
through the absolute weights; a neuron is as important as what it contributes to the final response.

The paper bounds the change of the final response by a weighted sum of the changes of a layer's
neurons; for a ReLU net (ReLU and max pooling do not enlarge differences) the weights of that bound
are s_k = |W_{k+1}|ᵀ s_{k+1}: importance flows back through |W| and through the activations as it is.
What we compute, per channel rather than per position, over the channel groups of
npcaffe.pruning.groups:

- The final layer is the last Convolution / InnerProduct of the net, whose outputs are the class
  scores.  Its outputs get importance `final_importance` (default 1 each: every class alike; the
  paper ranks the final response with Inf-FS, a feature-ranking method we do not replay).
- A unit of a channel group gets the importance its readers give back: for each Convolution /
  InnerProduct reading it, Σ_i s_i Σ |w_i·| over the weights that read it (an InnerProduct behind a
  Flatten: the H×W columns of the channel; a Convolution: W[i, c] over the kernel taps, for the
  filters i of the channel's convolution group).  A layer's output channel gets its unit's
  importance, so the branches of a residual sum share it.  ReLU, pooling, Dropout and the other
  layers the groups pass through pass a channel's importance on unchanged, and so do BatchNorm /
  Scale (their per-channel factor is not applied: a deviation from the paper's linear bound).

Summed over positions this is the paper's per-neuron propagation exactly for convolutions without
padding (each tap of each output position reads one input position; a padded tap reads nothing) and
for max pooling routing each output's importance to the input it took, average pooling to its window
in equal parts; with padding it is an upper bound.  The weights are W ⊙ T (removed channels carry no
importance).  A layer behind a blocked group (a channel used by a layer the groups do not know) gets
no importance, and asking for it is an error naming the reason.
"""
import numpy as np

from ...errors import NetError
from .. import groups as graph_groups
from . import FILTERS, register
from .common import filters, pack, rated_layers

WEIGHT_TYPES = ("Convolution", "InnerProduct")


def _final_layer(net):
    names = [name for name, layer in zip(net.layer_names, net.layers) if layer.type in WEIGHT_TYPES]
    if not names:
        raise NetError(f"net '{net.name}' has no Convolution / InnerProduct layer")
    return names[-1]


def _read_importance(net, member, s_out):
    """Importance each position (bottom channel) of an "in" member gets from its reading layer."""
    layer = net.layer_dict[member.layer]
    weight = np.abs(filters(layer))                       # (outputs, inputs [x taps])
    if layer.type == "InnerProduct":
        per_input = s_out @ weight                         # Σ_i s_i |w_i,·| per input column
        return per_input.reshape(-1, member.block).sum(axis=1)
    groups = layer.group
    outputs, per_group = weight.shape[0], layer.blobs[0].shape[1]
    taps = weight.reshape(outputs, per_group, -1).sum(axis=2)   # (outputs, channels / group)
    rows = outputs // groups
    return np.concatenate([s_out[k * rows:(k + 1) * rows] @ taps[k * rows:(k + 1) * rows] for k in range(groups)])


def importance(net, final_importance=None, graph=None):
    """{layer: importance of each output channel} for the Convolution / InnerProduct layers importance
    reaches (module docstring), and {layer: why not} for the others."""
    graph = graph or graph_groups.channel_groups(net)
    final = _final_layer(net)
    final_layer = net.layer_dict[final]
    start = np.ones(final_layer.num_output) if final_importance is None else np.asarray(final_importance, np.float64)
    if start.shape != (final_layer.num_output,):
        raise NetError(f"NISP: final_importance has shape {start.shape}; the final layer '{final}' has "
                       f"{final_layer.num_output} outputs")
    out_group = {}
    for g in graph.groups:
        for m in g.members:
            if m.role == "out" and m.type in WEIGHT_TYPES:
                out_group[m.layer] = (g, m)
    known, missing, units = {final: start}, {}, {}

    def of_group(g):
        if g.name not in units:
            if g.blocked:
                raise NetError("; ".join(g.blocked))
            total = np.zeros(g.size)
            for m in g.members:
                if m.role != "in":
                    continue
                if m.type not in WEIGHT_TYPES:
                    raise NetError(f"layer '{m.layer}' ({m.type}) reads channel group '{g.name}' and NISP does "
                                   "not propagate importance through it")
                np.add.at(total, m.units, _read_importance(net, m, of_layer(m.layer))[m.positions])
            units[g.name] = total
        return units[g.name]

    def of_layer(name):
        if name not in known:
            if name not in out_group:
                raise NetError(f"layer '{name}': no channel group holds its output channels")
            g, m = out_group[name]
            s = np.zeros(net.layer_dict[name].num_output)
            s[m.positions] = of_group(g)[m.units]
            known[name] = s
        return known[name]

    for name, layer in zip(net.layer_names, net.layers):
        if layer.type in WEIGHT_TYPES:
            try:
                of_layer(name)
            except NetError as error:
                missing[name] = str(error)
    return known, missing


def scores(net, layers=None, batches=None, final_importance=None):
    """{layer name: NISP importance of each output channel} (float64).  `batches` is accepted for the
    common signature and not used (the importance comes from the weights)."""
    names = [name for name, _ in rated_layers(net, layers, WEIGHT_TYPES, "nisp")]
    known, missing = importance(net, final_importance)
    for name in names:
        if name not in known:
            raise NetError(f"layer '{name}': no NISP importance reaches its outputs: {missing.get(name)}")
    return pack(names, {name: known[name] for name in names})


register("nisp", scores, FILTERS, "Yu et al. 2018, NISP: Neuron Importance Score Propagation",
         options={"final_importance": None},
         summary="importance propagated back from the final layer through |W| (class scores alike)")
