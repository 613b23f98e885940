"""`npcaffe crosscheck BUNDLE`: rerun an upstream DNS bundle and compare it number by number.

A bundle (../shared/crosscheck/<name>/) holds the solver, net, initial weights
and LMDB of a run of the upstream DNS Caffe fork, and that run's outputs in
upstream/: its log (loss.csv), every rand() draw of the surgery gate
(gate_trace.csv), the masks right after iteration 0's prune
(extra/masks_after_iter0_forward.npz) and its snapshots (snap/*.gz).  We train
the same run in a scratch directory and compare:

- the masks after iteration 0 and at the first snapshot: identical;
- every later snapshot: >= 99.9% of mask entries equal in every layer, and
  weights within 1e-3 relative (max |ours - upstream| / max |upstream| per blob);
- the printed loss within 2e-3 + 1e-3 |loss| at every iteration, and within
  1e-4 relative over the first 10;
- the gate decisions draw for draw (rand value, gate open, mask update).

Upstream is not bit-reproducible across BLAS kernels itself: upstream/alt_blas/
holds the same run under other OpenBLAS kernels or thread counts.  Where such a
run is further from the golden one than a target allows, that distance (with
SPREAD_SLACK on top, since our own BLAS rounds differently again) is the
tolerance, and the table says which applied: a tolerance tighter than upstream's
own spread would measure BLAS summation order, not the surgery.  The table also
counts, for each alt_blas run, at how many iterations our printed loss equals
that run's, which shows which of upstream's trajectories ours follows.

A solver bundle (solver-*: a plain net, no DNS layers, so no gate trace) is
compared on every printed loss and, at each upstream snapshot, the weights
(same targets) and the .solverstate layout; then we resume from upstream's own
first snapshot and compare the steps after it the same way, which tests the
update rule apart from the rounding a whole run accumulates.  Both are
`npcaffe train` in a fresh process with the OpenBLAS settings upstream's run
had (kernel, one thread), as the bundle's README.txt states them.
"""
import csv
import glob
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from . import glog, rng
from .dnstrace import GateTrace
from .errors import NpcaffeError
from .fileio.caffemodel import caffemodel_arrays
from .fileio.prototxt import read_net, read_solver, to_text
from .fileio.solverstate import read_solverstate, sidecar_path, write_solverstate
from .kernels import glibc_rand
from .layerlib.dns import dns_layers
from .masks import layer_kept, mask_arrays, masked_layers

WEIGHT_TOL = 1e-3
MASK_AGREEMENT = 0.999
SPREAD_SLACK = 1.25
_LOSS_LINE = re.compile(r"\] Iteration (\d+), loss = (\S+)$")


class _Tee(io.TextIOBase):
    """Keep the log lines (to read the printed losses) and pass them on if asked."""

    def __init__(self, echo):
        self.lines, self.echo, self._partial = [], echo, ""

    def write(self, text):
        if self.echo is not None:
            self.echo.write(text)
        text = self._partial + text
        *complete, self._partial = text.split("\n")
        self.lines.extend(complete)
        return len(text)


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _weights_arg(bundle):
    """The --weights of upstream's command (upstream/command.txt, else the README's COMMAND)."""
    for name in (os.path.join("upstream", "command.txt"), "README.txt"):
        path = os.path.join(bundle, name)
        if os.path.exists(path):
            with open(path) as f:
                match = re.search(r"--weights=(\S+)", f.read())
            if match:
                return os.path.normpath(os.path.join(bundle, match.group(1)))
    default = os.path.join(bundle, "init.caffemodel")
    return default if os.path.exists(default) else None


def _alt_blas_spread(bundle):
    """{iteration: max weight error} and {iteration: max differing mask entries} over upstream's alt_blas runs."""
    weights, masks = {}, {}
    for path in glob.glob(os.path.join(bundle, "upstream", "alt_blas", "*", "compare_to_golden.csv")):
        for row in _read_csv(path):
            it, blob = int(row["iteration"]), int(row["blob"])
            if blob < 2:
                rel = float(row["max_abs_diff"]) / max(float(row["max_abs_golden"]), 1e-30)
                weights[it] = max(weights.get(it, 0.0), rel)
            else:
                key = (it, row["layer"])
                masks[key] = max(masks.get(key, 0), int(row["n_differing_entries"]))
    return weights, masks


