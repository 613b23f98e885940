"""Structured pruning: whole filters, input channels or neurons, ranked by a criterion.

A weight-level criterion (npcaffe.pruning.criteria) rates every weight; a
structured criterion rates whole channels, so that pruning removes rows and
columns of the weight matrices and the net can be slimmed into a smaller
plain one (npcaffe.pruning.slim).  This package holds the registry of the
structured methods and one module per criterion:

    scores(net, layers=None, batches=..., **options)
        -> OrderedDict {layer name: float64 array, one score per channel}

over the named layers (None: every layer the criterion can rate); a higher
score means more important.  `batches` is the data, as for the weight-level
criteria (criteria.common.forward_batches: a number of forward passes over
the net's own data, or {input blob: array} dicts); criteria that need no data
accept it and ignore it.  What one score rates is the method's `ranks`:

    FILTERS         the output channels of a Convolution / InnerProduct (its
                    weight's rows and bias entries; what its consumers read of
                    them goes with them), keyed by that layer
    INPUT_CHANNELS  the channels a Convolution / InnerProduct reads (its
                    weight's columns; the producers' filters go with them),
                    keyed by the reading layer, one score per channel of its
                    bottom blob (axis 1)
    NEURONS         FILTERS of an InnerProduct: a neuron is a row of W, and the
                    next layer's column that reads it

Selection (npcaffe.pruning.structured.select) turns scores into a keep set per
channel group at a ratio or a count, and writes the masks through the mask
core on every member of the group; a schedule (npcaffe.pruning.schedule)
retrains with the masks fixed.  `npcaffe prune --method NAME` runs any
registered method.

Registered here (one module each):

    l1-filter        sum |w| over a filter                 Li et al. 2017
    apoz             1 - share of zero (ReLU) outputs       Hu et al. 2016
    mean-activation  mean ReLU output of a channel          (Molchanov et al. 2017's baseline)
    entropy          entropy of the channel's global-pooled
                     outputs over a data sample             Luo & Wu 2017
    taylor           |activation x gradient|, first order   Molchanov et al. 2017
    nisp             importance propagated back from the
                     final response layer through |W|       Yu et al. 2018
    neurons          whole neurons of an InnerProduct by
                     the L2 norm of their row               the seed's matrix-based pruning
    thinet           greedy input channels of the next
                     layer, least-squares rescaling         Luo, Wu & Lin 2017
    lasso            LASSO on the next layer's channels,
                     least-squares refit                    He, Zhang & Sun 2017
    slimming         |γ| of the BatchNorm Scale, one
                     threshold across layers                Liu et al. 2017
    ssl              ||filter|| x ||columns reading it||
                     after group-lasso training             Wen et al. 2016
    (thinet, lasso and slimming choose their channels themselves: Method.prune; slimming and ssl
    need their regulariser in training first: npcaffe.solvers.structured_sparsity)

Other modules register theirs with `register` when they are imported
(listed in `_PLUGINS`, imported at the end of this module).
"""
from dataclasses import dataclass, field
from typing import Callable, Optional

from ...errors import NpcaffeError

FILTERS = "filters"
INPUT_CHANNELS = "input channels"
NEURONS = "neurons"
RANKS = (FILTERS, INPUT_CHANNELS, NEURONS)


@dataclass(frozen=True)
class Method:
    """One structured pruning method.

    name: the --method name.  scores: the criterion (module docstring).  ranks: FILTERS,
    INPUT_CHANNELS or NEURONS.  paper: where it comes from.  data: whether it scores on data
    (forward / backward passes).  default_batches: forward passes it scores over when none is
    given (0 for criteria without data).  layer_types: the layer types whose channels it can
    rate.  options: {option name: default} the criterion takes as keyword arguments.
    solver_note: what the method needs during training beyond the fixed masks (network
    slimming's L1 on γ, SSL's group lasso), or None.  summary: one line for --help.
    prune: for a method that picks its channels and changes the kept weights itself (ThiNet's
    rescaling, He et al.'s least squares), prune(net, names, removed, earlier, batches, **options)
    -> {scored layer: kept channel indices} with removed {layer: channels to remove} and earlier
    {layer: indices removed at earlier steps}; StructuredStep then calls it instead of ranking
    `scores`; None for a ranking criterion."""
    name: str
    scores: Callable
    ranks: str
    paper: str
    data: bool = False
    default_batches: int = 0
    layer_types: tuple = ("Convolution", "InnerProduct")
    options: dict = field(default_factory=dict)
    solver_note: Optional[str] = None
    summary: str = ""
    prune: Optional[Callable] = None


METHODS = {}


def register(name, scores, ranks, paper, **details):
    """Register a structured method under `name` (see Method); returns the Method.  Registering a
    name twice is an error (two criteria would answer to one --method)."""
    if ranks not in RANKS:
        raise NpcaffeError(f"structured method '{name}': ranks must be one of {', '.join(RANKS)}, got '{ranks}'")
    if name in METHODS:
        raise NpcaffeError(f"structured method '{name}' is registered twice")
    method = Method(name, scores, ranks, paper, **details)
    METHODS[name] = method
    return method


def method(name):
    """The Method registered under `name`."""
    try:
        return METHODS[name]
    except KeyError:
        raise NpcaffeError(f"unknown structured pruning method '{name}'; known: {', '.join(sorted(METHODS))}") \
            from None


def is_structured(name):
    """`name` is a registered structured method (not a weight-level criterion)."""
    return name in METHODS


def scores(name, net, layers=None, **options):
    """Per-channel scores of method `name` for the net's layers (see the module docstring)."""
    return method(name).scores(net, layers=layers, **options)


# Modules that register methods when imported; a module added by another change joins this list.
_PLUGINS = (
    "l1_filter",
    "neurons",
    "apoz",
    "mean_activation",
    "entropy",
    "taylor",
    "nisp",
    "thinet",
    "lasso",
    "slimming",
    "ssl",
)


def _load_plugins():
    import importlib
    for module in _PLUGINS:
        importlib.import_module(f"{__name__}.{module}")


_load_plugins()
