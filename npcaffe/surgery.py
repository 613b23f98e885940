"""`npcaffe surgery`: dynamic network surgery on any net (`run_solver`), and the paper's LeNet recipes (`run`).

Any net, `npcaffe surgery --solver S.prototxt --weights W.caffemodel`: the
solver's net has its Convolution / InnerProduct layers turned into DNS
layers (npcaffe.pruning.dnsify, whose docstring gives the defaults and
why), the user's solver trains it (max_iter, schedule, test net as given;
snapshots into the output directory), and the result is written as the
user's own plain net with the masks baked in, as a resumable 4-blob DNS
snapshot with its converted net and solver, and as a report (Table 4 per
layer, test error from the solver's test net) with the whole log.

The named recipes, `npcaffe surgery lenet5|lenet300100`: MNIST -> LMDB ->
(a dense reference, if no --weights) -> dynamic network surgery -> (a
fine-tuning stage with the masks frozen, where the recipe has one) -> test
on all 10,000 test images -> report (per-layer kept parameters,
compression, error, iterations, wall time).  The nets and solvers are the
ones in prototxt/<net>/ (their DNS nets are `dnsify` of the dense ones with
the release's per-layer settings: tests/pruning/test_dnsify.py); data paths
in them are rewritten to the run's own LMDBs, snapshots go to the run
directory.  `iterations` (a quick try) cuts the surgery short and skips the
fine-tuning stage.
"""
import json
import os
import sys
import time

from . import glog, progress
from .errors import NpcaffeError
from .masks import layer_kept, masked_layers, plain_model
from .fileio.prototxt import read_net, read_solver

NETS = {
    "lenet5": {"dense": "lenet5_train_test.prototxt", "dense_solver": "lenet5_solver.prototxt",
               "dns": "lenet5_dns_train_test.prototxt", "dns_solver": "lenet5_dns_solver.prototxt",
               "finetune_solver": "lenet5_dns_finetune_solver.prototxt"},
    "lenet300100": {"dense": "lenet300100_train_test.prototxt", "dense_solver": "lenet300100_solver.prototxt",
                    "dns": "lenet300100_dns_train_test.prototxt", "dns_solver": "lenet300100_dns_solver.prototxt"},
}


# DNS-CP recipes (`npcaffe surgery lenet5-cp`): npcaffe surgery --solver S --channels with these settings on
# MNIST LMDBs made in the run directory; `why` says where each setting comes from.
CP_RECIPES = {
    "lenet5-cp": {
        "net": "lenet5", "model": "lenet5_train_test.prototxt", "solver": "lenet5_dnscp_solver.prototxt",
        "finetune_solver": "lenet5_dnscp_finetune_solver.prototxt", "finetune_iter": 6000,
        "layers": ["conv2", "ip1"], "c_rate": {"conv2": 0.0, "ip1": 0.0}, "gamma": 1e-4, "power": 1.0,
        "iter_stop": 1200,
        "why": "conv2 and ip1, the layers whose input channels the issue's target names (conv1 reads the image's "
               "one channel; pruning ip2's inputs would be neuron pruning); c_rate 0, not the seed's usual 0.1: "
               "the dense model's channel means lie close to the layer mean (ip1: 0.0210-0.0230 against mu 0.0219, "
               "std 0.0134), so 0.1 prunes no ip1 channel and 5 of conv2's 20, while 0 prunes those below the "
               "mean (12 / 20 and 27 / 50 at iteration 0); gamma 1e-4, power 1 as the DNS LeNet recipes; "
               "iter_stop 1,200 of 1,500 (80%); fine-tuning the tailored net 6,000 iterations (the solvers' "
               "comments say why)"},
}


def prototxt_dir():
    """prototxt/ of this checkout: beside the package (source or editable install), else installed data."""
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [os.path.join(os.getcwd(), "prototxt"), os.path.join(os.path.dirname(here), "prototxt"),
                  os.path.join(sys.prefix, "share", "npcaffe", "prototxt")]
    for path in candidates:
        if os.path.isdir(os.path.join(path, "lenet5")):
            return path
    raise NpcaffeError("cannot find npcaffe's prototxt/ directory (looked in " + ", ".join(candidates) + "); "
                       "run from the repository root")


