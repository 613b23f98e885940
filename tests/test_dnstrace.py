"""The DNS gate trace (npcaffe.dnstrace, `npcaffe train --dns-trace`) against the upstream bundles'
gate_trace.csv, byte for byte on its eight columns; the splice switch of the DNS layers."""
import os

import numpy as np
import pytest

from helpers import layer_param, make_blob, quiet_glog, shared_path
from npcaffe import cli, crosscheck, rng
from npcaffe.blob import Blob
from npcaffe.errors import NpcaffeError
from npcaffe.dnstrace import COLUMNS, GateTrace, read_trace, trace_dns
from npcaffe.kernels import glibc_rand
from npcaffe.layer import TRAIN, create_layer
from npcaffe.layerlib import dns
from npcaffe.solvers import get_solver


def run_bundle(bundle, workdir, trace_path):
    """The bundle's run as npcaffe.crosscheck runs it (a fresh process's rand()), traced into trace_path."""
    param = crosscheck._prepare(bundle, workdir)
    glibc_rand.reset()
    rng.set_random_seed(0)
    with quiet_glog():
        solver = get_solver(param)
        solver.copy_weights(crosscheck._weights_arg(bundle))
        with trace_dns(solver, trace_path):
            solver.solve()
    return solver


def upstream_columns(path):
    with open(path) as f:
        return [",".join(line.rstrip("\n").split(",")[:8]) for line in f]


def check_trace(bundle, tmp_path):
    trace_path = str(tmp_path / "trace.csv")
    solver = run_bundle(bundle, str(tmp_path), trace_path)
    ours = upstream_columns(trace_path)
    with open(os.path.join(bundle, "upstream", "gate_trace.csv")) as f:
        theirs = [line.rstrip("\n") for line in f]
    assert len(ours) == len(theirs)
    differ = [(a, b) for a, b in zip(ours, theirs) if a != b]
    assert not differ, f"{len(differ)} rows differ, first: {differ[0]}"
    rows = read_trace(trace_path)
    assert list(rows[0]) == COLUMNS
    # kept(before) = kept(after) + pruned - spliced, row after row of each layer.
    layers = {name: layer for name, layer in zip(solver.net.layer_names, solver.net.layers)
              if hasattr(layer, "last_update")}
    for name, layer in layers.items():
        mine = [r for r in rows if r["layer"] == name]
        kept = layer.blobs[2].count + layer.blobs[3].count  # mask fillers are constant 1
        for r in mine:
            assert r["kept_weights"] + r["kept_biases"] == kept - r["pruned"] + r["spliced"]
            kept = r["kept_weights"] + r["kept_biases"]
            assert r["threshold_low"] <= r["threshold_high"]
        assert kept == int(np.count_nonzero(layer.blobs[2].data)) + int(np.count_nonzero(layer.blobs[3].data))
    return rows


def test_trace_equals_upstream_lenet300100(tmp_path):
    rows = check_trace(shared_path("crosscheck", "lenet300100-dns"), tmp_path)
    assert rows[0]["pruned"] > 0 and sum(r["spliced"] for r in rows) > 0


@pytest.mark.slow
def test_trace_equals_upstream_lenet5(tmp_path):
    check_trace(shared_path("crosscheck", "lenet5-dns"), tmp_path)


def test_cli_train_writes_the_trace(tmp_path, monkeypatch):
    bundle = shared_path("crosscheck", "lenet300100-dns")
    for name in ("solver.prototxt", "net.prototxt", "init.caffemodel", "mnist_train_lmdb"):
        os.symlink(os.path.join(bundle, name), tmp_path / name)
    os.makedirs(tmp_path / "snap")
    monkeypatch.chdir(tmp_path)
    glibc_rand.reset()
    assert cli.main(["train", "--solver", "solver.prototxt", "--weights", "init.caffemodel", "--iterations", "4",
                     "--dns-trace", "trace.csv", "--quiet"]) == 0
    ours = upstream_columns("trace.csv")
    theirs = upstream_columns(os.path.join(bundle, "upstream", "gate_trace.csv"))
    # Iterations 0-3 (3 layers each) match; then Solve's extra pass at iteration 3, where upstream went on.
    assert ours[:13] == theirs[:13]
    assert len(ours) == 1 + 5 * 3 and ours[13].startswith("4,3,ip1,")


