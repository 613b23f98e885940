"""npcaffe: Caffe rebuilt in NumPy + Numba.

pycaffe's public names live here, so `import npcaffe as caffe` runs pycaffe
scripts.
"""
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


# Multi-GPU / multi-process training does not exist on the CPU: one solver, rank 0.
def has_nccl():
    return False


def solver_count():
    return 1


def set_solver_count(count):
    if count != 1:
        raise NpcaffeError(f"set_solver_count({count}): npcaffe trains with one solver (no multi-GPU)")


def solver_rank():
    return 0


def set_solver_rank(rank):
    if rank != 0:
        raise NpcaffeError(f"set_solver_rank({rank}): npcaffe trains with one solver, rank 0")


def set_multiprocess(multiprocess):
    """Accepted for pycaffe compatibility; there is one process."""


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