def _solver_with_paths(solver_path, net_path, lmdb_dir, prefix, max_iter=None):
    """The solver of prototxt/, its net inlined, data sources -> lmdb_dir, snapshots -> prefix."""
    solver = read_solver(solver_path)
    net = read_net(net_path)
    for layer in net.layer:
        if layer.type == "Data":
            layer.data_param.source = os.path.join(lmdb_dir, os.path.basename(layer.data_param.source))
    solver.ClearField("net")
    solver.net_param.CopyFrom(net)
    solver.snapshot_prefix = prefix
    if max_iter is not None:
        solver.max_iter = max_iter
        solver.test_interval = min(solver.test_interval, max_iter) or max_iter
        solver.snapshot = 0
    solver.snapshot_after_train = True
    return solver


def _build(solver_param, weights=None, restore=None):
    """A solver of solver_param, set up as a fresh run sets it up: `weights` copied in, or the
    previous stage's snapshot `restore`d (fine-tuning goes on from the surgery's last iteration)."""
    def build():
        from .solvers import get_solver
        solver = get_solver(solver_param)
        if weights:
            solver.copy_weights(weights)
        if restore:
            glog.info(f"Going on from {restore}")
            solver.restore(restore)
        return solver
    return build


def _final_test(solver, name):
    """(accuracy, loss) of test net #0 at the solver's iteration: the test solve() ran at its last
    iteration when there was one (it is not run twice), else a test now."""
    tested_at, results = solver.last_test.get(0, (None, None))
    if tested_at != solver.iter:
        with progress.stage(name):
            results = solver.test(0)
    results = dict(results)
    return float(results["accuracy"]), float(results["loss"])


def _reference_weights(net_name):
    """Weights to start the surgery from when --weights is not given: the DNS release's dense model
    (already fetched, or fetched now), else None: train one (said in the log, with how long)."""
    from .fetch import FetchError, cached_model, fetch_model
    model = f"dns-{net_name}"
    path = cached_model(model)
    try:
        path = path or fetch_model(model)
    except FetchError as exc:
        glog.warning(f"No --weights, and the DNS release's dense reference could not be fetched ({exc})")
        return None
    glog.info(f"No --weights: starting from the DNS release's dense {net_name}, {path} (npcaffe fetch-model {model})")
    return path


