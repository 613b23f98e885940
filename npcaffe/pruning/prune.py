"""`npcaffe prune`: one pruning method and schedule on the net of any solver, with its outputs.

    npcaffe prune --method magnitude|obd|lobs|snip --solver S.prototxt [--weights W.caffemodel]
                  (--sparsity x | --sparsity L=x ... | --quality q) [--schedule iterative --steps k] ...

The solver's train net has its Convolution / InnerProduct layers (--layers,
default all) pruned by the criterion on the schedule of
npcaffe.pruning.schedule, each step retrained with the solver itself
(`retrain_iter` iterations, default its max_iter; its learning-rate schedule,
momentum, weight decay and test net as given).  Start: --weights, else the
solver's own `weights`, else a dense reference trained first with the
solver as it is; SNIP instead starts from the solver's initialisation (it
prunes before training, then trains the sparse net from scratch).

Written to `out` (default runs/<solver file stem>), <name> the solver's file
name without _solver.prototxt (surgery.surgery_name, as `npcaffe surgery --solver`):
  <name>_<method>_pruned.caffemodel  the pruned net in its own plain layers, W ⊙ T baked
                                     in (two blobs per layer: BVLC Caffe and the
                                     user's deploy net load it)
  report.txt / report.json           the paper's Table 4 per layer (kept counts of the mask
                                     core), multiply-adds kept, test error before pruning
                                     and after each step, settings, wall times
  log.txt                            the whole log (also with quiet)

Structured methods (npcaffe.pruning.structured: l1-filter, apoz, taylor, neurons, ...) prune
whole filters / channels / neurons instead of weights: `sparsity` is then the share of each
layer's channels removed (`--channel_sparsity` on the command line) or `keep_channels` the number
kept, the criterion ranks the channels of each group, the masks remove the filters (weight rows
and bias entries) and what their consumers read of them (weight columns), and the same schedule
retrains with them fixed; the report adds the channels kept per layer and the parameters and
multiply-adds a slim net (rows and columns removed) would have.

The named recipes (npcaffe.pruning.recipes) are this with the paper's
settings and their own retraining solvers in prototxt/<net>/, on MNIST LMDBs
made in the output directory.
"""
import os
import time

from .. import glog
from ..errors import NpcaffeError
from ..fileio.caffemodel import write_caffemodel
from ..fileio.prototxt import read_net
from ..masks import plain_model
from ..proto import caffe_pb2
from ..surgery import prototxt_dir, surgery_name
from . import schedule as sched
from . import structured
from .report import count_macs, count_net, count_slim, format_macs, format_report, format_slim, write_report


def parse_layer_values(items, flag):
    """--sparsity / --quality values -> one number, {layer: number}, or None: "0.9", "ip1=0.92" (repeatable,
    comma-separated); one number and per-layer values together give {every named layer: its value,
    None: the number}, resolved by `resolve_values`."""
    default, per_layer = None, {}
    for item in items or ():
        for part in [p for p in item.split(",") if p]:
            name, sep, value = part.rpartition("=")
            try:
                number = float(value)
            except ValueError:
                number = None
            if number is None or number != number or (sep and not name):
                raise NpcaffeError(f"{flag} '{part}': expected LAYER=VALUE (e.g. ip1=0.9) or one VALUE for every layer")
            if sep:
                per_layer[name] = number
            else:
                default = number
    if not per_layer:
        return default
    if default is not None:
        per_layer[None] = default
    return per_layer


def parse_criterion_options(items):
    """--criterion_option NAME=VALUE items -> {name: value}: true / false, whole numbers and numbers become
    bool, int and float; anything else stays text."""
    options = {}
    for item in items or ():
        for part in [p for p in item.split(",") if p]:
            name, sep, text = part.partition("=")
            if not sep or not name or not text:
                raise NpcaffeError(f"--criterion_option '{part}': expected NAME=VALUE (e.g. normalize=true)")
            lowered = text.lower()
            if lowered in ("true", "false"):
                value = lowered == "true"
            else:
                try:
                    value = int(text)
                except ValueError:
                    try:
                        value = float(text)
                    except ValueError:
                        value = text
            options[name] = value
    return options or None


