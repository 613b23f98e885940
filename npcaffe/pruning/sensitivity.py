"""`npcaffe sensitivity`: accuracy, storage and inference time against the pruning ratio.

    npcaffe sensitivity --model M --weights W [--layers L1,L2] [--ratios 0,0.1,...,0.95] [--iterations N]
                        [--solver S --retrain_iter R --steps k] [--storage] [--timing] [--out DIR] [--plot]

The pruning ratio is the share of a layer's weights set to zero, the smallest
|w| first (Han et al.'s magnitude criterion, npcaffe.pruning.criteria.magnitude,
ranked by npcaffe.pruning.select.layer_masks: exactly round(ratio x weights)
go); biases are kept.  Masks are attached to the layers (npcaffe.masks) and
taken off again, so the weights the sweeps start from are never lost.  The
sweeps, after the experiments of the seed survey (docs/pruning.md):

- layers (Fig. 12): each chosen layer pruned alone at each ratio, every
  other layer as given, tested on the model's TEST-phase data; and "(all)",
  every chosen layer at the ratio together, with no retraining (Fig. 11's
  direct pruning).  A layer *tolerates* a ratio when the metric (accuracy if
  the net has an Accuracy layer) stays within `tolerance` of the unpruned
  value at that ratio and every smaller one; the most sensitive layer
  tolerates the least (ties: the larger loss at the largest ratio).
- schedules (Fig. 11, with a solver): for each ratio, the direct schedule
  (prune once, retrain R iterations) and the iterative one (k steps, each
  keeping the same share of what is left, R / k iterations after each),
  npcaffe.pruning.schedule.run from the same weights, tested on the solver's
  test net.  Both retrain R iterations in all.  Without retraining the two
  are the same masks for magnitude pruning (the scores do not change between
  steps), so the "(all)" curve is the no-retraining one.
- storage (Fig. 13): every chosen layer at the ratio; bytes of the dense
  .caffemodel (npcaffe.fileio.caffemodel, zeros stored), our .npz
  (npcaffe.fileio.compressed, `npcaffe compress`), plain CSR (the paper's
  2a + n + 1 numbers of 4 bytes) and Deep Compression's relative-index CSR
  (npcaffe.fileio.relative_csr: 8-bit index differences for convolutions,
  5-bit for inner products, filler zeros).  The files' sizes are their
  bytes as written; the CSR sizes are their payload (no names or shapes);
  the other parameters (biases, layers not chosen) count 4 bytes each in
  both CSR columns.  A format *pays* from the smallest ratio at which it
  and every larger ratio is smaller than the .caffemodel.
- timing (Fig. 14): every chosen layer at the ratio; one forward pass of
  the TEST net at batch 1 and 64 with its data layers replaced by inputs
  holding real TEST images (or generated data, `data_shapes`), on the dense
  path, on the sparse kernels for every weight layer whatever its density
  (npcaffe.sparse.packing, also below SMALL_BATCH), and as npcaffe chooses
  by itself (the measured density thresholds).  The timing net's parameters
  get lr_mult 0, so nothing needs backward and the TEST-phase sparse path is
  allowed.  Measured as tools/bench.py does: warm-up, then `rounds` rounds
  taking the three paths in turn, each the median of `repeats` forwards (x10
  below 8 images); the table gives the median over rounds and the JSON also
  the best; the load average at the start and end is recorded, because
  other work on the machine inflates every figure.

Outputs (`out`, default runs/<model file stem>_sensitivity): report.txt (the
tables), report.json (everything, what `npcaffe plot sensitivity|schedules|
storage|timing --sweep` reads), one CSV per sweep (sensitivity.csv,
schedules.csv, storage.csv, timing.csv), log.txt, and with `plot` a PNG per
sweep (npcaffe.plot).
"""
import csv
import io
import math
import os
import statistics
import time
from collections import OrderedDict
from typing import NamedTuple

import numpy as np

from .. import glog, progress
from .. import masks as mask_core
from ..errors import NetError, NpcaffeError
from ..fileio import compressed, relative_csr
from ..fileio.caffemodel import serialize_net
from ..fileio.prototxt import read_net
from ..graph import DATA_LAYER_TYPES, filter_net, replace_data_layers
from ..proto import caffe_pb2
from . import schedule, select
from .criteria import magnitude
from .report import write_report

DEFAULT_RATIOS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
DEFAULT_BATCHES = (1, 64)
DEFAULT_TOLERANCE = 0.01
DEFAULT_ITERATIONS = 50  # `npcaffe test`'s, for data layers that cannot tell their size
ALL = "(all)"
PATHS = ("dense", "sparse", "npcaffe")


