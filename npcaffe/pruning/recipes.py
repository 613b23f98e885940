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
    regularize_solver: str = None  # trains the net before pruning (SSL's group lasso, slimming's L1 on gamma)
    options: dict = None           # criterion options (--criterion_option NAME=VALUE) of a structured method
    from_init: bool = False        # the method starts from the net's own initialisation, not --weights


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
        "the top 1% across all layers kept, then SNIP's schedule at half its rate (0.1 diverged; "
        "lenet5_snip_solver.prototxt) for "
        "100,000 iterations of 64, where the rate has fallen to 5e-5; run it without --weights"),
}


# Structured recipes (npcaffe.pruning.structured): `sparsity` is the share of each named layer's channels
# removed; the targets are issue 14's (LeNet-5's conv1 20 -> 10 and conv2 50 -> 25 filters at <= 1.0%
# error, LeNet-300-100's hidden layers to 150 and 50 neurons at <= 1.8%); the compression they imply
# (all parameters / kept) is 2.03x and 2.12x.
_STRUCTURED_LENET5 = ("half of conv1's and conv2's filters removed in one step (with conv2's and ip1's columns that "
                      "read them: a slim net keeps 212,045 of 431,080 parameters and 749,000 of 2,293,000 multiply-adds per image, 32.7%), "
                      "then lenet5_structured_solver.prototxt: 2,000 iterations, 0.01 then 0.001 after 1,500, a "
                      "moderate budget (why: its comments)")


def _lenet5_filters(method, who, why):
    """A filter criterion on LeNet-5: half of conv1's and conv2's filters in one step, then the structured
    solver's 2,000 iterations, to issue 14's target."""
    return Recipe("lenet5", "lenet5_structured_solver.prototxt", "lenet5_solver.prototxt", method,
                  {"conv1": 0.5, "conv2": 0.5}, False, "direct", 1, 2000, None,
                  f"{who}; target conv1 20 -> 10, conv2 50 -> 25 filters at <= 1.0% error", 1.0, 2.0,
                  why + _STRUCTURED_LENET5)


RECIPES.update({
    "l1-filter-lenet5": _lenet5_filters("l1-filter", "Li et al. 2017 (L1-norm of filters)",
                                        "the filters of smallest sum |w| go; "),
    "taylor-lenet5": _lenet5_filters(
        "taylor", "Molchanov et al. 2017 (first-order Taylor)",
        "|activation x gradient| per image averaged over 100 training batches (6,400 images), the paper's "
        "per-example criterion, layers ranked apart (no normalisation needed); "),
    "neurons-lenet300100": Recipe(
        "lenet300100", "lenet300100_structured_solver.prototxt", "lenet300100_solver.prototxt", "neurons",
        {"ip1": 0.5, "ip2": 0.5}, False, "direct", 1, 10000, None,
        "the pruning report's matrix-based pruning; target hidden layers 300 -> 150 and 100 -> 50 neurons at <= 1.8%",
        1.8, 2.1, "the neurons of smallest row norm ||W_i||_2 go with the next layer's columns (rows and columns of "
                  "the weight matrices, as the report proposes: a slim net keeps 125,810 of 266,610 parameters), "
                  "then lenet300100_structured_solver.prototxt: 10,000 iterations, 0.05 then 0.005 after 7,000 "
                  "(3,000 at 0.01 ended at 2.11%; why: its comments)"),
})


# The reconstruction and regularisation criteria (npcaffe.pruning.structured.thinet, lasso, slimming, ssl), to
# the same targets and with the same fine-tuning as the recipes above.  ThiNet and LASSO rank the channels a
# layer reads: conv2's 20 input channels are conv1's filters, ip1's 50 are conv2's; both refit the reading
# layer's kept weights before fine-tuning.  Slimming and SSL train with their regulariser first
# (Recipe.regularize_solver, `npcaffe prune --regularize_solver`).
_RECONSTRUCTION = ("layer after layer on 10 training batches (640 images, 10 output positions each), the reading "
                   "layers' kept weights refitted by least squares before the fine-tuning; ")
