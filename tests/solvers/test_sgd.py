"""Update rules against a float64 NumPy reference, on a least-squares problem
(modeled on Caffe's test_gradient_based_solver.cpp): MemoryData -> InnerProduct(1)
-> a test-only Euclidean loss, with weight decay, momentum, lr/decay multipliers,
iter_size accumulation, L1 and gradient clipping.  Also: SolverParameter errors."""
import math
import os

import numpy as np
import pytest
from google.protobuf import text_format

import npcaffe
from npcaffe.errors import SolverError
from npcaffe.layer import _REGISTRY, Layer, register
from npcaffe.proto import caffe_pb2
from npcaffe.solvers import get_solver
from npcaffe.solvers.sgd import axpy

LOSS_TYPE = "SolverTestLeastSquares"

if LOSS_TYPE not in _REGISTRY:
    @register(LOSS_TYPE)
    class _LeastSquares(Layer):
        """loss = ||a - b||^2 / (2 N), N = a.shape[0]; d loss / d a = (a - b) / N."""
        exact_num_bottom = 2
        exact_num_top = 1

        def set_loss_weights(self, top):
            if not len(self.layer_param.loss_weight):
                self.layer_param.loss_weight.append(1.0)
            super().set_loss_weights(top)

        def reshape(self, bottom, top):
            top[0].reshape(())

        def forward_cpu(self, bottom, top):
            self.residual = bottom[0].flat_data - bottom[1].flat_data
            top[0].data[...] = np.dot(self.residual, self.residual) / bottom[0].shape[0] / 2

        def backward_cpu(self, top, propagate_down, bottom):
            if propagate_down[0]:
                bottom[0].flat_diff[:] = top[0].flat_diff[0] * self.residual / bottom[0].shape[0]

N, C = 8, 3


def make_data(seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, C, 1, 1)).astype(np.float32)
    y = (x.reshape(N, C) @ np.array([0.5, -1.0, 2.0]) + 0.3 + 0.1 * rng.normal(size=N)).astype(np.float32)
    return x, y


def net_text(batch, bias_param=""):
    return f"""
name: "leastsquares"
layer {{ name: "data" type: "MemoryData" top: "data" top: "targets"
  memory_data_param {{ batch_size: {batch} channels: {C} height: 1 width: 1 }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  param {{ }} param {{ {bias_param} }}
  inner_product_param {{ num_output: 1 weight_filler {{ type: "gaussian" std: 1 }}
                         bias_filler {{ type: "gaussian" std: 1 }} }} }}
layer {{ name: "loss" type: "{LOSS_TYPE}" bottom: "ip" bottom: "targets" top: "loss" }}
"""