def resolve_values(value, names):
    """A parsed value with a default for the unnamed layers ({None: x, ...}) -> {layer: value}."""
    if not isinstance(value, dict) or None not in value:
        return value
    return {name: value.get(name, value[None]) for name in names} | {k: v for k, v in value.items() if k is not None}


def _retrain_param(param, out, name, method, iterations):
    p = caffe_pb2.SolverParameter()
    p.CopyFrom(param)
    p.max_iter = iterations
    p.snapshot = 0
    p.snapshot_after_train = False
    p.snapshot_prefix = os.path.join(out, f"{name}_{method}")
    del p.weights[:]
    return p


def _dense_reference(param, out, name, solve_wrapper, weights=None, label="reference"):
    """Train the solver `param` as it is (from `weights` when given: the regularised training); the path of
    its final .caffemodel."""
    from ..solvers import get_solver
    p = caffe_pb2.SolverParameter()
    p.CopyFrom(param)
    p.snapshot_prefix = os.path.join(out, f"{name}_{label}")
    p.snapshot_after_train = True
    del p.weights[:]
    if weights:
        p.weights.extend(weights.split(","))
    solver = get_solver(p)
    if solve_wrapper is None:
        solver.solve()
    else:
        with solve_wrapper(solver):
            solver.solve()
    weights = solver.snapshot_filename(".caffemodel.h5" if p.snapshot_format == p.HDF5 else ".caffemodel")
    if solver.requested_early_exit:
        what = "dense reference" if label == "reference" else "regularised net"
        raise NpcaffeError(f"stopped while training the {what}, at iteration {solver.iter} "
                           f"(snapshot {weights}); give it as --weights to go on from there")
    return weights


def _regularize_param(regularize):
    """(SolverParameter, where) of --regularize_solver (a path, or a pair already loaded)."""
    from ..solvers import load_solver_param
    if isinstance(regularize, tuple):
        return regularize
    if not os.path.isfile(regularize):
        raise NpcaffeError(f"--regularize_solver: solver file '{regularize}' not found")
    return load_solver_param(regularize)


def _accuracy_top(net):
    for name, layer in zip(net.layer_names, net.layers):
        if layer.type == "Accuracy":
            return net.top_names[name][0]
    return None


def _error(scores, top):
    return None if top is None or top not in scores else 100.0 * (1.0 - scores[top])


def run(solver, method, *, sparsity=None, quality=None, global_=False, weights=None, layers=None,
        schedule="direct", steps=None, retrain_iter=None, score_batches=None, bias=False, out=None, quiet=False,
        solve_wrapper=None, name=None, title=None, reference=None, keep_channels=None, criterion_options=None,
        slim=False, regularize=None):
    """Prune the net of `solver` (a solver .prototxt path, or a (SolverParameter, where) pair) and write
    the outputs (see the module docstring).  sparsity / quality: as parse_layer_values gives them (for a
    structured method, sparsity is the share of channels removed); keep_channels: {layer: channels
    kept}, structured methods only, instead of sparsity; criterion_options: keyword options of a
    structured criterion; slim: also write the slim plain net (npcaffe.pruning.slim; structured methods);
    steps: None for 1 (direct) or 3 (iterative).  reference: the SolverParameter
    that trains the dense reference when there are no weights (default the solver itself).  regularize:
    a solver (path or (SolverParameter, where)) that trains the net first, from the weights or without
    them from its own initialisation, and whose result is pruned: the regularised training SSL and
    network slimming prune after (their structured_sparsity_param).  Returns the report as a dict
    (report.json)."""
    was_quiet = glog.is_quiet()
    glog.set_quiet(quiet)
    try:
        return _run(solver, method, sparsity, quality, global_, weights, layers, schedule, steps, retrain_iter,
                    score_batches, bias, out, solve_wrapper, name, title, reference, keep_channels,
                    criterion_options, slim, regularize)
    finally:
        glog.set_quiet(was_quiet)


