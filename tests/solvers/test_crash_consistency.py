"""Crash consistency: `npcaffe train` killed (SIGKILL) at 30 random points; after each kill every
snapshot on disk loads, and resuming from the latest repeats the uninterrupted run bit for bit."""
import glob
import os
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from npcaffe.kernels import glibc_rand
from npcaffe.solvers import get_solver

NET = """
name: "tiny"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 16 dim: 20 } shape { dim: 16 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "uniform" min: 0 max: 3.99 } } }
layer { name: "ip1" type: "CInnerProduct" bottom: "data" top: "ip1"
  inner_product_param { num_output: 30 weight_filler { type: "gaussian" std: 0.1 } }
  cinner_product_param { gamma: 0.01 power: 1 iter_stop: 100 c_rate: 0.5
    weight_mask_filler { type: "constant" value: 1 } bias_mask_filler { type: "constant" value: 1 } } }
layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "drop" type: "Dropout" bottom: "ip1" top: "ip1" dropout_param { dropout_ratio: 0.3 } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""
SOLVER = """net: "net.prototxt"
base_lr: 0.05
momentum: 0.9
weight_decay: 0.0005
lr_policy: "inv"
gamma: 0.0001
power: 0.75
max_iter: 80
snapshot: 1
snapshot_prefix: "snap/tiny"
random_seed: 11
"""
KILLS = 30


def iteration(path):
    return int(re.search(r"_iter_(\d+)\.", path).group(1))


@pytest.mark.slow
def test_kill_anywhere_then_every_snapshot_loads_and_the_latest_resumes_exactly(tmp_path, monkeypatch, quiet_log):
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(SOLVER)
    monkeypatch.chdir(tmp_path)
    os.makedirs("snap")
    # The DNS gate draws from one process-wide rand() stream, as the fork's C rand(): the killed runs start
    # theirs in a new process, so the reference must too, whatever tests ran before in this one.
    glibc_rand.reset()
    reference = get_solver("solver.prototxt")
    reference.param.snapshot = 0
    reference.param.snapshot_after_train = False
    reference.solve()
    expected = [b.data.copy() for b in reference.net.learnable_params]
    rng = random.Random(17)
    resumed_from = []
    for kill in range(KILLS):
        run_dir = tmp_path / f"run{kill}"
        (run_dir / "snap").mkdir(parents=True)
        (run_dir / "net.prototxt").write_text(NET)
        (run_dir / "solver.prototxt").write_text(SOLVER)
        proc = subprocess.Popen([sys.executable, "-m", "npcaffe", "train", "--solver", "solver.prototxt", "--quiet"],
                                cwd=run_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wanted = rng.randrange(1, 3 * 60)  # files of about 60 snapshots
        while proc.poll() is None and len(os.listdir(run_dir / "snap")) < wanted:
            time.sleep(0.0005)
        time.sleep(rng.uniform(0, 0.004))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        monkeypatch.chdir(run_dir)
        states = sorted(glob.glob("snap/*.solverstate"), key=iteration)
        for model in glob.glob("snap/*.caffemodel"):  # every weight file loads
            get_solver("solver.prototxt").net.copy_from(model)
        for state in states:  # every state loads, with its sidecar (no warning path)
            assert os.path.exists(state + ".npcaffe.json"), state
            solver = get_solver("solver.prototxt")
            solver.restore(state)
            assert solver.iter == iteration(state)
        if not states:
            continue
        latest = states[-1]
        solver = get_solver("solver.prototxt")
        solver.solve(resume_file=latest)
        assert not glob.glob("snap/*_iter_*.tmp"), "the killed run's temporaries are gone"
        for got, want in zip(solver.net.learnable_params, expected):
            np.testing.assert_array_equal(got.data, want, err_msg=f"resumed from {latest}")
        resumed_from.append(iteration(latest))
        monkeypatch.chdir(tmp_path)
    assert len(resumed_from) >= KILLS - 5 and len(set(resumed_from)) > 10, resumed_from