def run(net_name, workdir, mnist=None, weights=None, iterations=None, quiet=False, solve_wrapper=None,
        resume=False, resume_command=None):
    """The named recipe end to end (module docstring), in workdir with its log.txt and run.json.

    solve_wrapper(solver): a context manager around each stage's training (the CLI's signal
    handling): a stop snapshots the stage and raises stages.RunStopped; resume=True goes on
    from there bit for bit (npcaffe.stages).  Without weights: the DNS release's dense model
    (npcaffe fetch-model), else a dense reference trained first, shortened to `iterations`
    when they are given (a quick try), the log says which."""
    from .data.mnist import prepare_mnist_lmdbs
    from .fileio.caffemodel import write_caffemodel
    from .pruning.report import LayerCount, format_report
    from .stages import RunState

    if net_name not in NETS:
        raise NpcaffeError(f"unknown net '{net_name}' (choose from {', '.join(NETS)})")
    files = NETS[net_name]
    root = os.path.join(prototxt_dir(), net_name)
    workdir = os.path.abspath(workdir)
    os.makedirs(os.path.join(workdir, "snap"), exist_ok=True)
    started = time.time()
    run_state = RunState(workdir, {"net": net_name, "weights": weights and os.path.abspath(weights),
                                   "iterations": iterations}, resume=resume,
                         resume_command=resume_command or f"npcaffe surgery {net_name} --resume --out {workdir}")
    weights, iterations = run_state.settings["weights"], run_state.settings["iterations"]
    log_file = os.path.join(workdir, "log.txt")
    was_quiet = glog.is_quiet()
    glog.set_quiet(quiet)
    try:
        with glog.tee(log_file, append=resume):
            glog.info(f"npcaffe surgery {net_name} in {workdir}" + (" (resumed)" if resume else ""))
            train_lmdb, _ = prepare_mnist_lmdbs(os.path.join(workdir, "data", "mnist"), mnist)
            lmdb_dir = os.path.dirname(train_lmdb)
            summary = {"net": net_name}
            if weights is None and "reference" not in run_state.settings:
                run_state.set_setting("reference", _reference_weights(net_name))
            if weights is None and run_state.settings["reference"]:
                weights = run_state.settings["reference"]
            if weights is None:
                dense = _solver_with_paths(os.path.join(root, files["dense_solver"]), os.path.join(root, files["dense"]),
                                           lmdb_dir, os.path.join(workdir, "snap", f"{net_name}_reference"), iterations)
                glog.info(f"Training a dense reference {net_name} first: {dense.max_iter} iterations of Caffe's MNIST "
                          + ("recipe, shortened as the surgery (--iterations)" if iterations else
                             "recipe (give --weights, or npcaffe fetch-model, to skip it)"))
                solver = run_state.stage("dense reference", _build(dense), solve_wrapper)
                weights = solver.snapshot_filename(".caffemodel")
                summary["reference_accuracy"] = _final_test(solver, "dense reference: test")[0]
                summary["reference_iterations"] = int(dense.max_iter)
            summary["weights"] = os.path.abspath(weights)
            dns = _solver_with_paths(os.path.join(root, files["dns_solver"]), os.path.join(root, files["dns"]),
                                     lmdb_dir, os.path.join(workdir, "snap", f"{net_name}_dns"), iterations)
            surgery_started = time.time()
            solver = run_state.stage("surgery", _build(dns, weights), solve_wrapper)
            stages = {"surgery": int(dns.max_iter)}
            if "finetune_solver" in files and iterations is None:
                stage1 = solver.snapshot_filename(".solverstate")
                finetune = _solver_with_paths(os.path.join(root, files["finetune_solver"]),
                                              os.path.join(root, files["dns"]), lmdb_dir,
                                              os.path.join(workdir, "snap", f"{net_name}_dns"))
                glog.info(f"Fine-tuning with the masks frozen, from {stage1}")
                solver = run_state.stage("fine-tuning", _build(finetune, restore=stage1), solve_wrapper)
                stages["fine-tuning"] = int(finetune.max_iter) - int(dns.max_iter)
            surgery_seconds = time.time() - surgery_started
            accuracy, loss = _final_test(solver, "final test")
            glog.info(f"Final test on all 10,000 MNIST test images: accuracy {accuracy:.4f}, loss {glog.fmt(loss)}")

            final = os.path.join(workdir, f"{net_name}_dns.caffemodel")
            solver.net.save(final)
            plain_path = os.path.join(workdir, f"{net_name}_dns_pruned.caffemodel")
            write_caffemodel(plain_model(solver.net), plain_path)
    finally:
        glog.set_quiet(was_quiet)
    rows = [LayerCount(name, layer.type, *layer_kept(layer)) for name, layer in masked_layers(solver.net)]
    total, kept = sum(r.params for r in rows), sum(r.kept for r in rows)
    split = " + ".join(f"{n:,} {stage}" for stage, n in stages.items())
    summary.update({
        "iterations": sum(stages.values()), "stages": stages, "test_accuracy": accuracy,
        "test_error_pct": 100 * (1 - accuracy), "test_loss": loss, "params": total, "kept": kept,
        "compression": total / kept if kept else None,
        "surgery_seconds": surgery_seconds, "total_seconds": time.time() - started,
        "model_with_masks": final, "pruned_model": plain_path, "log": log_file,
        "layers": {r.name: {"params": r.params, "kept": r.kept} for r in rows},
    })
    if "reference_iterations" in summary:
        split = f"{summary['reference_iterations']:,} dense reference, then {split}"
    text = [f"Dynamic network surgery on {net_name}: {split} iterations "
            f"in {surgery_seconds:.0f} s (total {summary['total_seconds']:.0f} s, from {summary['weights']})",
            format_report(rows),
            f"test error {summary['test_error_pct']:.2f}% (accuracy {accuracy:.4f}, loss {loss:.6g}) "
            f"on all 10,000 MNIST test images",
            f"pruned model (masks applied, plain layers): {plain_path}",
            f"model with masks (resume surgery, inspect masks):  {final}",
            f"log: {log_file}"]
    from .pruning.report import write_report
    write_report(workdir, summary, "\n".join(text))
    return summary