class Report:
    def __init__(self):
        self.rows, self.failures = [], []

    def check(self, what, ok, detail):
        self.rows.append((what, "ok" if ok else "FAIL", detail))
        if not ok:
            self.failures.append(f"{what}: {detail}")

    def note(self, what, detail):
        self.rows.append((what, "info", detail))

    def text(self):
        width = max(len(r[0]) for r in self.rows)
        return "\n".join(f"{what:<{width}}  {status:<4}  {detail}" for what, status, detail in self.rows)


def _prepare(bundle, workdir):
    """Solver and net with every path made absolute or moved into workdir."""
    solver = read_solver(os.path.join(bundle, "solver.prototxt"))
    net_path = os.path.join(bundle, solver.net)
    net = read_net(net_path)
    for layer in net.layer:
        if layer.type == "Data" and not os.path.isabs(layer.data_param.source):
            layer.data_param.source = os.path.normpath(os.path.join(bundle, layer.data_param.source))
    solver.ClearField("net")
    solver.net_param.CopyFrom(net)
    solver.snapshot_prefix = os.path.join(workdir, "snap", os.path.basename(solver.snapshot_prefix))
    os.makedirs(os.path.join(workdir, "snap"), exist_ok=True)
    return solver


def is_statistical(bundle):
    """Long-run (*-table1) bundles carry a spread of upstream runs instead of a gate trace."""
    return os.path.exists(os.path.join(bundle, "upstream", "spread", "spread.csv"))


def is_solver_bundle(bundle):
    """A plain net trained by one of the solvers (solver-* bundles): no DNS layers, so no gate trace."""
    return not os.path.exists(os.path.join(bundle, "upstream", "gate_trace.csv"))


def _printed_losses(log_lines):
    return {int(m.group(1)): float(m.group(2)) for m in map(_LOSS_LINE.search, log_lines) if m}


def _check_printed_losses(report, what, ours, theirs):
    """Every printed loss of `theirs` (iteration -> loss) against ours: within 2e-3 + 1e-3 |loss|."""
    missing = sorted(set(theirs) - set(ours))
    bad = [it for it, loss in theirs.items() if it in ours and abs(ours[it] - loss) > 2e-3 + 1e-3 * abs(loss)]
    diffs = {it: abs(ours[it] - loss) for it, loss in theirs.items() if it in ours}
    worst = max(diffs, key=diffs.get) if diffs else None
    report.check(what, not bad and not missing,
                 f"{len(theirs) - len(bad) - len(missing)}/{len(theirs)} within 2e-3 + 1e-3|loss|"
                 + (f"; max difference {diffs[worst]:.2e} at iteration {worst}" if worst is not None else "")
                 + (f"; first out of tolerance at iteration {min(bad)}" if bad else "")
                 + (f"; missing iterations {missing[:5]}" if missing else ""))


def _check_snapshot_weights(report, what, mine, theirs, tolerance, source):
    if not os.path.exists(mine):
        report.check(what, False, f"{mine} was not written")
        return
    a, b = caffemodel_arrays(mine), caffemodel_arrays(theirs)
    worst, where = 0.0, ""
    for name, blobs in b.items():
        if len(a.get(name, [])) != len(blobs):
            report.check(what, False, f"layer {name}: {len(a.get(name, []))} blobs, upstream has {len(blobs)}")
            return
        for j, (x, y) in enumerate(zip(a[name], blobs)):
            rel = float(np.abs(x - y).max() / max(np.abs(y).max(), 1e-30))
            if rel > worst:
                worst, where = rel, f"{name}[{j}]"
    report.check(what, worst <= tolerance,
                 f"max relative error {worst:.2e} ({where or 'every blob bit for bit'}); "
                 f"tolerance {tolerance:.2e} ({source})")


def _check_history_layout(report, what, mine, theirs):
    """Our .solverstate holds what upstream's does: iter, current_step, and the same history blobs
    (count, shapes, float data, no diff); only the values may differ."""
    if not os.path.exists(mine):
        report.check(what, False, f"{mine} was not written")
        return
    a, b = read_solverstate(mine), read_solverstate(theirs)

    def layout(state):
        return (state.iter, state.current_step,
                [(tuple(h.shape.dim), len(h.data), len(h.double_data), len(h.diff)) for h in state.history])
    same = layout(a) == layout(b)
    report.check(what, same, f"{len(b.history)} history blobs of the same shapes as upstream's" if same else
                 f"ours (iter, current_step, [(shape, data, double_data, diff)]) {layout(a)}, upstream's {layout(b)}")


