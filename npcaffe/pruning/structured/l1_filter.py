"""L1-norm of filters (Li, Kadav, Durdanovic, Samet & Graf, ICLR 2017, "Pruning Filters for
Efficient ConvNets"): a filter's score is s_i = Σ |w| over its kernel weights, all input channels
and taps (the bias not counted).  Filters with the smallest sums go, with the next layer's
kernels that read them.  No data; for an InnerProduct the same sum runs over a neuron's row.

Li et al. rank the filters of each layer separately (scores are not compared across layers).
"""
import numpy as np

from . import FILTERS, register
from .common import filters, pack, rated_layers


def scores(net, layers=None, batches=None):
    """{layer name: Σ|w| per filter} (float64, num_output entries) for the Convolution /
    InnerProduct layers named (default all).  `batches` is accepted for the common signature."""
    chosen = rated_layers(net, layers, ("Convolution", "InnerProduct"), "l1-filter")
    return pack([name for name, _ in chosen], {name: np.abs(filters(layer)).sum(axis=1) for name, layer in chosen})


register("l1-filter", scores, FILTERS, "Li et al. 2017, Pruning Filters for Efficient ConvNets",
         summary="sum of |w| over each filter (no data)")