def _check_schedule(method, schedule, steps):
    """The number of steps, or an NpcaffeError naming the flag."""
    if method not in sched.METHODS and not structured.is_structured(method):
        raise NpcaffeError(f"--method '{method}': choose one of {', '.join(sched.METHODS + tuple(structured.METHODS))}")
    if schedule not in sched.SCHEDULES:
        raise NpcaffeError(f"--schedule '{schedule}': choose direct or iterative")
    if steps is None:
        return 1 if schedule == "direct" else 3
    if schedule == "direct" and steps != 1:
        raise NpcaffeError(f"--steps {steps} with --schedule direct: a direct schedule prunes in one step; "
                           "give --schedule iterative")
    if schedule == "iterative" and steps < 2:
        raise NpcaffeError(f"--steps {steps}: an iterative schedule needs at least 2 steps")
    return steps


def structured_target(net, method, layers, sparsity, keep_channels, quality=None, global_=False, bias=False):
    """(scored layer names, {layer: share of channels removed}) of a structured method's target, checked:
    `sparsity` one share for every layer (`layers`, else every layer whose channels the method can
    prune) or {layer: share}; or `keep_channels` {layer: channels kept}."""
    from .structured.select import channel_groups
    m = structured.method(method)
    for given, flag in ((quality, "--quality"), (global_, "--global"), (bias, "--bias")):
        if given:
            raise NpcaffeError(f"{flag} is for the weight-level methods; {method} removes whole channels "
                               "(--channel_sparsity or --keep_channels)")
    if (sparsity is None) == (keep_channels is None):
        raise NpcaffeError(f"{method} needs one target: --channel_sparsity [LAYER=]share (of each layer's "
                           "channels removed) or --keep_channels LAYER=count")
    per_layer = keep_channels if keep_channels is not None else sparsity
    named = [n for n in per_layer if n is not None] if isinstance(per_layer, dict) else []
    if layers is not None:
        names = list(layers) + named
    elif named and None not in per_layer:
        names = named
    else:  # one share for every layer the method can prune
        names = list(named)
        for name, layer in zip(net.layer_names, net.layers):
            if layer.type in m.layer_types:
                try:
                    channel_groups(net, [name], m.ranks)
                except NpcaffeError:
                    continue  # a classifier, or channels no simple group holds: not pruned by default
                names.append(name)
    flag = "--keep_channels" if keep_channels is not None else "--channel_sparsity"
    for name in names:
        if name not in net.layer_dict:
            where = f"--layers {name}" if name not in named else f"{flag} {name}=..."
            raise NpcaffeError(f"{where}: net '{net.name}' has no layer '{name}'")
    names = [n for n in net.layer_names if n in set(names)]
    if not names:
        raise NpcaffeError(f"{method}: no layer to prune (name them: --channel_sparsity LAYER=share)")
    wrong = [n for n in names if net.layer_dict[n].type not in m.layer_types]
    if wrong:
        raise NpcaffeError(f"{method} prunes the channels of {' / '.join(m.layer_types)} layers, not of "
                           + ", ".join(f"'{n}' ({net.layer_dict[n].type})" for n in wrong))
    channels = {name: group.channels for name, group in channel_groups(net, names, m.ranks).items()}
    if keep_channels is not None:
        from .structured.select import shares_from_counts
        counts = resolve_values(keep_channels, names)
        for name, count in counts.items():
            if count != int(count):
                raise NpcaffeError(f"--keep_channels {name}={count:g}: a number of channels is a whole number")
        shares = shares_from_counts({n: int(counts.get(n, channels[n])) for n in names}, channels)
    else:
        shares = resolve_values(sparsity, names)
        if not isinstance(shares, dict):
            shares = {name: shares for name in names}
        for name in names:
            share = shares.get(name, 0.0)
            if not 0 <= share < 1:
                raise NpcaffeError(f"--channel_sparsity {name}={share:g}: the share of channels removed must be "
                                   "in [0, 1) (at least one channel stays)")
    from .structured.select import removed_count
    for name in names:
        removed_count(shares.get(name, 0.0), channels[name], name)
    return names, {name: float(shares.get(name, 0.0)) for name in names}


