"""A trace of every DNS gate draw: one row per C-layer per TRAIN forward.

The first eight columns are those of the upstream bundles' gate_trace.csv
(../shared/crosscheck/*-dns/upstream/), formatted the same way, so the two
files diff line by line:

    forward      index of the TRAIN forward pass (0, 1, ...; Solve's extra
                 display pass after the last iteration is one more)
    iteration    the iteration the layer saw (Solve's extra pass: max_iter - 1)
    layer        the C-layer's name
    rand         the raw glibc rand() value drawn
    r_float32    r = float(rand) / float(RAND_MAX), %.9g
    p_float32    p = (1 + gamma*iter)^-power in float32, %.9g, computed as the
                 bundles computed it (numpy's float32 power); the gate itself
                 uses powf, which may differ in the last bit (e.g. 0.990491271
                 against 0.990491211 at iteration 96 with gamma 1e-4, power 1)
    gate_open    1 iff p > r (with the gate's own p)
    mask_update  1 iff gate_open and iter < iter_stop: the masks were updated

then what the update did:

    mu, std                      the layer's statistics (%.9g)
    threshold_low/_high          a = 0.9 T and b = 1.1 T, T = max(mu + c_rate*std, 0),
                                 as the doubles the masks are compared with (repr)
    pruned, spliced              mask entries 1 -> 0 and 0 -> 1 in this update,
                                 weights and biases together
    kept_weights, kept_biases    nonzero mask entries after it

so kept (before) = kept (after) + pruned - spliced.  DNS-CP layers
(CPConvolution / CPInnerProduct, npcaffe.layerlib.dns_cp) draw from the same
sequence and get rows too: their threshold_low / _high are the seed's
a = max(0, mu - c_rate*std) and b = max(0, mu + c_rate*std) against the
channel means, pruned / spliced count weights (channels x weights per
channel), and kept_biases is 0 (their bias is not masked).  Attach to a solver with
`trace_dns(solver, "trace.csv")` (or `npcaffe train --dns_trace trace.csv`);
read one back with `read_trace`.
"""
import csv

import numpy as np

from .errors import NpcaffeError
from .layer import TRAIN
from .layerlib.dns import is_dns_layer
from .layerlib.dns_cp import is_channel_surgery_layer
from .masks import mask_entries

UPSTREAM_COLUMNS = ["forward", "iteration", "layer", "rand", "r_float32", "p_float32", "gate_open", "mask_update"]
EXTRA_COLUMNS = ["mu", "std", "threshold_low", "threshold_high", "pruned", "spliced", "kept_weights", "kept_biases"]
COLUMNS = UPSTREAM_COLUMNS + EXTRA_COLUMNS
_INT_COLUMNS = {"forward", "iteration", "rand", "gate_open", "mask_update", "pruned", "spliced",
                "kept_weights", "kept_biases"}


def _g9(x):
    return f"{float(x):.9g}"


def bundle_probability(gamma, iteration, power):
    """p as the bundles' gate_trace.csv has it: numpy's float32 power of float32(1 + gamma*iter)."""
    base = np.float32(1) + np.float32(gamma) * np.float32(iteration)
    return np.power(base, -np.float32(power))


class GateTrace:
    """Collects rows from a TRAIN net's C-layers after each forward; optionally streams them to a CSV file.

    `rows` holds every row as written (the values typed, floats as the
    strings written); the hook runs after every full forward of the net, the
    forwards of Solver.step and Solve's extra display pass alike.
    """

    def __init__(self, net, path=None):
        if net.phase != TRAIN:
            raise ValueError("a DNS gate trace needs the TRAIN net")
        self.layers = [(name, layer) for name, layer in zip(net.layer_names, net.layers)
                       if is_dns_layer(layer) or is_channel_surgery_layer(layer)]
        self.rows = []
        self.forward = 0
        self.path = path
        self._file = open(path, "w", newline="") if path else None
        self._writer = csv.writer(self._file, lineterminator="\n") if self._file else None
        if self._writer:
            self._writer.writerow(COLUMNS)
        self._net = net
        net.forward_hooks.append(self._after_forward)

    def _after_forward(self, net):
        for name, layer in self.layers:
            u = layer.last_update
            if u is None:
                continue
            p = bundle_probability(layer.gamma, u.iter, layer.power)
            if is_channel_surgery_layer(layer):
                per_channel = layer.blobs[0].count // layer.channel_mask.size
                low, high = repr(float(u.low)), repr(float(u.high))
                pruned, spliced = u.pruned * per_channel, u.spliced * per_channel
            else:
                threshold = np.float64(np.float32(u.threshold))
                low, high = repr(float(0.9 * threshold)), repr(float(1.1 * threshold))
                pruned, spliced = u.pruned + u.bias_pruned, u.spliced + u.bias_spliced
            row = [self.forward, u.iter, name, u.rand, _g9(u.r), _g9(p), int(u.gate_open), int(u.mask_update),
                   _g9(layer.mu), _g9(layer.std), low, high, pruned, spliced, *mask_entries(layer)]
            self.rows.append(row)
            if self._writer:
                self._writer.writerow(row)
        if self._file:
            self._file.flush()
        self.forward += 1

    def close(self):
        """Stop tracing and close the file (the rows stay in `rows`)."""
        if self._after_forward in self._net.forward_hooks:
            self._net.forward_hooks.remove(self._after_forward)
        if self._file:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def trace_dns(solver, path=None):
    """Trace every gate draw of `solver`'s train net from now on (into `path`, a CSV, if given).

        trace = npcaffe.dnstrace.trace_dns(solver, "trace.csv")
        solver.step(100)
        trace.close()
    """
    return GateTrace(solver.net, path)


def read_trace(path):
    """The rows of a trace CSV (ours or an upstream bundle's) as dicts: ints as int, the rest float (layer str)."""
    rows = []
    try:
        f = open(path, newline="")
    except OSError as e:
        raise NpcaffeError(f"{path}: cannot read the trace CSV ({e.strerror}); write one with "
                           "`npcaffe train --dns_trace FILE`") from None
    with f:
        reader = csv.DictReader(f)
        missing = [c for c in ("iteration", "layer") if c not in (reader.fieldnames or ())]
        if missing:
            raise NpcaffeError(f"{path}: not a DNS trace CSV: no {', '.join(missing)} column in its header "
                               f"{reader.fieldnames}")
        for row in reader:
            typed = {}
            for key, value in row.items():
                if key is None or value is None:  # csv's markers of a row longer / shorter than the header
                    given = sum(v is not None for k, v in row.items() if k is not None) + len(row.get(None, ()))
                    raise NpcaffeError(f"{path}, line {reader.line_num}: {given} columns "
                                       f"where the header has {len(reader.fieldnames)}")
                try:
                    if key == "layer":
                        typed[key] = value
                    elif key in _INT_COLUMNS:
                        typed[key] = int(value)
                    else:
                        typed[key] = float(value)
                except ValueError:
                    raise NpcaffeError(f"{path}, line {reader.line_num}, column '{key}': "
                                       f"{value!r} is not a number") from None
            rows.append(typed)
    return rows
