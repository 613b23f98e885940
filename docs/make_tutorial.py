#!/usr/bin/env python3
"""Regenerate docs/tutorial.md and docs/figures/*.png from real runs.

    python docs/make_tutorial.py [--shared ../shared] [--lmdb DIR | --mnist DIR] [--check]

Every number in the tutorial comes from this script: it runs short dynamic
network surgery jobs (LeNet-300-100 and LeNet-5 from the DNS release's
reference models, on MNIST), prints each value it measures, and fills the
{{name}} fields of docs/tutorial_template.md into docs/tutorial.md.  The
prose states a few facts about those numbers (e.g. "without splicing fewer
weights survive"); `claim()` checks each of them, so the script stops if a
rerun ever contradicts the text.

Runtime: 2-4 minutes on a 2-core machine (one BLAS thread; set before
numpy loads, which also makes the runs repeatable).
"""
import argparse
import os
import re
import sys
import tempfile
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import npcaffe  # noqa: E402
from npcaffe import glog, masks, plot, rng  # noqa: E402
from npcaffe.dnstrace import read_trace, trace_dns  # noqa: E402
from npcaffe.explain import explain_run, format_explanation  # noqa: E402
from npcaffe.fileio.prototxt import read_net, read_solver  # noqa: E402
from npcaffe.kernels import glibc_rand  # noqa: E402
from npcaffe.layerlib.dns import dns_layers, set_splicing  # noqa: E402
from npcaffe.pruning.report import count_net, format_report  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
FIGURES = os.path.join(DOCS, "figures")
TEMPLATE = os.path.join(DOCS, "tutorial_template.md")
OUTPUT = os.path.join(DOCS, "tutorial.md")

values = {}


def put(name, value):
    """Record one number of the text (and print it)."""
    values[name] = value if isinstance(value, str) else str(value)
    print(f"  {name} = {values[name]}", flush=True)


def claim(ok, statement):
    """A sentence of the tutorial that depends on the numbers: stop if this run contradicts it."""
    if not ok:
        raise SystemExit(f"make_tutorial: the tutorial says '{statement}', but this run contradicts it; "
                         "rewrite that passage of docs/tutorial_template.md")


def pct(x, digits=2):
    return f"{100 * x:.{digits}f}%"


# -- runs -------------------------------------------------------------------------------------
class Setup:
    def __init__(self, args):
        self.shared = os.path.abspath(args.shared)
        if args.mnist:
            from npcaffe.data.mnist import prepare_mnist_lmdbs
            train, _ = prepare_mnist_lmdbs(os.path.join(args.work, "mnist"), args.mnist)
            self.lmdb = os.path.dirname(train)
        else:
            self.lmdb = os.path.abspath(args.lmdb or os.path.join(self.shared, "data", "mnist-lmdb"))
        self.work = args.work

    def weights(self, net):
        return os.path.join(self.shared, "upstream-dns", f"caffe_{net}_original.caffemodel")

    def upstream_log(self, net):
        return os.path.join(self.shared, "crosscheck", f"{net}-table1", "upstream", "caffe.log")

    def solver_param(self, net, max_iter, c_rate=None, gamma=None, drop_mask_fillers=(), tests=True):
        """The Table-1 recipe of prototxt/<net>/ (the upstream bundles' settings), cut to max_iter."""
        solver = read_solver(os.path.join(ROOT, "prototxt", net, f"{net}_dns_solver.prototxt"))
        net_param = read_net(os.path.join(ROOT, "prototxt", net, f"{net}_dns_train_test.prototxt"))
        for layer in net_param.layer:
            if layer.type == "Data":
                layer.data_param.source = os.path.join(self.lmdb, os.path.basename(layer.data_param.source))
            for field in ("cconvolution_param", "cinner_product_param"):
                if layer.HasField(field):
                    c = getattr(layer, field)
                    if c_rate is not None:
                        c.c_rate = c_rate
                    if gamma is not None:
                        c.gamma = gamma
                    if layer.name in drop_mask_fillers:
                        c.ClearField("weight_mask_filler")
                        c.ClearField("bias_mask_filler")
        solver.ClearField("net")
        solver.net_param.CopyFrom(net_param)
        solver.max_iter = max_iter
        solver.snapshot = 0
        solver.snapshot_after_train = False
        solver.snapshot_prefix = os.path.join(self.work, net)
        solver.display = 0
        # We test by hand at chosen iterations.
        solver.test_interval = 10 ** 9
        solver.test_initialization = False
        if not tests:
            del solver.test_iter[:]
        return solver

    def solver(self, net, max_iter, **kw):
        # A fresh process: glibc rand() at its default seed, Caffe's RNG seeded as the solver says.
        glibc_rand.reset()
        rng.set_random_seed(0)
        solver = npcaffe.get_solver(self.solver_param(net, max_iter, **kw))
        solver.copy_weights(self.weights(net))
        return solver


