"""When and how much to prune: one shot (direct) or k iterative steps to a target, for any criterion.

Han, Pool, Tran & Dally (2015) train, prune the small weights, retrain the
rest with the pruned ones held at zero, and repeat; OBD (LeCun et al. 1989)
prunes by saliency and retrains; L-OBS (Dong et al. 2017) prunes with its
compensating update and needs little retraining; SNIP (Lee et al. 2019)
prunes once at initialisation and trains the sparse net from scratch.
Each is a criterion (npcaffe.pruning.criteria) run through one loop
(`run`), on the plain Convolution / InnerProduct layers of any net:

    for step i = 1..k:
        score the chosen layers (the criterion, over `score_batches` forward
            passes of the solver's train net on its own data)
        masks for the step's target (npcaffe.pruning.select); an entry pruned
            at an earlier step stays pruned, so the masks are nested
        L-OBS: the compensating update of the kept weights (criteria.lobs)
        set the masks (fixed masks, npcaffe.masks.attach_masks: W ⊙ T forward,
            no gradient for pruned weights, zeroed again after every update)
        test; retrain `retrain_iter` iterations; test

Each retraining is a fresh solver from the same SolverParameter, started
from the current weights: its learning-rate schedule and momentum start
again, as a `caffe train --weights` fine-tuning run does (how Han et al.
retrained in Caffe).  Unlike DNS, a pruned weight never comes back.

Targets (`Target`):
- sparsity, per layer: each chosen layer loses round(s x its entries) of its
  lowest-scored entries (select.layer_masks); s one number or {layer: s}.
- sparsity, global: round(s x all chosen entries) of the lowest scores of all
  layers together (select.global_masks; SNIP's top-kappa, and OBD's ranking).
- quality (magnitude only): Han et al.'s rule, prune |w| <= q x sigma, sigma
  the standard deviation of the layer's weights when the run starts
  (before any pruning), so q means the same in a direct and an iterative run.
Entries are the weights, and with `bias` the biases too (ranked with them);
biases are not pruned otherwise.

Steps (`step_targets`): direct is one step to the target.  Iterative with
k steps: step i prunes to sparsity 1 - (1 - s)^(i/k), so every step removes
the same share of the weights still kept (a gentle last step, where the net
has least to spare) and step k reaches round(s x entries) exactly; a
quality target grows linearly, q x i / k.
"""
import math
import time
from collections import OrderedDict
from typing import NamedTuple, Optional

import numpy as np

from .. import glog, progress
from .. import masks as mask_core
from ..errors import NetError, NpcaffeError
from ..layerlib.dns import is_dns_layer
from . import criteria, select
from .criteria import common, lobs

METHODS = ("magnitude", "obd", "lobs", "snip")
SCHEDULES = ("direct", "iterative")
# Forward passes a criterion scores over when none is given: OBD's Hessian diagonal and L-OBS's input
# covariance are averages, and 100 batches of a LeNet (6,400 images) settle them (L-OBS needs more input
# vectors than a layer has inputs, 785 for LeNet-300-100's ip1); SNIP scores one batch, as the paper does.
DEFAULT_SCORE_BATCHES = {"magnitude": 0, "obd": 100, "lobs": 100, "snip": 1}


class Target(NamedTuple):
    """What the schedule prunes to: a sparsity (one number or {layer: share}), or Han's quality
    (one number or {layer: q}); `global_` ranks all chosen layers together (one sparsity only)."""
    sparsity: object = None
    quality: object = None
    global_: bool = False


class Step(NamedTuple):
    """What one step did: its target ({layer: sparsity or quality}, or the global sparsity), the kept
    counts per layer after it ({layer: masks.Kept}), the test net's outputs after pruning and after
    retraining ({} without a test net or retraining), the L-OBS layer errors, and its wall time."""
    index: int
    target: object
    kept: dict
    pruned_scores: dict
    retrained_scores: dict
    iterations: int
    lobs_error: Optional[dict]
    seconds: float


class Result(NamedTuple):
    """The solver holding the pruned, retrained net (its train net carries the masks), the test
    outputs before pruning, the steps, and whether a stop request (SIGINT) cut the run short."""
    solver: object
    dense_scores: dict
    steps: list
    stopped_early: bool


