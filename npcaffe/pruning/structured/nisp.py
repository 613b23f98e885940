"""NISP, Neuron Importance Score Propagation (Yu, Li, Chen, Lai, Morariu, Han, Gao, Lin & Davis, CVPR
2018): the importance of the final response layer's neurons is propagated backwards, layer by layer,
through the absolute weights; a neuron is as important as what it contributes to the final response.

The paper bounds the change of the final response by a weighted sum of the changes of a layer's
neurons; for a ReLU net (ReLU and max pooling do not enlarge differences) the weights of that bound
are s_k = |W_{k+1}|ᵀ s_{k+1}: importance flows back through |W| and through the activations as it is.
What we compute, per channel rather than per position:

- The final layer is the last Convolution / InnerProduct, whose outputs reach the loss (the class
  scores).  Its outputs get importance `final_importance` (default 1 each: every class alike; the
  paper ranks the final response with Inf-FS, a feature-ranking method we do not replay).
- A layer's output channel c gets s_c = Σ over the layers reading it, Σ_i s_i Σ_{w reading c} |w_i·|:
  for a reading InnerProduct, the |W| entries of row i over the H×W inputs that are channel c's; for a
  reading Convolution, |W[i, c]| summed over the kernel taps.  ReLU, pooling, Dropout and the like
  between them pass a channel's importance on unchanged.

Summed over positions this is the paper's per-neuron propagation exactly for convolutions without
padding (each tap of each output position reads one input position; a padded tap reads nothing) and
for max pooling routing each output's importance to the input it took, average pooling to its window
in equal parts; with padding it is an upper bound.  The weights are W ⊙ T (removed channels carry no
importance).  Channels are grouped as npcaffe.pruning.structured.channels does (the simple chain).
"""
import numpy as np

from ...errors import NetError
from . import FILTERS, register
from .channels import producer_group
from .common import filters, pack, rated_layers


def _final_layer(net):
    names = [name for name, layer in zip(net.layer_names, net.layers) if layer.type in ("Convolution", "InnerProduct")]
    if not names:
        raise NetError(f"net '{net.name}' has no Convolution / InnerProduct layer")
    return names[-1]


def importance(net, final_importance=None):
    """{layer: importance of each output channel} for every Convolution / InnerProduct layer from the
    final one back, as far as the simple chain of channels goes (module docstring)."""
    final = _final_layer(net)
    final_layer = net.layer_dict[final]
    start = np.ones(final_layer.num_output) if final_importance is None else np.asarray(final_importance, np.float64)
    if start.shape != (final_layer.num_output,):
        raise NetError(f"NISP: final_importance has shape {start.shape}; the final layer '{final}' has "
                       f"{final_layer.num_output} outputs")
    known = {final: start}

    def of(name):
        if name in known:
            return known[name]
        group = producer_group(net, name)
        total = np.zeros(group.channels)
        for consumer in group.consumers:
            reader = net.layer_dict[consumer.name]
            rows = np.abs(filters(reader))                     # (outputs, inputs x taps)
            per_input = of(consumer.name) @ rows               # Σ_i s_i |w_i,·|
            total += per_input.reshape(group.channels, -1).sum(axis=1)
        known[name] = total
        return total

    for name, layer in zip(reversed(net.layer_names), reversed(net.layers)):
        if layer.type in ("Convolution", "InnerProduct") and name not in known:
            try:
                of(name)
            except NetError:
                continue  # outside the simple chain: no importance flows there
    return known


def scores(net, layers=None, batches=None, final_importance=None):
    """{layer name: NISP importance of each output channel} (float64).  `batches` is accepted for the
    common signature and not used (the importance comes from the weights)."""
    names = [name for name, _ in rated_layers(net, layers, ("Convolution", "InnerProduct"), "nisp")]
    known = importance(net, final_importance)
    missing = [name for name in names if name not in known]
    for name in missing:
        producer_group(net, name)  # raises the reason no importance reaches it
    return pack(names, {name: known[name] for name in names})


register("nisp", scores, FILTERS, "Yu et al. 2018, NISP: Neuron Importance Score Propagation",
         options={"final_importance": None},
         summary="importance propagated back from the final layer through |W| (class scores alike)")
