"""Python layers: a net layer written as a Python class (BVLC python_layer.hpp, pycaffe's caffe.Layer).

A layer `type: "Python"` with `python_param { module: "m" layer: "C" param_str: "..." }`
is an instance of class C from the importable module m (on sys.path: the
working directory for scripts run from it, else PYTHONPATH, as for Caffe),
a subclass of `npcaffe.Layer`, built with the LayerParameter as its one
argument.  A module written for Caffe, which does `import caffe` and
subclasses `caffe.Layer`, loads unchanged: npcaffe.pycaffe makes `caffe`
npcaffe when no real pycaffe is installed.  As Caffe's PythonLayer does, the net then:
  - sets `param_str` (python_param.param_str) and `phase` (0 TRAIN, 1 TEST)
    on the object, and calls setup(bottom, top) once;
  - calls reshape(bottom, top) before every forward (Caffe's Layer::Forward
    reshapes each time), then forward(bottom, top);
  - calls backward(top, propagate_down, bottom) when the net needs it.
bottom and top are lists of npcaffe.Blob (.data, .diff, .reshape(*shape),
.count, .num ...).  Parameters the layer learns go in self.blobs
(`self.blobs.add_blob(*shape)`, as pycaffe): the net collects them after
setup, so param { lr_mult ... }, snapshots and .caffemodel weights treat
them as any layer's.  loss_weight works as for every layer (a Python loss
layer sets `loss_weight: 1` itself, as in Caffe, where only C++ loss layers
default to it).

net.layers[i] for such a layer is the wrapper the net calls; the user's
object is its `python` attribute, and the user's attributes read and write
through the wrapper (`net.layers[i].batch_size = 5`), as on pycaffe's
layer object.

Trust: a Python layer imports and runs the module its net file names, so a
downloaded net could run anything (`module: "sys" layer: "exit"` would end
the process).  Which modules may be imported is a process-wide policy
(`allow_python_layers`): all of them by default, as in Caffe and pycaffe
(your own scripts build your own nets); the command line narrows it for the
commands that inspect nets (README, "Trust").  The class must subclass
npcaffe.Layer (caffe.Layer in a module written for Caffe), so a net cannot
call an arbitrary function of an allowed module.
"""
import contextlib
import importlib

from ..blob import Blob
from ..errors import NetError
from ..layer import Layer, register


_ALL = "all"
_allowed = _ALL  # _ALL, or a frozenset of module names (empty: none)


def allow_python_layers(modules):
    """Set which python_param modules nets may import: True (all), False or None (none), or an
    iterable of module names (each also allows its submodules).  Returns the previous policy."""
    global _allowed
    previous = _allowed
    _allowed = _ALL if modules is True else frozenset(modules or ())
    return previous


@contextlib.contextmanager
def python_layers_allowed(modules):
    """allow_python_layers(modules) inside the block, the previous policy after it."""
    global _allowed
    previous = allow_python_layers(modules)
    try:
        yield
    finally:
        _allowed = previous


def _module_allowed(name):
    return _allowed == _ALL or any(name == m or name.startswith(m + ".") for m in _allowed)


class BlobVec(list):
    """A layer's parameter blobs, as pycaffe's: a list with add_blob(*shape)."""

    def __init__(self, blobs=(), owner=""):
        super().__init__(blobs)
        self.owner = owner

    def add_blob(self, *shape):
        """Append a zero-filled parameter blob of the given shape."""
        blob = Blob(*shape, name=f"{self.owner}_param{len(self)}")
        self.append(blob)
        return blob


