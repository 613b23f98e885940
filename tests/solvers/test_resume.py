"""Snapshot + resume repeats an uninterrupted run bit for bit (RNG-dependent net: DummyData + Dropout)."""
import os
import shutil
import sys
import types

import numpy as np
import pytest

import npcaffe
from npcaffe.errors import SolverError
from npcaffe.fileio.caffemodel import blob_to_array, read_caffemodel
from npcaffe.fileio.solverstate import history_arrays, read_solverstate, sidecar_path
from npcaffe.solvers import get_solver

NET = """
name: "dropnet"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 6 dim: 5 } shape { dim: 6 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 2 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param { num_output: 7 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "drop" type: "Dropout" bottom: "ip1" top: "ip1" dropout_param { dropout_ratio: 0.4 } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""


def write_solver(directory, prefix, solver_type="SGD", max_iter=8, snapshot=4, extra=""):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "net.prototxt"), "w") as f:
        f.write(NET)
    path = os.path.join(directory, "solver.prototxt")
    with open(path, "w") as f:
        f.write(f"""net: "net.prototxt"
type: "{solver_type}"
base_lr: 0.05
momentum: 0.9
weight_decay: 0.01
lr_policy: "step"
gamma: 0.5
stepsize: 3
display: 1
max_iter: {max_iter}
snapshot: {snapshot}
snapshot_prefix: "{prefix}"
random_seed: 11
{extra}""")
    return path


def weights(caffemodel):
    return [blob_to_array(b) for layer in read_caffemodel(caffemodel).layer for b in layer.blobs]


def assert_same_snapshot(a, b):
    for x, y in zip(weights(a + ".caffemodel"), weights(b + ".caffemodel")):
        np.testing.assert_array_equal(x, y)
    sa, sb = read_solverstate(a + ".solverstate"), read_solverstate(b + ".solverstate")
    assert (sa.iter, sa.current_step) == (sb.iter, sb.current_step)
    ha, hb = history_arrays(sa, a), history_arrays(sb, b)
    assert len(ha) == len(hb) > 0
    for x, y in zip(ha, hb):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("solver_type", ["SGD", "Adam"])
def test_resume_is_bit_identical(tmp_path, monkeypatch, solver_type):
    monkeypatch.chdir(tmp_path)
    path = write_solver(".", "a/run", solver_type)
    os.makedirs("a")
    get_solver(path).solve()
    assert os.path.exists("a/run_iter_4.solverstate") and os.path.exists(sidecar_path("a/run_iter_4.solverstate"))

    path = write_solver(".", "b/run", solver_type)
    os.makedirs("b")
    resumed = get_solver(path)
    resumed.solve("a/run_iter_4.solverstate")
    assert resumed.iter == 8
    assert_same_snapshot("a/run_iter_8", "b/run_iter_8")
    # The resumed run's own iteration-4 state was never written: it started there.
    assert not os.path.exists("b/run_iter_4.caffemodel")


# Each update rule with settings it accepts (AdaGrad and RMSProp refuse momentum); biases get
# lr_mult 2 so every rule also runs with a local rate other than the base rate.
RULES = {
    "SGD": "momentum: 0.9",
    "Nesterov": "momentum: 0.9",
    "AdaGrad": "delta: 1e-6",
    "RMSProp": "rms_decay: 0.98",
    "AdaDelta": "momentum: 0.95\ndelta: 1e-6",
    "Adam": "momentum: 0.9\nmomentum2: 0.999",
}


@pytest.mark.parametrize("solver_type", sorted(RULES))
def test_each_update_rule_resumes_at_iteration_50_bit_for_bit(tmp_path, monkeypatch, solver_type):
    """Stopped at iteration 50 and resumed from its .solverstate, a run ends where the uninterrupted
    run ends: same weights and the same history blobs (2 x params for AdaDelta and Adam)."""
    monkeypatch.chdir(tmp_path)
    with open("net.prototxt", "w") as f:
        filler = "weight_filler { type: \"gaussian\" std: 0.3 } }"
        f.write(NET.replace(filler, filler + "\n  param { lr_mult: 1 } param { lr_mult: 2 }"))
    for run in ("a", "b"):
        os.makedirs(run)
        with open(f"{run}.prototxt", "w") as f:
            f.write(f"""net: "net.prototxt"