def _run(solver, method, sparsity, quality, global_, weights, layers, schedule, steps, retrain_iter, score_batches,
         bias, out, solve_wrapper, name, title, reference, keep_channels=None, criterion_options=None, slim=False,
         regularize=None):
    from ..solvers import get_solver, load_solver_param

    if isinstance(solver, tuple):
        param, where = solver
    else:
        if not os.path.isfile(solver):
            raise NpcaffeError(f"--solver: solver file '{solver}' not found")
        param, where = load_solver_param(solver)
    steps = _check_schedule(method, schedule, steps)
    if retrain_iter is None:
        if not (param.HasField("max_iter") and param.max_iter > 0):
            raise NpcaffeError(f"{where}: field 'max_iter' is not set; give --retrain_iter N (iterations of "
                               "retraining after each pruning step)")
        retrain_iter = param.max_iter
    if weights is None and param.weights:
        weights = ",".join(param.weights)
    for path in (weights or "").split(","):
        if path and not os.path.isfile(path):
            raise NpcaffeError(f"--weights: '{path}' not found")
    name = name or surgery_name(where)
    out = out or os.path.join("runs", os.path.splitext(os.path.basename(where))[0])
    retrain = _retrain_param(param, out, name, method, int(retrain_iter))

    def make_solver():
        return get_solver(retrain)

    os.makedirs(out, exist_ok=True)
    log_file = os.path.join(out, "log.txt")
    summary = {"solver": where, "method": method, "schedule": schedule, "steps": steps,
               "retrain_iter": int(retrain_iter), "bias": bool(bias), "global": bool(global_),
               "structured": structured.is_structured(method)}
    started = time.time()
    with glog.tee(log_file):
        glog.info(f"npcaffe prune --method {method} --solver {where}: {schedule} schedule, {steps} step(s), "
                  f"{retrain_iter} retraining iterations each")
        probe = make_solver()  # layers and target checked before any training
        masks_fn = None
        if structured.is_structured(method):
            from .structured.select import StructuredStep
            names, shares = structured_target(probe.net, method, layers, sparsity, keep_channels, quality,
                                              global_, bias)
            target = sched.Target(shares)
            masks_fn = StructuredStep(method, names, score_batches, criterion_options)
            summary["channels_before"] = masks_fn.channels(probe.net)
            summary["criterion_options"] = dict(criterion_options or {})
        else:
            if slim:
                raise NpcaffeError(f"--slim removes whole channels: it follows a structured method, not {method}")
            if keep_channels is not None or criterion_options:
                raise NpcaffeError(f"--keep_channels and criterion options are for structured methods, not {method}")
            names = sched.prunable_layers(probe.net, layers)
            target = sched.Target(resolve_values(sparsity, names), resolve_values(quality, names), bool(global_))
            sched.check_target(target, method, names)
        del probe
        if regularize is not None:
            regularize_param, regularize_where = _regularize_param(regularize)
            glog.info(f"Regularised training with {regularize_where} from {weights or 'its initialisation'} first")
            summary["regularized_from"], summary["regularize_solver"] = weights, regularize_where
            weights = _dense_reference(regularize_param, out, name, solve_wrapper, weights, "regularized")
        elif weights is None and method != "snip":
            glog.info("No --weights: training a dense reference with the solver as it is first")
            weights = _dense_reference(reference or param, out, name, solve_wrapper)
        summary["weights"] = weights
        result = sched.run(make_solver, method, target, weights=weights, layers=names, steps=steps,
                           retrain_iter=int(retrain_iter), score_batches=score_batches, bias=bias,
                           solve_wrapper=solve_wrapper, masks_fn=masks_fn)
        pruned = os.path.join(out, f"{name}_{method}_pruned.caffemodel")
        write_caffemodel(plain_model(result.solver.net), pruned)
        glog.info(f"Pruned model (masks baked into the plain layers) written to {pruned}")
        if slim:
            summary.update(write_slim(param, result.solver, pruned, out, f"{name}_{method}"))
    summary.update(_summary(result, names, target, score_batches, method, pruned, log_file, started))
    if masks_fn is not None:
        summary.update(_structured_summary(result.solver.net, masks_fn, summary.pop("channels_before")))
    text = report_text(summary, format_report(count_net(result.solver.net)), title)
    write_report(out, summary, text)
    return summary


