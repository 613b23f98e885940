"""`npcaffe plot`: figures that teach dynamic network surgery, from real runs.

Sources: a DNS trace (`npcaffe train --dns_trace`, npcaffe.dnstrace), a
glog log (ours or upstream Caffe's), or snapshots (4-blob .caffemodel files
of a DNS run, optionally .gz, the iteration read from `_iter_N`).

    kept     share of weights+biases kept per layer vs iteration    trace | snapshots
    gate     sigma(iter), the draws r and the gate decisions        trace
    flips    prunes (1->0) and splices (0->1) per interval          trace | snapshots
    hist     |w| histograms, band [a, b], kept/pruned coloured      snapshots (+ trace for a, b)
    table4   parameters and kept per layer (the paper's Table 4)    weights
    curves   training loss and test accuracy vs iteration           log(s)

and the pruning-ratio sweeps of `npcaffe sensitivity` (its report.json, --sweep), after the seed
survey's Figs. 11-14:

    sensitivity  the metric vs ratio, one layer pruned at a time       sweep
    schedules    no retraining, direct and iterative, vs ratio         sweep (with --solver)
    storage      bytes of caffemodel, .npz, CSR, relative CSR          sweep (with --storage)
    timing       ms per forward, dense / sparse / npcaffe's choice     sweep (with --timing)

The output format follows the file's extension (.png or .svg).  matplotlib
is an optional dependency: `pip install npcaffe[plot]`.  Each plot_* function
takes plain data (rows, arrays) so scripts such as docs/make_tutorial.py call
them directly.
"""
import json
import os
import re

import numpy as np

from .errors import NpcaffeError
from .masks import kept_counts, stored_kept, stored_layout

KINDS = ("kept", "gate", "flips", "hist", "table4", "curves", "sensitivity", "schedules", "storage", "timing")
SWEEP_KINDS = ("sensitivity", "schedules", "storage", "timing")
_ITER = re.compile(r"_iter_(\d+)")
# Caffe 1.0 prints "Iteration N (x iter/s, ys/100 iters), loss = X"; the DNS fork "Iteration N, loss = X".
_LOSS = re.compile(r"\] Iteration (\d+)(?: \([^)]*\))?, loss = (\S+)")
_TESTING = re.compile(r"\] Iteration (\d+), Testing net \(#0\)")
_TEST_OUTPUT = re.compile(r"Test net output #\d+: (\S+) = (\S+)")
COLORS = {"kept": "#1f77b4", "pruned": "#d62728", "spliced": "#2ca02c", "band": "#ffbf00"}


def pyplot():
    """matplotlib.pyplot with a file-only backend, or an error that says how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise NpcaffeError("plotting needs matplotlib, an optional dependency: pip install npcaffe[plot] "
                           "(or pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save(fig, path):
    """Write `fig` as PNG or SVG, chosen by the extension of `path`; closes the figure."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".png", ".svg"):
        raise NpcaffeError(f"{path}: the output's extension chooses the format; use .png or .svg")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(path, dpi=150 if ext == ".png" else None, bbox_inches="tight",
                metadata={"Date": None} if ext == ".svg" else None)
    pyplot().close(fig)
    return path


# -- data from files -------------------------------------------------------------------
def read_log(path):
    """(train_loss {iteration: loss}, tests {iteration: {output: value}}) from a glog log."""
    losses, tests, current = {}, {}, None
    with open(path, errors="replace") as f:
        for line in f:
            m = _TESTING.search(line)
            if m:
                current = tests.setdefault(int(m.group(1)), {})
                continue
            m = _TEST_OUTPUT.search(line)
            if m and current is not None:
                current[m.group(1)] = float(m.group(2))
                continue
            m = _LOSS.search(line)
            if m:
                losses[int(m.group(1))] = float(m.group(2))
                current = None
    return losses, tests


def snapshot_iteration(path):
    m = _ITER.search(os.path.basename(path))
    if not m:
        raise NpcaffeError(f"{path}: cannot tell the iteration (expected a name with _iter_N)")
    return int(m.group(1))


def read_snapshot(path):
    """[(layer, type, [arrays])] of a .caffemodel (or .caffemodel.gz) with blobs; DNS layers have 4."""
    from .fileio.caffemodel import caffemodel_layers
    return caffemodel_layers(path)


