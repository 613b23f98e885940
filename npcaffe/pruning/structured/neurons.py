"""Matrix-based pruning: whole neurons of an InnerProduct, i.e. rows of its weight matrix and the
next layer's columns that read them.

The seed report ("a report on network structure pruning", section VI, "Proposed Matrix-based
Pruning") removes whole rows / columns of the fully connected layers' weight matrices so that
the pruned net stays dense matrices (no sparse storage, GPU- and hardware-friendly); it does not
say which rows go.  We rank the neurons of each layer by the norm of their incoming weights, the
row W[i, :] (`norm="l2"`, the default, or `"l1"`): a neuron whose inputs are all small
contributes little beyond its bias.  Removing row i also removes column i of every consumer
(selection's business).
"""
import numpy as np

from ...errors import NpcaffeError
from . import NEURONS, register
from .common import filters, pack, rated_layers

NORMS = ("l2", "l1")


def scores(net, layers=None, batches=None, norm="l2"):
    """{layer name: the norm of each neuron's row of W ⊙ T} (float64, num_output entries) for the
    InnerProduct layers named (default all).  `batches` is accepted for the common signature."""
    if norm not in NORMS:
        raise NpcaffeError(f"neurons: norm must be one of {', '.join(NORMS)}, got '{norm}'")
    chosen = rated_layers(net, layers, ("InnerProduct",), "neurons")
    out = {}
    for name, layer in chosen:
        rows = filters(layer)
        out[name] = np.sqrt((rows ** 2).sum(axis=1)) if norm == "l2" else np.abs(rows).sum(axis=1)
    return pack([name for name, _ in chosen], out)


register("neurons", scores, NEURONS, "the seed's matrix-based pruning (rows / columns of an InnerProduct)",
         layer_types=("InnerProduct",), options={"norm": "l2"},
         summary="whole InnerProduct neurons by the L2 norm of their row (matrix-based pruning)")