class SweepRow(NamedTuple):
    """One test: `layer` (or ALL) pruned to `ratio`, `kept` of its `weights`, the TEST outputs."""
    layer: str
    ratio: float
    kept: int
    weights: int
    scores: dict


class ScheduleRow(NamedTuple):
    """One schedule run to `ratio`: the outputs after its first pruning and after its last retraining."""
    schedule: str
    ratio: float
    steps: int
    iterations: int
    kept: int
    weights: int
    pruned: dict
    retrained: dict


class StorageRow(NamedTuple):
    """Bytes of the net's parameters at one ratio, in each format (see the module docstring)."""
    ratio: float
    kept: int
    weights: int
    caffemodel: int
    npz: int
    csr: int
    relative_csr: int
    fillers: int


class TimingRow(NamedTuple):
    """Milliseconds of one forward pass at one ratio and batch on one path: median and best over rounds."""
    ratio: float
    batch: int
    path: str
    median_ms: float
    best_ms: float


# -- parsing the flags ---------------------------------------------------------------------------
def parse_ratios(text):
    """'0,0.5,0.9' -> (0.0, 0.5, 0.9), sorted, each in [0, 1]; None -> DEFAULT_RATIOS."""
    if text is None:
        return DEFAULT_RATIOS
    ratios = []
    for part in [p for p in text.split(",") if p.strip()]:
        try:
            value = float(part)
        except ValueError:
            value = math.nan
        if not 0 <= value <= 1:
            raise NpcaffeError(f"--ratios '{part}': a pruning ratio is the share of a layer's weights set to zero, "
                               "a number in [0, 1] (e.g. --ratios 0,0.5,0.9,0.95)")
        ratios.append(value)
    if not ratios:
        raise NpcaffeError("--ratios is empty; give e.g. --ratios 0,0.5,0.9,0.95")
    return tuple(sorted(set(ratios)))


def parse_batches(text):
    """'1,64' -> (1, 64); None -> DEFAULT_BATCHES."""
    if text is None:
        return DEFAULT_BATCHES
    try:
        batches = tuple(sorted({int(p) for p in text.split(",") if p.strip()}))
    except ValueError:
        batches = ()
    if not batches or batches[0] < 1:
        raise NpcaffeError(f"--batch '{text}': expected batch sizes >= 1, comma-separated (e.g. 1,64)")
    return batches


def parse_index_bits(text):
    """'conv=8,fc=5' or one width for both -> {'conv': bits, 'fc': bits}; None -> the paper's 8 and 5."""
    bits = {"conv": relative_csr.CONV_BITS, "fc": relative_csr.FC_BITS}
    for part in [p for p in (text or "").split(",") if p.strip()]:
        kind, sep, value = part.rpartition("=")
        kinds = [kind] if sep else ["conv", "fc"]
        try:
            width = int(value)
        except ValueError:
            width = 0
        if any(k not in bits for k in kinds) or not 1 <= width <= 32:
            raise NpcaffeError(f"--index_bits '{part}': expected conv=B, fc=B or one B for both, B from 1 to 32 "
                               "(Deep Compression: conv=8,fc=5)")
        for k in kinds:
            bits[k] = width
    return bits


# -- the net and its data -------------------------------------------------------------------------
def read_test_param(model, data=None):
    """The model's TEST-phase NetParameter (filtered); `data` an LMDB replacing its Data layers' source."""
    if not os.path.isfile(model):
        raise NpcaffeError(f"--model: net file '{model}' not found")
    param = read_net(model)
    param.state.phase = caffe_pb2.TEST
    param = filter_net(param)
    if data is not None:
        sources = [layer for layer in param.layer if layer.type == "Data"]
        if not sources:
            raise NpcaffeError(f"--data {data}: the TEST net of {model} has no Data (LMDB) layer to read it "
                               f"(its data layers: {[l.type for l in param.layer if l.type in DATA_LAYER_TYPES]})")
        if not os.path.isdir(data):
            raise NpcaffeError(f"--data: '{data}' is not an LMDB directory")
        for layer in sources:
            layer.data_param.source = data
            layer.data_param.backend = caffe_pb2.DataParameter.LMDB
    return param


def data_tops(net):
    """{top: shape} of the net's data layers (Data, Input, ...), in net order."""
    return OrderedDict((top, net.blobs[top].shape) for name, layer in zip(net.layer_names, net.layers)
                       if layer.type in DATA_LAYER_TYPES for top in net.top_names[name])