def run_cp_recipe(recipe_name, workdir, mnist=None, weights=None, iterations=None, quiet=False, solve_wrapper=None):
    """A DNS-CP recipe (CP_RECIPES): MNIST LMDBs in workdir, the recipe's solvers with their data there,
    then run_solver(..., channels=True) into workdir; `iterations` (a quick try) shortens both stages."""
    from .data.mnist import prepare_mnist_lmdbs
    from .fileio.prototxt import to_text
    if recipe_name not in CP_RECIPES:
        raise NpcaffeError(f"unknown DNS-CP recipe '{recipe_name}' (choose from {', '.join(CP_RECIPES)})")
    r = CP_RECIPES[recipe_name]
    root = os.path.join(prototxt_dir(), r["net"])
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    train_lmdb, _ = prepare_mnist_lmdbs(os.path.join(workdir, "data", "mnist"), mnist)
    lmdb_dir = os.path.dirname(train_lmdb)
    files = {}
    for key in ("solver", "finetune_solver"):
        solver = _solver_with_paths(os.path.join(root, r[key]), os.path.join(root, r["model"]), lmdb_dir,
                                    os.path.join(workdir, "snap", key))
        solver.snapshot_after_train = False
        files[key] = os.path.join(workdir, r[key])
        with open(files[key], "w") as f:
            f.write(f"# {os.path.join(root, r[key])} with its data in {lmdb_dir} (npcaffe surgery {recipe_name})\n"
                    + to_text(solver))
    stop = r["iter_stop"]
    finetune_iter = r["finetune_iter"]
    if iterations is not None:
        stop = int(iterations) * 4 // 5
        finetune_iter = int(iterations)
    glog.info(f"DNS-CP recipe {recipe_name}: {r['why']}")
    return run_solver(files["solver"], out=workdir, weights=weights, layers=r["layers"], c_rate=r["c_rate"],
                      gamma=r["gamma"], power=r["power"], iter_stop=stop, iterations=iterations, quiet=quiet,
                      solve_wrapper=solve_wrapper, channels=True, finetune_iter=finetune_iter,
                      finetune_solver=files["finetune_solver"])


# -- any net: `npcaffe surgery --solver S.prototxt` ------------------------------------------
_NET_FIELDS = ("net", "net_param", "train_net", "train_net_param", "test_net", "test_net_param")


def surgery_name(solver_path):
    """Stem of the output files: the solver file's name without .prototxt and a trailing _solver."""
    stem = os.path.splitext(os.path.basename(solver_path))[0]
    return stem[:-len("_solver")] if stem.endswith("_solver") and stem != "_solver" else stem


def _solver_net(param, where, model):
    """(NetParameter, where it came from) of the one net the solver trains and tests."""
    if model:
        if not os.path.isfile(model):
            raise NpcaffeError(f"--model: net file '{model}' not found")
        return read_net(model), model
    if param.HasField("net_param"):
        return param.net_param, f"{where} (net_param)"
    if param.HasField("net"):
        if not os.path.isfile(param.net):
            raise NpcaffeError(f"{where}: field 'net': net file '{param.net}' not found (relative paths are taken "
                               f"from the working directory, {os.getcwd()}); run from the directory the solver "
                               "expects, or give the net with --model")
        return read_net(param.net), param.net
    for field in ("train_net", "train_net_param"):
        if param.HasField(field):
            raise NpcaffeError(f"{where}: field '{field}': surgery needs one net for training and testing (field "
                               "net or net_param); put the train and test nets in one file with phase rules, "
                               "or give such a file with --model")
    raise NpcaffeError(f"{where}: no net given (field 'net'); give one with --model")


