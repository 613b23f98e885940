"""Named pruning recipes: `npcaffe prune --recipe NAME` reproduces a paper's MNIST result in one command.

A recipe is the general command (npcaffe.pruning.prune) with a method, a
schedule, a target and a retraining solver of prototxt/<net>/, on MNIST
LMDBs made in the output directory; flags given with --recipe override its
values.  Without --weights the dense reference is trained first with Caffe's
MNIST recipe (prototxt/<net>/<net>_solver.prototxt); the measured runs start
from the DNS release's dense models.  `why` says where each setting comes from.
"""
from typing import NamedTuple

from ..errors import NpcaffeError


class Recipe(NamedTuple):
    net: str             # prototxt/<net>/
    solver: str          # the retraining solver there
    dense_solver: str    # trains the dense reference when there are no --weights
    method: str
    sparsity: object     # one share, or {layer: share}
    global_: bool
    schedule: str
    steps: int
    retrain_iter: int
    score_batches: object
    paper: str           # the published result the recipe aims at
    max_error: float     # the targets its slow test checks: test error (%) at most ...
    min_compression: float  # ... at a compression (all parameters / kept) of at least this
    why: str


_HAN_300 = ("Han et al.'s kept shares per layer (8 / 9 / 26%; 12.0x with the biases, which are not pruned); "
            "five prune-retrain steps (Han et al.'s iterative pruning), each keeping the same share of what "
            "is left (measured: five steps ended at 1.51%, three at 1.68%); retraining: "
            "lenet300100_prune_solver.prototxt (why: its comments)")
RECIPES = {
    "han-lenet300100": Recipe(
        "lenet300100", "lenet300100_prune_solver.prototxt", "lenet300100_solver.prototxt", "magnitude",
        {"ip1": 0.92, "ip2": 0.91, "ip3": 0.74}, False, "iterative", 5, 20000, None,
        "Han et al. 2015: 12x at 1.59% error (reference 1.64%)", 1.65, 12.0, _HAN_300),
    "han-lenet5": Recipe(
        "lenet5", "lenet5_prune_solver.prototxt", "lenet5_solver.prototxt", "magnitude",
        {"conv1": 0.34, "conv2": 0.88, "ip1": 0.925, "ip2": 0.81}, False, "iterative", 5, 10000, None,
        "Han et al. 2015: 12x at 0.77% error (reference 0.80%)", 0.85, 12.0,
        "Han et al.'s kept shares per layer (66 / 12 / 8 / 19%: the convolutions, more sensitive, keep "
        "more), ip1 at 7.5% so that the whole net, biases kept, reaches 12x (8% gives 11.7x; the paper "
        "counts 431K -> 36K as 12x); five prune-retrain steps (three ended at 0.93% with a lower rate); "
        "retraining: lenet5_prune_solver.prototxt (why: its comments)"),
    "obd-lenet300100": Recipe(
        "lenet300100", "lenet300100_prune_solver.prototxt", "lenet300100_solver.prototxt", "obd",
        0.92, True, "iterative", 3, 20000, None,
        "OBD as reported in SNIP's Table 1: 92% sparsity at 2.0% error", 2.0, 12.0,
        "LeCun et al. rank the saliencies of all weights together (--global), prune, retrain and repeat; "
        "three steps with Han's retraining solver; the Hessian diagonal averaged over 100 batches"),
    "lobs-lenet300100": Recipe(
        "lenet300100", "lenet300100_prune_solver.prototxt", "lenet300100_solver.prototxt", "lobs",
        0.985, True, "iterative", 5, 20000, None,
        "L-OBS as reported in SNIP's Table 1: 98.5% sparsity at 2.1% error", 2.1, 60.0,
        "L-OBS's sensitivities (the layer-wise error each weight's removal costs) ranked across layers, "
        "each step applying the compensating update before retraining; at 98.5% the short retraining "
        "the paper uses is not enough here (five steps of 2,000 iterations ended at 3.38%), so five "
        "steps of Han's retraining solver"),
    "snip-lenet300100": Recipe(
        "lenet300100", "lenet300100_snip_solver.prototxt", "lenet300100_solver.prototxt", "snip",
        0.98, True, "direct", 1, 150000, None,
        "SNIP (Lee et al. 2019), Table 1: 98% sparsity at 2.4% error", 2.4, 47.0,
        "SNIP as published: |g w| on one batch at the solver's initialisation (Caffe's xavier), the top 2% "
        "across all layers kept, then the sparse net trained from scratch with SNIP's own schedule "
        "(lenet300100_snip_solver.prototxt); run it without --weights"),
    "obd-lenet5": Recipe(
        "lenet5", "lenet5_prune_solver.prototxt", "lenet5_solver.prototxt", "obd",
        0.92, True, "iterative", 3, 10000, None,
        "OBD as reported in SNIP's Table 1: 92% sparsity at 2.7% error (LeNet-5-Caffe)", 2.7, 12.0,
        "LeCun et al.'s global ranking of the saliencies, as obd-lenet300100: three prune-retrain steps "
        "with Han's LeNet-5 retraining solver, the Hessian diagonal averaged over 100 batches"),
    "snip-lenet5": Recipe(
        "lenet5", "lenet5_snip_solver.prototxt", "lenet5_solver.prototxt", "snip",
        0.99, True, "direct", 1, 100000, None,
        "SNIP (Lee et al. 2019), Table 1: 99% sparsity at 1.1% error (LeNet-5-Caffe)", 1.1, 85.0,
        "SNIP as published, as snip-lenet300100: |g w| on one batch at Caffe's xavier initialisation, "
        "the top 1% across all layers kept, then SNIP's schedule (lenet5_snip_solver.prototxt) for "
        "100,000 iterations of 64, where the rate has fallen to 1e-4; run it without --weights"),
}


def recipe(name):
    """The Recipe called `name`."""
    try:
        return RECIPES[name]
    except KeyError:
        raise NpcaffeError(f"--recipe '{name}': unknown; known: {', '.join(RECIPES)}") from None


def flags(r):
    """The general command's flags a recipe amounts to."""
    if isinstance(r.sparsity, dict):
        target = " ".join(f"--sparsity {name}={value:g}" for name, value in r.sparsity.items())
    else:
        target = f"--sparsity {r.sparsity:g}" + (" --global" if r.global_ else "")
    schedule = f"--schedule iterative --steps {r.steps}" if r.schedule == "iterative" else "--schedule direct"
    batches = f" --score_batches {r.score_batches}" if r.score_batches is not None else ""
    return (f"--method {r.method} --solver prototxt/{r.net}/{r.solver} {target} {schedule} "
            f"--retrain_iter {r.retrain_iter}{batches}")


def recipes_help():
    """The recipes for `npcaffe prune --help`."""
    lines = ["recipes (--recipe NAME [--mnist DIR] [--weights W]; flags given override the recipe's):"]
    for name, r in RECIPES.items():
        lines += [f"  {name}: {r.paper}; target <= {r.max_error:g}% error at >= {r.min_compression:g}x",
                  f"      = {flags(r)}", f"      why: {r.why}"]
    return "\n".join(lines) + "\n"
