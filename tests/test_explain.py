"""`npcaffe explain`: Algorithm 1 for one layer and one iteration, from a run or from a trace."""
import os

import numpy as np
import pytest

from helpers import shared_path
from npcaffe import cli, crosscheck
from npcaffe.dnstrace import read_trace, trace_dns
from npcaffe.errors import NpcaffeError
from npcaffe.explain import explain_run, explain_trace, format_explanation
from npcaffe.kernels import glibc_rand
from npcaffe.solvers import get_solver

ORDER = ["μ", "σ", "c_rate", "T", "a", "b", "r", "σ(iter)", "gate", "pruned", "spliced", "kept"]


@pytest.fixture
def bundle_param(tmp_path):
    bundle = shared_path("crosscheck", "lenet300100-dns")
    param = crosscheck._prepare(bundle, str(tmp_path))
    return param, crosscheck._weights_arg(bundle)


@pytest.fixture
def traced(bundle_param, tmp_path, quiet_log):
    """A trace of the bundle's first 8 iterations."""
    param, weights = bundle_param
    glibc_rand.reset()
    solver = get_solver(param)
    solver.copy_weights(weights)
    path = str(tmp_path / "trace.csv")
    with trace_dns(solver, path):
        solver.step(8)
    return path


def numbered(text):
    """{symbol: rest of line} of the numbered lines, in order."""
    out = {}
    for line in text.splitlines():
        head = line[:4].strip()
        if head.endswith(".") and head[:-1].isdigit():
            symbol, rest = line[4:].split("=", 1)
            out[symbol.strip()] = rest
    return out


def test_run_matches_the_trace_and_lists_algorithm_1_in_order(bundle_param, traced, quiet_log):
    param, weights = bundle_param
    step = explain_run(param, "ip2", 5, weights=weights)
    row = [r for r in read_trace(traced) if r["layer"] == "ip2" and r["iteration"] == 5][0]
    assert step["rand"] == row["rand"] and step["mask_update"] == bool(row["mask_update"])
    assert (step["pruned"], step["spliced"]) == (row["pruned"], row["spliced"])
    assert (step["kept_weights"], step["kept_biases"]) == (row["kept_weights"], row["kept_biases"])
    assert step["a"] == row["threshold_low"] and step["b"] == row["threshold_high"]
    text = format_explanation(step)
    lines = numbered(text)
    assert list(lines) == ORDER
    assert "max(0.0470634773 + 0.699999988·0.0346296728, 0)" in lines["T"]
    assert f"{row['rand']} / 2147483648" in lines["r"]
    assert "(1 + 9.99999975e-05·5)^−1" in lines["σ(iter)"]
    assert "open: masks updated" in lines["gate"]
    # The weights listed around a and b obey the rules of an open gate.
    for label, bound, entries in step["nearest"]:
        assert len(entries) == 6
        for value, where, before, after in entries:
            if label == "a" and before == 1:
                assert after == (0 if value <= bound else 1)
            if label == "b" and before == 0:
                assert after == (1 if value > bound else 0)
        assert sum(v <= bound for v, *_ in entries) == 3
    assert "Weights nearest the thresholds" in text


def test_iteration_0_prunes_what_the_rule_says(bundle_param, quiet_log):
    param, weights = bundle_param
    step = explain_run(param, "ip3", 0, weights=weights)
    w, before, after = step["weights"], step["mask_before"], step["mask_after"]
    assert (before == 1).all()
    expected = (np.abs(w.astype(np.float64)) > step["a"]).astype(np.float32)
    np.testing.assert_array_equal(after, expected)
    assert step["pruned"] == int((after == 0).sum()) + int(step["total_biases"] - step["kept_biases"])


def test_cli_from_a_trace(traced, capsys):
    net = os.path.join(shared_path("crosscheck", "lenet300100-dns"), "net.prototxt")
    assert cli.main(["explain", "--trace", traced, "--layer", "ip1", "--iteration", "3", "--model", net]) == 0
    out = capsys.readouterr().out
    lines = numbered(out)
    assert list(lines) == ORDER
    assert lines["c_rate"].strip().endswith("= 1")
    assert "and 3 < 10000" in lines["gate"]
    assert "run with --solver/--weights" in out
    # Without --model, c_rate is read back from T.
    assert cli.main(["explain", "--trace", traced, "--layer", "ip1", "--iteration", "3"]) == 0
    assert "(T − μ) / σ" in capsys.readouterr().out


def test_cli_from_a_solver(tmp_path, monkeypatch, capsys):
    bundle = shared_path("crosscheck", "lenet300100-dns")
    for name in ("solver.prototxt", "net.prototxt", "init.caffemodel", "mnist_train_lmdb"):
        os.symlink(os.path.join(bundle, name), tmp_path / name)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["explain", "--solver", "solver.prototxt", "--weights", "init.caffemodel", "--layer", "ip3",
                     "--iteration", "2", "--nearest", "2"]) == 0
    out = capsys.readouterr().out
    assert list(numbered(out)) == ORDER and "iteration 2" in out
    assert not os.path.exists(tmp_path / "snap")  # explain switches snapshots off


def test_errors(traced, bundle_param, capsys):
    with pytest.raises(NpcaffeError, match="no row at iteration 99"):
        explain_trace(traced, "ip1", 99)
    upstream = os.path.join(shared_path("crosscheck", "lenet300100-dns"), "upstream", "gate_trace.csv")
    with pytest.raises(NpcaffeError, match="no statistics"):
        explain_trace(upstream, "ip1", 0)
    param, weights = bundle_param
    with pytest.raises(NpcaffeError, match="ip1, ip2, ip3"):
        explain_run(param, "relu1", 0, weights=weights)
    assert cli.main(["explain", "--layer", "ip1", "--iteration", "0"]) == 1
    assert "--trace" in capsys.readouterr().err
