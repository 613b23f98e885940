"""Python layers (type "Python", npcaffe.Layer as pycaffe's caffe.Layer): the cases of
pycaffe's test_python_layer.py, parameters that train and save, a loss layer, errors."""
import os

import numpy as np
import pytest
from google.protobuf import text_format

import npcaffe
from gradient_check import check_gradient
from helpers import layer_param, make_blob
from npcaffe.blob import Blob
from npcaffe.errors import NetError
from npcaffe.layer import create_layer
from npcaffe.proto import caffe_pb2

MODULE = __name__  # the layer classes below are found by python_param.module


class TimesTen(npcaffe.Layer):
    def setup(self, bottom, top):
        self.calls = {"reshape": 0}

    def reshape(self, bottom, top):
        self.calls["reshape"] += 1
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = 10 * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = 10 * top[0].diff


class Counter(npcaffe.Layer):
    """A data layer: 0, 1, 2, ... in batches of param_str's size, wrapping at 1000."""

    def setup(self, bottom, top):
        self.batch = int(self.param_str)
        self.next = 0
        top[0].reshape(self.batch)

    def forward(self, bottom, top):
        top[0].data[...] = np.arange(self.next, self.next + self.batch) % 1000
        self.next = (self.next + self.batch) % 1000


class Scale(npcaffe.Layer):
    """top = w * bottom, one learnable w per channel; records the phase it was built for."""

    def setup(self, bottom, top):
        self.seen_phase = self.phase
        self.blobs.add_blob(bottom[0].shape[1])
        self.blobs[0].data[...] = 1

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data * self.blobs[0].data[None, :]

    def backward(self, top, propagate_down, bottom):
        self.blobs[0].diff[...] += (top[0].diff * bottom[0].data).sum(axis=0)
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff * self.blobs[0].data[None, :]


def _python(name, cls, bottom="", top="", extra=""):
    return (f"layer {{ type: 'Python' name: '{name}' {bottom} {top} {extra} "
            f"python_param {{ module: '{MODULE}' layer: '{cls}' }} }}")


def _net(text, phase=npcaffe.TRAIN):
    return npcaffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), phase)


def _times_ten_net():
    return _net("name: 'pythonnet' force_backward: true "
                "input: 'data' input_shape { dim: 10 dim: 9 dim: 8 } "
                + _python("one", "TimesTen", "bottom: 'data'", "top: 'one'")
                + _python("two", "TimesTen", "bottom: 'one'", "top: 'two'")
                + _python("three", "TimesTen", "bottom: 'two'", "top: 'three'"))


def test_forward_backward_and_reshape_as_pycaffe():
    net = _times_ten_net()
    net.blobs["data"].data[...] = 8
    net.forward()
    assert (net.blobs["three"].data == 8000).all()
    net.blobs["three"].diff[...] = 7
    net.backward()
    assert (net.blobs["data"].diff == 7000).all()
    net.blobs["data"].reshape(4, 4, 4, 4)
    net.forward()
    assert all(blob.data.shape == (4, 4, 4, 4) for blob in net.blobs.values())
    layer = net.layers[1]
    assert layer.type == "Python" and isinstance(layer.python, TimesTen)
    assert layer.calls["reshape"] == 1 + 2  # setup's, then one per forward, as Caffe's Layer::Forward


def test_a_python_data_layer_keeps_its_state_between_forwards():
    net = _net("name: 'pythondata' " + _python("counter", "Counter", top="top: 'count'")
               .replace("} }", "param_str: '10' } }"))
    for i in range(150):
        net.forward()
        np.testing.assert_array_equal(net.blobs["count"].data, (np.arange(10) + 10 * i) % 1000)
    net.layers[0].next = 7  # the user's attribute, written through net.layers as on pycaffe's object
    assert net.layers[0].python.next == 7
    net.forward()
    np.testing.assert_array_equal(net.blobs["count"].data, np.arange(7, 17))


def test_parameters_train_save_and_load(tmp_path):
    text = ("name: 'scaled' input: 'x' input_shape { dim: 4 dim: 3 } input: 'y' input_shape { dim: 4 dim: 3 } "
            + _python("scale", "Scale", "bottom: 'x'", "top: 'sx'", "param { lr_mult: 2 }")
            + "layer { name: 'loss' type: 'EuclideanLoss' bottom: 'sx' bottom: 'y' top: 'loss' }")
    net = _net(text)
    assert net.layers[1].seen_phase == npcaffe.TRAIN
    assert net.params["scale"][0].shape == (3,)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    target = np.array([0.5, -2, 3], np.float32)
    net.blobs["x"].data[...] = x
    net.blobs["y"].data[...] = x * target
    net.clear_param_diffs()
    net.forward_backward()
    grad = net.params["scale"][0].diff.copy()
    np.testing.assert_allclose(grad, ((x - x * target) * x).sum(axis=0) / 4, rtol=1e-5)
    net.params["scale"][0].data[...] = target
    path = tmp_path / "scaled.caffemodel"
    net.save(str(path))
    test_net = npcaffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), npcaffe.TEST, weights=str(path))
    assert test_net.layers[1].seen_phase == npcaffe.TEST
    np.testing.assert_array_equal(test_net.params["scale"][0].data, target)


