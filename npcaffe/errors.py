"""One family of exceptions, so callers can catch npcaffe's own errors.

Every message names the place at fault (file and line, layer, blob, field,
shapes) and, where it can, says what to do.
"""


class NpcaffeError(Exception):
    """Base of every error npcaffe raises on bad input."""


class ParseError(NpcaffeError):
    """A prototxt or binary proto file that cannot be read."""

    def __init__(self, message, path=None, line=None, field=None):
        self.path, self.line, self.field = path, line, field
        where = path or "<string>"
        if line is not None:
            where += f":{line}"
        if field:
            where += f" (field '{field}')"
        super().__init__(f"{where}: {message}")


class NetError(NpcaffeError):
    """A net definition that cannot be built: unknown layer, missing blob, bad shape."""


class WeightsError(NpcaffeError):
    """Weights (caffemodel, solverstate) that do not fit the net."""


class SolverError(NpcaffeError):
    """A solver definition that cannot run."""


class DataError(NpcaffeError, ValueError):
    """A data source that cannot be opened or decoded.

    Also a ValueError: pycaffe's caffe.io raises ValueError for a BlobProto or
    array that does not fit, and scripts catch that."""


class NonFiniteError(NpcaffeError):
    """NaN or infinity where a result is reported or saved: weights, a net's outputs, a loss or a
    gradient (npcaffe.finite names the first layer and blob holding one)."""


class DistributedError(NpcaffeError):
    """Data-parallel training over MPI (npcaffe.distributed): a launch without mpi4py or with
    another MPI's launcher, or ranks that no longer hold the same model."""
