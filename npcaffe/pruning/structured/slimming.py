"""Network slimming (Liu, Li, Shen, Huang, Yan & Zhang, ICCV 2017, "Learning Efficient Convolutional
Networks through Network Slimming"): prune the channels whose BatchNorm scale γ is smallest.

Training first puts an L1 penalty on every γ (npcaffe's solver option structured_sparsity_param
{ scale_l1_decay }, npcaffe.solvers.structured_sparsity), so that channels the net can spare end
with γ near zero; then the channels with the smallest |γ| are pruned and the net fine-tuned.  In a
Caffe net γ is blob 0 of the Scale layer after a BatchNorm (Caffe's BatchNorm has no scale).

`--method slimming` ranks FILTERS: name the Convolution / InnerProduct whose outputs pass through
BatchNorm + Scale; its channel c scores |γ_c|.  As the paper, one threshold across all the named
layers (option global, default true): the step removes as many channels in all as the per-layer
targets add up to, the smallest |γ| of all the layers together, keeping at least one per layer;
global=false ranks each layer apart, to its own target.  After pruning, a removed channel's
BatchNorm / Scale output is the constant β, which the masked columns of the next layer no longer
read (npcaffe slim folds it away).
"""
from collections import OrderedDict

import numpy as np

from ...errors import NetError, NpcaffeError
from ...solvers.structured_sparsity import bn_scale_layers
from . import FILTERS, register
from .common import rated_layers
from .select import channel_groups


def _flag(value):
    if isinstance(value, str):
        if value.lower() in ("true", "1", "yes"):
            return True
        if value.lower() in ("false", "0", "no"):
            return False
        raise NpcaffeError(f"--criterion_option global={value}: give true or false")
    return bool(value)


def gammas(net, names):
    """{layer: γ of its output channels} (float64) from the Scale after a BatchNorm in each layer's
    channel group; a NetError naming a layer without one."""
    groups = channel_groups(net, names, FILTERS)
    scales = set(bn_scale_layers(net))
    out = OrderedDict()
    for name in names:
        scored = groups[name]
        members = [m for m in scored.group.members if m.role == "param" and m.layer in scales]
        if not members:
            raise NetError(f"layer '{name}': no Scale after a BatchNorm acts on its output channels; network "
                           "slimming ranks channels by that scale (gamma)")
        member = members[0]
        gamma = net.layer_dict[member.layer].blobs[0].data.astype(np.float64)
        unit_gamma = np.zeros(scored.channels)
        unit_gamma[np.asarray(member.units)] = gamma[np.asarray(member.positions)]
        channel = np.zeros(scored.positions.size)
        channel[scored.positions] = unit_gamma[scored.units]
        out[name] = channel
    return out


def scores(net, layers=None, batches=None, **_options):
    """{layer: |γ| per output channel} (`batches` unused: no data)."""
    chosen = rated_layers(net, layers, ("Convolution", "InnerProduct"), "slimming")
    return OrderedDict((name, np.abs(g)) for name, g in gammas(net, [n for n, _ in chosen]).items())


def global_keep(values, removed, earlier=None):
    """{layer: kept indices} removing Σ removed of the smallest values of all layers together, every
    index in `earlier` first, at least one kept per layer (ties: net order, then index)."""
    earlier = earlier or {}
    names = list(values)
    entries = []
    for li, name in enumerate(names):
        gone = set(np.asarray(earlier.get(name, ()), int).tolist())
        for c, v in enumerate(values[name]):
            entries.append((-np.inf if c in gone else float(v), li, c))
    total = max(sum(int(removed.get(n, 0)) for n in names), sum(len(earlier.get(n, ())) for n in names))
    entries.sort()
    kept = {name: set(range(len(values[name]))) for name in names}
    count = 0
    for value, li, c in entries:
        if count >= total:
            break
        name = names[li]
        if len(kept[name]) == 1:
            continue                       # the layer's last channel stays
        kept[name].discard(c)
        count += 1
    return OrderedDict((name, np.array(sorted(kept[name]), int)) for name in names)


def prune(net, names, removed, earlier, batches=None, **options):
    """The step: one threshold on |γ| across the layers (global=true) or each layer to its target;
    {layer: kept units of its group} (units and channels are the same but across ties)."""
    from .channels import unit_scores
    is_global = _flag(options.get("global", True))
    groups = channel_groups(net, names, FILTERS)
    values = OrderedDict((name, unit_scores(groups[name], v)) for name, v in scores(net, names).items())
    if is_global:
        return global_keep(values, removed, earlier)
    out = OrderedDict()
    for name in names:
        out[name] = global_keep({name: values[name]}, {name: removed.get(name, 0)}, {name: earlier.get(name, ())})[name]
    return out


register("slimming", scores, FILTERS, "Liu et al. 2017, Learning Efficient Convolutional Networks through Network "
         "Slimming", options={"global": True}, prune=prune,
         solver_note="train first with structured_sparsity_param { scale_l1_decay: lambda } (L1 on the "
                     "BatchNorm Scale's gamma), e.g. prototxt/lenet5/lenet5_bn_slimming_solver.prototxt",
         summary="|gamma| of the BatchNorm Scale after each filter, one threshold across layers (after "
                 "training with L1 on gamma)")
