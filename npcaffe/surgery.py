"""`npcaffe surgery NET`: the DNS paper's Table 1 from our own command.

MNIST -> LMDB -> (a dense reference, if no --weights) -> dynamic network
surgery -> (a fine-tuning stage with the masks frozen, where the recipe has
one) -> test on all 10,000 test images -> report (per-layer kept parameters,
compression, error, iterations, wall time).  The nets and solvers are the
ones in prototxt/<net>/; data paths in them are rewritten to the run's own
LMDBs, snapshots go to the run directory.  `iterations` (a quick try) cuts
the surgery short and skips the fine-tuning stage.
"""
import json
import os
import sys
import time

from . import glog
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


def _train(solver_param, weights=None):
    from .solvers import get_solver
    solver = get_solver(solver_param)
    if weights:
        solver.copy_weights(weights)
    solver.solve()
    return solver


def _final_test(solver):
    results = dict(solver.test(0))
    return float(results["accuracy"]), float(results["loss"])


def run(net_name, workdir, mnist=None, weights=None, iterations=None, quiet=False):
    from .data.mnist import prepare_mnist_lmdbs
    from .fileio.caffemodel import write_caffemodel
    from .pruning.report import LayerCount, format_report

    if net_name not in NETS:
        raise NpcaffeError(f"unknown net '{net_name}' (choose from {', '.join(NETS)})")
    files = NETS[net_name]
    root = os.path.join(prototxt_dir(), net_name)
    workdir = os.path.abspath(workdir)
    os.makedirs(os.path.join(workdir, "snap"), exist_ok=True)
    started = time.time()
    train_lmdb, _ = prepare_mnist_lmdbs(os.path.join(workdir, "data", "mnist"), mnist)
    lmdb_dir = os.path.dirname(train_lmdb)
    if quiet:
        glog.set_quiet(True)
    summary = {"net": net_name}
    if weights is None:
        glog.info(f"No --weights: training a dense reference {net_name} first")
        dense = _solver_with_paths(os.path.join(root, files["dense_solver"]), os.path.join(root, files["dense"]),
                                   lmdb_dir, os.path.join(workdir, "snap", f"{net_name}_reference"))
        solver = _train(dense)
        weights = solver.snapshot_filename(".caffemodel")
        summary["reference_accuracy"] = _final_test(solver)[0]
    summary["weights"] = os.path.abspath(weights)
    dns = _solver_with_paths(os.path.join(root, files["dns_solver"]), os.path.join(root, files["dns"]),
                             lmdb_dir, os.path.join(workdir, "snap", f"{net_name}_dns"), iterations)
    surgery_started = time.time()
    solver = _train(dns, weights)
    if "finetune_solver" in files and iterations is None:
        stage1 = solver.snapshot_filename(".solverstate")
        finetune = _solver_with_paths(os.path.join(root, files["finetune_solver"]), os.path.join(root, files["dns"]),
                                      lmdb_dir, os.path.join(workdir, "snap", f"{net_name}_dns"))
        from .solvers import get_solver
        solver = get_solver(finetune)
        glog.info(f"Fine-tuning with the masks frozen, resuming from {stage1}")
        solver.restore(stage1)
        solver.solve()
        dns = finetune
    surgery_seconds = time.time() - surgery_started
    accuracy, loss = _final_test(solver)
    glog.set_quiet(False)

    final = os.path.join(workdir, f"{net_name}_dns.caffemodel")
    solver.net.save(final)
    plain_path = os.path.join(workdir, f"{net_name}_dns_pruned.caffemodel")
    write_caffemodel(plain_model(solver.net), plain_path)
    rows = [LayerCount(name, layer.type, *layer_kept(layer)) for name, layer in masked_layers(solver.net)]
    total, kept = sum(r.params for r in rows), sum(r.kept for r in rows)
    summary.update({
        "iterations": int(dns.max_iter), "test_accuracy": accuracy, "test_error_pct": 100 * (1 - accuracy),
        "test_loss": loss, "params": total, "kept": kept, "compression": total / kept,
        "surgery_seconds": surgery_seconds, "total_seconds": time.time() - started,
        "model_with_masks": final, "pruned_model": plain_path,
        "layers": {r.name: {"params": r.params, "kept": r.kept} for r in rows},
    })
    with open(os.path.join(workdir, "report.json"), "w") as f:
        json.dump(summary, f, indent=2)
    text = [f"Dynamic network surgery on {net_name}: {summary['iterations']} iterations "
            f"in {surgery_seconds:.0f} s (total {summary['total_seconds']:.0f} s, from {summary['weights']})",
            format_report(rows),
            f"test error {summary['test_error_pct']:.2f}% (accuracy {accuracy:.4f}, loss {loss:.6g}) "
            f"on all 10,000 MNIST test images",
            f"pruned model (masks applied, plain layers): {plain_path}",
            f"model with masks (resume surgery, inspect masks):  {final}"]
    with open(os.path.join(workdir, "report.txt"), "w") as f:
        f.write("\n".join(text) + "\n")
    print("\n".join(text))
    return summary