def _solver_for(param, net, prefix, max_iter):
    """The user's solver with `net` (a path or a NetParameter) as its one net, snapshots to prefix."""
    out = type(param)()
    out.CopyFrom(param)
    for field in _NET_FIELDS:
        out.ClearField(field)
    if isinstance(net, str):
        out.net = net
    else:
        out.net_param.CopyFrom(net)
    out.snapshot_prefix = prefix
    out.max_iter = max_iter
    out.snapshot_after_train = True
    del out.weights[:]
    return out


def _solve(solver, solve_wrapper):
    if solve_wrapper is None:
        solver.solve()
        return
    with solve_wrapper(solver):
        solver.solve()


def _model_ext(param):
    from .proto import caffe_pb2
    return ".caffemodel.h5" if param.snapshot_format == caffe_pb2.SolverParameter.HDF5 else ".caffemodel"


def _test_scores(solver):
    """({output: value}, first Accuracy top or None) of the solver's test net #0, or ({}, None)."""
    if not solver.test_nets:
        return {}, None
    tested_at, results = solver.last_test.get(0, (None, None))
    if tested_at != solver.iter:  # solve() tests at its last iteration when test_interval divides it
        with progress.stage("final test"):
            results = solver.test(0)
    scores = {}
    for name, value in results:
        scores.setdefault(name, float(value))
    net = solver.test_nets[0]
    accuracy = [top for name, layer in zip(net.layer_names, net.layers) if layer.type == "Accuracy"
                for top in net.top_names[name]]
    return scores, next((top for top in accuracy if top in scores), None)


def report_rows(net, record):
    """Table 4 rows (pruning.report.LayerCount) of a DNS net: every layer with parameters, the
    kept counts of the mask core; a bias dnsify added to a bias_term: false layer is not counted."""
    from .masks import effective_params, kept_counts
    from .pruning.report import LayerCount, count_net
    zero_bias = {c.name for c in record if c.zero_bias}
    layers = dict(zip(net.layer_names, net.layers))
    rows = []
    for row in count_net(net):
        if row.name in zero_bias:
            row = LayerCount(row.name, row.type, *kept_counts(effective_params(layers[row.name])[0]))
        rows.append(row)
    return rows