def default_iterations(net):
    """Forward passes covering a Data layer's LMDB once (the largest), else DEFAULT_ITERATIONS; and a note."""
    passes = [math.ceil(layer.reader.entries / layer.batch_size) for layer in net.layers if layer.type == "Data"]
    if passes:
        return max(passes), "one pass over the TEST LMDB"
    if all(layer.type == "Input" for layer in net.layers if layer.type in DATA_LAYER_TYPES):
        return 1, "the inputs as they are"
    return DEFAULT_ITERATIONS, "npcaffe test's default"


class Evaluation:
    """Scores a TEST net: the mean of each scalar output over `iterations` forward passes, the data
    layers set back to where they started first, so every call sees the same batches (layers without a
    read position, HDF5Data and ImageData, read on)."""

    def __init__(self, net, iterations):
        if iterations < 1:
            raise NpcaffeError(f"--iterations must be at least 1, got {iterations}")
        self.net, self.iterations = net, int(iterations)
        self.outputs = [name for name in net.outputs if net.blobs[name].count == 1]
        if not self.outputs:
            raise NetError(f"net '{net.name}' has no scalar output (an Accuracy or loss layer) to score in its TEST "
                           f"phase (outputs: {', '.join(net.outputs) or 'none'}); give its train/test net")
        self.states = [(layer, layer.get_state()) for layer in net.layers if callable(getattr(layer, "get_state", None))]

    def __call__(self):
        for layer, state in self.states:
            layer.set_state(state)
        sums = OrderedDict((name, 0.0) for name in self.outputs)
        for _ in range(self.iterations):
            self.net.forward_from_to()
            for name in sums:
                sums[name] += float(self.net.blobs[name].data.reshape(-1)[0])
        return OrderedDict((name, total / self.iterations) for name, total in sums.items())


def choose_metric(net, outputs, metric=None):
    """(output, higher is better, from an Accuracy layer): `metric`, else the first Accuracy top, else the
    first loss."""
    accuracy = [top for name, layer in zip(net.layer_names, net.layers) if layer.type == "Accuracy"
                for top in net.top_names[name] if top in outputs]
    losses = [name for name in outputs if net.blob_loss_weights.get(name)]
    if metric is not None:
        if metric not in outputs:
            raise NpcaffeError(f"--metric '{metric}': not a scalar output of the TEST net (its outputs: "
                               f"{', '.join(outputs)})")
        return metric, metric not in losses, metric in accuracy
    if accuracy:
        return accuracy[0], True, True
    if losses:
        return losses[0], False, False
    return outputs[0], True, False


# -- pruning and restoring ------------------------------------------------------------------------
class Pruner:
    """Magnitude-prunes chosen layers of a net to given ratios, always from the weights it started with."""

    def __init__(self, net, names):
        self.net, self.names = net, list(names)
        self.layers = net.layer_dict
        self.original = {name: self.layers[name].blobs[0].data.copy() for name in self.names}
        self.scores = magnitude.scores(net, self.names)

    def prune(self, ratios):
        """{layer: ratio}: those layers pruned (masks attached), every other chosen layer as it started."""
        self.restore()
        chosen = OrderedDict((name, self.scores[name]) for name in self.names if name in ratios)
        select.set_masks(self.net, select.layer_masks(chosen, {name: ratios[name] for name in chosen}))

    def prune_all(self, ratio):
        self.prune({name: ratio for name in self.names})

    def restore(self):
        for name in self.names:
            layer = self.layers[name]
            mask_core.detach_masks(layer)
            layer.blobs[0].data[...] = self.original[name]

    def kept(self, names):
        """(kept weights, weights) of the named layers: the nonzeros of W ⊙ T (the mask core's rule)."""
        kept = total = 0
        for name in names:
            weight, _ = mask_core.effective_params(self.layers[name])
            counts = mask_core.kept_counts(weight)
            kept, total = kept + counts.kept, total + counts.params
        return kept, total


# -- the sweeps ---------------------------------------------------------------------------------------
def layer_sweep(evaluate, pruner, ratios):
    """(unpruned scores, [SweepRow]): each layer alone at each ratio, then ALL (every layer together)."""
    dense = evaluate()
    rows = []
    groups = [(name, [name]) for name in pruner.names] + [(ALL, pruner.names)]
    with progress.bar(progress.current_stage("sensitivity"), len(groups) * len(ratios), unit="test") as shown:
        for label, names in groups:
            for ratio in ratios:
                shown.set_postfix_str(f"{label} at {ratio:g}")
                pruner.prune({name: ratio for name in names})
                kept, weights = pruner.kept(names)
                scores = evaluate()
                glog.info(f"Sensitivity: {label} at ratio {ratio:g} (kept {kept} of {weights} weights): "
                          + ", ".join(f"{k} = {v:.6g}" for k, v in scores.items()))
                rows.append(SweepRow(label, ratio, kept, weights, scores))
                shown.update()
    pruner.restore()
    return dense, rows