def _mask_layers(snapshot):
    """{layer: (weight, bias, weight mask, bias mask)} of a snapshot's masked layers (npcaffe.masks)."""
    out = {}
    for name, layer_type, arrays in snapshot:
        layout = stored_layout(layer_type, arrays)
        if layout[2] is not None:
            out[name] = layout
    return out


def kept_from_trace(rows):
    """{layer: (iterations, kept share)}: the last row of each iteration; the total from the first row."""
    out = {}
    for layer in dict.fromkeys(r["layer"] for r in rows):
        mine = [r for r in rows if r["layer"] == layer]
        first = mine[0]
        total = first["kept_weights"] + first["kept_biases"] + first["pruned"] - first["spliced"]
        by_iter = {}
        for r in mine:
            by_iter[r["iteration"]] = r["kept_weights"] + r["kept_biases"]
        its = np.array(sorted(by_iter))
        out[layer] = (its, np.array([by_iter[i] for i in its]) / total)
    return out


def kept_from_snapshots(paths):
    series = {}
    for path in sorted(paths, key=snapshot_iteration):
        it = snapshot_iteration(path)
        for name, layout in _mask_layers(read_snapshot(path)).items():
            total, kept = kept_counts(*layout)
            series.setdefault(name, ([], []))
            series[name][0].append(it)
            series[name][1].append(kept / total)
    return {k: (np.array(a), np.array(b)) for k, (a, b) in series.items()}