def run_solver(solver_path, out=None, weights=None, model=None, layers=None, c_rate=None, default_c_rate=None,
               gamma=None, power=None, iter_stop=None, iterations=None, data_shapes=None, quiet=False,
               solve_wrapper=None, channels=False, finetune_iter=None, finetune_solver=None, resume=False,
               resume_command=None):
    """DNS on the net of any solver: dnsify its Convolution / InnerProduct layers, train, bake, report.

    channels: DNS-CP instead (masks on whole input channels, npcaffe.layerlib.dns_cp): the files
    are named <name>_dnscp_* and after the surgery the baked model is tailored (npcaffe slim, see
    pruning.dnscp) into <name>_dnscp_tailored.prototxt / .caffemodel and fine-tuned for
    `finetune_iter` iterations (default: the surgery's max_iter; 0: not at all) with
    `finetune_solver` (a solver file, its net replaced by the tailored one; default: the solver)
    into <name>_dnscp_finetuned_iter_N.caffemodel; the report gives the channels kept per layer and
    the test scores after the surgery and after fine-tuning.

    Writes into `out` (default runs/<solver file stem>), with <name> = surgery_name(solver_path):
    <name>_dns_train_test.prototxt and <name>_dns_solver.prototxt (the converted net and the
    solver that ran it), the final 4-blob snapshot <name>_dns_iter_N.caffemodel + .solverstate
    (resume with npcaffe train --solver <name>_dns_solver.prototxt --snapshot ...),
    <name>_dns_pruned.caffemodel (masks baked into the user's own plain layers: BVLC Caffe and
    the user's deploy net load it), report.txt / report.json (Table 4, test scores) and log.txt
    (the whole log, INFO lines included when quiet).  Without `weights` (or the solver's own
    `weights`) a dense reference is trained first, with the solver as it is.  layers, c_rate,
    default_c_rate, gamma, power, iter_stop: as pruning.dnsify.dnsify, None for its defaults
    (iter_stop: 80% of max_iter).  iterations overrides max_iter (of the reference too).
    data_shapes {top: shape}: train on generated data (synthetic.generated_data_net).
    solve_wrapper(solver): a context manager around training (the CLI's SIGINT handling); a stop
    in the dense reference raises stages.RunStopped, a stop in the surgery still writes the report
    (stopped early); resume=True goes on from the run's snapshot in `out` (npcaffe.stages: the
    same settings are required, resume_command is what the stop message tells to run).
    """
    from .stages import RunState, RunStopped
    tag = "dnscp" if channels else "dns"
    from .fileio.caffemodel import write_caffemodel
    from .fileio.prototxt import to_text
    from .pruning import dnsify as dz
    from .pruning.report import format_report, write_report
    from .solvers import get_solver
    from .synthetic import generated_data_net

    if not os.path.isfile(solver_path):
        raise NpcaffeError(f"--solver: solver file '{solver_path}' not found")
    param = read_solver(solver_path)
    name = surgery_name(solver_path)
    if iterations is not None:
        max_iter = int(iterations)
    elif param.HasField("max_iter") and param.max_iter > 0:
        max_iter = param.max_iter
    else:
        raise NpcaffeError(f"{solver_path}: field 'max_iter' is not set; DNS needs it (the default iter_stop is "
                           "80% of it): set it, or give --iterations")
    net_param, net_where = _solver_net(param, solver_path, model)
    settings = {"gamma": dz.GAMMA if gamma is None else float(gamma),
                "power": dz.POWER if power is None else float(power),
                "iter_stop": dz.default_iter_stop(max_iter) if iter_stop is None else int(iter_stop)}
    convert = {"layers": layers, "c_rate": c_rate, "where": net_where, "default_c_rate": default_c_rate,
               "channels": channels, **settings}
    dz.dnsify(net_param, **convert)  # conversion errors before anything is written
    if weights is None and param.weights:
        weights = ",".join(param.weights)
    for path in (weights or "").split(","):
        if path and not os.path.isfile(path):
            raise NpcaffeError(f"--weights: '{path}' not found")
    if finetune_solver is not None and not os.path.isfile(finetune_solver):
        raise NpcaffeError(f"--finetune_solver: solver file '{finetune_solver}' not found")

    out = out or os.path.join("runs", os.path.splitext(os.path.basename(solver_path))[0])
    os.makedirs(out, exist_ok=True)
    net_file = os.path.join(out, f"{name}_{tag}_train_test.prototxt")
    solver_file = os.path.join(out, f"{name}_{tag}_solver.prototxt")
    log_file = os.path.join(out, "log.txt")
    started = time.time()
    summary = {"solver": solver_path, "net": net_where, "name": name}
    run_state = RunState(out, {"solver": os.path.abspath(solver_path), "weights": weights, "model": model,
                               "iterations": max_iter, "data_shapes": data_shapes and {k: list(v) for k, v in
                                                                                      data_shapes.items()},
                               "convert": {k: v for k, v in convert.items() if k != "where"}},
                         resume=resume, strict=True,
                         resume_command=resume_command or f"npcaffe surgery --solver {solver_path} ... --resume")
    was_quiet = glog.is_quiet()
    glog.set_quiet(quiet)
    try:
        with glog.tee(log_file, append=resume):
            glog.info(f"npcaffe surgery --solver {solver_path}{' --channels' if channels else ''}: "
                      f"{'DNS-CP channel' if channels else 'dynamic network'} surgery on {net_where}")
            if data_shapes:
                net_param = generated_data_net(net_param, data_shapes)
            dns_net, record = dz.dnsify(net_param, **convert)
            if weights is None:
                glog.info("No --weights: training a dense reference with the solver as it is first")
                dense = _solver_for(param, net_param, os.path.join(out, f"{name}_reference"), max_iter)
                solver = run_state.stage("dense reference", lambda: get_solver(dense), solve_wrapper)
                weights = solver.snapshot_filename(_model_ext(dense))
                summary["reference_test_scores"] = _test_scores(solver)[0]
            summary["weights"] = weights

            source = net_where + (f", data layers replaced by generated data {data_shapes}" if data_shapes else "")
            with open(net_file, "w") as f:
                f.write(dz.converted_text(dns_net, record, source=source, channels=channels, **settings))
            dns = _solver_for(param, net_file, os.path.join(out, f"{name}_{tag}"), max_iter)
            with open(solver_file, "w") as f:
                f.write(f"# {solver_path}, its net dnsified ({net_file}): npcaffe surgery --solver.\n"
                        f"# Resume: npcaffe train --solver {solver_file} --snapshot "
                        f"{os.path.join(out, name + '_' + tag)}_iter_N.solverstate\n" + to_text(dns))

            surgery_started = time.time()
            def build():
                solver = get_solver(solver_file)
                solver.copy_weights(weights)
                return solver
            try:
                solver = run_state.stage("surgery", build, solve_wrapper)
            except RunStopped as stopped:  # the report is still written, saying how to go on
                solver = stopped.solver
                summary["stopped"] = str(stopped)
            surgery_seconds = time.time() - surgery_started
            scores, accuracy_top = _test_scores(solver)
            snapshot_model = solver.snapshot_filename(_model_ext(dns))
            snapshot_state = solver.snapshot_filename(_model_ext(dns).replace("caffemodel", "solverstate"))
            pruned = os.path.join(out, f"{name}_{tag}_pruned.caffemodel")
            write_caffemodel(dz.baked_model(solver.net, record), pruned)
            glog.info(f"Pruned model (masks baked into the plain layers) written to {pruned}")
            if channels:
                summary["channels"] = _tailor_and_finetune(
                    solver, param, net_param, pruned, out, name, max_iter if finetune_iter is None else finetune_iter,
                    finetune_solver, solve_wrapper)
    finally:
        glog.set_quiet(was_quiet)
    rows = report_rows(solver.net, record)
    total, kept = sum(r.params for r in rows), sum(r.kept for r in rows)
    summary.update({
        "iterations": solver.iter, "max_iter": max_iter, "stopped_early": bool(solver.requested_early_exit),
        "settings": {**settings, "c_rate": {c.name: c.c_rate for c in record}},
        "converted": list(dict.fromkeys(c.name for c in record)),
        "test_scores": scores, "accuracy_output": accuracy_top,
        "test_accuracy": scores[accuracy_top] if accuracy_top else None,
        "test_error_pct": 100 * (1 - scores[accuracy_top]) if accuracy_top else None,
        "params": total, "kept": kept, "compression": total / kept if kept else None,
        "surgery_seconds": surgery_seconds, "total_seconds": time.time() - started,
        "pruned_model": pruned, "snapshot_model": snapshot_model, "snapshot_state": snapshot_state,
        "net_prototxt": net_file, "solver_prototxt": solver_file, "log": log_file,
        "layers": {r.name: {"type": r.type, "params": r.params, "kept": r.kept} for r in rows},
    })
    text = _general_report(summary, format_report(rows), list(solver.param.test_iter), record, settings, channels)
    write_report(out, summary, text)
    return summary