def test_python_parameters_learn_with_the_solver(tmp_path):
    net = ("name: 'scaled' layer { name: 'data' type: 'DummyData' top: 'x' top: 'y' dummy_data_param { "
           "shape { dim: 8 dim: 3 } shape { dim: 8 dim: 3 } data_filler { type: 'gaussian' std: 1 } "
           "data_filler { type: 'constant' value: 0 } } } "
           + _python("scale", "Scale", "bottom: 'x'", "top: 'sx'", "param { lr_mult: 1 }")
           + "layer { name: 'loss' type: 'EuclideanLoss' bottom: 'sx' bottom: 'y' top: 'loss' }")
    solver_param = caffe_pb2.SolverParameter(base_lr=0.5, lr_policy="fixed", max_iter=30, display=0,
                                             snapshot_prefix=str(tmp_path / "s"))
    solver_param.net_param.CopyFrom(text_format.Parse(net, caffe_pb2.NetParameter()))
    from npcaffe.solvers import solver_class
    solver = solver_class("SGD")(solver_param, where="test")
    solver.step(30)
    assert np.abs(solver.net.params["scale"][0].data).max() < 0.05  # w -> 0 makes sx = y = 0


def test_python_loss_layer_gradient_and_loss_weight(pyloss_module):
    """A loss layer module written for Caffe (PYLOSS below), with a loss weight of 2."""
    net = _net("name: 'l' input: 'a' input_shape { dim: 5 dim: 4 } input: 'b' input_shape { dim: 5 dim: 4 } "
               "force_backward: true layer { type: 'Python' name: 'loss' bottom: 'a' bottom: 'b' top: 'loss' "
               "loss_weight: 2 python_param { module: 'pyloss_unchanged' layer: 'EuclideanLossLayer' } }")
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 5, 4)).astype(np.float32)
    loss = net.forward(a=a, b=b)["loss"]
    want = np.sum((a - b) ** 2) / 5 / 2
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    net.backward()
    np.testing.assert_allclose(net.blobs["a"].diff, 2 * (a - b) / 5, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.blobs["b"].diff, -2 * (a - b) / 5, rtol=1e-5, atol=1e-6)


def test_gradient_check_of_a_python_layer():
    layer = create_layer(layer_param(_python("scale", "Scale")[len("layer "):].strip()[1:-1]))
    bottom, top = [make_blob((3, 4), seed=2)], [Blob(())]
    check_gradient(layer, bottom, top)


@pytest.mark.parametrize("python_param, message", [
    ("module: 'no_such_module_here' layer: 'X'", "cannot import python_param.module 'no_such_module_here'"),
    (f"module: '{MODULE}' layer: 'NoSuchClass'", "has no python_param.layer 'NoSuchClass'"),
    ("layer: 'X'", "needs both 'module' and 'layer'"),
])
def test_bad_python_param_names_the_layer(python_param, message):
    text = f"name: 'n' input: 'x' input_shape {{ dim: 1 }} layer {{ name: 'py' type: 'Python' bottom: 'x' " \
           f"top: 'y' python_param {{ {python_param} }} }}"
    with pytest.raises(NetError, match="layer 'py' \\(Python\\)") as e:
        _net(text)
    assert message in str(e.value)


def test_missing_backward_says_so():
    class NoBackward(npcaffe.Layer):
        def reshape(self, bottom, top):
            top[0].reshape(*bottom[0].shape)

        def forward(self, bottom, top):
            top[0].data[...] = bottom[0].data

    globals()["NoBackward"] = NoBackward
    try:
        net = _net("name: 'n' force_backward: true input: 'x' input_shape { dim: 2 } "
                   + _python("py", "NoBackward", "bottom: 'x'", "top: 'y'"))
        net.forward()
        with pytest.raises(NotImplementedError, match="NoBackward has no backward"):
            net.backward()
    finally:
        del globals()["NoBackward"]


