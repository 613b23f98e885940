"""Learning-rate policies: SGDSolver::GetLearningRate, float for float.

    fixed      base_lr
    step       base_lr * gamma ^ floor(iter / stepsize)
    exp        base_lr * gamma ^ iter
    inv        base_lr * (1 + gamma * iter) ^ (-power)
    multistep  base_lr * gamma ^ current_step, current_step advancing by at
               most one per call when iter reaches the next stepvalue
    poly       base_lr * (1 - iter / max_iter) ^ power
    sigmoid    base_lr / (1 + exp(-gamma * (iter - stepsize)))

Precision follows the C++ overloads upstream resolves to (Dtype = float,
src/caffe/solvers/sgd_solver.cpp; the DNS fork's solver.cpp is the same):
`pow(float, int)` (step, exp, multistep) is promoted to double and the
product is rounded to float once; `pow(float, float)` (inv, poly) is powf
and `exp(float)` (sigmoid) is expf, everything else float arithmetic.  We
call the C library's powf/expf, so printed rates match upstream's logs to
the last digit (double pow differs in the last float bit at a few
iterations of the lenet5-dns run).
"""
import ctypes
import ctypes.util
import math

import numpy as np

from ..errors import SolverError

f32 = np.float32
POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


def _libm_function(name):
    try:
        libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
        fn = getattr(libm, name)
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_float
    fn.argtypes = [ctypes.c_float] * (2 if name == "powf" else 1)
    return fn


_powf = _libm_function("powf")
_expf = _libm_function("expf")


def powf(x, y):
    if _powf is not None:
        return f32(_powf(float(x), float(y)))
    return f32(np.power(f32(x), f32(y)))


def expf(x):
    if _expf is not None:
        return f32(_expf(float(x)))
    return f32(np.exp(f32(x)))


def check_lr_policy(param, where):
    """Raise SolverError for a policy GetLearningRate would reject (or divide by zero on)."""
    policy = param.lr_policy
    if not param.HasField("lr_policy"):
        raise SolverError(f"{where}: field 'lr_policy' is not set; give one of {', '.join(POLICIES)}")
    if policy not in POLICIES:
        raise SolverError(f"{where}: field 'lr_policy': unknown learning rate policy '{policy}' "
                          f"(known: {', '.join(POLICIES)})")
    if policy in ("step", "exp", "inv", "multistep", "sigmoid") and param.gamma < 0:
        raise SolverError(f"{where}: field 'gamma' must be >= 0 for lr_policy '{policy}', got {param.gamma}")
    if policy in ("step", "sigmoid") and param.stepsize <= 0:
        raise SolverError(f"{where}: field 'stepsize' must be > 0 for lr_policy '{policy}', got {param.stepsize}")
    if policy == "multistep":
        values = list(param.stepvalue)
        for a, b in zip(values, values[1:]):
            if b <= a:
                raise SolverError(f"{where}: field 'stepvalue' must be strictly increasing, got {values}")
    if policy == "poly" and param.max_iter <= 0:
        raise SolverError(f"{where}: field 'max_iter' must be > 0 for lr_policy 'poly', got {param.max_iter}")


def learning_rate(param, iteration, current_step=0):
    """(rate as float32, current_step) for SolverParameter `param` at `iteration`.

    current_step is the solver's state: step recomputes it, multistep
    advances it (pass the value from the previous call, as the solver
    keeps it), the other policies leave it alone.
    """
    policy = param.lr_policy
    base_lr = f32(param.base_lr)
    gamma = f32(param.gamma)
    if policy == "fixed":
        rate = base_lr
    elif policy == "step":
        current_step = iteration // param.stepsize
        rate = f32(float(base_lr) * math.pow(float(gamma), current_step))
    elif policy == "exp":
        rate = f32(float(base_lr) * math.pow(float(gamma), iteration))
    elif policy == "inv":
        rate = base_lr * powf(f32(1) + gamma * f32(iteration), -f32(param.power))
    elif policy == "multistep":
        if current_step < len(param.stepvalue) and iteration >= param.stepvalue[current_step]:
            current_step += 1
        rate = f32(float(base_lr) * math.pow(float(gamma), current_step))
    elif policy == "poly":
        rate = base_lr * powf(f32(1) - f32(iteration) / f32(param.max_iter), f32(param.power))
    elif policy == "sigmoid":
        rate = base_lr * (f32(1) / (f32(1) + expf(-gamma * (f32(iteration) - f32(param.stepsize)))))
    else:
        raise SolverError(f"unknown learning rate policy '{policy}' (known: {', '.join(POLICIES)})")
    return f32(rate), current_step