def _tailor_and_finetune(solver, param, net_param, pruned, out, name, finetune_iter, finetune_solver, solve_wrapper):
    """DNS-CP's second half (pruning.dnscp): channels kept, tailoring, fine-tuning; the report's "channels" part."""
    from .fileio.prototxt import to_text
    from .pruning import dnscp
    from .pruning.report import count_net
    part = {"layers": {layer: {"kept": kept, "total": total}
                       for layer, (kept, total) in dnscp.channel_counts(solver.net).items()}}
    plain_file = os.path.join(out, f"{name}_plain_train_test.prototxt")
    with open(plain_file, "w") as f:
        f.write(to_text(net_param))
    tailored_model = os.path.join(out, f"{name}_dnscp_tailored.prototxt")
    tailored_weights = os.path.join(out, f"{name}_dnscp_tailored.caffemodel")
    tailored = dnscp.tailor(plain_file, pruned, tailored_model, tailored_weights, dnscp.data_shapes(solver.net))
    if tailored is None:
        net_file, weights = plain_file, pruned
        part["tailored"] = None
    else:
        net_file, weights = tailored_model, tailored_weights
        part["tailored"] = {"model": tailored_model, "weights": tailored_weights,
                            "output_difference": {k: float(v) for k, v in tailored["differences"].items()}}
    part["finetune_iter"] = int(finetune_iter)
    if finetune_iter > 0:
        ft_param = read_solver(finetune_solver) if finetune_solver else param
        glog.info(f"Fine-tuning the {'tailored' if tailored is not None else 'masked'} net {net_file} for "
                  f"{finetune_iter} iterations")
        started = time.time()
        hold = [c for c in part["layers"]] if tailored is None else []
        tuned = dnscp.finetune(ft_param, net_file, weights, os.path.join(out, f"{name}_dnscp_finetuned"),
                               finetune_iter, solve_wrapper, hold_zeros=hold)
        scores, top = _test_scores(tuned)
        part.update({"finetune_seconds": time.time() - started, "finetune_test_scores": scores,
                     "finetuned_net": net_file, "finetuned_model": tuned.snapshot_filename(_model_ext(ft_param)),
                     "finetune_solver": finetune_solver or "the surgery's solver"})
        part["finetuned_params"] = sum(r.params for r in count_net(tuned.net))
        if top is not None:
            part["finetune_test_error_pct"] = 100 * (1 - scores[top])
    return part


