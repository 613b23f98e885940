"""`npcaffe plot`: every figure kind from real material (a trace, upstream's logs and snapshots), PNG and SVG."""
import glob
import os
import sys

import pytest

from helpers import quiet_glog, shared_path
from npcaffe import cli, crosscheck, plot
from npcaffe.dnstrace import trace_dns
from npcaffe.errors import NpcaffeError
from npcaffe.kernels import glibc_rand
from npcaffe.solvers import get_solver


def test_without_matplotlib_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(NpcaffeError, match=r"pip install npcaffe\[plot\]"):
        plot.pyplot()


def test_read_log_takes_both_caffe_versions(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("I0101 00:00:00.000000  1 solver.cpp:226] Iteration 0, loss = 2.5\n"
                   "I0101 00:00:00.000000  1 solver.cpp:243] Iteration 10 (3.1 iter/s, 3.2s/10 iters), loss = 1.5\n"
                   "I0101 00:00:00.000000  1 solver.cpp:330] Iteration 10, Testing net (#0)\n"
                   "I0101 00:00:00.000000  1 solver.cpp:397]     Test net output #0: accuracy = 0.9\n"
                   "I0101 00:00:00.000000  1 solver.cpp:397]     Test net output #1: loss = 0.3 (* 1 = 0.3 loss)\n")
    losses, tests = plot.read_log(str(log))
    assert losses == {0: 2.5, 10: 1.5}
    assert tests == {10: {"accuracy": 0.9, "loss": 0.3}}


pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    bundle = shared_path("crosscheck", "lenet300100-dns")
    work = tmp_path_factory.mktemp("plot")
    param = crosscheck._prepare(bundle, str(work))
    glibc_rand.reset()
    with quiet_glog():
        solver = get_solver(param)
        solver.copy_weights(crosscheck._weights_arg(bundle))
        path = str(work / "trace.csv")
        with trace_dns(solver, path):
            solver.step(30)
    return path


def upstream_snapshots(n=3):
    snaps = glob.glob(os.path.join(shared_path("crosscheck", "lenet300100-dns"), "upstream", "snap", "*.caffemodel.gz"))
    return sorted(snaps, key=plot.snapshot_iteration)[:n]


def check_image(path):
    with open(path, "rb") as f:
        head = f.read(200)
    if path.endswith(".png"):
        assert head.startswith(b"\x89PNG")
    else:
        assert b"<svg" in head or b"<?xml" in head


def test_trace_figures(trace, tmp_path, capsys):
    for kind, extra, ext in (("kept", [], "png"), ("gate", ["--layer", "ip1"], "svg"),
                             ("flips", ["--interval", "10"], "png")):
        out = str(tmp_path / f"{kind}.{ext}")
        assert cli.main(["plot", kind, "--trace", trace, "-o", out] + extra) == 0
        check_image(out)
    assert "wrote" in capsys.readouterr().out


def test_histograms_from_snapshots(trace, tmp_path):
    out = str(tmp_path / "hist.png")
    assert cli.main(["plot", "hist", "--snapshots"] + upstream_snapshots(2) + ["--trace", trace, "--layer", "ip3",
                                                                               "-o", out]) == 0
    check_image(out)


@pytest.mark.slow
def test_snapshot_figures(tmp_path):
    snaps = upstream_snapshots()
    for kind in ("kept", "flips"):
        out = str(tmp_path / f"{kind}.png")
        assert cli.main(["plot", kind, "--snapshots"] + snaps + ["-o", out]) == 0, kind
        check_image(out)
    out = str(tmp_path / "t4.png")
    assert cli.main(["plot", "table4", "--weights", snaps[-1], "-o", out]) == 0
    check_image(out)


def test_table4_of_the_released_model_and_upstream_log_curves(tmp_path):
    out = str(tmp_path / "t4.svg")
    assert cli.main(["plot", "table4", "--weights", shared_path("upstream-dns", "caffe_lenet5_sparse.caffemodel"),
                     "-o", out]) == 0
    check_image(out)
    log = shared_path("crosscheck", "lenet5-table1", "upstream", "caffe.log")
    losses, tests = plot.read_log(log)
    assert losses[0] == 2.29397 and tests[0]["accuracy"] == 0.9909
    out = str(tmp_path / "curves.png")
    assert cli.main(["plot", "curves", "--log", log, "--label", "upstream", "-o", out]) == 0
    check_image(out)


@pytest.mark.slow
def test_api_figures(tmp_path):
    import numpy as np
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.1, 500)
    mask = (np.abs(w) > 0.1).astype(np.float32)
    check_image(plot.plot_histograms([("layer", w, mask, 0.09, 0.11)], str(tmp_path / "h.png")))
    check_image(plot.plot_gate_schedules([(1e-4, 1), (1e-2, 1)], 100, str(tmp_path / "g.png")))
    check_image(plot.plot_sweep([0, 1, 2], [50, 20, 5], [98, 97, 90], str(tmp_path / "s.png")))
    check_image(plot.plot_compare({"a": ([0, 10], [100, 5], [98, 90])}, str(tmp_path / "c.svg")))


def test_errors(trace, tmp_path, capsys):
    with pytest.raises(NpcaffeError, match=".png or .svg"):
        plot.plot_kept(plot.kept_from_trace(__import__("npcaffe").dnstrace.read_trace(trace)), str(tmp_path / "x.pdf"))
    assert cli.main(["plot", "gate", "-o", str(tmp_path / "x.png")]) == 1
    assert "give --trace" in capsys.readouterr().err
