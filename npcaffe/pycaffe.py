"""`import caffe` for code written for pycaffe, when no real pycaffe is installed.

Python layer modules written for Caffe start with `import caffe` and subclass
`caffe.Layer` (Caffe's own examples/pycaffe/layers/pyloss.py does), and
pycaffe scripts use `caffe.Net`, `caffe.io`, `from caffe import layers as L`
and `from caffe.proto import caffe_pb2`.  `install()` makes those imports
give npcaffe's modules.  It never hides a real pycaffe: if a module `caffe`
is already imported or can be imported, it changes nothing (a directory
named caffe, such as a Caffe source checkout, imports as an empty namespace
package and does not count).

Used by Python layers before they import their module, and by `npcaffe
pycaffe SCRIPT [ARGS...]`, which runs a pycaffe script unchanged.
"""
import importlib
import importlib.util
import runpy
import sys

_ALIASES = {
    "caffe": "npcaffe",
    "caffe.proto": "npcaffe.proto",
    "caffe.proto.caffe_pb2": "npcaffe.proto.caffe_pb2",
    "caffe.io": "npcaffe.io",
    "caffe.net_spec": "npcaffe.net_spec",
    "caffe.classifier": "npcaffe.classifier",
    "caffe.coord_map": "npcaffe.coord_map",
    "caffe.detector": "npcaffe.detector",
}


def _real_caffe_importable():
    try:
        spec = importlib.util.find_spec("caffe")
    except (ImportError, ValueError):
        return False
    # A plain directory named caffe on sys.path is a namespace package: not pycaffe.
    return spec is not None and spec.origin not in (None, "namespace")


def install():
    """Alias `caffe` (and its submodules pycaffe scripts import) to npcaffe's, unless a
    real `caffe` exists.  Returns True when `import caffe` now gives npcaffe."""
    current = sys.modules.get("caffe")
    if current is not None:
        return current.__name__ == "npcaffe"
    if _real_caffe_importable():
        return False
    for alias, target in _ALIASES.items():
        sys.modules.setdefault(alias, importlib.import_module(target))
    return True


def run_script(path, args):
    """Run a pycaffe script as `python path args...`, with `import caffe` giving npcaffe."""
    if not install():
        print("npcaffe pycaffe: a real pycaffe module 'caffe' is importable here, so the script uses it, "
              "not npcaffe (remove it from PYTHONPATH to run on npcaffe)", file=sys.stderr)
    sys.argv = [path] + list(args)
    runpy.run_path(path, run_name="__main__")
