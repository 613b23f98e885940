"""Snapshots under faults: an unwritable prefix is found before the first iteration, a failed write
mid-run costs that snapshot only (training goes on, nothing half-written is left), the sidecar is on
disk before its .solverstate, and a killed run's temporary files are removed at the next start."""
import errno
import glob
import os

import numpy as np
import pytest

from npcaffe.cli import main
from npcaffe.errors import SolverError
from npcaffe.fileio import solverstate as ss
from npcaffe.solvers import get_solver

NET = """
name: "tiny"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 8 dim: 6 } shape { dim: 8 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""
SOLVER = """net: "net.prototxt"
base_lr: 0.1
momentum: 0.9
lr_policy: "fixed"
max_iter: 10
snapshot: SNAPSHOT
snapshot_prefix: "PREFIX"
random_seed: 5
"""


@pytest.fixture
def workdir(tmp_path, monkeypatch, quiet_log):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "snap").mkdir()
    return tmp_path


def solver_file(snapshot=2, prefix="snap/tiny"):
    with open("solver.prototxt", "w") as f:
        f.write(SOLVER.replace("SNAPSHOT", str(snapshot)).replace("PREFIX", prefix))
    return "solver.prototxt"


def test_unwritable_prefix_fails_before_training_even_with_snapshot_0(workdir, capsys):
    (workdir / "afile").write_text("not a directory")
    solver = get_solver(solver_file(snapshot=0, prefix="afile/tiny"))
    with pytest.raises(SolverError, match=r"field 'snapshot_prefix': cannot write to snapshot prefix 'afile/tiny'"):
        solver.solve()
    assert solver.iter == 0


def test_failed_write_mid_run_costs_one_snapshot_and_training_goes_on(workdir, monkeypatch, glog_capture):
    reference = get_solver(solver_file(prefix="snap/ref"))
    reference.solve()
    real = ss.write_solverstate

    def full_disk_at_4(state, path):
        if "_iter_4." in path:
            raise OSError(errno.ENOSPC, "No space left on device", path)
        real(state, path)

    monkeypatch.setattr(ss, "write_solverstate", full_disk_at_4)
    solver = get_solver(solver_file())
    solver.solve()
    log = glog_capture.getvalue()
    failures = [line for line in log.splitlines() if "Snapshot at iteration 4 failed" in line]
    assert len(failures) == 1 and "No space left on device" in failures[0] and failures[0].startswith("E")
    assert "latest snapshot on disk is snap/tiny_iter_2.solverstate" in failures[0]
    assert not glob.glob("snap/tiny_iter_4*"), "nothing of the failed snapshot is left"
    for n in (2, 6, 8, 10):
        for ext in (".caffemodel", ".solverstate", ".solverstate.npcaffe.json"):
            assert os.path.exists(f"snap/tiny_iter_{n}{ext}")
    for a, b in zip(solver.net.learnable_params, reference.net.learnable_params):
        np.testing.assert_array_equal(a.data, b.data)


def test_failed_final_snapshot_is_an_error_naming_the_file(workdir, monkeypatch):
    def read_only(state, path):
        raise OSError(errno.EROFS, "Read-only file system", path)

    monkeypatch.setattr(ss, "write_solverstate", read_only)
    solver = get_solver(solver_file(snapshot=0))
    with pytest.raises(SolverError, match=r"snap/tiny_iter_10.solverstate: the final snapshot \(iteration 10\) "
                                          r"could not be written: Read-only file system"):
        solver.solve()
    assert not glob.glob("snap/tiny_iter_10*")


def test_sidecar_is_written_before_its_solverstate(workdir, monkeypatch):
    order = []
    for name in ("write_sidecar", "write_solverstate"):
        real = getattr(ss, name)
        monkeypatch.setattr(ss, name, lambda *a, _real=real, _name=name: (order.append(_name), _real(*a)))
    get_solver(solver_file(snapshot=5)).solve()
    assert order == ["write_sidecar", "write_solverstate"] * 2


def test_stray_temporaries_of_a_killed_run_are_removed_at_start(workdir, capsys):
    ours = ["snap/tiny_iter_4.caffemodel.x1y2z3.tmp", "snap/tiny_iter_4.solverstate.h5.tmp"]
    theirs = ["snap/notes.tmp", "snap/other_iter_4.caffemodel.tmp"]
    for path in ours + theirs:
        open(path, "w").close()
    assert main(["train", "--solver", solver_file(), "--quiet"]) == 0
    assert [p for p in ours if os.path.exists(p)] == []
    assert all(os.path.exists(p) for p in theirs)