def c_layers(net):
    return dns_layers(net)


def mask_size(layer):
    return sum(m.size for m in masks.mask_arrays(layer))


def kept_share(net):
    kept = total = 0
    for _, layer in c_layers(net):
        kept += sum(masks.mask_entries(layer))
        total += mask_size(layer)
    return kept / total


def accuracy(solver):
    return float(dict(solver.test(0))["accuracy"])


def train(solver, checkpoints, trace_path=None, keep=()):
    """Step to each checkpoint, testing there; returns the history and copies of the layers at `keep`."""
    trace = trace_dns(solver, trace_path) if trace_path else None
    losses = {}
    solver.add_callback(lambda: None, lambda: losses.__setitem__(solver.iter, float(solver.net.blobs["loss"].data)))
    history = {"iteration": [], "kept": [], "accuracy": []}
    states = {}
    for it in checkpoints:
        solver.step(it - solver.iter)
        history["iteration"].append(it)
        history["kept"].append(kept_share(solver.net))
        history["accuracy"].append(accuracy(solver))
        if it in keep:
            states[it] = {n: [b.data.copy() for b in l.blobs] for n, l in c_layers(solver.net)}
        print(f"    iteration {it}: kept {pct(history['kept'][-1])}, accuracy {pct(history['accuracy'][-1])}",
              flush=True)
    if trace:
        trace.close()
    return history, states, losses