class PythonLayerBase:
    """Base class of layers written in Python (`class MyLayer(npcaffe.Layer)`, pycaffe's caffe.Layer).

    Override setup, reshape, forward and, if the layer has one, backward;
    see npcaffe.layerlib.python_layer.  `self.blobs` holds learnable
    parameters, `self.param_str` and `self.phase` are set before setup."""

    type = "Python"

    def __init__(self, param=None):
        self.layer_param = param
        self.blobs = BlobVec(owner=param.name if param is not None else "")
        self.param_str = param.python_param.param_str if param is not None else ""
        self.phase = param.phase if param is not None else 0

    def setup(self, bottom, top):
        """Check parameters and bottoms; set the tops' shapes (called once)."""

    def reshape(self, bottom, top):
        """Set the tops' shapes from the bottoms' (called before every forward)."""

    def forward(self, bottom, top):
        raise NotImplementedError(f"Python layer class {type(self).__name__} has no forward(bottom, top)")

    def backward(self, top, propagate_down, bottom):
        raise NotImplementedError(f"Python layer class {type(self).__name__} has no backward(top, "
                                  "propagate_down, bottom), but the net needs its gradient")


@register("Python")
class PythonLayer(Layer):
    """The net's side of a Python layer: builds the user's object and calls it (see the module docstring)."""

    def __init__(self, param, phase=None):
        super().__init__(param, phase)
        p = param.python_param
        where = f"layer '{param.name}' (Python)"
        if not p.module or not p.layer:
            raise NetError(f"{where}: python_param needs both 'module' and 'layer' (got module "
                           f"'{p.module}', layer '{p.layer}')")
        if not _module_allowed(p.module):
            listed = f" (allowed: {', '.join(sorted(_allowed))})" if _allowed else ""
            raise NetError(f"{where}: Python layers are not allowed here{listed}: python_param.module "
                           f"'{p.module}' would be imported and run. If you trust this net, run again with "
                           f"--allow_python_layers (or --allow_python_layers={p.module})")
        from ..pycaffe import install
        install()  # layer modules written for Caffe `import caffe`
        try:
            module = importlib.import_module(p.module)
        except ImportError as e:
            if e.name is not None and p.module.split(".")[0] != e.name.split(".")[0]:
                raise NetError(f"{where}: importing python_param.module '{p.module}' failed: {e}") from e
            raise NetError(f"{where}: cannot import python_param.module '{p.module}': {e}. "
                           "Put the directory holding it on PYTHONPATH (or sys.path)") from e
        cls = getattr(module, p.layer, None)
        if cls is None:
            raise NetError(f"{where}: module '{p.module}' ({getattr(module, '__file__', '?')}) has no "
                           f"python_param.layer '{p.layer}'")
        if not (isinstance(cls, type) and issubclass(cls, PythonLayerBase)):
            raise NetError(f"{where}: python_param.layer '{p.layer}' of module '{p.module}' is not a subclass "
                           f"of npcaffe.Layer (caffe.Layer) but {cls!r}; a Python layer is a class deriving from it")
        self.python = cls(param)
        blobs = getattr(self.python, "blobs", None)
        if not isinstance(blobs, BlobVec):
            blobs = self.python.blobs = BlobVec(blobs or (), owner=param.name)
        self.blobs = blobs

    def layer_setup(self, bottom, top):
        self.python.param_str = self.layer_param.python_param.param_str
        self.python.phase = int(self.phase)
        self.python.setup(bottom, top)

    def reshape(self, bottom, top):
        self.python.reshape(bottom, top)

    def forward_cpu(self, bottom, top):
        self.python.forward(bottom, top)

    def backward_cpu(self, top, propagate_down, bottom):
        self.python.backward(top, list(propagate_down), bottom)

    def __getattr__(self, name):
        # Only for names the wrapper lacks: the user's attributes (pycaffe returns the object itself).
        python = self.__dict__.get("python")
        if python is None:
            raise AttributeError(name)
        return getattr(python, name)

    def __setattr__(self, name, value):
        # Writing one of the user's attributes through net.layers[i] reaches the user's object.
        python = self.__dict__.get("python")
        if (python is not None and name not in self.__dict__ and not hasattr(type(self), name)
                and hasattr(python, name)):
            setattr(python, name, value)
        else:
            object.__setattr__(self, name, value)
