"""A diverging run stops at the first NaN / inf loss or gradient, naming iteration, layer and blob,
before the update, and leaves the last good snapshot as the latest on disk."""
import glob
import os

import numpy as np
import pytest

from npcaffe.cli import main
from npcaffe.errors import NonFiniteError
from npcaffe.solvers import get_solver

NET = """
name: "tiny"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 8 dim: 6 } shape { dim: 8 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param { num_output: 10 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""

SOLVER = """net: "net.prototxt"
base_lr: {lr}
momentum: 0.9
lr_policy: "fixed"
display: 0
max_iter: 40
snapshot: 2
snapshot_prefix: "snap/tiny"
random_seed: 5
"""


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "snap").mkdir()
    return tmp_path


def test_divergence_stops_with_iteration_layer_and_blob(workdir, capsys, quiet_log):
    (workdir / "solver.prototxt").write_text(SOLVER.replace("{lr}", "1e20"))
    assert main(["train", "--solver", "solver.prototxt"]) == 1
    err = capsys.readouterr().err
    assert "training diverged at iteration" in err and "first non-finite" in err and "layer '" in err
    iteration = int(err.split("training diverged at iteration ")[1].split(":")[0])
    assert 0 < iteration < 40
    states = sorted(glob.glob("snap/*.solverstate"), key=os.path.getmtime)
    models = glob.glob("snap/*.caffemodel")
    assert len(states) == len(models) and states, "every snapshot is complete"
    last = max(int(s.split("_iter_")[1].split(".")[0]) for s in states)
    assert last <= iteration and f"the last snapshot is snap/tiny_iter_{last}.solverstate" in err
    # every snapshot on disk holds finite weights
    solver = get_solver("solver.prototxt")
    for state in states:
        solver.restore(state)
        for blob in solver.net.learnable_params:
            assert np.isfinite(blob.data).all(), state


def test_nan_gradient_is_caught_before_the_update(workdir, quiet_log):
    (workdir / "solver.prototxt").write_text(SOLVER.replace("{lr}", "0.01"))
    solver = get_solver("solver.prototxt")
    solver.step(1)
    before = [b.data.copy() for b in solver.net.learnable_params]
    original = solver.net.backward_from_to

    def poisoned_backward(*args, **kwargs):
        original(*args, **kwargs)
        solver.net.params["ip2"][1].diff[0] = np.nan

    solver.net.backward_from_to = poisoned_backward
    with pytest.raises(NonFiniteError, match=r"iteration 1: a gradient is not finite; first non-finite: layer 'ip2' "
                                             r"\(InnerProduct\) param 1 diff"):
        solver.step(1)
    assert solver.iter == 1
    for b, old in zip(solver.net.learnable_params, before):
        np.testing.assert_array_equal(b.data, old)


def test_debug_info_prints_caffes_lines_at_display_iterations(workdir, capsys, glog_capture):
    (workdir / "solver.prototxt").write_text(SOLVER.replace("{lr}", "0.01").replace("display: 0", "display: 2")
                                             .replace("max_iter: 40", "max_iter: 3"))
    assert main(["train", "--solver", "solver.prototxt", "--debug_info"]) == 0
    log = glog_capture.getvalue()
    assert log.count("[Forward] Layer ip1, top blob ip1 data: ") == 2  # iterations 0 and 2
    assert "[Forward] Layer ip2, param blob 1 data: " in log
    assert "[Backward] Layer ip2, bottom blob ip1 diff: " in log
    assert "[Backward] Layer ip1, param blob 0 diff: " in log
    assert log.count("[Backward] All net params (data, diff): L1 norm = (") == 2
    assert log.count("[Update] Layer ip1, param 0 data: ") == 2
    # the same run without debug_info: the same weights (the unfused rule computes the same numbers)
    with_debug = open("snap/tiny_iter_3.caffemodel", "rb").read()
    assert main(["train", "--solver", "solver.prototxt"]) == 0
    assert open("snap/tiny_iter_3.caffemodel", "rb").read() == with_debug
