"""Solver hyperparameters are checked when the solver is read (npcaffe.solvers.hyperparams): each bad
value is an error naming the file and the field, before any net is built or iteration run."""
import pytest

from npcaffe.errors import NetError, SolverError
from npcaffe.solvers import get_solver

NET = """
name: "tiny"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 0 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: FILLER_STD } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""
BASE = 'net: "net.prototxt"\nlr_policy: "fixed"\nmax_iter: 2\nsnapshot_after_train: false\n'


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.prototxt").write_text(NET.replace("FILLER_STD", "0.1"))
    return tmp_path


@pytest.mark.parametrize("extra, field", [
    ("base_lr: nan", "base_lr"),
    ("base_lr: 1e39", "base_lr"),
    ("base_lr: -0.1", "base_lr"),
    ("base_lr: 0.1 weight_decay: inf", "weight_decay"),
    ("base_lr: 0.1 weight_decay: -1", "weight_decay"),
    ("base_lr: 0.1 momentum: -0.5", "momentum"),
    ("base_lr: 0.1 gamma: nan", "gamma"),
    ("base_lr: 0.1 power: -inf", "power"),
    ("base_lr: 0.1 clip_gradients: nan", "clip_gradients"),
    ('base_lr: 0.1 type: "Adam" momentum: 1', "momentum"),
    ('base_lr: 0.1 type: "Adam" momentum: 0.9 momentum2: 1.5', "momentum2"),
    ('base_lr: 0.1 type: "Adam" momentum: 0.9 momentum2: 1', "momentum2"),
    ('base_lr: 0.1 type: "Adam" momentum: 0.9 delta: 0', "delta"),
    ('base_lr: 0.1 type: "AdaGrad" delta: -1e-8', "delta"),
    ('base_lr: 0.1 type: "AdaDelta" momentum: 1', "momentum"),
    ("base_lr: 0.1 iter_size: 1000000", "iter_size"),
    ("base_lr: 0.1 max_iter: -5", "max_iter"),
])
def test_bad_hyperparameter_names_file_and_field(workdir, extra, field, quiet_log):
    (workdir / "solver.prototxt").write_text(BASE.replace("max_iter: 2\n", "") if "max_iter" in extra
                                             else BASE + "\n")
    (workdir / "solver.prototxt").write_text((workdir / "solver.prototxt").read_text() + extra + "\n")
    with pytest.raises(SolverError, match=rf"solver\.prototxt: field '{field}'"):
        get_solver("solver.prototxt")


def test_good_adam_still_trains(workdir, quiet_log):
    (workdir / "solver.prototxt").write_text(BASE + 'base_lr: 0.01 type: "Adam" momentum: 0.9 momentum2: 0.999\n')
    get_solver("solver.prototxt").solve()


@pytest.mark.parametrize("std", ["-1", "nan"])
def test_bad_filler_std_names_the_layer(workdir, std, quiet_log):
    (workdir / "net.prototxt").write_text(NET.replace("FILLER_STD", std))
    (workdir / "solver.prototxt").write_text(BASE + "base_lr: 0.1\n")
    with pytest.raises(NetError, match=r"layer 'ip' weight_filler: gaussian filler field 'std'"):
        get_solver("solver.prototxt")
