"""DNS-CP after the surgery: count the channels kept, tailor the net, fine-tune the tailored net.

`npcaffe surgery --solver S --channels` (npcaffe.surgery.run_solver) trains
the net with CPConvolution / CPInnerProduct layers (npcaffe.layerlib.dns_cp)
and bakes the channel masks into the user's plain layers: each pruned input
channel is then a block of zero weight columns.  The seed then "fine-tunes
on the tailored network": here `tailor` hands that baked model to
`npcaffe slim` (npcaffe.pruning.slim), which removes every input channel no
filter reads together with the filters (and BatchNorm / Scale entries,
residual partners, ...) that only fed it, into a smaller plain Caffe net,
and `finetune` trains that smaller net with the user's solver.

Without npcaffe.pruning.slim (not in this tree) `tailor` says so and returns
None: the run keeps the masked two-blob model, which computes the same as
the tailored one would, without its speed, and fine-tunes it with its zero
weights held at zero (`finetune(hold_zeros=...)`).
"""
import os

import numpy as np

from .. import glog
from ..errors import NpcaffeError
from ..layerlib.dns_cp import channel_surgery_layers
from ..masks import attach_masks


def channel_counts(net):
    """{layer: (kept channels, channels)} of a net's DNS-CP layers, in net order."""
    return {name: (int(np.count_nonzero(layer.channel_mask)), int(layer.channel_mask.size))
            for name, layer in channel_surgery_layers(net)}


def format_channels(counts):
    """Lines 'layer: kept / all input channels kept (pruned share)'."""
    lines = []
    for name, (kept, total) in counts.items():
        lines.append(f"  {name}: {kept} / {total} input channels kept ({100.0 * (total - kept) / total:.0f}% pruned)")
    return lines


def slim_available():
    """npcaffe.pruning.slim's `run`, or None when this tree has no slim."""
    try:
        from .slim import run
    except ImportError:
        return None
    return run


def data_shapes(net):
    """{top: shape} of a built net's data layers (npcaffe slim runs the net on generated inputs of these)."""
    from ..graph import DATA_LAYER_TYPES
    return {top: net.blobs[top].shape for name, layer in zip(net.layer_names, net.layers)
            if layer.type in DATA_LAYER_TYPES for top in net.top_names[name]}


def tailor(model, weights, out_model, out_weights, shapes=None):
    """Physically remove the pruned channels: `npcaffe slim` on the baked model.

    model: the user's plain net (.prototxt path); weights: the baked
    two-blob model; shapes: {data top: shape} for slim's generated inputs.
    Writes out_model / out_weights (and slim's report beside out_model) and
    returns slim's result, or None (with a warning) when slim is not available."""
    slim_run = slim_available()
    if slim_run is None:
        glog.warning("npcaffe.pruning.slim is not in this tree: the net is not tailored; the masked model "
                     f"{weights} (pruned channels as zero weights) is the result")
        return None
    return slim_run(model, weights, out_model, out_weights, data_shapes=shapes)


def finetune(param, net_file, weights, prefix, iterations, solve_wrapper=None, hold_zeros=()):
    """Train `net_file` from `weights` with the solver `param` (a SolverParameter, its net replaced)
    for `iterations`; returns the solver (trained, snapshot at prefix_iter_N).

    hold_zeros: names of layers whose zero weights must stay zero (the untailored masked model:
    its pruned channels are zero columns, which plain training would grow back); they get fixed
    masks (npcaffe.masks.attach_masks) on their zero weights."""
    from ..solvers import get_solver
    p = type(param)()
    p.CopyFrom(param)
    for field in ("net", "net_param", "train_net", "train_net_param", "test_net", "test_net_param"):
        p.ClearField(field)
    p.net = net_file
    p.max_iter = iterations
    p.snapshot = 0
    p.snapshot_after_train = True
    p.snapshot_prefix = prefix
    del p.weights[:]
    if not os.path.isfile(weights):
        raise NpcaffeError(f"fine-tuning: weights '{weights}' not found")
    solver = get_solver(p)
    solver.copy_weights(weights)
    for name in hold_zeros:
        layer = solver.net.layer_dict[name]
        attach_masks(layer, (layer.blobs[0].data != 0).astype(np.float32))
    if solve_wrapper is None:
        solver.solve()
    else:
        with solve_wrapper(solver):
            solver.solve()
    return solver
