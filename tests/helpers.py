"""Shared test helpers: where ../shared is, small blob factories, a quiet glog."""
import contextlib
import os

import pytest

SHARED = os.environ.get("NPCAFFE_SHARED", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared"))
SHARED = os.path.abspath(SHARED)


def shared_path(*parts):
    """Path under ../shared; skips the test when that material is not present."""
    path = os.path.join(SHARED, *parts)
    if not os.path.exists(path):
        pytest.skip(f"shared material not found: {path} (set NPCAFFE_SHARED)")
    return path



def load_tool(name):
    """The script tools/<name>.py imported as a module (the tools are not a package)."""
    import importlib.util
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(name, os.path.join(root, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_blob(shape, low=-1.0, high=1.0, seed=0, name=""):
    """A Blob filled with uniform random float32 values (Caffe tests' UniformFiller)."""
    import numpy as np
    from npcaffe.blob import Blob
    b = Blob(shape, name=name)
    b.data[...] = np.random.default_rng(seed).uniform(low, high, size=shape).astype(np.float32)
    return b


def layer_param(text):
    """A LayerParameter from prototxt text."""
    from google.protobuf import text_format
    from npcaffe.proto import caffe_pb2
    return text_format.Parse(text, caffe_pb2.LayerParameter())


@contextlib.contextmanager
def quiet_glog():
    """npcaffe.glog's INFO lines off inside the block; the `quiet_log` fixture (conftest.py) does this
    for a whole test, this is for a fixture of wider scope."""
    from npcaffe import glog
    glog.set_quiet(True)
    try:
        yield
    finally:
        glog.set_quiet(False)