# -- targets ---------------------------------------------------------------------------------
def check_target(target, method, names):
    """Raise an NpcaffeError naming the flag for a target that does not fit the method or layers."""
    if (target.sparsity is None) == (target.quality is None):
        raise NpcaffeError("give a target: --sparsity (one share for every layer, or LAYER=share) or --quality q")
    if target.quality is not None and method != "magnitude":
        raise NpcaffeError(f"--quality is Han et al.'s threshold q x std(w) on |w|: it needs --method magnitude, "
                           f"not {method}; give --sparsity instead")
    value = target.sparsity if target.sparsity is not None else target.quality
    flag = "--sparsity" if target.sparsity is not None else "--quality"
    if target.global_:
        if target.quality is not None or isinstance(value, dict):
            raise NpcaffeError("--global ranks all layers together to one share: give one --sparsity x, "
                               "not per-layer values or --quality")
    values = value.items() if isinstance(value, dict) else [(None, value)]
    for name, v in values:
        if name is not None and name not in names:
            raise NpcaffeError(f"{flag} {name}={v:g}: no layer '{name}' among the layers pruned "
                               f"({', '.join(names) or 'none'})")
        if target.sparsity is not None and not 0 <= v <= 1:
            raise NpcaffeError(f"{flag} {'' if name is None else name + '='}{v:g}: a sparsity is the share of "
                               "entries pruned, in [0, 1]")
        if target.quality is not None and not (v >= 0 and math.isfinite(v)):
            raise NpcaffeError(f"{flag} {'' if name is None else name + '='}{v:g}: the quality must be >= 0")


def per_layer(value, names):
    """{layer: value} for every chosen layer from one number or a partial {layer: value} (others 0)."""
    if isinstance(value, dict):
        return OrderedDict((name, float(value.get(name, 0.0))) for name in names)
    return OrderedDict((name, float(value)) for name in names)


def step_sparsity(final, step, steps):
    """The sparsity after step `step` of `steps`: 1 - (1 - final)^(step/steps), exactly final at the end."""
    if step >= steps:
        return float(final)
    return 1.0 - (1.0 - float(final)) ** (step / steps)


def step_targets(target, names, steps):
    """[per step: {layer: sparsity or quality}, or the global sparsity], `steps` entries."""
    out = []
    for i in range(1, steps + 1):
        if target.global_:
            out.append(step_sparsity(target.sparsity, i, steps))
        elif target.sparsity is not None:
            out.append(OrderedDict((n, step_sparsity(s, i, steps)) for n, s in per_layer(target.sparsity, names).items()))
        else:
            out.append(OrderedDict((n, q * i / steps) for n, q in per_layer(target.quality, names).items()))
    return out


# -- one step's masks ----------------------------------------------------------------------------
def _parts(value):
    return value if isinstance(value, tuple) else (value, None)


def _pruned_first(scores, previous):
    """The scores with every entry `previous` pruned moved below all others (so it stays pruned)."""
    if not previous:
        return scores
    values = [p for v in scores.values() for p in _parts(v) if p is not None and p.size]
    low = min(float(p.min()) for p in values) if values else 0.0
    floor = low - 1.0 - abs(low)
    out = OrderedDict()
    for name, value in scores.items():
        mask = previous.get(name)
        if mask is None:
            out[name] = value
            continue
        moved = tuple(None if s is None else np.where(np.asarray(m) == 0, floor, s)
                      for s, m in zip(_parts(value), _parts(mask)))
        out[name] = moved if isinstance(value, tuple) else moved[0]
    return out


def step_masks(scores, step_target, target, previous=None, sigma=None):
    """The masks of one step: `scores` {layer: scores} to {layer: 0/1 masks}, every entry `previous`
    pruned staying pruned; `sigma` {layer: std of the weights} for a quality target."""
    previous = previous or {}
    if target.quality is not None:
        thresholds = {name: q * sigma[name] for name, q in step_target.items()}
        chosen = select.threshold_masks(scores, thresholds)
        for name, mask in chosen.items():
            if name in previous:
                both = tuple(None if m is None else m * p for m, p in zip(_parts(mask), _parts(previous[name])))
                chosen[name] = both if isinstance(mask, tuple) else both[0]
        return chosen
    ranked = _pruned_first(scores, previous)
    if target.global_:
        return select.global_masks(ranked, step_target)
    return select.layer_masks(ranked, step_target)


# -- the loop --------------------------------------------------------------------------------------
def prunable_layers(net, layers=None):
    """[names] of the plain Convolution / InnerProduct layers to prune: `layers` (checked) or all of them."""
    chosen = common.weight_layers(net, layers)
    if layers is None:
        return [name for name, layer in chosen if not is_dns_layer(layer)]
    for name, layer in chosen:
        if is_dns_layer(layer):
            raise NetError(f"layer '{name}' ({layer.type}) is a DNS layer, whose masks DNS updates itself; "
                           "prune plain Convolution / InnerProduct layers (npcaffe surgery runs DNS)")
    return [name for name, _ in chosen]


def copy_params(source, target):
    """Copy every parameter blob of `source` into the layer of the same name in `target`."""
    layers = target.layer_dict
    for name, layer in zip(source.layer_names, source.layers):
        if name in layers:
            for src, dst in zip(layer.blobs, layers[name].blobs):
                dst.data[...] = src.data


def test_scores(solver):
    """{output: value} of the solver's test net #0 ({} without one), first value of each name."""
    if not solver.test_nets:
        return {}
    scores = {}
    for name, value in solver.test(0):
        scores.setdefault(name, float(value))
    return scores


def _kept(net, names):
    layers = net.layer_dict
    return OrderedDict((name, mask_core.layer_kept(layers[name])) for name in names)