RECIPES.update({
    "thinet-lenet5": Recipe(
        "lenet5", "lenet5_structured_solver.prototxt", "lenet5_solver.prototxt", "thinet",
        {"conv2": 0.5, "ip1": 0.5}, False, "direct", 1, 2000, None,
        "Luo et al. 2017 (ThiNet); target conv1 20 -> 10, conv2 50 -> 25 filters at <= 1.0% error",
        1.0, 2.0, "conv2's and ip1's input channels (conv1's and conv2's filters) chosen greedily by the least change "
                  "of the next layer's outputs, then rescaled, " + _RECONSTRUCTION + _STRUCTURED_LENET5),
    "lasso-lenet5": Recipe(
        "lenet5", "lenet5_structured_solver.prototxt", "lenet5_solver.prototxt", "lasso",
        {"conv2": 0.5, "ip1": 0.5}, False, "direct", 1, 2000, None,
        "He et al. 2017 (LASSO channel selection); target conv1 20 -> 10, conv2 50 -> 25 filters at <= 1.0% error",
        1.0, 2.0, "conv2's and ip1's input channels picked by the LASSO on per-channel coefficients (lambda raised to "
                  "the count), the reading layer refitted to the unpruned net's outputs, " + _RECONSTRUCTION
                  + _STRUCTURED_LENET5),
    "ssl-lenet5": Recipe(
        "lenet5", "lenet5_structured_solver.prototxt", "lenet5_solver.prototxt", "ssl",
        {"conv1": 0.5, "conv2": 0.5}, False, "direct", 1, 2000, None,
        "Wen et al. 2016 (SSL); target conv1 20 -> 10, conv2 50 -> 25 filters at <= 1.0% error",
        1.0, 2.0, "3,000 iterations of filter-wise group lasso on conv1 and conv2 from --weights (lenet5_ssl_solver."
                  "prototxt: lambda 0.01, why in its comments), then the filters of smallest ||filter|| x ||columns "
                  "reading it|| go; " + _STRUCTURED_LENET5, "lenet5_ssl_solver.prototxt"),
})


# The remaining filter criteria on LeNet-5, to the same target and with the same one step and fine-tuning
# as l1-filter-lenet5; network slimming on LeNet-5 with BatchNorm (prototxt/lenet5/lenet5_bn_*), which
# has no released dense model: it trains from its own initialisation with the L1 on gamma.
RECIPES.update({
    "apoz-lenet5": _lenet5_filters(
        "apoz", "Hu et al. 2016 (APoZ)",
        "the filters whose outputs are least often positive over 100 training batches go (LeNet-5 has no "
        "ReLU after its convolutions: the share a ReLU would zero, npcaffe.pruning.structured.apoz); "),
    "entropy-lenet5": _lenet5_filters(
        "entropy", "Luo & Wu 2017 (entropy of channel outputs)",
        "the filters whose global-pooled outputs over 100 training batches have the least entropy (100 bins) go; "),
    "nisp-lenet5": _lenet5_filters(
        "nisp", "Yu et al. 2018 (NISP)",
        "the filters with the least importance propagated back from ip2's outputs through |W| go; "),
    "slimming-lenet5": Recipe(
        "lenet5", "lenet5_bn_structured_solver.prototxt", "lenet5_bn_slimming_solver.prototxt", "slimming",
        {"conv1": 0.5, "conv2": 0.5}, False, "direct", 1, 6000, None,
        "Liu et al. 2017 (network slimming); target conv1 20 -> 10, conv2 50 -> 25 filters at <= 1.0% error",
        1.0, 2.0, "LeNet-5 with BatchNorm + Scale after conv1 and conv2 trained from its initialisation for "
                  "10,000 iterations with L1 on gamma (lenet5_bn_slimming_solver.prototxt, scale_l1_decay 3e-4: "
                  "why in its comments), then the half of each layer's filters with the smallest |gamma| go "
                  "(global=false: the paper's one threshold across the layers would not keep the target's "
                  "per-layer counts), then 6,000 iterations of lenet5_bn_structured_solver.prototxt (3,000 "
                  "past its rate drop: 2,000 at the first rate left 1.16-1.37% error, 6,000 gave 0.76-0.79%)",
        "lenet5_bn_slimming_solver.prototxt", {"global": False}, True),
})


def recipe(name):
    """The Recipe called `name`."""
    try:
        return RECIPES[name]
    except KeyError:
        raise NpcaffeError(f"--recipe '{name}': unknown; known: {', '.join(RECIPES)}") from None


def flags(r):
    """The general command's flags a recipe amounts to."""
    from .structured import is_structured
    if is_structured(r.method):
        target = "--channel_sparsity " + ",".join(f"{name}={value:g}" for name, value in r.sparsity.items())
    elif isinstance(r.sparsity, dict):
        target = " ".join(f"--sparsity {name}={value:g}" for name, value in r.sparsity.items())
    else:
        target = f"--sparsity {r.sparsity:g}" + (" --global" if r.global_ else "")
    schedule = f"--schedule iterative --steps {r.steps}" if r.schedule == "iterative" else "--schedule direct"
    batches = f" --score_batches {r.score_batches}" if r.score_batches is not None else ""
    regularize = f" --regularize_solver prototxt/{r.net}/{r.regularize_solver}" if r.regularize_solver else ""
    options = "".join(f" --criterion_option {k}={str(v).lower()}" for k, v in (r.options or {}).items())
    return (f"--method {r.method} --solver prototxt/{r.net}/{r.solver} {target} {schedule} "
            f"--retrain_iter {r.retrain_iter}{batches}{regularize}{options}")


def recipes_help():
    """The recipes for `npcaffe prune --help`."""
    lines = ["recipes (--recipe NAME [--mnist DIR] [--weights W]; flags given override the recipe's):"]
    for name, r in RECIPES.items():
        lines += [f"  {name}: {r.paper}; target <= {r.max_error:g}% error at >= {r.min_compression:g}x",
                  f"      = {flags(r)}", f"      why: {r.why}"]
    return "\n".join(lines) + "\n"