def make_solver(tmp_path, solver_type, iter_size=1, bias_param="", **fields):
    p = caffe_pb2.SolverParameter(type=solver_type, base_lr=fields.pop("base_lr", 0.1), lr_policy="fixed",
                                  display=0, max_iter=100, iter_size=iter_size, snapshot_after_train=False,
                                  snapshot_prefix=str(tmp_path / "ls"), random_seed=3, **fields)
    text_format.Parse(net_text(N // iter_size, bias_param), p.net_param)
    solver = get_solver(p)
    x, y = make_data()
    solver._data = (x, y)  # keep the arrays alive: MemoryData references them
    solver.net.layer_dict["data"].set_input_arrays(x, y)
    return solver


def reference(solver_type, w, b, x, y, steps, lr=0.1, momentum=0.0, momentum2=0.999, delta=1e-8,
              rms_decay=0.99, weight_decay=0.0, reg="L2", clip=-1.0, lr_mult=(1, 1), decay_mult=(1, 1),
              iter_size=1):
    """float64 NumPy version of the updates; returns params and history.

    As upstream, clipping sees the gradients summed over iter_size passes,
    before they are divided by iter_size."""
    params = [w.astype(np.float64).ravel(), b.astype(np.float64).ravel()]
    hist = [np.zeros_like(q) for q in params]
    hist2 = [np.zeros_like(q) for q in params]
    X, Y = x.reshape(N, C).astype(np.float64), y.astype(np.float64)
    for t in range(steps):
        r = X @ params[0] + params[1][0] - Y
        grads = [iter_size * X.T @ r / N, np.array([iter_size * r.sum() / N])]
        if clip >= 0:
            norm = math.sqrt(sum((g * g).sum() for g in grads))
            if norm > clip:
                grads = [g * clip / norm for g in grads]
        grads = [g / iter_size for g in grads]
        for i, g in enumerate(grads):
            decay = weight_decay * decay_mult[i]
            g = g + decay * (params[i] if reg == "L2" else np.sign(params[i]))
            rate = lr * lr_mult[i]
            if solver_type == "SGD":
                hist[i] = momentum * hist[i] + rate * g
                step = hist[i]
            elif solver_type == "Nesterov":
                old = hist[i]
                hist[i] = momentum * old + rate * g
                step = (1 + momentum) * hist[i] - momentum * old
            elif solver_type == "AdaGrad":
                hist[i] = hist[i] + g * g
                step = rate * g / (np.sqrt(hist[i]) + delta)
            elif solver_type == "RMSProp":
                hist[i] = rms_decay * hist[i] + (1 - rms_decay) * g * g
                step = rate * g / (np.sqrt(hist[i]) + delta)
            elif solver_type == "AdaDelta":
                hist[i] = momentum * hist[i] + (1 - momentum) * g * g
                u = g * np.sqrt((hist2[i] + delta) / (hist[i] + delta))
                hist2[i] = momentum * hist2[i] + (1 - momentum) * u * u
                step = rate * u
            elif solver_type == "Adam":
                hist[i] = momentum * hist[i] + (1 - momentum) * g
                hist2[i] = momentum2 * hist2[i] + (1 - momentum2) * g * g
                k = t + 1
                corr = math.sqrt(1 - momentum2 ** k) / (1 - momentum ** k)
                step = rate * corr * hist[i] / (np.sqrt(hist2[i]) + delta)
            params[i] = params[i] - step
    return params, hist, hist2


CASES = [
    ("SGD", dict(momentum=0.9, weight_decay=0.1)),
    ("SGD", dict(weight_decay=0.25, regularization_type="L1")),
    ("SGD", dict(momentum=0.5, clip_gradients=0.1)),
    ("Nesterov", dict(momentum=0.9, weight_decay=0.1)),
    ("AdaGrad", dict(weight_decay=0.1, delta=1e-6)),
    ("RMSProp", dict(weight_decay=0.1, rms_decay=0.95)),
    ("AdaDelta", dict(base_lr=1.0, momentum=0.95, delta=1e-6, weight_decay=0.1)),
    ("Adam", dict(base_lr=0.01, momentum=0.9, momentum2=0.999, delta=1e-8, weight_decay=0.1)),
]


@pytest.mark.parametrize("iter_size", [1, 2, 4])
@pytest.mark.parametrize("solver_type, fields", CASES, ids=[f"{t}-{i}" for i, (t, _) in enumerate(CASES)])
def test_update_matches_reference(tmp_path, solver_type, fields, iter_size):
    steps = 5
    solver = make_solver(tmp_path, solver_type, iter_size=iter_size, **dict(fields))
    assert type(solver).type == solver_type
    w0, b0 = (blob.data.copy() for blob in solver.net.params["ip"])
    solver.step(steps)
    assert solver.iter == steps
    ref_fields = {k: v for k, v in fields.items() if k not in ("regularization_type", "clip_gradients")}
    ref_fields["lr"] = ref_fields.pop("base_lr", 0.1)
    params, hist, hist2 = reference(solver_type, w0, b0, *make_data(), steps, reg=fields.get("regularization_type", "L2"),
                                    clip=fields.get("clip_gradients", -1.0), iter_size=iter_size, **ref_fields)
    got = [blob.flat_data for blob in solver.net.params["ip"]]
    for g, r in zip(got, params):
        np.testing.assert_allclose(g, r, rtol=2e-5, atol=2e-6)
    state = solver.state_arrays()
    expected_history = hist + (hist2 if solver_type in ("AdaDelta", "Adam") else [])
    assert len(state) == len(expected_history)
    for g, r in zip(state, expected_history):
        np.testing.assert_allclose(g.ravel(), r, rtol=1e-4, atol=1e-6)


def test_lr_and_decay_multipliers(tmp_path):
    solver = make_solver(tmp_path, "SGD", bias_param="lr_mult: 2 decay_mult: 0", momentum=0.9, weight_decay=0.3)
    w0, b0 = (blob.data.copy() for blob in solver.net.params["ip"])
    solver.step(4)
    params, _, _ = reference("SGD", w0, b0, *make_data(), 4, momentum=0.9, weight_decay=0.3,
                             lr_mult=(1, 2), decay_mult=(1, 0))
    for blob, r in zip(solver.net.params["ip"], params):
        np.testing.assert_allclose(blob.flat_data, r, rtol=2e-5, atol=2e-6)


def test_first_sgd_step_is_bitwise_float32(tmp_path):
    """One plain SGD step: data - fl(fma(rate, diff + fl(fma(decay, data, diff)))), all float32."""
    solver = make_solver(tmp_path, "SGD", weight_decay=0.1)
    w = solver.net.params["ip"][0].flat_data.copy()
    solver.net.clear_param_diffs()
    solver.net.forward_backward()
    grad = solver.net.params["ip"][0].flat_diff.copy()
    solver.net.layer_dict["data"].pos = 0
    solver.step(1)
    expected = grad.copy()
    axpy(np.float32(0.1), w, expected)
    expected = (np.float64(np.float32(0.1)) * expected).astype(np.float32)
    np.testing.assert_array_equal(solver.net.params["ip"][0].flat_data, w - expected)


def test_pycaffe_names(tmp_path):
    for name in ("SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver", "AdaDeltaSolver",
                 "AdamSolver", "get_solver"):
        assert hasattr(npcaffe, name)
    solver = make_solver(tmp_path, "Adam", base_lr=0.01, momentum=0.9)
    assert isinstance(solver, npcaffe.AdamSolver) and solver.test_nets == []
    assert solver.lr == np.float32(0.01)


# -- bad solver definitions ------------------------------------------------------------
BASE = """
base_lr: 0.01
lr_policy: "fixed"
max_iter: 10
"""


def write(tmp_path, text, name="solver.prototxt"):
    path = tmp_path / name
    path.write_text(text)
    (tmp_path / "net.prototxt").write_text(net_text(N))
    return str(path)


@pytest.mark.parametrize("text, field", [
    ("", "no train net given"),
    ('net: "net.prototxt"\ntrain_net: "net.prototxt"', "more than one train net"),
    ('net: "net.prototxt"\nlr_policy: "bogus"', "lr_policy"),
    ('net: "net.prototxt"\nlr_policy: "multistep"\nstepvalue: 5\nstepvalue: 2', "stepvalue"),
    ('net: "net.prototxt"\ntype: "Bogus"', "field 'type': unknown solver type 'Bogus'"),
    ('net: "net.prototxt"\niter_size: 0', "iter_size"),
    ('net: "net.prototxt"\naverage_loss: 0', "average_loss"),
    ('train_net: "net.prototxt"\ntest_iter: 5\ntest_interval: 5', "test_iter"),
    ('train_net: "net.prototxt"\ntest_net: "net.prototxt"\ntest_net: "net.prototxt"\ntest_iter: 5\n'
     'test_interval: 5', "test_iter"),
    ('net: "net.prototxt"\ntest_iter: 5\ntest_interval: 5\ntest_state { stage: "a" }\ntest_state { }', "test_state"),
    ('net: "net.prototxt"\ntype: "AdaGrad"\nmomentum: 0.9', "momentum"),
    ('net: "net.prototxt"\ntype: "RMSProp"\nrms_decay: 1.5', "rms_decay"),
    ('net: "net.prototxt"\nweight_decay: 0.1\nregularization_type: "L3"', "regularization_type"),
    ('net: "net.prototxt"\nsnapshot: 5\nsnapshot_prefix: "no/such/dir/x"', "snapshot_prefix"),
    ('net: "missing.prototxt"', "field 'net': net file 'missing.prototxt' not found"),
    ('net: "/dev/zero"', "field 'net': '/dev/zero' is not a regular file"),
    ('train_net: "."', "field 'train_net': '.' is not a regular file"),
])
def test_bad_solver_files(tmp_path, monkeypatch, text, field):
    monkeypatch.chdir(tmp_path)
    body = BASE + text if "lr_policy" not in text else "base_lr: 0.01\nmax_iter: 10\n" + text
    path = write(tmp_path, body)
    with pytest.raises(SolverError) as info:
        get_solver(path)
    assert path in str(info.value) and field in str(info.value)


def test_solver_type_enum_is_upgraded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, BASE + 'net: "net.prototxt"\nsolver_type: NESTEROV\nmomentum: 0.9\n')
    assert type(get_solver(path)).__name__ == "NesterovSolver"
    # pycaffe's SGDSolver(path) builds an SGD solver whatever the file says.
    assert type(npcaffe.SGDSolver(path)).__name__ == "SGDSolver"


def test_snapshot_prefix_rules(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, BASE + 'net: "net.prototxt"\n', name="my_solver.prototxt")
    assert get_solver(path).param.snapshot_prefix == str(tmp_path / "my_solver")
    (tmp_path / "snaps").mkdir()
    path = write(tmp_path, BASE + 'net: "net.prototxt"\nsnapshot_prefix: "snaps"\n', name="s2.prototxt")
    assert get_solver(path).param.snapshot_prefix == os.path.join("snaps", "s2")


def test_only_sgd_own_rule_fuses_its_update(tmp_path):
    """SGDSolver.fuses_update: the fused kernel runs only where it computes what the solver's methods would."""
    assert make_solver(tmp_path, "SGD", momentum=0.9).fuses_update()
    assert not make_solver(tmp_path, "SGD", momentum=0.9, regularization_type="L1").fuses_update()
    for solver_type in ("Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"):
        assert not make_solver(tmp_path, solver_type).fuses_update(), solver_type

    class HalfSteps(npcaffe.SGDSolver):  # a user's own rule on top of SGD's
        def compute_update_value(self, param_id, rate):
            super().compute_update_value(param_id, rate)
            self.net.learnable_params[param_id].flat_diff[...] *= np.float32(0.5)

    plain = make_solver(tmp_path, "SGD", momentum=0.9)
    halved = make_solver(tmp_path, "SGD", momentum=0.9)
    halved.__class__ = HalfSteps
    assert not halved.fuses_update()
    w0 = plain.net.params["ip"][0].data.copy()
    plain.step(1)
    halved.step(1)
    np.testing.assert_allclose(w0 - halved.net.params["ip"][0].data, 0.5 * (w0 - plain.net.params["ip"][0].data),
                               rtol=1e-5)
