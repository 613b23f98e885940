"""One comparison of the pruning methods: the same nets, data order and solvers, seed after seed.

`python tools/compare_pruning.py` runs every method of `METHODS` on LeNet-5 and
LeNet-300-100 from the DNS release's dense models (SNIP from Caffe's
initialisation, as it is published), once per seed, and writes the table of
docs/pruning.md (between its `compare` markers), a figure of test error against
compression per net, and the headline table of README.md.

What a seed changes: the order of the 60,000 training images (seed 0 is MNIST's
own file order, the one every recipe and the upstream bundles use; seed k > 0 a
permutation drawn with numpy's default_rng(k), written to an LMDB of its own)
and the solver's random_seed (Caffe's fillers: SNIP's initialisation).  Every
method of one seed reads the same LMDB, so their differences are the methods'.

Each finished run (one net, method, seed) is a cell of the results file
(docs/pruning-compare.json for the full runs; the quick runs keep their own,
under runs/): the tool skips cells already there, so an interrupted comparison
goes on where it stopped, and the tables come from that file alone (`--doc`
rewrites them without running anything).  A cell records what the method's own
report says (kept parameters, compression, the pruned layers' weight sparsity,
multiply-adds, test error on all 10,000 test images, iterations, wall time and
the load average around it), the bytes on disk of the pruned caffemodel and of
our sparse .npz, and with `--timing` the forward time of the pruned net at
batch 1 and 64 (npcaffe's own choice of dense or sparse kernels), measured only
when the machine is idle enough for a time to mean something.

`--quick` runs every cell with tiny budgets (a few hundred iterations) for a
check that the whole pipeline works; its numbers are not results.
"""
import contextlib
import json
import math
import os
import statistics
import subprocess
import time
from typing import NamedTuple

import numpy as np

from ..errors import NpcaffeError


class Method(NamedTuple):
    net: str
    name: str          # the column's name: dns, han-direct, ...
    kind: str          # "dns" (npcaffe surgery <net>) or "prune" (npcaffe prune --recipe)
    recipe: str        # the named recipe (surgery net or prune recipe)
    overrides: dict    # prune.run arguments given over the recipe's
    label: str         # what the table says the method is
    paper: str         # the published figure it replays
    max_error: float   # target: mean test error (%) at most ...
    min_compression: float  # ... at a mean compression of at least this
    max_kept: dict = None   # structured: {layer: filters / neurons kept at most} (a slim net's output channels)
    model: str = None       # the train/test net of prototxt/<net>/ the method prunes (default <net>_train_test)
    from_init: bool = False  # starts from the net's initialisation, not the DNS release's dense model

    @property
    def structured(self):
        return self.max_kept is not None


def _methods():
    methods = []
    han = {"lenet300100": (20000, "Han et al. 2015: 12x at 1.59%"), "lenet5": (10000, "Han et al. 2015: 12x at 0.77%")}
    for net, dns_paper, dns_error, dns_rate in (("lenet300100", "DNS: 56x at 1.99% (upstream's run: 56.4x, 2.02%)",
                                                 2.15, 50.0),
                                                ("lenet5", "DNS: 108x at 0.91% (upstream's run: 106.0x, 0.94%)",
                                                 1.0, 100.0)):
        per_step, han_paper = han[net]
        methods += [
            Method(net, "dns", "dns", net, {}, "DNS (prune + splice, gated)", dns_paper, dns_error, dns_rate),
            Method(net, "han-iterative", "prune", f"han-{net}", {}, "Han: magnitude, 5 prune-retrain steps",
                   han_paper, 1.65 if net == "lenet300100" else 0.85, 12.0),
            Method(net, "han-direct", "prune", f"han-{net}",
                   {"schedule": "direct", "steps": 1, "retrain_iter": 5 * per_step},
                   "Han: magnitude, one step, the same retraining in one run", han_paper,
                   1.65 if net == "lenet300100" else 0.85, 12.0),
            Method(net, "obd", "prune", f"obd-{net}", {}, "OBD: ½ h w², global, 3 steps",
                   "SNIP's Table 1: 92% at " + ("2.0%" if net == "lenet300100" else "2.7%"),
                   2.0 if net == "lenet300100" else 2.7, 12.0),
        ]
        if net == "lenet300100":
            methods.append(Method(net, "lobs", "prune", "lobs-lenet300100", {}, "L-OBS: global, 5 steps",
                                  "SNIP's Table 1: 98.5% at 2.1%", 2.1, 60.0))
        methods.append(Method(net, "snip", "prune", f"snip-{net}", {}, "SNIP: |g w| at initialisation, then training",
                              "SNIP's Table 1: " + ("98% at 2.4%" if net == "lenet300100" else "99% at 1.1%"),
                              2.4 if net == "lenet300100" else 1.1, 47.0 if net == "lenet300100" else 85.0))
    return methods + _structured_methods()


