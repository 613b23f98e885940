"""npcaffe: Caffe rebuilt in NumPy + Numba.

pycaffe's public names live here, so `import npcaffe as caffe` runs pycaffe
scripts.
"""
from .layer import TRAIN, TEST, layer_type_list  # noqa: F401
from .blob import Blob  # noqa: F401
from .errors import NpcaffeError  # noqa: F401
