"""Solver.restore is all or nothing: a solverstate that does not fit is an error naming the file, and
the solver is left exactly as it was (iteration, weights, history, random streams)."""
import shutil

import numpy as np
import pytest

from npcaffe import rng
from npcaffe.errors import NpcaffeError, SolverError, WeightsError
from npcaffe.fileio import solverstate as ss
from npcaffe.proto import caffe_pb2
from npcaffe.solvers import get_solver

NET = """
name: "tiny"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 8 dim: 6 } shape { dim: 8 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param { num_output: 10 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""
SOLVER = """net: "net.prototxt"
base_lr: 0.1
momentum: 0.9
lr_policy: "fixed"
max_iter: 20
snapshot: 5
snapshot_prefix: "snap/tiny"
random_seed: 5
"""


@pytest.fixture
def run(tmp_path, monkeypatch, quiet_log):
    """A solver trained 7 iterations (snapshot at 5) and the untouched snapshot's state."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(SOLVER)
    (tmp_path / "snap").mkdir()
    solver = get_solver("solver.prototxt")
    solver.step(7)
    return solver


def fingerprint(solver):
    return (solver.iter, solver.current_step, [a.copy() for a in solver.state_arrays()],
            [b.data.copy() for b in solver.net.learnable_params], rng.get_state()["state"]["state"])


def assert_untouched(solver, before):
    after = fingerprint(solver)
    assert after[0:2] == before[0:2] and after[4] == before[4]
    for a, b in zip(after[2] + after[3], before[2] + before[3]):
        np.testing.assert_array_equal(a, b)


def rewrite(path, edit):
    state = ss.read_solverstate(path)
    edit(state)
    ss.write_solverstate(state, path)


@pytest.mark.parametrize("edit, message", [
    (lambda s: setattr(s, "iter", -1000), r"iter -1000 is outside \[0, max_iter = 20\]"),
    (lambda s: setattr(s, "iter", 21), r"iter 21 is outside"),
    (lambda s: setattr(s, "current_step", -3), "current_step -3 is negative"),
    (lambda s: setattr(s, "learned_net", "snap/tiny\0.caffemodel"), "NUL"),
    (lambda s: s.history.pop(), "3 history blobs in the file, but the solver keeps 4"),
    (lambda s: s.history[1].shape.dim.__setitem__(0, 4), r"history blob 1 has shape \(4,\)"),
    (lambda s: s.history[0].shape.dim.extend([2 ** 32, 2 ** 32]), "history blob 0 has shape"),
])
def test_bad_state_is_refused_before_anything_changes(run, edit, message):
    rewrite("snap/tiny_iter_5.solverstate", edit)
    before = fingerprint(run)
    with pytest.raises(NpcaffeError, match=message) as e:
        run.restore("snap/tiny_iter_5.solverstate")
    assert "tiny_iter_5.solverstate" in str(e.value)
    assert_untouched(run, before)


def test_weights_that_do_not_fit_roll_everything_back(run, tmp_path):
    other = tmp_path / "other.prototxt"
    other.write_text(NET.replace("num_output: 10", "num_output: 11"))
    from npcaffe import Net
    from npcaffe.layer import TRAIN
    Net(str(other), TRAIN).save("snap/other.caffemodel")
    rewrite("snap/tiny_iter_5.solverstate", lambda s: setattr(s, "learned_net", "snap/other.caffemodel"))
    before = fingerprint(run)
    with pytest.raises(WeightsError, match="shape mismatch"):
        run.restore("snap/tiny_iter_5.solverstate")
    assert_untouched(run, before)


def test_sidecar_of_another_snapshot_is_refused(run):
    shutil.copy("snap/tiny_iter_5.solverstate", "snap/copy.solverstate")
    run.snapshot()  # iteration 7
    shutil.copy(ss.sidecar_path("snap/tiny_iter_7.solverstate"), ss.sidecar_path("snap/copy.solverstate"))
    before = fingerprint(run)
    with pytest.raises(SolverError, match="written at iteration 7, the solver state at 5"):
        run.restore("snap/copy.solverstate")
    assert_untouched(run, before)


def test_good_restore_still_resumes(run):
    run.restore("snap/tiny_iter_5.solverstate")
    assert run.iter == 5


def test_hdf5_history_declared_huge_is_refused_before_reading(run):
    h5py = pytest.importorskip("h5py")
    state = ss.read_solverstate("snap/tiny_iter_5.solverstate")
    ss.write_solverstate(state, "snap/bomb.solverstate.h5")
    with h5py.File("snap/bomb.solverstate.h5", "a") as f:
        del f["history/0"]
        # 2 GB declared, nothing stored: reading it would allocate the lot
        f["history"].create_dataset("0", shape=(2 ** 29,), dtype="f4", chunks=(2 ** 16,), compression="gzip")
    before = fingerprint(run)
    with pytest.raises(SolverError, match=r"bomb\.solverstate\.h5: history blob 0 has shape \(536870912,\)"):
        run.restore("snap/bomb.solverstate.h5")
    assert_untouched(run, before)