def _blas_environment(bundle):
    """The OpenBLAS settings of upstream's run, as the bundle's README.txt states them
    (e.g. OPENBLAS_NUM_THREADS=1, OPENBLAS_CORETYPE=Haswell, OPENBLAS_L2_SIZE=512)."""
    path = os.path.join(bundle, "README.txt")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return dict(re.findall(r"\b(OPENBLAS_[A-Z0-9_]+)=(\w+)", f.read()))


_BLAS_IN_USE = """
import ctypes, numpy
try:
    paths = sorted({l.split()[-1] for l in open('/proc/self/maps') if 'openblas' in l.lower() and '/' in l})
except OSError:
    paths = []
for path in paths:
    lib = ctypes.CDLL(path)
    for pre, suf in (('', ''), ('scipy_', '64_')):
        core = getattr(lib, pre + 'openblas_get_corename' + suf, None)
        threads = getattr(lib, pre + 'openblas_get_num_threads' + suf, None)
        if core and threads:
            core.restype = ctypes.c_char_p
            print(f'OpenBLAS {core().decode()} kernels, {threads()} thread(s)')
            raise SystemExit
print('not an OpenBLAS that says which kernels it runs')
"""


def _child(args, env, cwd, echo_log, what):
    """Run `python <args>` with `env` added and this npcaffe importable; (stdout, stderr lines)."""
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    done = subprocess.run([sys.executable, *args], cwd=cwd, env={**os.environ, **env, "PYTHONPATH": path},
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if echo_log is not None:
        echo_log.write(done.stderr)
    if done.returncode != 0:
        raise NpcaffeError(f"{what} failed (exit code {done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout, done.stderr.splitlines()


def run_solver_bundle(bundle, workdir=None, echo_log=None):
    """A solver bundle: upstream's command rerun by `npcaffe train` in a fresh process with
    upstream's OpenBLAS settings (the bundle's README.txt), against upstream's run: every
    printed loss, the weights and the .solverstate layout at each upstream snapshot.  Then
    `npcaffe train --snapshot` from upstream's own first snapshot (its weights and history,
    our data position), against upstream's losses after it and its later snapshots: the
    update rule alone, apart from what a whole run accumulates.

    The OpenBLAS settings matter: npcaffe does the fork's arithmetic to the bit, but a
    product summed by other kernels or split over threads rounds differently, and the
    adaptive solvers make a last-bit difference visible (npcaffe.solvers.sgd)."""
    workdir = os.path.abspath(workdir or tempfile.mkdtemp(prefix="npcaffe-crosscheck-"))
    os.makedirs(workdir, exist_ok=True)
    env = _blas_environment(bundle)
    report = Report()
    blas, _ = _child(["-c", _BLAS_IN_USE], env, workdir, None, "asking NumPy's BLAS")
    settings = ", ".join(f"{k}={v}" for k, v in sorted(env.items())) or "none stated in README.txt"
    report.note("BLAS", f"{blas.strip()}; upstream's settings: {settings}")

    def train(run_dir, *how):
        param = _prepare(bundle, run_dir)
        path = os.path.join(run_dir, "solver.prototxt")
        with open(path, "w") as f:
            f.write(to_text(param))
        _, log = _child(["-m", "npcaffe", "train", "--solver", path, *how], env, run_dir, echo_log,
                        f"npcaffe train in {run_dir}")
        return log

    weights = _weights_arg(bundle)
    log_lines = train(workdir, *(["--weights", weights] if weights else []))
    up = os.path.join(bundle, "upstream")
    theirs = {int(r["iteration"]): float(r["loss"]) for r in _read_csv(os.path.join(up, "loss.csv"))}
    ours = _printed_losses(log_lines)
    _check_printed_losses(report, "loss, every iteration", ours, theirs)
    differ = [it for it in sorted(theirs) if ours.get(it) != theirs[it]]
    report.note("loss printed identically", f"{len(theirs) - len(differ)}/{len(theirs)} iterations"
                + (f"; the first that differs is iteration {differ[0]}" if differ else ""))
    weight_spread, _ = _alt_blas_spread(bundle)

    def tolerance(it):
        spread = weight_spread.get(it, 0.0)
        tol = max(WEIGHT_TOL, SPREAD_SLACK * spread)
        return tol, "target" if tol == WEIGHT_TOL else f"{SPREAD_SLACK} x upstream's alt_blas spread {spread:.2e}"

    snaps = sorted((int(re.search(r"_iter_(\d+)", p).group(1)), p)
                   for p in glob.glob(os.path.join(up, "snap", "*.caffemodel.gz")))
    for it, path in snaps:
        mine = os.path.join(workdir, "snap", os.path.basename(path)[:-3])
        _check_snapshot_weights(report, f"snapshot {it} weights", mine, path, *tolerance(it))
        _check_history_layout(report, f"snapshot {it} solverstate", mine[:-len(".caffemodel")] + ".solverstate",
                              path[:-len(".caffemodel.gz")] + ".solverstate.gz")
    if not snaps:
        return report

    # Upstream's first snapshot, resumed here: its weights and history; our own snapshot's
    # sidecar gives the data reader's position (the same record upstream reads next).
    first, upstream_model = snaps[0]
    label = f"from upstream's iteration-{first} state"
    state_path = upstream_model[:-len(".caffemodel.gz")] + ".solverstate.gz"
    state = read_solverstate(state_path)
    state.learned_net = upstream_model
    resume_dir = os.path.join(workdir, "from_upstream")
    os.makedirs(resume_dir, exist_ok=True)
    resume_file = os.path.join(resume_dir, f"upstream_iter_{first}.solverstate")
    write_solverstate(state, resume_file)
    own_state = os.path.join(workdir, "snap", os.path.basename(state_path)[:-len(".gz")])
    if os.path.exists(sidecar_path(own_state)):
        shutil.copyfile(sidecar_path(own_state), sidecar_path(resume_file))
    resumed = train(resume_dir, "--snapshot", resume_file)
    _check_printed_losses(report, f"{label}: loss, iterations {first}-{max(theirs)}",
                          _printed_losses(resumed), {it: v for it, v in theirs.items() if it >= first})
    for it, path in snaps[1:]:
        mine = os.path.join(resume_dir, "snap", os.path.basename(path)[:-3])
        _check_snapshot_weights(report, f"{label}: snapshot {it} weights", mine, path, *tolerance(it))
    return report


def run(bundle, workdir=None, echo_log=None):
    """Train the bundle's run in `workdir` and compare with upstream; returns a Report."""
    bundle = os.path.abspath(bundle)
    if not os.path.exists(os.path.join(bundle, "solver.prototxt")):
        raise NpcaffeError(f"{bundle}: not a crosscheck bundle (no solver.prototxt)")
    if is_statistical(bundle):
        return run_statistical(bundle, workdir, echo_log)
    if is_solver_bundle(bundle):
        return run_solver_bundle(bundle, workdir, echo_log)
    first_masks, traces = {}, []

    def keep_first_masks(net):
        if not first_masks:
            for name, layer in dns_layers(net):
                first_masks[name] = tuple(m.copy() for m in mask_arrays(layer))

    def attach(solver):
        traces.append(GateTrace(solver.net))
        solver.net.forward_hooks.append(keep_first_masks)

    workdir, solver_param, _, log_lines = _train_bundle(bundle, workdir, echo_log, attach)
    return _compare(bundle, workdir, solver_param, log_lines, traces[0], first_masks)


def _train_bundle(bundle, workdir, echo_log, attach=None):
    """Run the bundle's training in workdir as a fresh upstream process would; returns
    (workdir, solver parameter, solver, log lines).  attach(solver) runs before training."""
    from .solvers import get_solver
    workdir = os.path.abspath(workdir or tempfile.mkdtemp(prefix="npcaffe-crosscheck-"))
    solver_param = _prepare(bundle, workdir)
    # A fresh process upstream: glibc rand() at its default seed, so do the same here.
    glibc_rand.reset()
    rng.set_random_seed(solver_param.random_seed if solver_param.random_seed >= 0 else 0)
    tee = _Tee(echo_log)
    glog.set_stream(tee)
    try:
        solver = get_solver(solver_param)
        weights = _weights_arg(bundle)
        if weights:
            solver.copy_weights(weights)
        if attach:
            attach(solver)
        solver.solve()
    finally:
        glog.set_stream(None)
    return workdir, solver_param, solver, tee.lines


def _compare(bundle, workdir, solver_param, log_lines, trace, first_masks):
    report = Report()
    up = os.path.join(bundle, "upstream")

    # Iteration 0's prune.
    npz_path = os.path.join(up, "extra", "masks_after_iter0_forward.npz")
    if os.path.exists(npz_path):
        packed = np.load(npz_path)
        differ = []
        for name, (wmask, bmask) in first_masks.items():
            for kind, ours in (("weight_mask", wmask), ("bias_mask", bmask)):
                size = int(packed[f"{name}.{kind}.size"])
                theirs = np.unpackbits(packed[f"{name}.{kind}.packbits"])[:size]
                n = int(np.count_nonzero(theirs != ours))
                if n:
                    differ.append(f"{name}.{kind}: {n}")
        report.check("masks after iteration 0", not differ, "identical" if not differ else ", ".join(differ))

    # Losses, as printed.
    ours = {}
    for line in log_lines:
        m = _LOSS_LINE.search(line)
        if m:
            ours[int(m.group(1))] = float(m.group(2))
    theirs = {int(r["iteration"]): float(r["loss"]) for r in _read_csv(os.path.join(up, "loss.csv"))}
    missing = sorted(set(theirs) - set(ours))
    worst, worst_it, early = 0.0, None, 0.0
    bad = []
    for it, loss in sorted(theirs.items()):
        if it not in ours:
            continue
        diff = abs(ours[it] - loss)
        if diff > 2e-3 + 1e-3 * abs(loss):
            bad.append(it)
        excess = diff / (2e-3 + 1e-3 * abs(loss))
        if excess > worst:
            worst, worst_it = excess, it
        if it < 10:
            early = max(early, diff / abs(loss))
    report.check("loss, every iteration", not bad and not missing,
                 f"{len(theirs) - len(bad) - len(missing)}/{len(theirs)} within 2e-3 + 1e-3|loss|"
                 + (f"; worst at iteration {worst_it} ({worst:.2f} of the tolerance)" if worst_it is not None else "")
                 + (f"; missing iterations {missing[:5]}" if missing else ""))
    report.check("loss, iterations 0-9", early <= 1e-4, f"max relative difference {early:.2e} (target 1e-4)")
    same_as_golden = sum(1 for it, loss in theirs.items() if ours.get(it) == loss)
    for path in sorted(glob.glob(os.path.join(up, "alt_blas", "*", "loss.csv"))):
        alt = {int(r["iteration"]): float(r["loss"]) for r in _read_csv(path)}
        same = sum(1 for it, loss in alt.items() if ours.get(it) == loss)
        report.note(f"loss equal to {os.path.basename(os.path.dirname(path))}",
                    f"{same}/{len(alt)} iterations print the same loss (golden: {same_as_golden}/{len(theirs)})")

    # Gate draws.
    gate_rows = _read_csv(os.path.join(up, "gate_trace.csv"))
    mismatches = 0
    for ours_row, row in zip(trace.rows, gate_rows):
        _, it, layer, rand, _, _, gate_open, mask_update = ours_row[:8]
        if (it, layer, rand, gate_open, mask_update) != (int(row["iteration"]), row["layer"], int(row["rand"]),
                                                         int(row["gate_open"]), int(row["mask_update"])):
            mismatches += 1
    same_length = len(trace.rows) == len(gate_rows)
    report.check("gate draws", same_length and not mismatches,
                 f"{len(gate_rows) - mismatches}/{len(gate_rows)} draws equal"
                 + ("" if same_length else f" (we drew {len(trace.rows)})"))

    # Snapshots.
    weight_spread, mask_spread = _alt_blas_spread(bundle)
    snaps = sorted(glob.glob(os.path.join(up, "snap", "*.caffemodel.gz")),
                   key=lambda p: int(re.search(r"_iter_(\d+)", p).group(1)))
    for i, path in enumerate(snaps):
        it = int(re.search(r"_iter_(\d+)", path).group(1))
        mine = os.path.join(workdir, "snap", os.path.basename(path)[:-3])
        if not os.path.exists(mine):
            report.check(f"snapshot {it}", False, f"{mine} was not written")
            continue
        a, b = caffemodel_arrays(mine), caffemodel_arrays(path)
        worst_rel, worst_blob, mask_notes, masks_ok = 0.0, "", [], True
        for name, blobs in b.items():
            mine_blobs = a.get(name)
            if mine_blobs is None or len(mine_blobs) != len(blobs):
                report.check(f"snapshot {it}", False, f"layer {name}: blob count differs")
                break
            for j, (x, y) in enumerate(zip(mine_blobs, blobs)):
                if j < 2:
                    rel = float(np.abs(x - y).max() / max(np.abs(y).max(), 1e-30))
                    if rel > worst_rel:
                        worst_rel, worst_blob = rel, f"{name}[{j}]"
            if len(blobs) >= 4:
                equal = sum(int(np.count_nonzero(x == y)) for x, y in zip(mine_blobs[2:4], blobs[2:4]))
                total = sum(y.size for y in blobs[2:4])
                agreement = equal / total
                allowed_diff = max((1 - MASK_AGREEMENT) * total, SPREAD_SLACK * mask_spread.get((it, name), 0))
                need_identical = i == 0
                ok = equal == total if need_identical else (total - equal) <= allowed_diff
                masks_ok &= ok
                if equal != total:
                    mask_notes.append(f"{name} {100 * agreement:.3f}%")
        spread = weight_spread.get(it, 0.0)
        tol = max(WEIGHT_TOL, SPREAD_SLACK * spread)
        source = "target" if tol == WEIGHT_TOL else f"{SPREAD_SLACK} x upstream's alt_blas spread {spread:.2e}"
        report.check(f"snapshot {it} weights", worst_rel <= tol,
                     f"max relative error {worst_rel:.2e} ({worst_blob}); tolerance {tol:.2e} ({source})")
        report.check(f"snapshot {it} masks", masks_ok,
                     "identical" if not mask_notes else "equal entries: " + ", ".join(mask_notes))
    return report


_TEST_LINE = re.compile(r"Test net output #\d+: (\S+) = (\S+)")
_TESTING_LINE = re.compile(r"\] Iteration (\d+), Testing net")


def test_results(log_lines):
    """{iteration: {output name: value}} from the 'Testing net' blocks of a log."""
    results, current = {}, None
    for line in log_lines:
        m = _TESTING_LINE.search(line)
        if m:
            current = results.setdefault(int(m.group(1)), {})
            continue
        m = _TEST_LINE.search(line)
        if m and current is not None:
            current[m.group(1)] = float(m.group(2))
    return results


def kept_parameters(net):
    """{layer: (kept, count)} of a net's masked layers: nonzero mask*W plus nonzero mask*b."""
    out = {}
    for name, layer in masked_layers(net):
        params, kept = layer_kept(layer)
        out[name] = (kept, params)
    return out


def run_statistical(bundle, workdir=None, echo_log=None):
    """A full Table-1 run, compared with the spread of upstream's own runs (mean +- 3 sd)."""
    workdir, solver_param, solver, log_lines = _train_bundle(bundle, workdir, echo_log)
    report = Report()
    tests = test_results(log_lines)
    final = tests.get(solver_param.max_iter, {})
    if "accuracy" not in final:
        report.check("final test accuracy", False, "no test at max_iter in our log")
        return report
    error = 100.0 * (1.0 - final["accuracy"])
    kept = kept_parameters(solver.net)
    total_kept = sum(k for k, _ in kept.values())
    total = sum(c for _, c in kept.values())
    rate = total / total_kept
    spread = _read_csv(os.path.join(bundle, "upstream", "spread", "spread.csv"))
    for label, ours, column in (("final test error %", error, "final_error_pct"),
                                ("compression", rate, "compression"),
                                ("kept parameters", total_kept, "kept_total")):
        values = np.array([float(r[column]) for r in spread])
        lo, hi = values.mean() - 3 * values.std(ddof=1), values.mean() + 3 * values.std(ddof=1)
        report.check(label, lo <= ours <= hi,
                     f"ours {ours:.4g}; upstream runs {values.min():.4g}..{values.max():.4g} "
                     f"(mean {values.mean():.4g}, sd {values.std(ddof=1):.2g}; accepted {lo:.4g}..{hi:.4g})")
    for name, (k, c) in kept.items():
        report.note(f"kept {name}", f"{k}/{c}")
    upstream_acc = {int(r["iteration"]): float(r["accuracy"]) for r in
                    _read_csv(os.path.join(bundle, "upstream", "test_accuracy.csv"))}
    trajectory = ", ".join(f"{it}:{tests[it].get('accuracy', float('nan')):.4f}/{upstream_acc[it]:.4f}"
                           for it in sorted(tests) if it in upstream_acc)
    report.note("test accuracy ours/upstream", trajectory)
    return report