def _structured_methods():
    """Issue 14's structured methods: whole filters / neurons / input channels removed, the net fine-tuned,
    its slim (physically smaller) counts reported; targets: LeNet-5's conv1 20 -> 10 and conv2 50 -> 25
    filters at <= 1.0% error, LeNet-300-100's hidden layers 300 -> 150 and 100 -> 50 neurons at <= 1.8%."""
    from .recipes import recipe
    lenet5 = {"conv1": 10, "conv2": 25}
    methods = [Method("lenet5", "dns-cp", "cp", "lenet5-cp", {}, "DNS-CP: input channels of conv2 and ip1, "
                      "gated prune + splice, tailored, fine-tuned", "DNS-CP (seed): ResNet-50 50% of channels at "
                      "+0.13% top-1", 1.0, 2.0, lenet5)]
    for name, label in (("l1-filter", "L1 norm of filters (Li et al.)"), ("apoz", "APoZ (Hu et al.)"),
                        ("entropy", "entropy of channel outputs (Luo & Wu)"),
                        ("taylor", "first-order Taylor (Molchanov et al.)"), ("nisp", "NISP (Yu et al.)"),
                        ("thinet", "ThiNet: greedy reconstruction (Luo et al.)"),
                        ("lasso", "LASSO + least squares (He et al.)"), ("ssl", "SSL group lasso (Wen et al.)"),
                        ("slimming", "network slimming, BN gamma (Liu et al.)")):
        r = recipe(f"{name}-lenet5")
        methods.append(Method("lenet5", name, "prune", f"{name}-lenet5", {}, label, r.paper.split(";")[0],
                              r.max_error, r.min_compression, lenet5,
                              "lenet5_bn_train_test.prototxt" if name == "slimming" else None, r.from_init))
    r = recipe("neurons-lenet300100")
    methods.append(Method("lenet300100", "neurons", "prune", "neurons-lenet300100", {},
                          "matrix pruning: rows of ip1, ip2 (neurons)", "the pruning report's matrix-based pruning",
                          r.max_error, r.min_compression, {"ip1": 150, "ip2": 50}))
    return methods


METHODS = _methods()
NETS = ("lenet5", "lenet300100")
NET_TITLES = {"lenet5": "LeNet-5", "lenet300100": "LeNet-300-100"}
DEFAULT_SEEDS = (0, 1, 2)
QUICK_ITER = 200        # --quick: retraining iterations per step / DNS surgery iterations
QUICK_TEST_ITER = 10    # --quick: test batches (1,000 test images) for the prune methods
TIMING_BATCHES = (1, 64)
MAX_TIMING_LOAD = 0.5   # the 1-minute load average above which --timing measures nothing


def methods_for(nets=None, names=None):
    """The Methods of `nets` (default both) named in `names` (default all), or an NpcaffeError naming the flag."""
    nets = list(nets or NETS)
    for net in nets:
        if net not in NETS:
            raise NpcaffeError(f"--nets '{net}': choose from {', '.join(NETS)}")
    known = sorted({m.name for m in METHODS})
    for name in names or ():
        if name not in known:
            raise NpcaffeError(f"--methods '{name}': choose from {', '.join(known)}")
    return [m for m in METHODS if m.net in nets and (not names or m.name in names)]


def cell_key(method, seed):
    return f"{method.net}/{method.name}/seed{seed}"


# -- data: one training LMDB per seed ---------------------------------------------------------------
def seed_lmdbs(work, seed, mnist=None):
    """work/data/seed<k>/{mnist_train_lmdb, mnist_test_lmdb}: MNIST's own order for seed 0, the training
    images permuted by default_rng(seed) otherwise (the test set is never reordered).  Kept when complete."""
    from ..data.mnist import SPLITS, lmdb_complete, prepare_mnist_lmdbs
    base_train, base_test = prepare_mnist_lmdbs(os.path.join(work, "data", "seed0"), mnist)
    if seed == 0:
        return os.path.dirname(base_train)
    out = os.path.join(work, "data", f"seed{seed}")
    train = os.path.join(out, "mnist_train_lmdb")
    entries = SPLITS["mnist_train_lmdb"][2]
    if not lmdb_complete(train, entries):
        shuffle_lmdb(base_train, train, seed)
    test = os.path.join(out, "mnist_test_lmdb")
    if not os.path.exists(test):
        os.symlink(os.path.abspath(base_test), test)
    return out


