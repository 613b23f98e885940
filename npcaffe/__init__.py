"""npcaffe: Caffe rebuilt in NumPy + Numba.

pycaffe's public names live here, so `import npcaffe as caffe` runs pycaffe
scripts.
"""
import os as _os
import signal as _signal
import sys as _sys


_interrupted_while_starting_signals = []


def _interrupted_while_starting(signum, frame):
    _interrupted_while_starting_signals.append(signum)


# `npcaffe ...` and `python -m npcaffe ...` spend their first ~0.3 s importing; a Ctrl-C there ends
# the command as one during a run does (exit 130), not with a KeyboardInterrupt traceback.  The
# handler only takes note (an exception raised inside NumPy's or Numba's C imports comes out as an
# ImportError); cli.main puts Python's own handler back and stops if one came.
if (_os.path.basename(_sys.argv[0] if _sys.argv else "") == "npcaffe"
        or "npcaffe" in [b for a, b in zip(_sys.orig_argv, _sys.orig_argv[1:]) if a == "-m"]) \
        and _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
    try:
        _signal.signal(_signal.SIGINT, _interrupted_while_starting)
    except ValueError:  # imported outside the main thread
        pass

from .layer import TRAIN, TEST, layer_type_list  # noqa: F401
from . import layerlib  # noqa: F401  (importing the layer families registers their types, once)
from .blob import Blob  # noqa: F401
from .errors import NpcaffeError  # noqa: F401
from .net import Net  # noqa: F401


def set_mode_cpu():
    """npcaffe computes on the CPU only; kept for pycaffe scripts."""


def set_mode_gpu():
    raise NpcaffeError("npcaffe has no GPU mode; use npcaffe.set_mode_cpu()")


def set_device(device_id):
    """Accepted for pycaffe compatibility; there is only the CPU."""


def set_random_seed(seed):
    from . import rng
    rng.set_random_seed(seed)


# pycaffe's multi-GPU names.  npcaffe's several solvers are the ranks of an MPI launch
# (`mpirun -n N`, npcaffe.distributed); there is no NCCL.
def has_nccl():
    return False


def solver_count():
    """The number of ranks training together: N under `mpirun -n N`, else 1."""
    from . import distributed
    return distributed.solver_count()


def set_solver_count(count):
    """Accepted when it equals solver_count(): the MPI launcher, not the script, sets it."""
    if count != solver_count():
        raise NpcaffeError(f"set_solver_count({count}): npcaffe trains with {solver_count()} solver(s), one per "
                           "rank of the MPI launch; start N with `mpirun -n N` (npcaffe.distributed)")


def solver_rank():
    """This process's rank under `mpirun`, else 0."""
    from . import distributed
    return distributed.solver_rank()


def set_solver_rank(rank):
    """Accepted when it equals solver_rank(): the MPI launcher, not the script, sets it."""
    if rank != solver_rank():
        raise NpcaffeError(f"set_solver_rank({rank}): this process is rank {solver_rank()} (set by the MPI "
                           "launcher; npcaffe.distributed)")


def set_multiprocess(multiprocess):
    """Accepted for pycaffe compatibility; under mpirun the ranks are processes."""


def init_log(level=0, stderr=False):
    """Accepted for pycaffe compatibility; npcaffe logs through npcaffe.glog."""


def log(message):
    from . import glog
    glog.info(str(message))


class Timer:
    """pycaffe's Timer: start(), stop(), and the elapsed milliseconds in `ms`."""

    def __init__(self):
        self._start = None
        self._elapsed = 0.0

    def start(self):
        import time
        self._start = time.perf_counter()

    def stop(self):
        import time
        if self._start is not None:
            self._elapsed = (time.perf_counter() - self._start) * 1e3
            self._start = None

    @property
    def ms(self):
        return self._elapsed
from .solvers import (SGDSolver, NesterovSolver, AdaGradSolver, RMSPropSolver,  # noqa: F401,E402
                      AdaDeltaSolver, AdamSolver, get_solver)
from . import io  # noqa: F401,E402
from .net_spec import NetSpec, layers, params, to_proto  # noqa: F401,E402
from .layerlib.python_layer import PythonLayerBase as Layer  # noqa: F401,E402  (pycaffe's caffe.Layer)
from .classifier import Classifier  # noqa: F401,E402
from .detector import Detector  # noqa: F401,E402