def _summary(result, names, target, score_batches, method, pruned, log_file, started):
    solver = result.solver
    net = solver.net
    top = _accuracy_top(solver.test_nets[0]) if solver.test_nets else None
    rows = count_net(net)
    macs = count_macs(net)
    total, kept = sum(r.params for r in rows), sum(r.kept for r in rows)
    final = result.steps[-1]
    final_scores = final.retrained_scores or final.pruned_scores
    chosen = [r for r in rows if r.name in names]
    weights_total = sum(net.layer_dict[n].blobs[0].count for n in names)
    weights_kept = sum(int((net.layer_dict[n].blobs[0].data != 0).sum()) for n in names)
    return {
        "layers_pruned": names,
        "target": {"sparsity": target.sparsity, "quality": target.quality},
        "score_batches": (sched.DEFAULT_SCORE_BATCHES.get(method, structured.METHODS[method].default_batches
                                                          if structured.is_structured(method) else 0)
                          if score_batches is None else int(score_batches)),
        "accuracy_output": top,
        "dense_test_scores": result.dense_scores, "dense_test_error_pct": _error(result.dense_scores, top),
        "test_scores": final_scores, "test_error_pct": _error(final_scores, top),
        "test_iter": list(solver.param.test_iter),
        "params": total, "kept": kept, "compression": total / kept if kept else None,
        "pruned_layers_params": sum(r.params for r in chosen), "pruned_layers_kept": sum(r.kept for r in chosen),
        "weight_sparsity": 1 - weights_kept / weights_total if weights_total else None,
        "macs_per_sample": sum(m.dense for m in macs), "macs_kept": sum(m.kept for m in macs),
        "layers": {r.name: {"type": r.type, "params": r.params, "kept": r.kept} for r in rows},
        "macs": {m.name: {"dense": m.dense, "kept": m.kept} for m in macs},
        "steps_done": [{
            "step": s.index, "target": s.target,
            "kept": {n: k.kept for n, k in s.kept.items()},
            "test_error_pct_pruned": _error(s.pruned_scores, top),
            "test_error_pct_retrained": _error(s.retrained_scores, top),
            "iterations": s.iterations, "lobs_layer_error": s.lobs_error, "seconds": s.seconds,
        } for s in result.steps],
        "stopped_early": result.stopped_early,
        "iterations": sum(s.iterations for s in result.steps),
        "seconds": time.time() - started,
        "pruned_model": pruned, "log": log_file,
    }


def _net_param(param):
    """The NetParameter of a solver (net_param, or the file `net` names), all phases; None for a solver
    with separate train_net / test_net files."""
    if param.HasField("net_param"):
        return param.net_param
    if param.net:
        return read_net(param.net)
    return None


