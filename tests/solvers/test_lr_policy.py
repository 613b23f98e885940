"""Learning-rate policies against hand-computed values and upstream's printed rates."""
import csv
import math

import numpy as np
import pytest

from helpers import shared_path
from npcaffe.errors import SolverError
from npcaffe.proto import caffe_pb2
from npcaffe.solvers.lr_policy import check_lr_policy, learning_rate


def solver_param(**fields):
    stepvalue = fields.pop("stepvalue", ())
    p = caffe_pb2.SolverParameter(**fields)
    p.stepvalue.extend(stepvalue)
    return p


def rates(param, iterations):
    step, out = 0, []
    for it in iterations:
        rate, step = learning_rate(param, it, step)
        out.append(float(rate))
    return out


@pytest.mark.parametrize("policy, fields, expected", [
    ("fixed", {}, lambda it: 0.01),
    ("step", dict(gamma=0.1, stepsize=3), lambda it: 0.01 * 0.1 ** (it // 3)),
    ("exp", dict(gamma=0.9), lambda it: 0.01 * 0.9 ** it),
    ("inv", dict(gamma=0.0001, power=0.75), lambda it: 0.01 * (1 + 0.0001 * it) ** -0.75),
    ("poly", dict(power=2.0, max_iter=20), lambda it: 0.01 * (1 - it / 20) ** 2),
    ("sigmoid", dict(gamma=-0.5, stepsize=5), lambda it: 0.01 / (1 + math.exp(0.5 * (it - 5)))),
])
def test_policy_matches_formula(policy, fields, expected):
    p = solver_param(base_lr=0.01, lr_policy=policy, **fields)
    its = list(range(20))
    np.testing.assert_allclose(rates(p, its), [expected(i) for i in its], rtol=2e-6)


def test_multistep_advances_one_step_per_call():
    p = solver_param(base_lr=1.0, lr_policy="multistep", gamma=0.5, stepvalue=[2, 3, 7])
    assert rates(p, range(9)) == [1, 1, 0.5, 0.25, 0.25, 0.25, 0.25, 0.125, 0.125]
    # Upstream's `if`, not `while`: resuming at iteration 8 with current_step 0 catches up one step per call.
    assert rates(p, [8, 8, 8, 8]) == [0.5, 0.25, 0.125, 0.125]


def test_step_returns_current_step():
    p = solver_param(base_lr=1.0, lr_policy="step", gamma=0.5, stepsize=10)
    assert learning_rate(p, 25, 0) == (np.float32(0.25), 2)


def test_rates_are_float32():
    rate, _ = learning_rate(solver_param(base_lr=0.1, lr_policy="inv", gamma=0.001, power=0.75), 17)
    assert isinstance(rate, np.float32)


def test_inv_matches_upstream_printed_rates():
    """The DNS run printed lr at every iteration; powf (not double pow) matches all of them."""
    path = shared_path("crosscheck", "lenet5-dns", "upstream", "lr.csv")
    p = solver_param(base_lr=0.01, lr_policy="inv", gamma=0.0001, power=0.75)
    with open(path) as f:
        rows = list(csv.DictReader(f))
    printed = [f"{float(learning_rate(p, int(r['iteration']))[0]):.6g}" for r in rows]
    assert printed == [r["lr"] for r in rows]


@pytest.mark.parametrize("fields, message", [
    (dict(), "lr_policy' is not set"),
    (dict(lr_policy="cosine"), "unknown learning rate policy 'cosine'"),
    (dict(lr_policy="step"), "'stepsize' must be > 0"),
    (dict(lr_policy="step", stepsize=3, gamma=-1), "'gamma' must be >= 0"),
    (dict(lr_policy="multistep", stepvalue=[5, 5, 9]), "'stepvalue' must be strictly increasing"),
    (dict(lr_policy="poly", power=1), "'max_iter' must be > 0"),
    (dict(lr_policy="sigmoid", gamma=0.1), "'stepsize' must be > 0"),
])
def test_bad_policies(fields, message):
    with pytest.raises(SolverError, match=message) as info:
        check_lr_policy(solver_param(base_lr=0.1, **fields), "s.prototxt")
    assert str(info.value).startswith("s.prototxt:")
