"""npcaffe: Caffe rebuilt in NumPy + Numba.

pycaffe's public names live here, so `import npcaffe as caffe` runs pycaffe
scripts.
"""
from .layer import TRAIN, TEST, layer_type_list  # noqa: F401
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
from .solvers import (SGDSolver, NesterovSolver, AdaGradSolver, RMSPropSolver,  # noqa: F401,E402
                      AdaDeltaSolver, AdamSolver, get_solver)
from . import io  # noqa: F401,E402
from .net_spec import NetSpec, layers, params, to_proto  # noqa: F401,E402
from .layerlib.python_layer import PythonLayerBase as Layer  # noqa: F401,E402  (pycaffe's caffe.Layer)
from .classifier import Classifier  # noqa: F401,E402