type: "{solver_type}"
base_lr: {1 if solver_type == "AdaDelta" else 0.01}
{RULES[solver_type]}
weight_decay: 0.005
lr_policy: "fixed"
display: 0
max_iter: 60
snapshot: 50
snapshot_prefix: "{run}/run"
random_seed: 3
""")
    get_solver("a.prototxt").solve()
    resumed = get_solver("b.prototxt")
    resumed.solve("a/run_iter_50.solverstate")
    assert resumed.iter == 60
    assert_same_snapshot("a/run_iter_60", "b/run_iter_60")
    n_params = len(resumed.net.learnable_params)
    sets = 2 if solver_type in ("AdaDelta", "Adam") else 1
    assert len(read_solverstate("b/run_iter_60.solverstate").history) == sets * n_params


def test_step_snapshot_restore_in_python(tmp_path, monkeypatch):
    """pycaffe style: step(4), snapshot(), step(4) == restore() + step(4)."""
    monkeypatch.chdir(tmp_path)
    path = write_solver(".", "p/run", snapshot=0)
    os.makedirs("p")
    s1 = npcaffe.SGDSolver(path)
    s1.step(4)
    model, state = s1.snapshot()
    assert (model, state) == ("p/run_iter_4.caffemodel", "p/run_iter_4.solverstate")
    s1.step(4)
    s2 = npcaffe.SGDSolver(path)
    s2.restore(state)
    assert s2.iter == 4
    s2.step(4)
    for a, b in zip(s1.net.learnable_params, s2.net.learnable_params):
        np.testing.assert_array_equal(a.data, b.data)
    for a, b in zip(s1.state_arrays(), s2.state_arrays()):
        np.testing.assert_array_equal(a, b)


def test_layer_and_glibc_state_go_through_the_sidecar(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fake = types.ModuleType("npcaffe.kernels.glibc_rand")
    fake.state = {"r": [1, 2, 3]}
    fake.get_state = lambda: dict(fake.state)
    fake.set_state = lambda s: fake.state.update(s, restored=True)
    monkeypatch.setitem(sys.modules, "npcaffe.kernels.glibc_rand", fake)
    monkeypatch.setattr(npcaffe.kernels, "glibc_rand", fake, raising=False)
    path = write_solver(".", "run", snapshot=0)
    s1 = get_solver(path)
    s1.net.layer_dict["ip1"].get_state = lambda: {"mu": 0.25, "done": True}
    s1.step(2)
    _, state = s1.snapshot()
    s2 = get_solver(path)
    received = {}
    s2.net.layer_dict["ip1"].set_state = received.update
    s2.restore(state)
    assert received == {"mu": 0.25, "done": True}
    assert fake.state.get("restored") is True


def test_missing_sidecar_warns_and_continues(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_solver(".", "run", snapshot=0)
    s1 = get_solver(path)
    s1.step(3)
    _, state = s1.snapshot()
    os.remove(sidecar_path(state))
    s2 = get_solver(path)
    s2.restore(state)
    assert s2.iter == 3
    assert "npcaffe.json not found" in capsys.readouterr().err
    for a, b in zip(s1.net.learnable_params, s2.net.learnable_params):
        np.testing.assert_array_equal(a.data, b.data)


def test_learned_net_found_beside_a_moved_state(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_solver(".", "snaps/run", snapshot=0)
    os.makedirs("snaps")
    s1 = get_solver(path)
    s1.step(2)
    s1.snapshot()
    shutil.move("snaps", "moved")
    s2 = get_solver(path)
    s2.restore("moved/run_iter_2.solverstate")
    for a, b in zip(s1.net.learnable_params, s2.net.learnable_params):
        np.testing.assert_array_equal(a.data, b.data)


def test_history_count_mismatch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s1 = get_solver(write_solver(".", "run", snapshot=0))
    s1.step(1)
    _, state = s1.snapshot()
    adam = get_solver(write_solver(".", "run", solver_type="Adam", snapshot=0))
    with pytest.raises(SolverError, match="incorrect length of history blobs"):
        adam.restore(state)


DNS_NET = NET.replace('type: "InnerProduct"', 'type: "CInnerProduct"').replace(
    "weight_filler { type: \"gaussian\" std: 0.3 } }",
    "weight_filler { type: \"gaussian\" std: 0.3 } }\n  cinner_product_param { gamma: 0.01 power: 1 "
    "iter_stop: 100 c_rate: 0.5 weight_mask_filler { type: \"constant\" value: 1 } "
    "bias_mask_filler { type: \"constant\" value: 1 } }")


def test_dns_layers_resume_bit_identical(tmp_path, monkeypatch):
    """DNS statistics and the glibc rand() position travel through the sidecar."""
    if "CInnerProduct" not in npcaffe.layer_type_list():
        pytest.skip("DNS layers not available")
    monkeypatch.chdir(tmp_path)
    for run in ("a", "b"):
        os.makedirs(run)
        path = write_solver(".", f"{run}/run")
        with open("net.prototxt", "w") as f:
            f.write(DNS_NET)
        solver = get_solver(path)
        solver.solve("a/run_iter_4.solverstate" if run == "b" else None)
    assert_same_snapshot("a/run_iter_8", "b/run_iter_8")
    # upstream-style resume: the sidecar is ignored, so the run takes another course
    resumed = get_solver(path)
    resumed.restore("a/run_iter_4.solverstate", upstream_resume=True)
    assert resumed.net.layer_dict["ip1"].mu == 0


def test_data_layer_read_position_resumes(tmp_path, monkeypatch):
    """The LMDB cursor is part of the sidecar: the resumed run reads the batches the uninterrupted one read."""
    from helpers import shared_path
    lmdb = shared_path("crosscheck", "lenet5-dns", "mnist_train_lmdb")
    monkeypatch.chdir(tmp_path)
    net = NET.split('layer { name: "ip1"')[1]
    data = ('layer { name: "data" type: "Data" top: "data" top: "label" transform_param { scale: 0.00390625 } '
            f'data_param {{ source: "{lmdb}" batch_size: 7 backend: LMDB }} }}\n'
            'layer { name: "flat" type: "Flatten" bottom: "data" top: "flat" }\nlayer { name: "ip1"')
    text = data + net.replace('bottom: "data" top: "ip1"', 'bottom: "flat" top: "ip1"', 1)
    text = text.replace("num_output: 3", "num_output: 10")
    for run in ("a", "b"):
        os.makedirs(run)
        path = write_solver(run, f"{run}/run", max_iter=6, snapshot=3)
        with open(os.path.join(run, "net.prototxt"), "w") as f:
            f.write(text)
        with open(path) as f:
            solver_text = f.read().replace('net: "net.prototxt"', f'net: "{run}/net.prototxt"')
        with open(path, "w") as f:
            f.write(solver_text)
    get_solver("a/solver.prototxt").solve()
    resumed = get_solver("b/solver.prototxt")
    resumed.solve("a/run_iter_3.solverstate")
    assert_same_snapshot("a/run_iter_6", "b/run_iter_6")
    # Without the sidecar the reader starts again at record 0 (as upstream) and the runs part.
    os.remove(sidecar_path("a/run_iter_3.solverstate"))
    shutil.rmtree("b")
    os.makedirs("b")
    write_solver("b", "b/run", max_iter=6, snapshot=3)
    with open("b/net.prototxt", "w") as f:
        f.write(text)
    with open("b/solver.prototxt") as f:
        solver_text = f.read().replace('net: "net.prototxt"', 'net: "b/net.prototxt"')
    with open("b/solver.prototxt", "w") as f:
        f.write(solver_text)
    get_solver("b/solver.prototxt").solve("a/run_iter_3.solverstate")
    with pytest.raises(AssertionError):
        assert_same_snapshot("a/run_iter_6", "b/run_iter_6")