def flips_from_trace(rows, interval):
    """{layer: (interval starts, pruned, spliced)} summed over [start, start + interval)."""
    out = {}
    last = max(r["iteration"] for r in rows)
    starts = np.arange(0, last + 1, interval)
    for layer in dict.fromkeys(r["layer"] for r in rows):
        pruned = np.zeros(len(starts), np.int64)
        spliced = np.zeros(len(starts), np.int64)
        for r in rows:
            if r["layer"] == layer:
                pruned[r["iteration"] // interval] += r["pruned"]
                spliced[r["iteration"] // interval] += r["spliced"]
        out[layer] = (starts, pruned, spliced)
    return out


def flips_from_snapshots(paths):
    """{layer: (interval starts, pruned, spliced)} between consecutive snapshots (net changes)."""
    paths = sorted(paths, key=snapshot_iteration)
    out, previous, prev_it = {}, None, None
    for path in paths:
        it = snapshot_iteration(path)
        masks = {n: np.concatenate([wm.ravel(), bm.ravel()])
                 for n, (_, _, wm, bm) in _mask_layers(read_snapshot(path)).items()}
        if previous is not None:
            for name, m in masks.items():
                starts, pruned, spliced = out.setdefault(name, ([], [], []))
                starts.append(prev_it)
                pruned.append(int(np.count_nonzero((previous[name] != 0) & (m == 0))))
                spliced.append(int(np.count_nonzero((previous[name] == 0) & (m != 0))))
        previous, prev_it = masks, it
    if not out:
        raise NpcaffeError("flips from snapshots needs at least two snapshots of a DNS run")
    return {k: tuple(np.array(v) for v in vals) for k, vals in out.items()}


def thresholds_from_trace(rows):
    """{layer: (a, b)} from a trace (the values of its last row per layer)."""
    return {r["layer"]: (r["threshold_low"], r["threshold_high"]) for r in rows if "threshold_low" in r}


# -- figures ---------------------------------------------------------------------------
def plot_kept(series, path, title="Share of parameters kept per layer"):
    """`series`: {label: (iterations, kept share 0..1)}."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, (its, share) in series.items():
        style = "o-" if len(its) < 30 else "-"
        ax.plot(its, 100 * np.asarray(share), style, label=label, markersize=4)
    ax.set_xlabel("iteration")
    ax.set_ylabel("weights + biases kept (%)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(title="layer")
    ax.set_title(title)
    return save(fig, path)


def plot_gate(rows, path, layer=None, title=None):
    """σ(iter) (the trace's p) with every draw r, coloured by whether the masks were updated."""
    plt = pyplot()
    rows = [r for r in rows if layer is None or r["layer"] == layer]
    if not rows:
        raise NpcaffeError(f"no trace rows for layer '{layer}'")
    its = np.array([r["iteration"] for r in rows])
    r = np.array([r_["r_float32"] for r_ in rows])
    p = np.array([r_["p_float32"] for r_ in rows])
    upd = np.array([bool(r_["mask_update"]) for r_ in rows])
    fig, ax = plt.subplots(figsize=(7, 4))
    order = np.argsort(its, kind="stable")
    ax.plot(its[order], p[order], "k-", lw=2, label="σ(iter) = (1 + γ·iter)^−power")
    ax.scatter(its[upd], r[upd], s=9, color=COLORS["spliced"], label=f"r < σ(iter): masks updated ({upd.sum()})")
    ax.scatter(its[~upd], r[~upd], s=14, marker="x", color=COLORS["pruned"],
               label=f"r ≥ σ(iter) or iter ≥ iter_stop: no update ({(~upd).sum()})")
    ax.set_xlabel("iteration")
    ax.set_ylabel("probability / draw r")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8, framealpha=0.9)
    ax.set_title(title or f"The surgery gate{' of ' + layer if layer else ''}: one draw per layer per forward")
    return save(fig, path)


def plot_gate_schedules(schedules, iterations, path, title="Gate probability σ(iter) = (1 + γ·iter)^−power"):
    """Analytic σ(iter) for several (gamma, power) and the expected number of mask updates so far."""
    plt = pyplot()
    its = np.arange(iterations + 1, dtype=np.float64)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for gamma, power in schedules:
        p = (1 + gamma * its) ** -power
        label = f"γ = {gamma:g}, power = {power:g}"
        ax.plot(its, p, label=label)
        ax2.plot(its, np.cumsum(p), label=label)
    ax2.plot(its, its + 1, "k:", lw=1, label="every iteration")
    ax.set_xlabel("iteration")
    ax.set_ylabel("σ(iter): probability of a mask update")
    ax.set_ylim(0, 1.05)
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("expected mask updates so far")
    for a in (ax, ax2):
        a.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax2.legend(fontsize=8)
    fig.suptitle(title)
    return save(fig, path)


def plot_flips(flips, path, interval_label="interval", title="Prunes and splices per interval"):
    """`flips`: {layer: (interval starts, pruned, spliced)}; one panel per layer, symmetric log scale."""
    plt = pyplot()
    n = len(flips)
    fig, axes = plt.subplots(n, 1, figsize=(7, 1.9 * n + 0.6), sharex=True, squeeze=False)
    for ax, (layer, (starts, pruned, spliced)) in zip(axes[:, 0], flips.items()):
        width = (starts[1] - starts[0]) * 0.8 if len(starts) > 1 else 0.8
        ax.bar(starts, -np.asarray(pruned), width=width, align="edge", color=COLORS["pruned"], label="pruned (1→0)")
        ax.bar(starts, spliced, width=width, align="edge", color=COLORS["spliced"], label="spliced (0→1)")
        ax.axhline(0, color="k", lw=0.6)
        ax.set_yscale("symlog", linthresh=1)
        ax.set_ylabel(f"{layer}\nmask flips", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    axes[0, 0].legend(fontsize=8, loc="upper right")
    axes[-1, 0].set_xlabel(f"iteration (bars: sums over each {interval_label})")
    fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)


def plot_histograms(panels, path, title="|w| against the thresholds a = 0.9T and b = 1.1T"):
    """`panels`: a list of (title, weights, mask 0/1, a or None, b or None); a list of such lists for a grid.

    Kept weights (mask 1) and pruned ones (mask 0) are stacked in a histogram
    of |w| from 0 to 3b (larger ones in the last bin; counts on a log scale, so
    a few kept weights among 400,000 still show); the band [a, b], where
    neither rule fires, is shaded.
    """
    plt = pyplot()
    grid = panels if panels and isinstance(panels[0], list) else [panels]
    nrows, ncols = len(grid), max(len(r) for r in grid)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.7 * nrows + 0.6), squeeze=False)
    for i, row in enumerate(grid):
        for j in range(ncols):
            ax = axes[i, j]
            if j >= len(row):
                ax.axis("off")
                continue
            name, values, mask, a, b = row[j]
            values = np.abs(np.asarray(values, np.float64))
            mask = np.asarray(mask)
            top = 3 * b if b else float(np.percentile(values, 99.5))
            bins = np.linspace(0, top, 91)
            clipped = np.minimum(values, top)
            if a is not None:
                ax.axvspan(a, b, color=COLORS["band"], alpha=0.5, zorder=0, lw=0,
                           label=f"[a, b] = [{a:.3g}, {b:.3g}]")
            ax.hist([clipped[mask != 0], clipped[mask == 0]], bins=bins, stacked=True, zorder=2,
                    color=[COLORS["kept"], COLORS["pruned"]],
                    label=[f"kept ({int(np.count_nonzero(mask)):,})", f"pruned ({int(np.sum(mask == 0)):,})"])
            ax.set_xlim(0, top)
            ax.set_yscale("log")
            ax.set_title(name, fontsize=10)
            ax.tick_params(labelsize=8)
            if i == nrows - 1:
                ax.set_xlabel(f"|w| (last bin: |w| ≥ {top:.3g})", fontsize=9)
            if j == 0:
                ax.set_ylabel("weights per bin (log scale)", fontsize=9)
            ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)