# -- the tutorial's sections ---------------------------------------------------------------
def section_lenet300100(s):
    print("LeNet-300-100: 2000 iterations of the Table-1 recipe, with a trace", flush=True)
    started = time.time()
    trace_path = os.path.join(s.work, "lenet300100_trace.csv")
    solver = s.solver("lenet300100", 2000)
    checkpoints = [0, 1, 100, 250, 500, 1000, 1500, 2000]
    hist, states, losses = train(solver, checkpoints, trace_path, keep=(1, 2000))
    rows = read_trace(trace_path)
    put("l3_seconds", f"{time.time() - started:.0f}")
    put("l3_dense_acc", pct(hist["accuracy"][0]))
    put("l3_acc_1", pct(hist["accuracy"][1]))
    put("l3_kept_1", pct(hist["kept"][1]))
    put("l3_acc_1000", pct(hist["accuracy"][5]))
    put("l3_acc_2000", pct(hist["accuracy"][-1]))
    put("l3_kept_2000", pct(hist["kept"][-1]))
    put("l3_compression", f"{1 / hist['kept'][-1]:.1f}")
    put("l3_loss_0", f"{losses[0]:.6g}")
    up_losses, up_tests = plot.read_log(s.upstream_log("lenet300100"))
    put("l3_up_loss_0", f"{up_losses[0]:.6g}")
    put("l3_up_acc_1000", pct(up_tests[1000]["accuracy"]))
    put("l3_up_acc_2000", pct(up_tests[2000]["accuracy"]))
    claim(hist["accuracy"][1] < hist["accuracy"][0] - 0.05, "the first prune costs accuracy")
    claim(hist["accuracy"][-1] > hist["accuracy"][1] + 0.05, "training recovers the accuracy")
    # Per-layer counts at iteration 0 and over the run.
    first = {r["layer"]: r for r in rows if r["iteration"] == 0}
    layer_rows = []
    for name, layer in c_layers(solver.net):
        total = mask_size(layer)
        r0 = first[name]
        pruned0 = r0["pruned"]
        later = [r for r in rows if r["layer"] == name and r["forward"] > 0]
        spliced = sum(r["spliced"] for r in later)
        pruned = sum(r["pruned"] for r in later)
        m1, mend = states[1][name][2].ravel(), states[2000][name][2].ravel()
        back = int(np.count_nonzero((m1 == 0) & (mend == 1)))
        layer_rows.append((name, total, r0["mu"], r0["std"], r0["threshold_low"], r0["threshold_high"], pruned0,
                           pruned, spliced, back))
    table = ["| layer | c_rate | params | μ | σ | a = 0.9T | b = 1.1T | pruned at it. 0 | later pruned / spliced | "
             "pruned at 0, back at 2000 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (name, total, mu, std, a, b, p0, p, sp, back), (_, layer) in zip(layer_rows, c_layers(solver.net)):
        table.append(f"| {name} | {float(layer.c_rate):g} | {total:,} | {mu:.4g} | {std:.4g} | {a:.4g} | {b:.4g} | "
                     f"{p0:,} | {p:,} / {sp:,} | {back:,} |")
    put("l3_table", "\n".join(table))
    put("l3_splices", f"{sum(r[8] for r in layer_rows):,}")
    put("l3_back", f"{sum(r[9] for r in layer_rows):,}")
    claim(sum(r[9] for r in layer_rows) > 0, "weights pruned at iteration 0 come back")
    updates = sum(r["mask_update"] for r in rows)
    put("l3_draws", f"{len(rows):,}")
    put("l3_updates", f"{updates:,}")
    put("l3_closed", f"{len(rows) - updates:,}")
    # Explain two steps of ip3.
    param = s.solver_param("lenet300100", 2000, tests=False)
    glog.set_quiet(True)
    step0 = explain_run(param, "ip3", 0, weights=s.weights("lenet300100"))
    put("l3_explain_0", format_explanation(step0))
    put("l3_ip3_pruned0", f"{step0['pruned']:,}")
    put("l3_ip3_total", f"{step0['total_weights'] + step0['total_biases']:,}")
    put("l3_ip3_kept0", f"{step0['kept_weights'] + step0['kept_biases']:,}")
    step = explain_run(param, "ip3", 700, weights=s.weights("lenet300100"))
    put("l3_explain_700", format_explanation(step))
    put("l3_ip3_kept700", f"{step['kept_weights'] + step['kept_biases']:,}")
    in_band = {after for _, bound, entries in step["nearest"] for v, _, _, after in entries
               if step["a"] < v <= step["b"]}
    claim(in_band == {0.0, 1.0}, "inside [a, b] the listed weights have both masks")
    # Figures.
    plot.plot_kept(plot.kept_from_trace(rows), os.path.join(FIGURES, "lenet300100_kept.png"),
                   title="LeNet-300-100: share kept per layer (from the trace)")
    plot.plot_flips(plot.flips_from_trace(rows, 100), os.path.join(FIGURES, "lenet300100_flips.png"),
                    interval_label="100 iterations", title="LeNet-300-100: prunes and splices per 100 iterations")
    plot.plot_gate(rows, os.path.join(FIGURES, "lenet300100_gate.png"), layer="ip1",
                   title="LeNet-300-100, ip1: σ(iter) and the draws r (γ = 0.0001, power = 1)")
    bands = plot.thresholds_from_trace(rows)
    grid = [[(f"{n}, after iteration {it - 1}", states[it][n][0].ravel(), states[it][n][2].ravel(), *bands[n])
             for n, _ in c_layers(solver.net)] for it in (1, 2000)]
    plot.plot_histograms(grid, os.path.join(FIGURES, "lenet300100_hist.png"),
                         title="LeNet-300-100: |w| against a = 0.9T and b = 1.1T (red: pruned, blue: kept)")
    return solver, hist


def section_lenet5(s):
    print("LeNet-5: 1000 iterations of the Table-1 recipe", flush=True)
    started = time.time()
    trace_path = os.path.join(s.work, "lenet5_trace.csv")
    solver = s.solver("lenet5", 1000)
    hist, states, losses = train(solver, [0, 1, 100, 250, 500, 1000], trace_path, keep=(1, 1000))
    rows = read_trace(trace_path)
    put("l5_seconds", f"{time.time() - started:.0f}")
    put("l5_dense_acc", pct(hist["accuracy"][0]))
    put("l5_acc_1", pct(hist["accuracy"][1]))
    put("l5_kept_1", pct(hist["kept"][1]))
    put("l5_acc_1000", pct(hist["accuracy"][-1]))
    put("l5_kept_1000", pct(hist["kept"][-1]))
    put("l5_loss_0", f"{losses[0]:.6g}")
    up_losses, up_tests = plot.read_log(s.upstream_log("lenet5"))
    put("l5_up_loss_0", f"{up_losses[0]:.6g}")
    put("l5_up_acc_1000", pct(up_tests[1000]["accuracy"]))
    put("l5_up_acc_16000", pct(up_tests[16000]["accuracy"]))
    put("l5_up_min_acc", pct(min(t["accuracy"] for t in up_tests.values())))
    after = {it: t["accuracy"] for it, t in up_tests.items() if it > 0}
    claim(min(after, key=after.get) == 1000, "upstream's accuracy is lowest at its first test after the prune")
    put("l5_report", format_report(count_net(solver.net)))
    claim(hist["accuracy"][1] < hist["accuracy"][0] - 0.05, "LeNet-5's first prune costs accuracy")
    sp = {n: sum(r["spliced"] for r in rows if r["layer"] == n and r["forward"] > 0) for n, _ in c_layers(solver.net)}
    put("l5_splices", ", ".join(f"{n} {v:,}" for n, v in sp.items()))
    plot.plot_kept(plot.kept_from_trace(rows), os.path.join(FIGURES, "lenet5_kept.png"),
                   title="LeNet-5: share kept per layer (from the trace)")
    bands = plot.thresholds_from_trace(rows)
    grid = [[(f"{n}, after iteration {it - 1}", states[it][n][0].ravel(), states[it][n][2].ravel(), *bands[n])
             for n, _ in c_layers(solver.net)] for it in (1, 1000)]
    plot.plot_histograms(grid, os.path.join(FIGURES, "lenet5_hist.png"),
                         title="LeNet-5: |w| against a = 0.9T and b = 1.1T (red: pruned, blue: kept)")
    plot.plot_table4(count_net(solver.net), os.path.join(FIGURES, "lenet5_table4.png"),
                     title="LeNet-5 after 1000 iterations of surgery")
    ours = (losses, {it: {"accuracy": a} for it, a in zip(hist["iteration"], hist["accuracy"])})
    plot.plot_curves({"upstream Caffe, Table-1 run (16,000 it.)": (up_losses, up_tests),
                      "npcaffe, this script (1,000 it.)": ours},
                     os.path.join(FIGURES, "lenet5_curves.png"),
                     title="LeNet-5 surgery: the first prune, then recovery (first 3,000 iterations)", xmax=3000)
    return solver


def section_sweep(s):
    print("c_rate sweep on LeNet-300-100, 1000 iterations each", flush=True)
    rates = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    kept, acc, kept0 = [], [], []
    for c in rates:
        solver = s.solver("lenet300100", 1000, c_rate=c)
        solver.step(1)
        kept0.append(kept_share(solver.net))
        solver.step(999)
        kept.append(kept_share(solver.net))
        acc.append(accuracy(solver))
        print(f"    c_rate {c:g}: kept {pct(kept0[-1])} after it. 0, {pct(kept[-1])} at 1000, "
              f"accuracy {pct(acc[-1])}", flush=True)
    table = ["| c_rate | kept after iteration 0 | kept at 1000 | compression | test accuracy at 1000 |",
             "|---|---|---|---|---|"]
    for c, k0, k, a in zip(rates, kept0, kept, acc):
        table.append(f"| {c:g} | {pct(k0)} | {pct(k)} | {1 / k:.1f}× | {pct(a)} |")
    put("sweep_table", "\n".join(table))
    claim(all(x > y for x, y in zip(kept, kept[1:])), "a larger c_rate keeps fewer weights")
    claim(acc[0] > acc[-1], "the sparsest net is the least accurate")
    return acc[-1]
    plot.plot_sweep(rates, [100 * k for k in kept], [100 * a for a in acc], os.path.join(FIGURES, "c_rate_sweep.png"),
                    xlabel="c_rate (the same in every layer)",
                    title="LeNet-300-100 after 1000 iterations: c_rate sets the sparsity")


def section_splicing(s, with_splicing):
    print("LeNet-300-100 without splicing, 2000 iterations", flush=True)
    solver = s.solver("lenet300100", 2000)
    set_splicing(solver.net, False)
    hist, _, _ = train(solver, with_splicing["iteration"])
    put("ns_kept_2000", pct(hist["kept"][-1]))
    put("ns_acc_2000", pct(hist["accuracy"][-1]))
    put("ns_acc_1000", pct(hist["accuracy"][5]))
    claim(hist["kept"][-1] < with_splicing["kept"][-1], "without splicing fewer weights survive")
    claim(hist["accuracy"][-1] < with_splicing["accuracy"][-1], "without splicing the net is less accurate")
    runs = {"with splicing (upstream)": with_splicing, "splicing disabled": hist}
    plot.plot_compare({k: (v["iteration"], [100 * x for x in v["kept"]], [100 * x for x in v["accuracy"]])
                       for k, v in runs.items()}, os.path.join(FIGURES, "splicing.png"),
                      title="LeNet-300-100: surgery with and without splicing")


def section_gate(s):
    print("gate schedules; LeNet-300-100 with gamma 0.01, 1000 iterations", flush=True)
    plot.plot_gate_schedules([(1e-4, 1), (1e-3, 1), (1e-2, 1), (1e-3, 0.5)], 2000,
                             os.path.join(FIGURES, "gate_schedules.png"))
    trace_path = os.path.join(s.work, "gamma_trace.csv")
    solver = s.solver("lenet300100", 1000, gamma=0.01)
    hist, _, _ = train(solver, [0, 1000], trace_path)
    rows = [r for r in read_trace(trace_path) if r["layer"] == "ip1"]
    updates = sum(r["mask_update"] for r in rows)
    expected = sum((1 + 0.01 * it) ** -1.0 for it in range(1000)) + (1 + 0.01 * 999) ** -1.0
    last = max(r["iteration"] for r in rows if r["mask_update"])
    put("g_updates", str(updates))
    put("g_expected", f"{expected:.1f}")
    put("g_draws", str(len(rows)))
    put("g_last", str(last))
    put("g_kept", pct(hist["kept"][-1]))
    put("g_acc", pct(hist["accuracy"][-1]))
    plot.plot_gate(rows, os.path.join(FIGURES, "gate_gamma001.png"),
                   title="LeNet-300-100, ip1, γ = 0.01: the masks are updated less and less often")


def section_resume(s, solver):
    print("resuming LeNet-300-100 from iteration 2000, as npcaffe and as upstream", flush=True)
    _, state_file = solver.snapshot()
    put("r_kept_before", pct(kept_share(solver.net)))
    out = {}
    for mode, upstream in (("npcaffe", False), ("upstream", True)):
        resumed = npcaffe.get_solver(s.solver_param("lenet300100", 2010))
        resumed.restore(state_file, upstream_resume=upstream)
        with trace_dns(resumed) as trace:
            resumed.step(10)
        first = trace.rows[0]
        out[mode] = (kept_share(resumed.net), float(first[10]), sum(r[13] for r in trace.rows))
        put(f"r_{mode}_kept", pct(out[mode][0]))
        put(f"r_{mode}_a", first[10])
        put(f"r_{mode}_spliced", f"{out[mode][2]:,}")
        if upstream:
            put("r_up_r", first[4])
            put("r_up_p", first[5])
            ip1 = [r for r in trace.rows if r[2] == "ip1"]
            claim(not ip1[0][7] and ip1[1][7], "ip1's gate stays closed at the first resumed step, opens at the next")
    claim(out["upstream"][1] == 0.0 and out["upstream"][0] > 0.99, "an upstream resume splices everything back")
    claim(out["npcaffe"][0] < 0.02, "an npcaffe resume goes on as before")


def section_fillers(s):
    print("omitted mask fillers: one TRAIN forward of LeNet-5", flush=True)
    results = {}
    for label, dropped in (("normal", ()), ("omitted", ("conv1", "ip1"))):
        glibc_rand.reset()
        param = s.solver_param("lenet5", 1, drop_mask_fillers=dropped, tests=False)
        net = npcaffe.Net(param.net_param, npcaffe.TRAIN)
        net.copy_from(s.weights("lenet5"))
        net.set_iter(0)
        loss = float(net.forward_from_to())
        layers = dict(c_layers(net))
        results[label] = (loss, {n: (float(l.mu), float(l.std), masks.mask_entries(l)[0],
                                     masks.mask_arrays(l)[0].size, l.last_update.spliced) for n, l in layers.items()})
    for label, (loss, layers) in results.items():
        put(f"f_{label}_loss", f"{loss:.6g}")
        for n in ("conv1", "ip1"):
            mu, std, kept, total, spliced = layers[n]
            put(f"f_{label}_{n}_mu", f"{mu:.6g}")
            put(f"f_{label}_{n}_kept", f"{kept:,} of {total:,}")
            if n == "ip1":
                put(f"f_{label}_{n}_spliced", f"{spliced:,}")
    claim(np.isnan(results["omitted"][1]["conv1"][0]), "conv1's statistics are NaN without a mask filler")
    claim(abs(results["omitted"][0] - np.log(10)) < 1e-3, "with conv1 dead the loss is ln 10")
    claim(results["omitted"][1]["ip1"][2] < results["normal"][1]["ip1"][2],
          "ip1 keeps fewer weights when its masks start at 0")


# -- template ------------------------------------------------------------------------------------
def render():
    with open(TEMPLATE) as f:
        text = f.read()
    names = set(re.findall(r"\{\{(\w+)\}\}", text))
    missing, unused = names - set(values), set(values) - names
    if missing or unused:
        raise SystemExit(f"make_tutorial: template fields without a value: {sorted(missing)}; "
                         f"values the template does not use: {sorted(unused)}")
    return re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"),
                        help="the shared material: upstream-dns/ models, crosscheck/ logs (default ../shared)")
    parser.add_argument("--lmdb", help="directory with mnist_train_lmdb/ and mnist_test_lmdb/ "
                                       "(default SHARED/data/mnist-lmdb)")
    parser.add_argument("--mnist", help="instead of --lmdb: the four MNIST .gz files, converted first")
    args = parser.parse_args(argv)
    started = time.time()
    glog.set_quiet(True)
    os.makedirs(FIGURES, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="npcaffe-tutorial-") as work:
        args.work = work
        s = Setup(args)
        solver, hist = section_lenet300100(s)
        section_resume(s, solver)
        section_splicing(s, hist)
        acc_uniform5 = section_sweep(s)
        claim(acc_uniform5 < hist["accuracy"][5], "5 / 3 / 3 does better than a uniform c_rate 5")
        section_gate(s)
        section_lenet5(s)
        section_fillers(s)
    put("total_minutes", f"{(time.time() - started) / 60:.1f}")
    text = render()
    with open(OUTPUT, "w") as f:
        f.write(text)
    print(f"wrote {OUTPUT} and {FIGURES}/ in {values['total_minutes']} minutes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