def retrain_param(param, iterations):
    """The solver's SolverParameter for one retraining: `iterations` long, no snapshots, no test inside."""
    p = caffe_pb2.SolverParameter()
    p.CopyFrom(param)
    p.max_iter = max(int(iterations), 1)
    p.snapshot = 0
    p.snapshot_after_train = False
    p.test_interval = p.max_iter + 1  # the schedule tests before and after each retraining itself
    p.test_initialization = False
    del p.weights[:]
    return p


def schedule_curves(param, weights, names, ratios, retrain_iter, steps, solve_wrapper=None):
    """(test outputs before pruning, [ScheduleRow]) of the direct (1 step, retrain_iter) and iterative
    (steps, retrain_iter // steps each) schedules at every ratio above 0, each from `weights`
    (npcaffe.pruning.schedule.run)."""
    from ..solvers import get_solver
    rows, dense = [], {}
    for label, k in (("direct", 1), ("iterative", int(steps))):
        per_step = int(retrain_iter) // k
        solver_param = retrain_param(param, per_step)
        for ratio in [r for r in ratios if r > 0]:
            glog.info(f"Schedule {label}: ratio {ratio:g} in {k} step(s), {per_step} retraining iterations each")
            result = schedule.run(lambda: get_solver(solver_param), "magnitude", schedule.Target(sparsity=ratio),
                                  weights=weights, layers=names, steps=k, retrain_iter=per_step,
                                  solve_wrapper=solve_wrapper)
            dense = dense or dict(result.dense_scores)
            layers = result.solver.net.layer_dict
            counts = [mask_core.kept_counts(mask_core.effective_params(layers[n])[0]) for n in names]
            rows.append(ScheduleRow(label, ratio, k, sum(s.iterations for s in result.steps),
                                    sum(c.kept for c in counts), sum(c.params for c in counts),
                                    dict(result.steps[0].pruned_scores), dict(result.steps[-1].retrained_scores)))
            if result.stopped_early:
                raise NpcaffeError(f"stopped during the {label} schedule at ratio {ratio:g}")
    return dense, rows


def layer_storage(net, names, index_bits):
    """(plain CSR bytes, relative CSR bytes, fillers) of the net's parameters: the chosen layers' weights
    in CSR, every other parameter 4 bytes (see the module docstring)."""
    plain = relative = fillers = 0
    for name, layer in zip(net.layer_names, net.layers):
        arrays = [b.data for b in layer.blobs]
        if not arrays:
            continue
        if name in names:
            weight, bias = mask_core.effective_params(layer)
            bits = index_bits["conv" if layer.type == "Convolution" else "fc"]
            plain += relative_csr.plain_csr_bytes(weight)
            relative += relative_csr.size_bytes(weight, bits)
            fillers += relative_csr.count_entries(weight, bits)[1]
            arrays = [] if bias is None else [bias]
        dense = 4 * sum(a.size for a in arrays)
        plain, relative = plain + dense, relative + dense
    return plain, relative, fillers


def storage_sweep(net, pruner, ratios, index_bits):
    """[StorageRow]: every chosen layer at each ratio, the bytes of each format."""
    rows = []
    for ratio in ratios:
        pruner.prune_all(ratio)
        kept, weights = pruner.kept(pruner.names)
        caffemodel = len(serialize_net(mask_core.plain_model(net)))
        buffer = io.BytesIO()
        compressed.write_compressed(buffer, compressed.layers_from_net(net))
        plain, relative, fillers = layer_storage(net, pruner.names, index_bits)
        rows.append(StorageRow(ratio, kept, weights, caffemodel, len(buffer.getvalue()), plain, relative, fillers))
        glog.info(f"Storage at ratio {ratio:g}: caffemodel {caffemodel}, npz {rows[-1].npz}, CSR {plain}, "
                  f"relative CSR {relative} bytes ({fillers} fillers)")
    pruner.restore()
    return rows


def timing_nets(param, net, batches, sample=None):
    """{batch: a TEST Net of `param` with its data layers as inputs of that batch, parameters frozen}.
    Inputs hold `sample` ({top: array}, repeated to fill the batch) or generated data."""
    from ..net import Net
    from ..synthetic import fill_inputs
    shapes = data_tops(net)
    nets = OrderedDict()
    for batch in batches:
        p = replace_data_layers(param, {top: (batch,) + tuple(shape[1:]) for top, shape in shapes.items()})
        blobs = {name: len(layer.blobs) for name, layer in zip(net.layer_names, net.layers)}
        for layer_param in p.layer:
            while len(layer_param.param) < blobs.get(layer_param.name, 0):
                layer_param.param.add()
            for spec in layer_param.param:
                spec.lr_mult = 0
        timed = Net(p, caffe_pb2.TEST)
        if sample is None:
            fill_inputs(timed)
        else:
            for top, values in sample.items():
                timed.blobs[top].data[...] = np.resize(values, timed.blobs[top].shape)
        nets[batch] = timed
    return nets


