"""A trace of every DNS gate draw: one row per C-layer per TRAIN forward.

The first eight columns are those of the upstream bundles' gate_trace.csv
(forward, iteration, layer, rand, r_float32, p_float32, gate_open,
mask_update), formatted the same way, so the two diff line by line; then
mu, std, the prune/splice thresholds 0.9 T and 1.1 T, the weights pruned
(mask 1 -> 0) and spliced (0 -> 1) by this update, and the weights and
biases kept after it.
"""
import csv

import numpy as np

from .layer import TRAIN

UPSTREAM_COLUMNS = ["forward", "iteration", "layer", "rand", "r_float32", "p_float32", "gate_open", "mask_update"]
EXTRA_COLUMNS = ["mu", "std", "threshold_low", "threshold_high", "pruned", "spliced", "kept_weights", "kept_biases"]


def _g9(x):
    return f"{float(x):.9g}"


class GateTrace:
    """Collects rows from a TRAIN net's C-layers after each forward; optionally streams them to a CSV file."""

    def __init__(self, net, path=None):
        if net.phase != TRAIN:
            raise ValueError("a DNS gate trace needs the TRAIN net")
        self.layers = [(name, layer) for name, layer in zip(net._layer_names, net.layers)
                       if hasattr(layer, "last_update")]
        self.rows = []
        self.forward = 0
        self._file = open(path, "w", newline="") if path else None
        self._writer = csv.writer(self._file, lineterminator="\n") if self._file else None
        if self._writer:
            self._writer.writerow(UPSTREAM_COLUMNS + EXTRA_COLUMNS)
        net.forward_hooks.append(self._after_forward)

    def _after_forward(self, net):
        for name, layer in self.layers:
            u = layer.last_update
            if u is None:
                continue
            threshold = np.float64(np.float32(u.threshold))
            row = [self.forward, u.iter, name, u.rand, _g9(u.r), _g9(u.p), int(u.gate_open), int(u.mask_update),
                   _g9(layer.mu), _g9(layer.std), repr(float(0.9 * threshold)), repr(float(1.1 * threshold)),
                   u.pruned, u.spliced,
                   int(np.count_nonzero(layer.blobs[2].flat_data)), int(np.count_nonzero(layer.blobs[3].flat_data))]
            self.rows.append(row)
            if self._writer:
                self._writer.writerow(row)
        self.forward += 1

    def close(self):
        if self._file:
            self._file.close()
            self._file = None