def plot_table4(rows, path, title="Parameters per layer: total and kept", reference=None):
    """Bars of the paper's Table 4: rows of npcaffe.pruning.report.LayerCount.

    `reference` ({layer: kept}, e.g. the paper's or upstream's model) adds a
    third bar per layer.
    """
    plt = pyplot()
    names = [r.name for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.38 if reference is None else 0.27
    ax.bar(x - width / 2 if reference is None else x - width, [r.params for r in rows], width,
           color="#9e9e9e", label="parameters")
    kept_x = x + width / 2 if reference is None else x
    bars = ax.bar(kept_x, [max(r.kept, 0.5) for r in rows], width, color=COLORS["kept"], label="kept")
    for bar, r in zip(bars, rows):
        ax.annotate(f"{100 * r.kept / r.params:.1f}%", (bar.get_x() + bar.get_width() / 2, max(r.kept, 1)),
                    ha="center", va="bottom", fontsize=8)
    if reference is not None:
        ax.bar(x + width, [max(reference.get(n, 0), 0.5) for n in names], width, color="#ff7f0e",
               label=reference.get("_label", "reference"))
    ax.set_yscale("log")
    ax.set_xticks(x)
    ax.set_xticklabels(names)
    ax.set_ylabel("parameters (weights + biases, log scale)")
    ax.set_xlabel("layer (label: share kept)")
    total = sum(r.params for r in rows)
    kept = sum(r.kept for r in rows)
    ax.set_title(f"{title}\n{kept:,} of {total:,} kept, compression {total / max(kept, 1):.1f}×", fontsize=11)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return save(fig, path)


def plot_curves(logs, path, title="Training loss and test accuracy", xmax=None):
    """`logs`: {label: (train_loss {it: loss}, tests {it: {output: value}})} (see read_log); up to iteration xmax."""
    plt = pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, (losses, tests) in logs.items():
        if xmax is not None:
            losses = {i: v for i, v in losses.items() if i <= xmax}
            tests = {i: v for i, v in tests.items() if i <= xmax}
        its = sorted(losses)
        line, = ax.plot(its, [losses[i] for i in its], lw=1, label=label)
        acc = sorted(i for i in tests if "accuracy" in tests[i])
        if acc:
            ax2.plot(acc, [100 * tests[i]["accuracy"] for i in acc], "o-", color=line.get_color(), markersize=4,
                     label=label)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss (log scale)")
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("test accuracy (%)")
    for a in (ax, ax2):
        a.grid(alpha=0.3)
        if logs:
            a.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)


def plot_sweep(xs, kept, accuracy, path, xlabel="c_rate", title="How c_rate sets the final sparsity"):
    """Kept share (%, left axis) and test accuracy (%, right axis) against a swept setting."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(xs, kept, "o-", color=COLORS["kept"], label="parameters kept (%)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("parameters kept (%)", color=COLORS["kept"])
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot(xs, accuracy, "s--", color=COLORS["pruned"], label="test accuracy (%)")
    ax2.set_ylabel("test accuracy (%)", color=COLORS["pruned"])
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [l.get_label() for l in lines], loc="center left", fontsize=8)
    ax.set_title(title)
    return save(fig, path)


def plot_compare(runs, path, title="Two runs compared"):
    """`runs`: {label: (iterations, kept %, test accuracy %)}; kept on the left, accuracy on the right."""
    plt = pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, (its, kept, acc) in runs.items():
        ax.plot(its, kept, "o-", markersize=4, label=label)
        ax2.plot(its, acc, "o-", markersize=4, label=label)
    ax.set_xlabel("iteration")
    ax.set_ylabel("parameters kept (%, log scale)")
    ax.set_yscale("log")
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("test accuracy (%)")
    for a in (ax, ax2):
        a.grid(alpha=0.3, which="both")
        a.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)


def plot_ratio_curves(panels, path, title=None):
    """Curves against the pruning ratio, one panel each: `panels` a list of (panel title, {label: (ratios,
    values)}, y label, log scale, reference line (label, value) or None).  A label starting with "(" is drawn
    dashed in black (a sum over the others, e.g. every layer pruned together)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels) + 1.8, 4), squeeze=False)
    for ax, (name, curves, ylabel, log, reference) in zip(axes[0], panels):
        for label, (ratios, values) in curves.items():
            style = {"color": "k", "linestyle": "--"} if label.startswith("(") else {"linestyle": "-"}
            ax.plot(ratios, values, marker="o", markersize=4, label=label, **style)
        if reference is not None:
            ax.axhline(reference[1], color="#9e9e9e", lw=1, linestyle=":", label=reference[0])
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("pruning ratio (share of the weights set to zero)")
        ax.set_ylabel(ylabel)
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)