def use_path(net, path):
    """Set a timing net to the dense path, the sparse kernels for every weight layer, or npcaffe's choice."""
    from ..sparse.packing import sparsify
    if path == "dense":
        sparsify(net, threshold=0, verify=False)
    elif path == "sparse":
        sparsify(net, threshold=math.inf, verify=False)
        for layer in net.layers:
            if getattr(layer, "packed", None) is not None:
                layer.packed.min_batch = 0  # inner products run sparse below SMALL_BATCH too
    else:
        sparsify(net, verify=False)


def _median_ms(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def timing_sweep(net, pruner, ratios, nets, repeats=20, rounds=5, warmup=3):
    """[TimingRow]: every chosen layer at each ratio, a forward pass of each timing net on each path."""
    rows = []
    for ratio in ratios:
        pruner.prune_all(ratio)
        source = net.layer_dict
        for batch, timed in nets.items():
            for name, layer in zip(timed.layer_names, timed.layers):
                for dst, src in zip(layer.blobs, source[name].blobs if name in source else ()):
                    dst.data[...] = src.data
            n = repeats * 10 if batch < 8 else repeats
            measured = {path: [] for path in PATHS}
            for path in PATHS:
                use_path(timed, path)
                for _ in range(warmup):
                    timed.forward_from_to()
            for _ in range(rounds):
                for path in PATHS:
                    use_path(timed, path)
                    measured[path].append(_median_ms(timed.forward_from_to, n))
            for path in PATHS:
                rows.append(TimingRow(ratio, batch, path, statistics.median(measured[path]), min(measured[path])))
            glog.info(f"Timing at ratio {ratio:g}, batch {batch}: " +
                      ", ".join(f"{r.path} {r.median_ms:.4g} ms" for r in rows[-len(PATHS):]))
    pruner.restore()
    return rows


# -- summaries ------------------------------------------------------------------------------------------
def _drop(value, reference, higher_is_better):
    return reference - value if higher_is_better else value - reference


def ranking(dense, rows, metric, higher_is_better, tolerance):
    """[{layer, tolerates, loss_at_largest}], most sensitive first: `tolerates` the largest ratio up to which
    the metric stays within `tolerance` of the unpruned value (None: not even the smallest ratio tested)."""
    out = []
    for layer in OrderedDict.fromkeys(r.layer for r in rows if r.layer != ALL):
        mine = sorted((r for r in rows if r.layer == layer), key=lambda r: r.ratio)
        tolerates = None
        for r in mine:
            if _drop(r.scores[metric], dense[metric], higher_is_better) > tolerance:
                break
            tolerates = r.ratio
        out.append({"layer": layer, "tolerates": tolerates, "weights": mine[-1].weights,
                    "loss_at_largest": _drop(mine[-1].scores[metric], dense[metric], higher_is_better),
                    "largest_ratio": mine[-1].ratio})
    return sorted(out, key=lambda e: (-1 if e["tolerates"] is None else e["tolerates"], -e["loss_at_largest"]))


def pays_from(values, reference, ratios):
    """The smallest ratio from which on every value is below its reference, or None."""
    start = None
    for ratio, value, ref in zip(ratios, values, reference):
        if value < ref:
            start = ratio if start is None else start
        else:
            start = None
    return start


def storage_summary(rows):
    ratios = [r.ratio for r in rows]
    dense = [r.caffemodel for r in rows]
    return {fmt: pays_from([getattr(r, fmt) for r in rows], dense, ratios) for fmt in ("npz", "csr", "relative_csr")}


def timing_summary(rows):
    """{batch: smallest ratio from which the sparse kernels beat the dense path (medians), or None}."""
    out = {}
    for batch in sorted({r.batch for r in rows}):
        by = {(r.ratio, r.path): r.median_ms for r in rows if r.batch == batch}
        ratios = sorted({ratio for ratio, _ in by})
        out[batch] = pays_from([by[(x, "sparse")] for x in ratios], [by[(x, "dense")] for x in ratios], ratios)
    return out


# -- text and files -------------------------------------------------------------------------------------
def _value(v, as_percent):
    return f"{100 * v:.2f}" if as_percent else f"{v:.4g}"


def format_sensitivity(report):
    metric, pct = report["metric"], report["metric_is_accuracy"]
    ratios = report["ratios"]
    rows = report["sensitivity"]
    unit = " (%)" if pct else ""
    lines = [f"{metric}{unit} with one layer pruned at a time (the smallest |w| first, no retraining); "
             f"unpruned: {_value(report['dense'][metric], pct)}; TEST data: {report['test_passes']}",
             f"{'layer':12} {'weights':>9}  " + " ".join(f"{r:>6g}" for r in ratios)]
    for layer in OrderedDict.fromkeys(r["layer"] for r in rows):
        mine = {r["ratio"]: r for r in rows if r["layer"] == layer}
        lines.append(f"{layer:12} {mine[ratios[0]]['weights']:>9,}  "
                     + " ".join(f"{_value(mine[r]['scores'][metric], pct):>6}" for r in ratios))
    tol = report["tolerance"]
    tol_text = f"{100 * tol:g} point(s)" if pct else f"{tol:g}"
    lines.append(f"most sensitive first (tolerates: the largest ratio with {metric} within {tol_text} of unpruned):")
    for e in report["ranking"]:
        tolerates = "no ratio tested" if e["tolerates"] is None else f"up to {e['tolerates']:g}"
        lines.append(f"  {e['layer']:12} tolerates {tolerates}; at {e['largest_ratio']:g}: "
                     f"{'-' if e['loss_at_largest'] >= 0 else '+'}{_value(abs(e['loss_at_largest']), pct)}"
                     f"{' points' if pct else ''}")
    return "\n".join(lines)


def format_schedules(report):
    s = report["schedules"]
    metric, pct = report["metric"], report["metric_is_accuracy"]
    by = {(r["schedule"], r["ratio"]): r for r in s["rows"]}
    k, total = s["steps"], s["retrain_iter"]
    unpruned = s["dense"].get(metric)
    lines = [f"{metric}{' (%)' if pct else ''} with every layer pruned to the ratio: right after pruning, and after "
             f"{total} retraining iterations in all, direct (prune once, retrain {total}) and iterative ({k} steps, "
             f"{total // k} after each); the test net of {s['solver']}"
             + ("" if unpruned is None else f"; unpruned: {_value(unpruned, pct)}"),
             f"{'ratio':>6} {'kept':>9}  {'no retraining':>13} {'direct':>9} {'iterative':>9}"]
    for ratio in sorted({r["ratio"] for r in s["rows"]}):
        d, i = by.get(("direct", ratio)), by.get(("iterative", ratio))
        cells = [d and d["pruned"].get(metric), d and d["retrained"].get(metric), i and i["retrained"].get(metric)]
        lines.append(f"{ratio:>6g} {(d or i)['kept']:>9,}  " + " ".join(
            f"{'-' if c is None else _value(c, pct):>{w}}" for c, w in zip(cells, (13, 9, 9))))
    return "\n".join(lines)


def _bytes(n):
    return f"{n:,}"


def format_storage(report):
    s = report["storage"]
    bits = s["index_bits"]
    lines = [f"bytes of the parameters, every chosen layer pruned to the ratio (relative CSR: {bits['conv']}-bit "
             f"differences for convolutions, {bits['fc']}-bit for inner products)",
             f"{'ratio':>6} {'kept':>9} {'caffemodel':>11} {'.npz':>11} {'CSR':>11} {'rel. CSR':>11} {'fillers':>8}"]
    for r in s["rows"]:
        lines.append(f"{r['ratio']:>6g} {r['kept']:>9,} {_bytes(r['caffemodel']):>11} {_bytes(r['npz']):>11} "
                     f"{_bytes(r['csr']):>11} {_bytes(r['relative_csr']):>11} {r['fillers']:>8,}")
    names = {"npz": ".npz", "csr": "CSR", "relative_csr": "relative CSR"}
    lines.append("smaller than the caffemodel from ratio on: " + ", ".join(
        f"{names[k]} {'never' if v is None else f'{v:g}'}" for k, v in s["pays_from"].items()))
    return "\n".join(lines)


def format_timing(report):
    t = report["timing"]
    batches = t["batches"]
    by = {(r["ratio"], r["batch"], r["path"]): r["median_ms"] for r in t["rows"]}
    ratios = sorted({r["ratio"] for r in t["rows"]})
    lines = [f"ms per forward pass (median of {t['rounds']} rounds of {t['repeats']} forwards, x10 below 8 images; "
             f"dense path / sparse kernels / npcaffe's own choice); {t['threads']}; load average "
             f"{t['load_start']:.2f} at start, {t['load_end']:.2f} at end ({t['cpus']} CPUs)",
             f"{'ratio':>6}  " + "  ".join(f"{'batch ' + str(b) + ': dense / sparse / npcaffe':>36}" for b in batches)]
    for ratio in ratios:
        cells = ["{:>10.4g} / {:>10.4g} / {:>10.4g}".format(*(by[(ratio, b, p)] for p in PATHS)) for b in batches]
        lines.append(f"{ratio:>6g}  " + "  ".join(f"{c:>36}" for c in cells))
    lines.append("sparse kernels faster than dense from ratio on: " + ", ".join(
        f"batch {b}: {'never' if v is None else f'{v:g}'}" for b, v in t["sparse_faster_from"].items()))
    return "\n".join(lines)


def report_text(report):
    parts = [f"npcaffe sensitivity: {report['model']} with {report['weights']}; layers {', '.join(report['layers'])}"]
    if "sensitivity" in report:
        parts.append(format_sensitivity(report))
    if "schedules" in report:
        parts.append(format_schedules(report))
    if "storage" in report:
        parts.append(format_storage(report))
    if "timing" in report:
        parts.append(format_timing(report))
    return "\n\n".join(parts)


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def write_csvs(report, out):
    """One CSV per sweep in `out`; returns their paths."""
    paths = []
    outputs = report.get("outputs", [])
    if "sensitivity" in report:
        paths.append(os.path.join(out, "sensitivity.csv"))
        _write_csv(paths[-1], ["layer", "ratio", "kept_weights", "weights", *outputs],
                   [[r["layer"], r["ratio"], r["kept"], r["weights"], *(r["scores"][o] for o in outputs)]
                    for r in report["sensitivity"]])
    if "schedules" in report:
        rows = report["schedules"]["rows"]
        names = list(OrderedDict.fromkeys(k for r in rows for k in list(r["pruned"]) + list(r["retrained"])))
        paths.append(os.path.join(out, "schedules.csv"))
        _write_csv(paths[-1], ["schedule", "ratio", "steps", "retrain_iterations", "kept_weights", "weights",
                               *(f"pruned_{n}" for n in names), *(f"retrained_{n}" for n in names)],
                   [[r["schedule"], r["ratio"], r["steps"], r["iterations"], r["kept"], r["weights"],
                     *(r["pruned"].get(n, "") for n in names), *(r["retrained"].get(n, "") for n in names)]
                    for r in rows])
    if "storage" in report:
        paths.append(os.path.join(out, "storage.csv"))
        fields = list(StorageRow._fields)
        _write_csv(paths[-1], [f if f in ("ratio", "kept", "weights", "fillers") else f + "_bytes" for f in fields],
                   [[r[f] for f in fields] for r in report["storage"]["rows"]])
    if "timing" in report:
        paths.append(os.path.join(out, "timing.csv"))
        fields = list(TimingRow._fields)
        _write_csv(paths[-1], fields, [[r[f] for f in fields] for r in report["timing"]["rows"]])
    return paths


def _threads():
    from .. import parallel
    try:
        from threadpoolctl import threadpool_info
        blas = max((i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"), default=None)
    except ImportError:
        blas = None
    blas = blas or os.environ.get("OPENBLAS_NUM_THREADS", "default")
    return f"{blas} BLAS thread(s), npcaffe.parallel {parallel.num_threads()}"


# -- the command ------------------------------------------------------------------------------------------
def _check_run(weights, data_shapes, sweep_layers, solver, storage, timing, steps):
    if not weights:
        raise NpcaffeError("--weights: give the trained .caffemodel (or .npz) to prune")
    if not os.path.isfile(weights):
        raise NpcaffeError(f"--weights: '{weights}' not found")
    if data_shapes and (sweep_layers or solver):
        raise NpcaffeError("--data_shape generates data, which is good for --storage and --timing only: the "
                           "accuracy sweeps need the net's TEST data (drop --data_shape, or give --no_layers "
                           "and no --solver)")
    if not (sweep_layers or solver or storage or timing):
        raise NpcaffeError("nothing to do: --no_layers without --solver, --storage or --timing")
    if solver is not None:
        if not os.path.isfile(solver):
            raise NpcaffeError(f"--solver: solver file '{solver}' not found")
        if int(steps) < 2:
            raise NpcaffeError(f"--steps {steps}: the iterative schedule needs at least 2 steps")


def _schedules(solver, weights, names, ratios, retrain_iter, steps, solve_wrapper):
    from ..solvers import load_solver_param
    solver_param, where = load_solver_param(solver)
    if retrain_iter is None:
        if not (solver_param.HasField("max_iter") and solver_param.max_iter > 0):
            raise NpcaffeError(f"{where}: field 'max_iter' is not set; give --retrain_iter N")
        retrain_iter = solver_param.max_iter
    if int(retrain_iter) < int(steps):
        raise NpcaffeError(f"--retrain_iter {retrain_iter}: fewer than the {steps} steps of the iterative "
                           "schedule (each of its steps retrains retrain_iter / steps iterations)")
    dense, rows = schedule_curves(solver_param, weights, names, ratios, retrain_iter, steps, solve_wrapper)
    return {"solver": solver, "retrain_iter": int(retrain_iter), "steps": int(steps), "dense": dense,
            "rows": [r._asdict() for r in rows]}


def run(model, weights, *, layers=None, ratios=DEFAULT_RATIOS, iterations=None, data=None, metric=None,
        tolerance=DEFAULT_TOLERANCE, sweep_layers=True, solver=None, retrain_iter=None, steps=3, storage=False,
        index_bits=None, timing=False, batches=DEFAULT_BATCHES, repeats=20, rounds=5, data_shapes=None, out=None,
        plot=False, quiet=False, solve_wrapper=None):
    """The sweeps asked for (see the module docstring), written to `out`; returns the report (report.json)."""
    from ..net import Net
    _check_run(weights, data_shapes, sweep_layers, solver, storage, timing, steps)
    out = out or os.path.join("runs", os.path.splitext(os.path.basename(model))[0] + "_sensitivity")
    param = read_test_param(model, data)
    if data_shapes:
        param = replace_data_layers(param, data_shapes)
    was_quiet = glog.is_quiet()
    glog.set_quiet(quiet)
    os.makedirs(out, exist_ok=True)
    started = time.time()
    try:
        with glog.tee(os.path.join(out, "log.txt")):
            net = Net(param, caffe_pb2.TEST)
            net.copy_from(weights)
            try:
                names = schedule.prunable_layers(net, layers)
            except NetError as e:
                raise NpcaffeError(f"--layers: {e}") from None
            if not names:
                raise NpcaffeError(f"{model}: no Convolution or InnerProduct layer to prune")
            report = OrderedDict(model=model, weights=weights, layers=names, ratios=list(ratios))
            pruner = Pruner(net, names)
            if not data_shapes:
                if iterations is None:
                    iterations, why = default_iterations(net)
                else:
                    why = "--iterations"
                evaluate = Evaluation(net, iterations)
                metric, higher, is_accuracy = choose_metric(net, evaluate.outputs, metric)
                batch = next(iter(data_tops(net).values()), (1,))[0]
                report.update(outputs=evaluate.outputs, metric=metric, higher_is_better=higher,
                              metric_is_accuracy=is_accuracy, tolerance=tolerance, iterations=iterations,
                              test_passes=f"{iterations} x {batch} = {iterations * batch:,} samples ({why})")
            if sweep_layers:
                dense, rows = layer_sweep(evaluate, pruner, ratios)
                report.update(dense=dense, sensitivity=[r._asdict() for r in rows],
                              ranking=ranking(dense, rows, metric, higher, tolerance))
            if solver is not None:
                report["schedules"] = _schedules(solver, weights, names, ratios, retrain_iter, steps, solve_wrapper)
            if storage:
                bits = index_bits or parse_index_bits(None)
                rows = storage_sweep(net, pruner, ratios, bits)
                report["storage"] = {"index_bits": bits, "rows": [r._asdict() for r in rows],
                                     "pays_from": storage_summary(rows)}
            if timing:
                sample = None
                if not data_shapes:
                    net.forward_from_to()  # a batch of real TEST data in the data tops
                    sample = OrderedDict((top, net.blobs[top].data.copy()) for top in data_tops(net))
                nets = timing_nets(param, net, batches, sample)
                load_start = os.getloadavg()[0]
                rows = timing_sweep(net, pruner, ratios, nets, repeats, rounds)
                report["timing"] = {"batches": list(batches), "repeats": repeats, "rounds": rounds,
                                    "data": "generated" if data_shapes else "TEST images", "threads": _threads(),
                                    "cpus": os.cpu_count(), "load_start": load_start,
                                    "load_end": os.getloadavg()[0], "rows": [r._asdict() for r in rows],
                                    "sparse_faster_from": timing_summary(rows)}
            report["seconds"] = time.time() - started
    finally:
        glog.set_quiet(was_quiet)
    text = report_text(report)
    write_report(out, report, text)
    write_csvs(report, out)
    if plot:
        from ..plot import ratio_figure, sweep_kinds
        for kind in sweep_kinds(report):
            print(f"wrote {ratio_figure(report, kind, os.path.join(out, kind + '.png'))}")
    return report
