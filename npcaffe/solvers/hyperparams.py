"""The SolverParameter's numbers checked when the solver is read, before any net is built: every
float finite (text protos parse 1e39 as inf, and `nan` as NaN) and in the range its update rule
needs, so a typo is an error naming the file and field rather than a run of NaNs or a
ZeroDivisionError many iterations in.

Caffe checks none of these; what each bound protects is said beside it.
"""
import math

from ..errors import SolverError

_FLOATS = ("base_lr", "gamma", "power", "momentum", "momentum2", "weight_decay", "delta", "rms_decay",
           "clip_gradients")
# Rules whose step divides by a root of the gradient history: delta keeps that root away from 0.
_DIVIDE_BY_HISTORY = ("AdaGrad", "RMSProp", "AdaDelta", "Adam")
# One iteration runs iter_size forward/backward passes before it updates; beyond this a typo is far
# likelier than a wish (an effective batch 10,000 times the net's).
MAX_ITER_SIZE = 10000


def check_hyperparameters(param, where, solver_type):
    """Raise SolverError naming `where` and the field for a value no update rule can use."""
    def fail(field, message):
        raise SolverError(f"{where}: field '{field}': {message}")

    for field in _FLOATS:
        value = getattr(param, field)
        if not math.isfinite(value):
            fail(field, f"must be a finite number, got {value} (a value beyond 3.4e38 reads as inf)")
    if param.base_lr < 0:
        fail("base_lr", f"must be >= 0, got {param.base_lr}")
    if param.weight_decay < 0:
        fail("weight_decay", f"must be >= 0, got {param.weight_decay}")
    if param.momentum < 0:
        fail("momentum", f"must be >= 0, got {param.momentum}")
    if param.max_iter < 0:
        fail("max_iter", f"must be >= 0, got {param.max_iter}")
    if param.iter_size > MAX_ITER_SIZE:
        fail("iter_size", f"{param.iter_size} forward/backward passes per iteration (at most {MAX_ITER_SIZE}); "
                          "iter_size accumulates gradients over that many batches before each update")
    if solver_type in ("Adam", "AdaDelta") and not param.momentum < 1:
        # Adam divides by 1 - momentum^t; AdaDelta's averages would never move.
        fail("momentum", f"must be < 1 for {solver_type}, got {param.momentum}")
    if solver_type == "Adam" and not 0 <= param.momentum2 < 1:
        fail("momentum2", f"must be in [0, 1) for Adam (it takes sqrt(1 - momentum2^t)), got {param.momentum2}")
    if solver_type in _DIVIDE_BY_HISTORY and not param.delta > 0:
        fail("delta", f"must be > 0 for {solver_type} (it divides by sqrt(history) + delta), got {param.delta}")