def test_trace_needs_the_train_net():
    from npcaffe.net import Net
    from npcaffe.layer import TEST
    net = Net(shared_path("upstream-dns", "lenet300100.prototxt"), TEST)
    with pytest.raises(ValueError, match="TRAIN"):
        GateTrace(net)


IP = """name: "f" type: "CInnerProduct"
inner_product_param { num_output: 6 weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "constant" } }
cinner_product_param { gamma: 0.0001 power: 1 c_rate: 0.5 iter_stop: 100
  weight_mask_filler { type: "constant" value: 1 } bias_mask_filler { type: "constant" value: 1 } }"""


@pytest.mark.parametrize("splicing", [True, False])
def test_splicing_switch(splicing):
    glibc_rand.reset()
    layer = create_layer(layer_param(IP), TRAIN)
    bottom, top = [make_blob((3, 8), seed=1)], [Blob(())]
    layer.setup(bottom, top)
    layer.splicing = splicing
    layer.iter = 0
    layer.forward(bottom, top)
    first = layer.last_update
    assert first.pruned > 0
    mask = layer.blobs[2].flat_data
    w = layer.blobs[0].flat_data
    big = np.argsort(-np.abs(w))[:3]
    mask[big] = 0  # large weights masked: the splice rule would bring them back
    small = np.argmin(np.where(mask == 1, np.abs(w), np.inf))
    w[small] = 0  # and a kept weight at 0 gets pruned either way
    layer.iter = 1
    layer.forward(bottom, top)
    u = layer.last_update
    assert u.mask_update and u.pruned >= 1
    assert u.spliced == (3 if splicing else 0)
    assert (mask[big] == (1 if splicing else 0)).all()
    glibc_rand.reset()


def test_set_splicing_reaches_every_c_layer(tmp_path, quiet_log):
    from npcaffe.net import Net
    bundle = shared_path("crosscheck", "lenet5-dns")
    param = crosscheck._prepare(bundle, str(tmp_path))
    net = Net(param.net_param, TRAIN)
    dns.set_splicing(net, False)
    layers = [l for l in net.layers if isinstance(l, (dns.CConvolution, dns.CInnerProduct))]
    assert len(layers) == 4 and not any(l.splicing for l in layers)
    dns.set_splicing(net, True)
    assert all(l.splicing for l in layers)
    assert dns.CInnerProduct.splicing is True  # the upstream rule is the default


def test_solver_trace_dns_method(tmp_path):
    """The solver API form of --dns-trace: solver.trace_dns(path)."""
    import os
    from helpers import shared_path
    from npcaffe import crosscheck
    from npcaffe.solvers import get_solver
    bundle = shared_path("crosscheck", "lenet300100-dns")
    param = crosscheck._prepare(bundle, str(tmp_path))
    param.max_iter, param.snapshot, param.display = 3, 0, 0
    solver = get_solver(param)
    solver.copy_weights(os.path.join(bundle, "init.caffemodel"))
    trace = solver.trace_dns(str(tmp_path / "t.csv"))
    solver.step(3)
    trace.close()
    lines = (tmp_path / "t.csv").read_text().splitlines()
    assert len(lines) == 1 + 3 * 3 and lines[0].startswith("forward,iteration,layer,rand,")


@pytest.mark.parametrize("text, message", [
    (None, "cannot read the trace CSV"),
    ("a,b\n1,2\n", "not a DNS trace CSV: no iteration, layer column"),
    ("iteration,layer,rand\n1,ip1,x\n", "line 2, column 'rand': 'x' is not a number"),
    ("iteration,layer,rand\n1,ip1\n", "line 2: 2 columns where the header has 3"),
])
def test_read_trace_names_the_fault(tmp_path, text, message):
    path = tmp_path / "trace.csv"
    if text is not None:
        path.write_text(text)
    with pytest.raises(NpcaffeError, match=message):
        read_trace(str(path))
    if text is None:  # the commands that read traces print it as one line, no traceback
        assert cli.main(["plot", "kept", "--trace", str(path), "-o", str(tmp_path / "k.png")]) == 1