def write_slim(param, solver, pruned, out, stem):
    """npcaffe slim on the pruned model: <stem>_slim.prototxt (the solver's net, train and test, with
    the removed channels gone) and <stem>_slim.caffemodel in `out`; the counts and the largest output
    difference from the masked net for the report."""
    from ..fileio.prototxt import write_text
    from ..graph import DATA_LAYER_TYPES, replace_data_layers
    from ..layer import TEST
    from ..net import Net
    from ..synthetic import fill_inputs
    from . import slim as slimming
    original = _net_param(param)
    if original is None:
        raise NpcaffeError("--slim: the solver names train_net / test_net files; give it one `net` to slim")
    shaped = solver.test_nets[0] if solver.test_nets else solver.net
    shapes = {top: tuple(shaped.blobs[top].shape) for lp in shaped.param.layer if lp.type in DATA_LAYER_TYPES
              for top in lp.top}
    net = Net(replace_data_layers(original, shapes), TEST)
    slimming.load_weights(net, pruned)
    fill_inputs(net, 0)
    result = slimming.slim_net(net, original)
    model, weights = os.path.join(out, f"{stem}_slim.prototxt"), os.path.join(out, f"{stem}_slim.caffemodel")
    write_text(result["param"], model)
    write_caffemodel(slimming._weights_param(result["net"]), weights)
    after = {n: {"params": p, "macs": m} for n, (t, p, m) in result["after"].items()}
    glog.info(f"Slim net written to {model} and {weights}")
    return {"slim_model": model, "slim_weights": weights, "slim_layers": after,
            "slim_params_written": sum(v["params"] for v in after.values()),
            "slim_macs_written": sum(v["macs"] for v in after.values()),
            "slim_output_difference": result["differences"], "slim_notes": result["notes"]}


def _structured_summary(net, step, channels_before):
    """The channels kept per scored layer and the slim net's counts (report.count_slim)."""
    slim = count_slim(net)
    return {
        "ranks": structured.method(step.method.name).ranks,
        "channels": {name: {"channels": channels_before[name], "kept": int(len(kept)),
                            "kept_indices": [int(i) for i in kept]} for name, kept in step.kept.items()},
        "slim": {r.name: r._asdict() for r in slim},
        "slim_params": sum(r.params_slim for r in slim), "slim_macs": sum(r.macs_slim for r in slim),
        "dense_weight_params": sum(r.params for r in slim), "dense_macs": sum(r.macs for r in slim),
    }


def report_text(s, table, title=None):
    """report.txt: what ran, Table 4, multiply-adds, the errors step by step, where the files are."""
    from .report import LayerMacs
    head = title or f"npcaffe prune --method {s['method']} on {s['solver']}"
    done = f"{s['iterations']} retraining iterations" + (" (stopped early)" if s["stopped_early"] else "")
    lines = [f"{head}: {s['schedule']} schedule, {len(s['steps_done'])} of {s['steps']} step(s), {done}, "
             f"{s['seconds']:.0f} s (from {s['weights'] or 'the initialisation'})",
             "target: " + _target_text(s), table,
             format_macs([LayerMacs(n, "", m["dense"], m["kept"]) for n, m in s["macs"].items()])]
    weight_share = s["weight_sparsity"]
    lines.append(f"sparsity of the pruned layers' weights: {100 * weight_share:.2f}% "
                 f"({', '.join(s['layers_pruned'])})")
    if s.get("structured"):
        from .report import LayerSlim
        lines.append(f"{s['ranks']} kept: " + ", ".join(f"{n} {c['kept']} of {c['channels']}"
                                                        for n, c in s["channels"].items()))
        lines.append(format_slim([LayerSlim(**row) for row in s["slim"].values()]))
    top = s["accuracy_output"]
    if top is not None:
        lines.append(f"test error before pruning {s['dense_test_error_pct']:.2f}%, after: "
                     f"{s['test_error_pct']:.2f}% ({top}, test net #0, {s['test_iter'][0]} iterations)")
        for step in s["steps_done"]:
            retrained = step["test_error_pct_retrained"]
            lines.append(f"  step {step['step']}: pruned {step['test_error_pct_pruned']:.2f}%"
                         + (f", retrained {step['iterations']} iterations {retrained:.2f}%" if retrained is not None
                            else "") + f" ({step['seconds']:.0f} s)")
    elif not s["dense_test_scores"]:
        lines.append("no test net in the solver (test_iter): no test error")
    lines.append(f"pruned model (masks baked, the net's own plain layers): {s['pruned_model']}")
    if s.get("slim_model"):
        worst = max(s["slim_output_difference"].values(), default=0.0)
        lines.append(f"slim net (npcaffe slim): {s['slim_model']} and {s['slim_weights']}: "
                     f"{s['slim_params_written']} parameters, {s['slim_macs_written']} multiply-adds per sample; "
                     f"outputs within {worst:.1e} of the masked net's (of the largest output)")
        lines += [f"  note: {note}" for note in s["slim_notes"]]
    lines.append(f"log: {s['log']}")
    return "\n".join(lines)


