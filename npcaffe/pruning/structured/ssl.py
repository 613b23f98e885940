"""SSL (Wen, Wu, Wang, Chen & Li, NIPS 2016, "Learning Structured Sparsity in Deep Neural Networks"):
prune the channels that group-lasso training drove to zero.

Training first adds Σ λ ||w_g||₂ over filter-, channel-, shape- or depth-wise groups to the loss
(npcaffe's solver option structured_sparsity_param, npcaffe.solvers.structured_sparsity); the
groups the net can spare end at (or next to) zero.  SSL then removes the zero groups and
fine-tunes.  As a structured method (`--method ssl`, ranking FILTERS: name the producer), channel c
of a layer scores by its two SSL groups, the filter-wise one (the producer's row W[c], with its
bias entry) and the channel-wise one (every consumer's columns reading c):

    score_c = ||W_producer[c]||₂ · ||W_consumers[:, c]||₂

zero when either group is zero (a channel that is computed but never read, or read but never
computed, goes); between two live channels, the size of the path through them.  The smallest go
to the step's target, as the other ranking criteria; with SSL's training the zero groups are the
smallest by far.
"""
from collections import OrderedDict

import numpy as np

from ...masks import effective_params
from ..groups import weight_axes
from . import FILTERS, register
from .common import rated_layers
from .select import channel_groups


def _column_norms(layer, positions, block):
    """||W[:, c]||² of each read bottom channel c in `positions`: `block` columns per channel (an
    InnerProduct on a 4-D bottom); a grouped convolution's channel c is column c mod C/g of group
    c div C/g's filters."""
    weight = effective_params(layer)[0].astype(np.float64)
    out_axis, in_axis = weight_axes(layer)
    w = np.moveaxis(weight, (out_axis, in_axis), (0, 1))
    w = (w.reshape(w.shape[0], w.shape[1] // block, -1) ** 2).sum(axis=2)   # (outputs, read channels per group)
    group = getattr(layer, "group", 1) if layer.type != "InnerProduct" else 1
    per_group, rows = w.shape[1], w.shape[0] // group
    positions = np.asarray(positions)
    return np.array([w[(c // per_group) * rows:(c // per_group + 1) * rows, c % per_group].sum() for c in positions])


def scores(net, layers=None, batches=None):
    """{layer: ||filter||₂ · ||columns reading it||₂ per output channel} (no data)."""
    chosen = rated_layers(net, layers, ("Convolution", "InnerProduct"), "ssl")
    names = [name for name, _ in chosen]
    groups = channel_groups(net, names, FILTERS)
    out = OrderedDict()
    for name in names:
        scored = groups[name]
        unit_filter = np.zeros(scored.channels)
        unit_columns = np.zeros(scored.channels)
        for m in scored.group.members:
            layer = net.layer_dict[m.layer]
            if m.role == "out":
                weight, bias = effective_params(layer)
                w = np.moveaxis(weight.astype(np.float64), weight_axes(layer)[0], 0)
                rows = (w.reshape(w.shape[0], -1) ** 2).sum(axis=1)
                if bias is not None:
                    rows = rows + bias.astype(np.float64) ** 2
                np.add.at(unit_filter, np.asarray(m.units), rows[np.asarray(m.positions)])
            elif m.role == "in":
                np.add.at(unit_columns, np.asarray(m.units), _column_norms(layer, m.positions, m.block))
        unit = np.sqrt(unit_filter) * np.sqrt(unit_columns)
        channel = np.zeros(scored.positions.size)
        channel[scored.positions] = unit[scored.units]
        out[name] = channel
    return out


register("ssl", scores, FILTERS, "Wen et al. 2016, Learning Structured Sparsity in Deep Neural Networks",
         solver_note="train first with structured_sparsity_param { filter_decay / channel_decay / shape_decay / "
                     "depth_decay } (group lasso), e.g. prototxt/lenet5/lenet5_ssl_solver.prototxt",
         summary="||filter|| x ||columns reading it|| after group-lasso training (zero groups go first)")