def test_cli_finds_layers_on_pythonpath(tmp_path, monkeypatch):
    """`npcaffe time` on a net with a Python layer from a module in PYTHONPATH's directory."""
    (tmp_path / "my_layers.py").write_text(
        "import npcaffe\n"
        "class Double(npcaffe.Layer):\n"
        "    def reshape(self, bottom, top):\n"
        "        top[0].reshape(*bottom[0].shape)\n"
        "    def forward(self, bottom, top):\n"
        "        top[0].data[...] = 2 * bottom[0].data\n"
        "    def backward(self, top, propagate_down, bottom):\n"
        "        bottom[0].diff[...] = 2 * top[0].diff\n")
    model = tmp_path / "net.prototxt"
    model.write_text("name: 'n' input: 'x' input_shape { dim: 2 dim: 3 } force_backward: true "
                     "layer { name: 'd' type: 'Python' bottom: 'x' top: 'y' "
                     "python_param { module: 'my_layers' layer: 'Double' } }")
    import subprocess
    import sys
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "npcaffe", "time", "--model", str(model), "--iterations", "2",
                           "--allow_python_layers"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Average Forward-Backward" in done.stdout + done.stderr


PYLOSS = '''import caffe
import numpy as np


class EuclideanLossLayer(caffe.Layer):
    def setup(self, bottom, top):
        if len(bottom) != 2:
            raise Exception("Need two inputs to compute distance.")

    def reshape(self, bottom, top):
        self.diff = np.zeros_like(bottom[0].data, dtype=np.float32)
        top[0].reshape(1)

    def forward(self, bottom, top):
        self.diff[...] = bottom[0].data - bottom[1].data
        top[0].data[...] = np.sum(self.diff**2) / bottom[0].num / 2.

    def backward(self, top, propagate_down, bottom):
        for i in range(2):
            if not propagate_down[i]:
                continue
            sign = 1 if i == 0 else -1
            bottom[i].diff[...] = sign * self.diff * top[0].diff / bottom[i].num
'''


@pytest.fixture
def pyloss_module(tmp_path, monkeypatch):
    """PYLOSS as the importable module pyloss_unchanged."""
    (tmp_path / "pyloss_unchanged.py").write_text(PYLOSS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path

SCRIPT = '''import sys
import numpy as np
import caffe
from caffe import layers as L, params as P
from caffe.proto import caffe_pb2

caffe.set_mode_cpu()
n = caffe.NetSpec()
n.x, n.y = L.DummyData(shape=[dict(dim=[10, 3]), dict(dim=[10, 3])],
                       data_filler=[dict(type="gaussian"), dict(type="constant")], ntop=2)
n.ipx = L.InnerProduct(n.x, num_output=3, weight_filler=dict(type="xavier"))
n.loss = L.Python(n.ipx, n.y, module="pyloss_unchanged", layer="EuclideanLossLayer", loss_weight=1)
with open("net.prototxt", "w") as f:
    f.write(str(n.to_proto()))
solver = caffe_pb2.SolverParameter(net="net.prototxt", base_lr=0.1, lr_policy="fixed", max_iter=50, display=0,
                                   snapshot_prefix="snap", random_seed=1)
with open("solver.prototxt", "w") as f:
    f.write(str(solver))
s = caffe.get_solver("solver.prototxt")
s.step(1)
first = float(s.net.blobs["loss"].data[0])
s.step(49)
print("loss", first, float(s.net.blobs["loss"].data[0]), sys.argv[1:])
'''


def test_layer_modules_written_for_caffe_load_unchanged(pyloss_module):
    """Caffe's own examples/pycaffe/layers/pyloss.py shape: `import caffe`, `caffe.Layer`."""
    net = _net("name: 'l' input: 'a' input_shape { dim: 4 dim: 3 } input: 'b' input_shape { dim: 4 dim: 3 } "
               "layer { type: 'Python' name: 'loss' bottom: 'a' bottom: 'b' top: 'loss' loss_weight: 1 "
               "python_param { module: 'pyloss_unchanged' layer: 'EuclideanLossLayer' } }")
    a, b = np.ones((4, 3), np.float32), np.zeros((4, 3), np.float32)
    assert net.forward(a=a, b=b)["loss"] == pytest.approx(12 / 4 / 2)
    import caffe
    assert caffe is npcaffe


def test_npcaffe_pycaffe_runs_a_script_unchanged(pyloss_module):
    tmp_path = pyloss_module
    (tmp_path / "train.py").write_text(SCRIPT)
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-m", "npcaffe", "pycaffe", "train.py", "--flag", "7"],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    _, first, last, args = done.stdout.split(maxsplit=3)
    assert float(last) < 0.5 * float(first)
    assert args.strip() == "['--flag', '7']"