def shuffle_lmdb(source, dest, seed):
    """Copy the LMDB `source` to `dest` with its records in the order of default_rng(seed).permutation,
    keyed 00000000, 00000001, ... as Caffe's converters key them; built under a temporary name."""
    import shutil
    import tempfile

    import lmdb
    with lmdb.open(source, readonly=True, lock=False) as env:
        with env.begin() as txn:
            values = [value for _, value in txn.cursor()]
    order = np.random.default_rng(seed).permutation(len(values))
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".shuffle.", dir=os.path.dirname(dest))
    try:
        build = os.path.join(tmp, "db")
        size = sum(len(v) for v in values)
        with lmdb.open(build, map_size=4 * size + (64 << 20)) as env:
            with env.begin(write=True) as txn:
                for i, j in enumerate(order):
                    txn.put(b"%08d" % i, values[j])
        if os.path.exists(dest):
            shutil.rmtree(dest)
        os.rename(build, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- one cell --------------------------------------------------------------------------------------------
def run_cell(method, seed, lmdb_dir, out, weights_dir, quick=False, status=None):
    """Run one method on one seed's data into `out`; the cell's record (a dict of plain numbers).
    `status` (a mapping shared with the parent, e.g. a multiprocessing Manager's dict) gets
    status[cell_key] = (stage, iteration, max_iter) as the run's solvers go (npcaffe.progress)."""
    from .. import glog, progress
    if status is not None:
        key = cell_key(method, seed)
        progress.report_to(lambda stage, iteration, total: status.__setitem__(key, (stage, iteration, total)))
    from ..blas import limited
    from ..masks import plain_model  # noqa: F401  (imported here so a worker fails early on a broken install)
    os.makedirs(out, exist_ok=True)
    load_before = os.getloadavg()[0]
    started = time.time()
    weights = os.path.join(weights_dir, f"caffe_{method.net}_original.caffemodel")
    # the reports the commands print go to report.txt in `out` anyway: keep the tool's own lines readable
    with limited(1), open(os.path.join(out, "stdout.txt"), "w") as stdout, contextlib.redirect_stdout(stdout):
        glog.set_quiet(True)
        if method.kind == "dns":
            summary = _run_dns(method, seed, lmdb_dir, out, weights, quick)
        elif method.kind == "cp":
            summary = _run_cp(method, seed, lmdb_dir, out, weights, quick)
        else:
            summary = _run_prune(method, seed, lmdb_dir, out, weights, quick)
    record = {
        "net": method.net, "method": method.name, "seed": seed, "quick": bool(quick),
        "params": summary["params"], "kept": summary["kept"], "compression": summary["params"] / summary["kept"],
        "test_error_pct": summary["test_error_pct"],
        "iterations": summary["iterations"], "seconds": time.time() - started,
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "layers": {name: v["kept"] for name, v in summary["layers"].items()},
        "model": method.model,
    }
    net = _test_net(method.net, summary["pruned_model"], model=method.model)  # the pruned model, deploy-shaped
    record.update(_model_measures(net, summary["pruned_model"]))
    if method.structured:
        record.update(_structured_measures(net, summary))
    record["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    return record


def _link_lmdbs(out, lmdb_dir):
    """out/data/mnist -> the seed's LMDBs, where the named surgery recipes look for MNIST first."""
    data = os.path.join(out, "data")
    os.makedirs(data, exist_ok=True)
    link = os.path.join(data, "mnist")
    if not os.path.exists(link):
        os.symlink(os.path.abspath(lmdb_dir), link)


def _run_dns(method, seed, lmdb_dir, out, weights, quick):
    from ..surgery import run as surgery
    _link_lmdbs(out, lmdb_dir)
    return surgery(method.recipe, out, weights=weights, iterations=QUICK_ITER if quick else None, quiet=True)


def _run_cp(method, seed, lmdb_dir, out, weights, quick):
    """DNS-CP (npcaffe surgery lenet5-cp): the error after the surgery is the one before fine-tuning; the
    tailored net's fine-tuned error is the result."""
    from ..surgery import run_cp_recipe
    _link_lmdbs(out, lmdb_dir)
    summary = run_cp_recipe(method.recipe, out, weights=weights, iterations=QUICK_ITER if quick else None,
                            quiet=True)
    channels = summary["channels"]
    summary["error_before_finetune_pct"] = summary["test_error_pct"]
    summary["test_error_pct"] = channels["finetune_test_error_pct"]
    summary["iterations"] = summary["iterations"] + channels["finetune_iter"]
    summary["slim_model"] = channels["finetuned_net"]
    summary["slim_weights"] = channels["finetuned_model"]
    return summary


def _run_prune(method, seed, lmdb_dir, out, weights, quick):
    from .prune import recipe_settings, recipe_solver, run
    from .recipes import recipe
    r = recipe(method.recipe)
    param, where = recipe_solver(r.net, r.solver, lmdb_dir)
    reference = recipe_solver(r.net, r.dense_solver, lmdb_dir)[0]
    regularize = recipe_solver(r.net, r.regularize_solver, lmdb_dir) if r.regularize_solver else None
    for p in [param] + ([regularize[0]] if regularize else []):
        if seed:  # Caffe's fillers (SNIP's and slimming's initialisation) and the solver's own draws
            p.random_seed = (p.random_seed if p.HasField("random_seed") and p.random_seed >= 0 else 0) + seed
        if quick:
            del p.test_iter[:]
            p.test_iter.append(QUICK_TEST_ITER)
    settings = recipe_settings(r)
    settings.update(method.overrides)
    if quick:
        settings["retrain_iter"] = QUICK_ITER
        if method.name in ("obd", "lobs"):
            settings["score_batches"] = 5
        if regularize:
            regularize[0].max_iter = QUICK_ITER
    if regularize:
        settings["regularize"] = regularize
    summary = run((param, where), r.method, weights=None if r.method == "snip" or r.from_init else weights, out=out,
                  quiet=True, name=r.net, title=f"npcaffe compare: {method.name} on {method.net}, seed {seed}",
                  reference=reference, slim=method.structured, **settings)
    if regularize:
        summary["iterations"] += regularize[0].max_iter
    if method.structured:
        summary["error_before_finetune_pct"] = summary["steps_done"][0]["test_error_pct_pruned"]
    return summary


def _structured_measures(net, summary):
    """What a structured cell adds, read off the slim net the run wrote (prune --slim's, DNS-CP's tailored and
    fine-tuned one): the filters / neurons each Convolution / InnerProduct keeps, its parameters and
    multiply-adds per image (the dense net's output positions times the slim weights), the error before
    fine-tuning and the slim file's size."""
    from ..fileio.caffemodel import blob_shape, read_caffemodel
    slim_file = summary["slim_weights"]
    outputs, params, slim_params, slim_macs = {}, 0, 0, 0
    slim = {layer.name: layer for layer in read_caffemodel(slim_file).layer}
    for name, layer in zip(net.layer_names, net.layers):
        if layer.type not in ("Convolution", "InnerProduct"):
            continue
        positions = int(np.prod(net.blobs[net.top_names[name][0]].shape[2:]))
        params += sum(b.count for b in layer.blobs)
        shapes = [blob_shape(b) for b in slim[name].blobs]
        outputs[name] = [int(shapes[0][0]), int(layer.blobs[0].shape[0])]
        slim_params += sum(int(np.prod(shape)) for shape in shapes)
        slim_macs += int(np.prod(shapes[0])) * positions
    return {"outputs_kept": outputs, "dense_params": params, "slim_params": slim_params, "slim_macs": slim_macs,
            "kept": slim_params, "compression": params / slim_params,
            "error_before_finetune_pct": summary["error_before_finetune_pct"],
            "slim_caffemodel_bytes": os.path.getsize(slim_file),
            "slim_model": summary["slim_model"], "slim_weights": slim_file}


def _model_measures(net, pruned_model):
    """Bytes on disk of the pruned plain caffemodel and of its sparse .npz, multiply-adds per image and the
    share of the Convolution / InnerProduct weights that are zero (biases aside: the SNIP paper's sparsity)."""
    from ..fileio.caffemodel import read_caffemodel
    from ..fileio.compressed import layers_from_caffemodel, write_compressed
    from .report import count_macs
    npz = os.path.splitext(pruned_model)[0] + ".npz"
    write_compressed(npz, layers_from_caffemodel(read_caffemodel(pruned_model), pruned_model))
    macs = count_macs(net)
    weights = [layer.blobs[0].data for layer in net.layers if layer.type in ("Convolution", "InnerProduct")]
    zeros = sum(w.size - int(np.count_nonzero(w)) for w in weights)
    return {"caffemodel_bytes": os.path.getsize(pruned_model), "npz_bytes": os.path.getsize(npz),
            "weight_sparsity": zeros / sum(w.size for w in weights),
            "macs_dense": sum(m.dense for m in macs), "macs_kept": sum(m.kept for m in macs),
            "pruned_model": pruned_model}


def _deploy_param(net_name, batch, model=None):
    """The TEST phase of prototxt/<net>/<model> (default <net>_train_test.prototxt) with its Data layer as
    an Input of `batch` images and no loss or accuracy: the deploy net."""
    from ..fileio.prototxt import read_net
    from ..surgery import prototxt_dir
    root = os.path.join(prototxt_dir(), net_name)
    param = read_net(os.path.join(root, model or f"{net_name}_train_test.prototxt"))
    from ..proto import caffe_pb2
    deploy = caffe_pb2.NetParameter()
    deploy.name = param.name
    for layer in param.layer:
        if layer.type == "Data":
            if any(rule.phase == caffe_pb2.TRAIN for rule in layer.include):
                continue
            d = deploy.layer.add()
            d.name, d.type = "data", "Input"
            d.top.append(layer.top[0])
            d.input_param.shape.add().dim.extend([batch, 1, 28, 28])
            continue
        if layer.type in ("Accuracy", "SoftmaxWithLoss"):
            continue
        deploy.layer.add().CopyFrom(layer)
    return deploy


def _test_net(net_name, weights, batch=1, model=None):
    from ..net import Net
    from ..proto import caffe_pb2
    net = Net(_deploy_param(net_name, batch, model), caffe_pb2.TEST)
    net.copy_from(weights)
    return net


def timed_files(record):
    """(weights, net prototxt or None for the method's own) that --timing runs for a cell: the pruned model,
    or for a structured method the slim net it wrote; paths as the record holds them (None if it has none)."""
    if record.get("slim_caffemodel_bytes") is not None:
        return record.get("slim_weights"), record.get("slim_model")
    return record.get("pruned_model"), record.get("model")


def time_cell(record, weights, model=None, rounds=5, repeats=50):
    """{batch: median forward ms} of `weights` in `model` (a prototxt; default the record's net) on npcaffe's
    own path (dense or sparse kernels, as `sparsify` chooses) and on the dense path, alternating rounds;
    None when the machine is busy."""
    from ..blas import limited
    from ..sparse.packing import sparsify
    from ..synthetic import fill_inputs
    load = os.getloadavg()[0]
    if load > MAX_TIMING_LOAD:
        return None
    result = {"load_average": round(load, 2), "date": time.strftime("%Y-%m-%d"), "batches": {}}
    with limited(1):
        for batch in TIMING_BATCHES:
            nets = {}
            for path in ("auto", "dense"):
                net = _test_net(record["net"], weights, batch, model or record.get("model"))
                fill_inputs(net)
                sparsify(net, threshold=0 if path == "dense" else None, verify=False)
                for _ in range(3):
                    net.forward()
                nets[path] = net
            times = {path: [] for path in nets}
            n = repeats if batch < 8 else max(5, repeats // 10)
            for _ in range(rounds):
                for path, net in nets.items():
                    samples = []
                    for _ in range(n):
                        t = time.perf_counter()
                        net.forward()
                        samples.append(time.perf_counter() - t)
                    times[path].append(statistics.median(samples) * 1e3)
            result["batches"][str(batch)] = {path: statistics.median(v) for path, v in times.items()}
    result["load_average_after"] = round(os.getloadavg()[0], 2)
    return result


# -- the results file ------------------------------------------------------------------------------------
def load_results(path):
    if not os.path.exists(path):
        return {"cells": {}}
    with open(path) as f:
        try:
            results = json.load(f)
        except json.JSONDecodeError as e:
            raise NpcaffeError(f"{path}: not a results file of tools/compare_pruning.py ({e})") from None
    if not isinstance(results.get("cells"), dict):
        raise NpcaffeError(f"{path}: no 'cells' object; not a results file of tools/compare_pruning.py")
    return results


def save_results(path, results):
    """Write atomically: a crash mid-write never loses the cells already done."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


# -- the tables ------------------------------------------------------------------------------------------
class Summary(NamedTuple):
    method: Method
    seeds: list
    kept: float
    params: int
    compression: tuple      # (mean, sd)
    error: tuple            # (mean, sd)
    weight_sparsity: float
    macs_share: float       # kept multiply-adds / dense
    iterations: int
    seconds: float
    caffemodel_bytes: int
    npz_bytes: int
    timing: dict            # {batch: ms on npcaffe's path} of the lowest timed seed (+ "seed" if not 0), or {}
    verdict: str


def _mean_sd(values):
    values = [float(v) for v in values]
    if not values:
        return (math.nan, math.nan)
    return (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan)


def summarize(results, methods, seeds):
    """Summary per method that has at least one finished cell among `seeds`."""
    rows = []
    for m in methods:
        cells = [results["cells"][k] for k in (cell_key(m, s) for s in seeds) if k in results["cells"]]
        if not cells or m.structured:
            continue
        compression = _mean_sd(c["compression"] for c in cells)
        error = _mean_sd(c["test_error_pct"] for c in cells)
        sparsities = [c["weight_sparsity"] for c in cells if c.get("weight_sparsity") is not None]
        rows.append(Summary(
            m, sorted(c["seed"] for c in cells), statistics.fmean(c["kept"] for c in cells), cells[0]["params"],
            compression, error, statistics.fmean(sparsities) if sparsities else None,
            statistics.fmean(c["macs_kept"] / c["macs_dense"] for c in cells), cells[0]["iterations"],
            statistics.fmean(c["seconds"] for c in cells), round(statistics.fmean(c["caffemodel_bytes"] for c in cells)),
            round(statistics.fmean(c["npz_bytes"] for c in cells)), _timing(cells), verdict(m, compression[0], error[0])))
    return rows


def _timing(cells):
    """{batch: ms on npcaffe's path} of the lowest timed seed among `cells`, with its "date" and its "seed"
    when not 0; {} if none was timed."""
    timed = [c for c in sorted(cells, key=lambda c: c["seed"]) if c.get("timing")]
    if not timed:
        return {}
    timing = {b: v["auto"] for b, v in timed[0]["timing"]["batches"].items()}
    if "date" in timed[0]["timing"]:
        timing["date"] = timed[0]["timing"]["date"]
    if timed[0]["seed"] != 0:
        timing["seed"] = timed[0]["seed"]
    return timing


class StructuredSummary(NamedTuple):
    method: Method
    seeds: list
    outputs: dict           # {layer: (mean kept, total)} filters / neurons of the slim net
    params: int
    slim_params: float
    compression: tuple      # (mean, sd) all Convolution / InnerProduct parameters / the slim net's
    macs_share: float       # the slim net's multiply-adds / dense
    error_before: tuple     # (mean, sd) test error right after pruning (DNS-CP: after the surgery)
    error: tuple            # (mean, sd) after fine-tuning
    iterations: int
    seconds: float
    slim_bytes: int
    timing: dict            # as Summary's, of the slim net
    verdict: str


def summarize_structured(results, methods, seeds):
    """StructuredSummary per structured method with at least one finished cell among `seeds`."""
    rows = []
    for m in methods:
        cells = [results["cells"][k] for k in (cell_key(m, s) for s in seeds) if k in results["cells"]]
        if not cells or not m.structured:
            continue
        outputs = {name: (statistics.fmean(c["outputs_kept"][name][0] for c in cells), total)
                   for name, (_, total) in cells[0]["outputs_kept"].items()}
        compression = _mean_sd(c["compression"] for c in cells)
        error = _mean_sd(c["test_error_pct"] for c in cells)
        sizes = [c["slim_caffemodel_bytes"] for c in cells if c.get("slim_caffemodel_bytes")]
        rows.append(StructuredSummary(
            m, sorted(c["seed"] for c in cells), outputs, cells[0]["dense_params"],
            statistics.fmean(c["slim_params"] for c in cells), compression,
            statistics.fmean(c["slim_macs"] / c["macs_dense"] for c in cells),
            _mean_sd(c["error_before_finetune_pct"] for c in cells), error, cells[0]["iterations"],
            statistics.fmean(c["seconds"] for c in cells), round(statistics.fmean(sizes)) if sizes else None,
            _timing(cells), structured_verdict(m, cells, error[0])))
    return rows


def structured_verdict(method, cells, error):
    """'met', or 'missed: ...': every seed's slim net within the filter / neuron counts, the mean error within
    the target."""
    misses = []
    if error > method.max_error:
        misses.append(f"error {error - method.max_error:.2f} points above {method.max_error:g}%")
    for name, most in method.max_kept.items():
        worst = max(c["outputs_kept"][name][0] for c in cells)
        if worst > most:
            misses.append(f"{name} keeps {worst} > {most}")
    return "met" if not misses else "missed: " + "; ".join(misses)


def verdict(method, compression, error):
    """'met', or 'missed: ...' saying by how much."""
    misses = []
    if error > method.max_error:
        misses.append(f"error {error - method.max_error:.2f} points above {method.max_error:g}%")
    if compression < method.min_compression:
        misses.append(f"compression {compression:.1f}x below {method.min_compression:g}x")
    return "met" if not misses else "missed: " + "; ".join(misses)


def _pm(pair, digits, suffix=""):
    mean, sd = pair
    if math.isnan(sd):
        return f"{mean:.{digits}f}{suffix}"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}{suffix}"


def _kb(n):
    return f"{n / 1024:.0f} KB" if n >= 10 * 1024 else f"{n / 1024:.1f} KB"


def format_table(rows, net):
    """The markdown table of one net."""
    head = ("| method | seeds | kept / total | compression | weights pruned | multiply-adds kept | "
            "test error % | iterations | wall time | caffemodel / .npz | forward ms, batch 1 / 64 | paper | target |")
    lines = [f"#### {NET_TITLES[net]}", "", head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if r.method.net != net:
            continue
        lines.append(
            f"| {r.method.name}: {r.method.label} | {len(r.seeds)} | {r.kept:,.0f} / {r.params:,} | "
            f"{_pm(r.compression, 1, '×')} | "
            + (f"{100 * r.weight_sparsity:.2f}%" if r.weight_sparsity is not None else "—")
            + f" | {100 * r.macs_share:.1f}% | **{_pm(r.error, 2)}** | {r.iterations:,} | {r.seconds / 60:.1f} min | "
            f"{_kb(r.caffemodel_bytes)} / {_kb(r.npz_bytes)} | {_format_timing(r.timing)} | {r.method.paper} | "
            f"{r.verdict} |")
    return "\n".join(lines)


def _format_timing(timing):
    text = " / ".join(f"{timing[str(b)]:.3g}" for b in TIMING_BATCHES if str(b) in timing) or "not measured"
    return text + (f" (seed {timing['seed']})" if "seed" in timing else "")


def format_structured_table(rows, net):
    """The markdown table of one net's structured methods."""
    head = ("| method | seeds | filters / neurons kept | parameters of the slim net | compression | "
            "multiply-adds kept | error before fine-tuning % | test error % | iterations | wall time | "
            "slim caffemodel | slim net's forward ms, batch 1 / 64 | target |")
    lines = [f"#### {NET_TITLES[net]}: structured (whole filters, neurons, input channels)", "", head,
             "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if r.method.net != net:
            continue
        kept = ", ".join(f"{name} {k:.3g}/{total}" for name, (k, total) in r.outputs.items()
                         if name in r.method.max_kept)
        target = ", ".join(f"{name} ≤ {most}" for name, most in r.method.max_kept.items())
        lines.append(
            f"| {r.method.name}: {r.method.label} | {len(r.seeds)} | {kept} | {r.slim_params:,.0f} / {r.params:,} | "
            f"{_pm(r.compression, 2, '×')} | {100 * r.macs_share:.1f}% | {_pm(r.error_before, 2)} | "
            f"**{_pm(r.error, 2)}** | {r.iterations:,} | {r.seconds / 60:.1f} min | "
            + (_kb(r.slim_bytes) if r.slim_bytes else "—")
            + f" | {_format_timing(r.timing)} | {target} at ≤ {r.method.max_error:g}%: {r.verdict} |")
    return "\n".join(lines)


def format_doc(results, methods, seeds, figures=None):
    """The section of docs/pruning.md that the tool owns."""
    rows = summarize(results, methods, seeds)
    done = sum(1 for m in methods for s in seeds if cell_key(m, s) in results["cells"])
    total = len(methods) * len(seeds)
    loads = [c["load_average"][0] for c in results["cells"].values() if "load_average" in c]
    # The tables' timings (lowest timed seed of each row): the dates of their idle runs, and the rows
    # timed before time_cell recorded one.
    structured = summarize_structured(results, methods, seeds)
    timed = [r for r in rows + structured if r.timing]
    dates = sorted({r.timing["date"] for r in timed if "date" in r.timing})
    undated = [f"{NET_TITLES[r.method.net]} {r.method.name}" for r in timed if "date" not in r.timing]
    when = "; ".join(([f"timed on {', '.join(dates)}"] if dates else [])
                     + ([f"{', '.join(undated)} in an earlier idle run"] if undated else []))
    lines = [
        f"Generated by `python tools/compare_pruning.py` from `{results.get('source', 'docs/pruning-compare.json')}` "
        f"({done} of {total} runs done; seeds {', '.join(map(str, seeds))}). Test error on all 10,000 MNIST test "
        "images, mean ± sd over the seeds (seed 0: MNIST's file order; seed k: the training images in the order "
        "of numpy's default_rng(k), the same for every method). Kept, compression: weights and biases of all "
        "layers (Table 4's count); weights pruned: the pruned layers' weights, the sparsity the SNIP paper "
        "reports; multiply-adds: per image, of the kept weights. Wall time: one run, one BLAS thread"
        + (f", on the shared 2-core machine (load average at the start of the runs {min(loads):.1f} to "
           f"{max(loads):.1f}: times are loose)" if loads else "")
        + ". Sizes: the pruned plain caffemodel (dense, as BVLC Caffe stores it) and npcaffe's sparse .npz. "
        "Forward time: seed 0's pruned net (or the seed named) on npcaffe's own choice of dense or sparse kernels, median of "
        "alternating rounds, measured only on an idle machine (`--timing`"
        + (f"; {when}" if when else "") + "). DNS starts from the release's dense "
        "model, as do Han, OBD and L-OBS; SNIP prunes at initialisation and trains from scratch.",
        ""]
    for net in NETS:
        if any(r.method.net == net for r in rows):
            lines += [format_table(rows, net), ""]
        if any(r.method.net == net for r in structured):
            lines += [format_structured_table(structured, net), ""]
        if figures and net in figures:
            lines += [f"![{NET_TITLES[net]}: test error against compression]({figures[net]})", ""]
    if structured:
        lines += [
            "Structured rows: what a slim net (`npcaffe slim`, or `prune --slim`, which each run wrote and checked "
            "against the masked net) keeps: the output channels of each layer (filters, neurons; DNS-CP's kept "
            "input channels of conv2 and ip1 are conv1's and conv2's filters), its Convolution / InnerProduct "
            "parameters and multiply-adds per image. Error before fine-tuning: right after the channels went "
            "(DNS-CP: after its surgery, with the masked channels); test error: after fine-tuning, the structured "
            "solver's 2,000 iterations (LeNet-300-100: 10,000). The target holds when every seed keeps at most "
            "the counts given and the mean error is within the bound. Iterations include the regularised "
            "training of SSL and slimming and DNS-CP's surgery.", ""]
    missing = [cell_key(m, s) for m in methods for s in seeds if cell_key(m, s) not in results["cells"]]
    if missing:
        lines += ["Not run yet (`python tools/compare_pruning.py` goes on with them): " +
                  ", ".join(f"`{k}`" for k in missing), ""]
    return "\n".join(lines).rstrip() + "\n"


def format_headline(results, methods, seeds):
    """README's short table: test error and compression per method and net."""
    rows = summarize(results, methods, seeds) + summarize_structured(results, methods, seeds)
    by = {(r.method.net, r.method.name): r for r in rows}
    names = list(dict.fromkeys(m.name for net in NETS for m in METHODS if m.net == net))
    lines = ["| method | LeNet-5: compression | error % | LeNet-300-100: compression | error % |",
             "|---|---|---|---|---|"]
    for name in names:
        cells = []
        for net in NETS:
            r = by.get((net, name))
            cells += ([_pm(r.compression, 1, "×"), _pm(r.error, 2)] if r else ["—", "—"])
        if any(c != "—" for c in cells):
            structured = any(m.structured for m in METHODS if m.name == name)
            lines.append(f"| {name}{' (structured: slim net)' if structured else ''} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def replace_between(text, name, body, where):
    """`text` with the lines between <!-- name:begin --> and <!-- name:end --> replaced by `body`."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise NpcaffeError(f"{where}: needs one '{begin}' line before one '{end}' line")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body.rstrip()}\n{end}{tail}"


def plot(results, methods, seeds, out_dir):
    """{net: figure path relative to docs/}: test error (mean ± sd) against compression, one marker per method."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = summarize(results, methods, seeds) + summarize_structured(results, methods, seeds)
    figures = {}
    for net in NETS:
        mine = [r for r in rows if r.method.net == net]
        if not mine:
            continue
        fig, ax = plt.subplots(figsize=(7.2, 4.6))
        for r in mine:
            ax.errorbar(r.compression[0], r.error[0], xerr=None if math.isnan(r.compression[1]) else r.compression[1],
                        yerr=None if math.isnan(r.error[1]) else r.error[1], fmt="s" if r.method.structured else "o",
                        capsize=3, label=r.method.name + (" (slim)" if r.method.structured else ""))
        ax.set_xscale("log")
        ax.set_xlabel("compression (all parameters / kept; squares: a slim net's), log scale")
        ax.set_ylabel("test error (%)")
        ax.set_title(f"{NET_TITLES[net]}: pruning methods, mean ± sd over seeds")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        name = f"compare_{net}.png"
        fig.savefig(os.path.join(out_dir, name), dpi=110)
        plt.close(fig)
        figures[net] = f"figures/{name}"
    return figures


def git_revision(root):
    try:
        return subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None

