"""Host safety: Python layers run only where allowed and only as npcaffe.Layer subclasses; HDF5Output
touches its file at the first forward, not when a net is merely built."""
import sys

import pytest

from npcaffe import Net
from npcaffe.cli import main
from npcaffe.errors import NetError
from npcaffe.layer import TEST
from npcaffe.layerlib.python_layer import python_layers_allowed

PY_NET = """
name: "py"
input: "data" input_shape { dim: 2 dim: 3 }
layer { name: "py" type: "Python" bottom: "data" top: "out"
  python_param { module: "MODULE" layer: "LAYER" } }
"""

LAYER_MODULE = '''
import npcaffe
class Double(npcaffe.Layer):
    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)
    def forward(self, bottom, top):
        top[0].data[...] = 2 * bottom[0].data
    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = 2 * top[0].diff
'''


@pytest.fixture
def net_file(tmp_path, monkeypatch):
    (tmp_path / "trusted_double.py").write_text(LAYER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(module, layer):
        path = tmp_path / f"{module}_{layer}.prototxt"
        path.write_text(PY_NET.replace("MODULE", module).replace("LAYER", layer))
        return str(path)
    return write


def test_a_function_of_an_allowed_module_is_refused(net_file):
    """`module: "sys" layer: "exit"` ended the host process, even inside `except Exception`."""
    with pytest.raises(NetError, match=r"python_param.layer 'exit' of module 'sys' is not a subclass of npcaffe.Layer"):
        Net(net_file("sys", "exit"), TEST)
    with pytest.raises(NetError, match="is not a subclass"):
        Net(net_file("os", "getcwd"), TEST)


def test_the_policy_allows_all_some_or_none(net_file):
    path = net_file("trusted_double", "Double")
    assert Net(path, TEST).layers[1].type == "Python"  # the library's default: all, as pycaffe
    with python_layers_allowed(False):
        with pytest.raises(NetError, match="Python layers are not allowed here.*--allow_python_layers"):
            Net(path, TEST)
    with python_layers_allowed(["trusted_double"]):
        Net(path, TEST)
    with python_layers_allowed(["other"]):
        with pytest.raises(NetError, match=r"not allowed here \(allowed: other\)"):
            Net(path, TEST)


def test_inspecting_commands_refuse_python_layers_unless_asked(net_file, capsys, monkeypatch):
    path = net_file("trusted_double", "Double")
    sys.modules.pop("trusted_double", None)
    assert main(["time", "--model", path, "--iterations", "1"]) == 1
    assert "--allow_python_layers" in capsys.readouterr().err
    assert "trusted_double" not in sys.modules, "the module was not even imported"
    assert main(["time", "--model", path, "--iterations", "1", "--allow_python_layers=trusted_double"]) == 0
    # the policy is the command's only: the library's default is back
    Net(path, TEST)


def test_hdf5_output_leaves_its_file_alone_until_the_first_forward(tmp_path):
    pytest.importorskip("h5py")
    victim = tmp_path / "precious.txt"
    victim.write_text("do not truncate me")
    path = tmp_path / "out.prototxt"
    path.write_text(f"""
input: "data" input_shape {{ dim: 2 dim: 3 }}
input: "label" input_shape {{ dim: 2 }}
layer {{ name: "out" type: "HDF5Output" bottom: "data" bottom: "label"
  hdf5_output_param {{ file_name: "{victim}" }} }}
""")
    net = Net(str(path), TEST)
    assert victim.read_text() == "do not truncate me"
    net.forward()
    import h5py
    with h5py.File(victim, "r") as f:
        assert f["data"].shape == (2, 3)
