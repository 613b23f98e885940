"""Pruning criteria: what to score.  A criterion is a function from (net, data) to scores.

Every criterion has the signature

    scores(net, layers=None, batches=..., bias=False, **options)
        -> {layer name: float64 array shaped like the layer's weight}
           (with bias=True: {layer name: (weight scores, bias scores or None)})

over the net's Convolution / InnerProduct layers and the DNS layers (all of
them, or the named ones); a higher score means more important.  `batches`
is the data (criteria.common).  Turning scores into 0/1 masks (a target
sparsity per layer or across layers, Han's quality x σ threshold) and
putting them on the layers is npcaffe.pruning.select; when and how often to
prune is a schedule's business.

    magnitude  |w|                                   Han et al. 2015
    obd        ½ h_ii w², h by second-derivative backprop   LeCun et al. 1989
    lobs       w² / (2 [H⁻¹]_qq), H the layer's input covariance; with the
               compensating update (lobs.compensation)      Dong et al. 2017
    snip       |g w| on a batch, at initialisation          Lee et al. 2019
"""
from ...errors import NpcaffeError
from . import lobs, magnitude, obd, snip
from .common import is_scored, weight_layers  # noqa: F401

CRITERIA = {
    "magnitude": magnitude.scores,
    "obd": obd.scores,
    "lobs": lobs.scores,
    "snip": snip.scores,
}


def criterion(name):
    """The scores function registered under `name`."""
    try:
        return CRITERIA[name]
    except KeyError:
        raise NpcaffeError(f"unknown pruning criterion '{name}'; known: {', '.join(sorted(CRITERIA))}") from None


def scores(name, net, layers=None, **options):
    """Scores of criterion `name` for the net's weight layers (see the module docstring)."""
    return criterion(name)(net, layers=layers, **options)