def _target_text(s):
    if s.get("structured"):
        shares = s["target"]["sparsity"]
        options = "".join(f" {k}={v}" for k, v in s.get("criterion_options", {}).items())
        return ("--channel_sparsity " + ",".join(f"{n}={v:g}" for n, v in shares.items())
                + (f" --score_batches {s['score_batches']}" if s["score_batches"] else "") + options)
    parts = []
    for key, flag in (("sparsity", "--sparsity"), ("quality", "--quality")):
        value = s["target"][key]
        if value is None:
            continue
        if isinstance(value, dict):
            parts.append(f"{flag} " + " ".join(f"{n}={v:g}" for n, v in value.items()))
        else:
            parts.append(f"{flag} {value:g}")
    if s["global"]:
        parts.append("--global")
    if s["bias"]:
        parts.append("--bias")
    parts.append(f"--score_batches {s['score_batches']}" if s["method"] != "magnitude" else "")
    return " ".join(p for p in parts if p)


# -- the named recipes -------------------------------------------------------------------------
def run_recipe(recipe_name, mnist=None, weights=None, out=None, quiet=False, solve_wrapper=None, **overrides):
    """Run a named recipe (npcaffe.pruning.recipes) on MNIST LMDBs made in out/data/mnist (from `mnist`,
    $NPCAFFE_MNIST_DIR or a download); keyword arguments of `run` given here override the recipe's."""
    from ..data.mnist import prepare_mnist_lmdbs
    from .recipes import recipe
    r = recipe(recipe_name)
    settings = recipe_settings(r)
    if ("quality" in overrides or "keep_channels" in overrides) and "sparsity" not in overrides:
        settings["sparsity"] = None
    if "schedule" in overrides and "steps" not in overrides:
        settings["steps"] = None
    settings.update(overrides)
    out = out or os.path.join("runs", recipe_name)
    train_lmdb, _ = prepare_mnist_lmdbs(os.path.join(out, "data", "mnist"), mnist)
    lmdb_dir = os.path.dirname(train_lmdb)
    if r.regularize_solver and "regularize" not in settings:
        settings["regularize"] = recipe_solver(r.net, r.regularize_solver, lmdb_dir)
    if r.from_init and weights is not None:
        glog.info(f"--recipe {recipe_name} starts from its net's initialisation; --weights {weights} replaces it")
    return run(recipe_solver(r.net, r.solver, lmdb_dir), r.method, weights=weights, out=out, quiet=quiet,
               solve_wrapper=solve_wrapper, name=r.net, title=f"npcaffe prune --recipe {recipe_name} ({r.paper})",
               reference=recipe_solver(r.net, r.dense_solver, lmdb_dir)[0], **settings)


def recipe_settings(r):
    """The keyword arguments of `run` a Recipe gives (its regularising solver aside: it needs the LMDBs)."""
    settings = {"sparsity": r.sparsity, "global_": r.global_, "schedule": r.schedule, "steps": r.steps,
                "retrain_iter": r.retrain_iter, "score_batches": r.score_batches}
    if r.options:
        settings["criterion_options"] = dict(r.options)
    return settings


def recipe_solver(net_name, solver_file, lmdb_dir):
    """(SolverParameter, where) of prototxt/<net_name>/<solver_file>, its net inlined, the Data layers
    reading the LMDBs in lmdb_dir."""
    from ..solvers import load_solver_param
    root = os.path.join(prototxt_dir(), net_name)
    param, where = load_solver_param(os.path.join(root, solver_file))
    net = read_net(os.path.join(root, os.path.basename(param.net)))
    for layer in net.layer:
        if layer.type == "Data":
            layer.data_param.source = os.path.join(lmdb_dir, os.path.basename(layer.data_param.source))
    param.ClearField("net")
    param.net_param.CopyFrom(net)
    return param, where
