"""Every net of ../shared/model-zoo builds in both phases and runs forward and backward on generated data."""
import glob
import os

import pytest

import npcaffe
from helpers import shared_path
from npcaffe.fileio.prototxt import read_net
from npcaffe.graph import replace_data_layers
from npcaffe.layer import layer_type_list
from npcaffe.synthetic import check_finite, fill_inputs

SHAPES = {
    "mnist": {"data": (4, 1, 28, 28), "label": (4,)},
    "cifar10": {"data": (4, 3, 32, 32), "label": (4,)},
    "alexnet": {"data": (1, 3, 227, 227), "label": (1,)},
    "caffenet": {"data": (1, 3, 227, 227), "label": (1,)},
}


def zoo_nets():
    zoo = shared_path("model-zoo")
    return sorted(p for p in glob.glob(os.path.join(zoo, "*", "*.prototxt")) if "solver" not in os.path.basename(p))


def _shapes_for(path):
    for key, shapes in SHAPES.items():
        if key in os.path.basename(path):
            return shapes
    raise AssertionError(f"no test shapes for {path}")


@pytest.mark.parametrize("path", zoo_nets() if os.path.isdir(os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
                         else [], ids=os.path.basename)
@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_zoo_net_runs_forward_and_backward(path, phase):
    net_param = read_net(path)
    missing = sorted({l.type for l in net_param.layer} - set(layer_type_list()))
    assert not missing, f"layer types not implemented: {missing}"
    net = npcaffe.Net(replace_data_layers(net_param, _shapes_for(path)), getattr(npcaffe, phase))
    fill_inputs(net, seed=0)
    net.forward_from_to()
    check_finite(net, "forward")
    net.backward_from_to()
    check_finite(net, "backward", diffs=True)
    assert len(net.layers) > 0


def test_replace_data_layers_requires_every_top():
    net_param = read_net(shared_path("model-zoo", "bvlc", "examples_mnist_lenet_train_test.prototxt"))
    with pytest.raises(npcaffe.NpcaffeError, match="top\\(s\\) \\['label'\\] with no shape"):
        replace_data_layers(net_param, {"data": (1, 1, 28, 28)})