def _channel_lines(c):
    from .pruning.dnscp import format_channels
    lines = ["input channels (DNS-CP):"]
    lines += format_channels({k: (v["kept"], v["total"]) for k, v in c["layers"].items()})
    if c["tailored"] is None:
        lines.append("not tailored (npcaffe.pruning.slim is not in this tree): the masked model is the result")
    else:
        lines.append(f"tailored net (pruned channels removed): {c['tailored']['model']}, {c['tailored']['weights']}")
    if c["finetune_iter"] > 0:
        scores = ", ".join(f"{k} = {glog.fmt(v)}" for k, v in c["finetune_test_scores"].items())
        error = c.get("finetune_test_error_pct")
        lines.append(f"fine-tuned {c['finetune_iter']} iterations in {c['finetune_seconds']:.0f} s "
                     f"({c['finetune_solver']}), {c['finetuned_params']} parameters: "
                     + (f"test error {error:.2f}% ({scores})" if error is not None else scores or "no test net"))
        lines.append(f"fine-tuned model: {c['finetuned_model']}")
    return lines


def _general_report(s, table, test_iter, record, settings, channels=False):
    from .pruning.dnsify import describe
    done = f"{s['iterations']} iterations" if not s["stopped_early"] else \
        f"stopped at iteration {s['iterations']} of {s['max_iter']}"
    what = "DNS-CP channel surgery" if channels else "Dynamic network surgery"
    lines = [f"{what} on {s['net']} ({s['solver']}): {done} in {s['surgery_seconds']:.0f} s "
             f"(total {s['total_seconds']:.0f} s, from {s['weights']})"]
    lines += describe(record, channels=channels, **settings)
    lines.append(table)
    for name in s["converted"]:
        if s["layers"][name]["kept"] == 0:
            lines.append(f"warning: layer {name} keeps no parameters, so the net's output no longer depends on "
                         f"its input; give it a lower --c_rate (now {s['settings']['c_rate'][name]:g})")
    if s["accuracy_output"]:
        lines.append(f"test error {s['test_error_pct']:.2f}% ({s['accuracy_output']} {s['test_accuracy']:.4f}) on "
                     f"test net #0, {test_iter[0]} iterations")
    if s["test_scores"]:
        lines.append("test net #0 outputs: " + ", ".join(f"{k} = {glog.fmt(v)}" for k, v in s["test_scores"].items()))
    else:
        lines.append("no test net in the solver (test_iter): no test error")
    if channels:
        lines += _channel_lines(s["channels"])
    lines += [f"pruned model (masks baked, the user's plain layers): {s['pruned_model']}",
              f"{'DNS-CP snapshot (3 blobs' if channels else 'DNS snapshot (4 blobs'} per layer): "
              f"{s['snapshot_model']}, {s['snapshot_state']}",
              f"resume DNS: npcaffe train --solver {s['solver_prototxt']} --snapshot {s['snapshot_state']}"
              + (" --iterations M" if not s["stopped_early"] else ""),
              f"log: {s['log']}"]
    if s.get("stopped"):
        lines.append(s["stopped"])
    return "\n".join(lines)
