"""Fillers: Caffe's weight initialisers (include/caffe/filler.hpp).

Same formulas as Caffe; random draws come from npcaffe.rng (seeded per run),
so values equal Caffe's in distribution, not draw for draw.  As in Caffe,
`xavier` and `msra` use fan_in = count / shape[0] and
fan_out = count / shape[1].
"""
import numpy as np

from .errors import NetError
from .proto import caffe_pb2
from .rng import get_rng

_VN = caffe_pb2.FillerParameter


def _fans(shape):
    count = int(np.prod(shape))
    fan_in = count // shape[0]
    fan_out = count // shape[1] if len(shape) > 1 else count
    return fan_in, fan_out


def _variance_n(param, shape):
    fan_in, fan_out = _fans(shape)
    if param.variance_norm == _VN.AVERAGE:
        return (fan_in + fan_out) / 2.0
    if param.variance_norm == _VN.FAN_OUT:
        return float(fan_out)
    return float(fan_in)


def _no_sparse(param, where):
    if param.sparse != -1:
        raise NetError(f"{where}: filler '{param.type}' does not support 'sparse'")


def _check_numbers(param, where):
    """The filler's numbers finite and in range (Caffe's CHECK_LE(min, max) in caffe_rng_uniform; a
    negative or NaN std would reach NumPy as a raw ValueError, or fill the blob with NaN)."""
    for field in {"constant": ("value",), "uniform": ("min", "max"), "gaussian": ("mean", "std")}.get(param.type, ()):
        value = getattr(param, field)
        if not np.isfinite(value):
            raise NetError(f"{where}: {param.type} filler field '{field}' must be finite, got {value}")
    if param.type == "gaussian" and param.std < 0:
        raise NetError(f"{where}: gaussian filler field 'std' must be >= 0, got {param.std}")
    if param.type == "uniform" and param.min > param.max:
        raise NetError(f"{where}: uniform filler needs min <= max, got min {param.min}, max {param.max}")


def fill(blob_or_array, param, where="filler"):
    """Fill a Blob (or float32 ndarray) according to a FillerParameter."""
    target = blob_or_array if isinstance(blob_or_array, np.ndarray) else blob_or_array.data
    shape = target.shape
    if target.size == 0:
        return
    rng = get_rng()
    kind = param.type
    _check_numbers(param, where)
    if kind == "constant":
        _no_sparse(param, where)
        target[...] = np.float32(param.value)
    elif kind == "uniform":
        _no_sparse(param, where)
        target[...] = rng.uniform(param.min, param.max, size=shape).astype(np.float32)
    elif kind == "gaussian":
        values = rng.normal(param.mean, param.std, size=shape).astype(np.float32)
        if param.sparse < -1:
            raise NetError(f"{where}: gaussian filler 'sparse' must be >= -1, got {param.sparse}")
        if param.sparse >= 0:
            # Keep each weight with probability sparse / num_outputs (shape[0]).
            p = np.float32(param.sparse) / np.float32(shape[0])
            values *= rng.random(size=shape) < p
        target[...] = values
    elif kind == "positive_unitball":
        _no_sparse(param, where)
        values = rng.uniform(0, 1, size=shape).astype(np.float32).reshape(shape[0], -1)
        values /= values.sum(axis=1, dtype=np.float32, keepdims=True)
        target[...] = values.reshape(shape)
    elif kind == "xavier":
        _no_sparse(param, where)
        scale = np.sqrt(np.float32(3) / np.float32(_variance_n(param, shape)))
        target[...] = rng.uniform(-scale, scale, size=shape).astype(np.float32)
    elif kind == "msra":
        _no_sparse(param, where)
        std = np.sqrt(np.float32(2) / np.float32(_variance_n(param, shape)))
        target[...] = rng.normal(0, std, size=shape).astype(np.float32)
    elif kind == "bilinear":
        _no_sparse(param, where)
        if len(shape) != 4 or shape[2] != shape[3]:
            raise NetError(f"{where}: bilinear filler needs a 4-D blob with square kernels, got shape {shape}")
        k = shape[3]
        f = np.ceil(k / 2.0)
        c = (k - 1) / (2.0 * f)
        x = np.arange(k)
        w1 = 1 - np.abs(x / f - c)
        target[...] = np.broadcast_to(np.outer(w1, w1).astype(np.float32), shape)
    else:
        raise NetError(f"{where}: unknown filler type '{kind}' "
                       "(known: constant, uniform, gaussian, positive_unitball, xavier, msra, bilinear)")