def sweep_kinds(report):
    """The sweep figures a report of `npcaffe sensitivity` has the data for."""
    return [kind for kind in SWEEP_KINDS if kind in report]


def ratio_figure(report, kind, path, title=None):
    """Figure `kind` (SWEEP_KINDS) from a report of `npcaffe sensitivity` (npcaffe.pruning.sensitivity)."""
    if kind not in report:
        flag = {"schedules": " with --solver S", "storage": " with --storage", "timing": " with --timing"}
        raise NpcaffeError(f"plot {kind}: the report has no {kind} sweep (run npcaffe sensitivity"
                           f"{flag.get(kind, ' without --no_layers')})")
    metric = report.get("metric")
    scale = 100.0 if report.get("metric_is_accuracy") else 1.0
    ylabel = f"{metric} (%)" if scale == 100 else metric

    def series(rows, key, value):
        out = {}
        for r in rows:
            out.setdefault(key(r), ([], []))
            out[key(r)][0].append(r["ratio"])
            out[key(r)][1].append(value(r))
        return out

    if kind == "sensitivity":
        curves = series(report["sensitivity"], lambda r: r["layer"], lambda r: scale * r["scores"][metric])
        panels = [("one layer pruned at a time, no retraining", curves, ylabel, False,
                   ("unpruned", scale * report["dense"][metric]))]
        default = "Sensitivity of each layer to magnitude pruning"
    elif kind == "schedules":
        s = report["schedules"]
        rows = s["rows"]
        direct = [r for r in rows if r["schedule"] == "direct"]
        curves = series(direct, lambda r: "no retraining", lambda r: scale * r["pruned"][metric])
        for name, label in (("direct", f"direct, retrained {s['retrain_iter']}"),
                            ("iterative", f"iterative, {s['steps']} x {s['retrain_iter'] // s['steps']}")):
            curves.update(series([r for r in rows if r["schedule"] == name], lambda r: label,
                                 lambda r: scale * r["retrained"][metric]))
        reference = ("unpruned", scale * s["dense"][metric]) if metric in s.get("dense", {}) else None
        panels = [("every layer pruned to the ratio", curves, ylabel, False, reference)]
        default = "Direct and iterative pruning, with and without retraining"
    elif kind == "storage":
        s = report["storage"]
        bits = s["index_bits"]
        names = {"caffemodel": "dense .caffemodel", "npz": "npcaffe .npz (int32 index + value, deflated)",
                 "csr": "CSR (2a + n + 1 numbers)",
                 "relative_csr": f"relative CSR ({bits['conv']}-bit conv, {bits['fc']}-bit fc differences)"}
        curves = {label: ([r["ratio"] for r in s["rows"]], [r[key] / 1024 for r in s["rows"]])
                  for key, label in names.items()}
        panels = [("every layer pruned to the ratio", curves, "size (KiB, log scale)", True, None)]
        default = "Model size against the pruning ratio"
    else:
        t = report["timing"]
        panels = []
        for batch in t["batches"]:
            rows = [r for r in t["rows"] if r["batch"] == batch]
            names = {"dense": "dense path", "sparse": "sparse kernels", "npcaffe": "npcaffe's own choice"}
            panels.append((f"batch {batch}", series(rows, lambda r: names[r["path"]], lambda r: r["median_ms"]),
                           "ms per forward pass (median)", False, None))
        default = f"Inference time against the pruning ratio ({t['threads']})"
    return plot_ratio_curves(panels, path, title or default)