def _score(net, method, names, batches, bias, damping):
    """(scores, L-OBS hessians or None) of the chosen layers."""
    if method == "lobs":
        hessians = lobs.layer_hessians(net, names, batches, damping)
        return lobs.scores(net, names, bias=bias, hessians=hessians), hessians
    return criteria.scores(method, net, names, batches=batches or None, bias=bias), None


def run(make_solver, method, target, *, weights=None, layers=None, steps=1, retrain_iter=0, score_batches=None,
        bias=False, damping=lobs.DAMPING, solve_wrapper=None, masks_fn=None):
    """Prune the net of `make_solver()` (a function returning a fresh Solver) with criterion `method` to
    `target` in `steps` steps, retraining `retrain_iter` iterations after each (see the module docstring).

    weights: a .caffemodel loaded into the train net first (None: the solver's own initialisation,
    which is where SNIP scores).  layers: names, None for every plain Convolution / InnerProduct.
    score_batches: forward passes the criterion scores over (DEFAULT_SCORE_BATCHES by method).
    bias: prune biases too.  solve_wrapper(solver): a context manager around each retraining (the
    CLI's SIGINT handling); a stop request ends the run after the current step.  masks_fn(net,
    step_target): the step's masks ({layer: masks} for select.set_masks) in place of the weight-level
    criterion `method` (structured pruning: npcaffe.pruning.structured.select.StructuredStep, which
    scores channels and masks whole filters and the columns reading them); it keeps its own record of
    what earlier steps removed.  Returns a Result.
    """
    if masks_fn is None and method not in METHODS:
        raise NpcaffeError(f"unknown pruning method '{method}'; known: {', '.join(METHODS)}")
    if int(steps) < 1:
        raise NpcaffeError(f"--steps must be at least 1, got {steps}")
    if int(retrain_iter) < 0:
        raise NpcaffeError(f"--retrain_iter must be >= 0, got {retrain_iter}")
    batches = DEFAULT_SCORE_BATCHES.get(method, 0) if score_batches is None else int(score_batches)
    if masks_fn is None and method != "magnitude" and batches < 1:
        raise NpcaffeError(f"--score_batches must be at least 1 for {method} (it scores on data), got {batches}")
    solver = make_solver()
    if weights:
        solver.net.copy_from(weights)
    names = prunable_layers(solver.net, layers)
    if not names:
        raise NetError(f"net '{solver.net.name}' has no Convolution or InnerProduct layer to prune")
    check_target(target, method, names)
    targets = step_targets(target, names, int(steps))
    sigma = select.quality_thresholds(solver.net, 1.0, names) if target.quality is not None else None

    dense_scores = test_scores(solver)
    records, current = [], {}
    stopped = False
    for index, step_target in enumerate(targets, 1):
        started = time.time()
        glog.info(f"Pruning step {index} of {len(targets)} ({method}): target {_describe(step_target)}")
        lobs_error = None
        if masks_fn is not None:
            current = masks_fn(solver.net, step_target)
        else:
            scores, hessians = _score(solver.net, method, names, batches, bias, damping)
            current = step_masks(scores, step_target, target, current, sigma)
        if method == "lobs" and masks_fn is None:
            updates = lobs.compensation(solver.net, current, hessians=hessians)
            lobs.apply_compensation(solver.net, updates)
            lobs_error = OrderedDict((name, float(u.error)) for name, u in updates.items())
        select.set_masks(solver.net, current)
        kept = _kept(solver.net, names)
        glog.info("Kept after pruning: " + ", ".join(f"{n} {k.kept}/{k.params}" for n, k in kept.items()))
        pruned_scores = test_scores(solver)
        retrained_scores, trained = {}, 0
        if retrain_iter:
            if solver.iter:  # a solver already trained: retrain in a fresh one
                fresh = make_solver()
                copy_params(solver.net, fresh.net)
                select.set_masks(fresh.net, current)
                solver = fresh
            glog.info(f"Retraining {retrain_iter} iterations with the masks fixed")
            start_iter = solver.iter
            with progress.stage(f"prune step {index}/{len(targets)}"), \
                    progress.solver_bar(solver, start_iter + int(retrain_iter)):
                if solve_wrapper is None:
                    solver.step(int(retrain_iter))
                else:
                    with solve_wrapper(solver):
                        solver.step(int(retrain_iter))
            trained = solver.iter - start_iter
            stopped = bool(solver.requested_early_exit)
            retrained_scores = test_scores(solver)
        records.append(Step(index, step_target, _kept(solver.net, names), pruned_scores, retrained_scores,
                            trained, lobs_error, time.time() - started))
        if stopped:
            glog.info(f"Stopped at iteration {solver.iter} of step {index}'s retraining")
            break
    return Result(solver, dense_scores, records, stopped)


def _describe(step_target):
    if isinstance(step_target, dict):
        return ", ".join(f"{name} {value:.4g}" for name, value in step_target.items())
    return f"{step_target:.4g} of all chosen entries"