# -- command line ------------------------------------------------------------------------
def add_plot_arguments(p):
    from .argtypes import positive_int
    p.add_argument("kind", choices=KINDS, help="; ".join([
        "kept: share kept per layer vs iteration (--trace or --snapshots)",
        "gate: sigma(iter), draws and decisions (--trace)",
        "flips: prunes and splices per interval (--trace or --snapshots)",
        "hist: |w| histograms with the [a, b] band (--snapshots, --trace for a and b)",
        "table4: parameters and kept per layer (--weights)",
        "curves: training loss and test accuracy (--log, repeatable)",
        "sensitivity / schedules / storage / timing: the sweeps of npcaffe sensitivity against the pruning "
        "ratio (--sweep report.json)"]))
    p.add_argument("-o", "--out", required=True, help="output file: .png or .svg")
    p.add_argument("--trace", help="trace CSV from npcaffe train --dns_trace")
    p.add_argument("--snapshots", nargs="+", help="DNS .caffemodel snapshots (name with _iter_N; .gz allowed)")
    p.add_argument("--log", action="append", help="glog log (ours or Caffe's); repeat to compare")
    p.add_argument("--label", action="append", help="legend label per --log (default: file name)")
    p.add_argument("--weights", help="table4: .caffemodel (4-blob DNS snapshot or 2-blob pruned model)")
    p.add_argument("--layer", action="append", help="gate/hist: only these layers (repeatable)")
    p.add_argument("--interval", type=positive_int, default=100, help="flips from a trace: iterations per bar (default 100)")
    p.add_argument("--sweep", metavar="JSON", help="sensitivity/schedules/storage/timing: report.json of "
                                                  "npcaffe sensitivity")
    p.add_argument("--title", help="figure title")


def plot_command(args):
    from .dnstrace import read_trace
    kind = args.kind
    kw = {"title": args.title} if args.title else {}
    rows = read_trace(args.trace) if args.trace else None

    def need(what, value):
        if not value:
            raise NpcaffeError(f"plot {kind}: give {what}")

    if kind == "kept":
        need("--trace or --snapshots", rows or args.snapshots)
        return plot_kept(kept_from_trace(rows) if rows else kept_from_snapshots(args.snapshots), args.out, **kw)
    if kind == "gate":
        need("--trace", rows)
        return plot_gate(rows, args.out, layer=args.layer[0] if args.layer else None, **kw)
    if kind == "flips":
        need("--trace or --snapshots", rows or args.snapshots)
        if rows:
            return plot_flips(flips_from_trace(rows, args.interval), args.out,
                              interval_label=f"{args.interval} iterations", **kw)
        return plot_flips(flips_from_snapshots(args.snapshots), args.out,
                          interval_label="interval between snapshots", **kw)
    if kind == "hist":
        need("--snapshots", args.snapshots)
        bands = thresholds_from_trace(rows) if rows else {}
        grid = []
        for path in sorted(args.snapshots, key=snapshot_iteration):
            it = snapshot_iteration(path)
            layers = _mask_layers(read_snapshot(path))
            wanted = args.layer or list(layers)
            missing = [n for n in wanted if n not in layers]
            if missing:
                raise NpcaffeError(f"{path}: no DNS layer {missing} (its DNS layers: {list(layers)})")
            grid.append([(f"{n}, iteration {it}", layers[n][0].ravel(), layers[n][2].ravel(),
                          *bands.get(n, (None, None))) for n in wanted])
        return plot_histograms(grid, args.out, **kw)
    if kind == "table4":
        need("--weights", args.weights)
        from .pruning.report import LayerCount
        rows4 = [LayerCount(name, layer_type, *stored_kept(layer_type, arrays))
                 for name, layer_type, arrays in read_snapshot(args.weights)]
        return plot_table4(rows4, args.out, **kw)
    if kind == "curves":
        need("--log", args.log)
        labels = args.label or []
        logs = {}
        for i, path in enumerate(args.log):
            logs[labels[i] if i < len(labels) else os.path.basename(path)] = read_log(path)
        return plot_curves(logs, args.out, **kw)
    if kind in SWEEP_KINDS:
        need("--sweep", args.sweep)
        try:
            with open(args.sweep) as f:
                report = json.load(f)
        except (OSError, ValueError) as e:
            raise NpcaffeError(f"--sweep {args.sweep}: not a readable report.json of npcaffe sensitivity ({e})") \
                from None
        return ratio_figure(report, kind, args.out, **kw)
    raise NpcaffeError(f"unknown plot kind '{kind}'")
