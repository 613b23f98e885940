"""npcaffe/synthetic.py: generated inputs for nets run without their datasets (`npcaffe time --data_shape`)."""
import os

import numpy as np
import pytest

import npcaffe
from helpers import shared_path
from npcaffe.fileio.prototxt import read_net
from npcaffe.graph import replace_data_layers
from npcaffe.synthetic import fill_inputs, label_consumers, parse_data_shapes


def test_labels_are_valid_class_indices():
    model = shared_path("model-zoo", "bvlc", "examples_cifar10_cifar10_quick_train_test.prototxt")
    param = replace_data_layers(read_net(model), {"data": (6, 3, 32, 32), "label": (6,)})
    net = npcaffe.Net(param, npcaffe.TEST)
    assert {k: v[1] for k, v in label_consumers(net).items()} == {"label": 10}
    fill_inputs(net, seed=1)
    labels = net.blobs["label"].data
    assert labels.min() >= 0 and labels.max() <= 9 and np.array_equal(labels, labels.round())
    net.forward_from_to()


def test_label_shape_defaults_to_the_batch(quiet_log):
    from npcaffe.synthetic import with_label_shapes
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    param = read_net(os.path.join(root, "prototxt", "lenet5", "lenet5_train_test.prototxt"))
    assert with_label_shapes(param, {"data": (64, 1, 28, 28)}) == {"data": (64, 1, 28, 28), "label": (64,)}
    assert with_label_shapes(param, {"data": (8, 1, 28, 28), "label": (8, 1)})["label"] == (8, 1)  # given wins
    assert with_label_shapes(param, {}) == {}


@pytest.mark.parametrize("arg", ["data", "data=", "data=1,x", "=1", "data=0,3"])
def test_bad_data_shape(arg):
    with pytest.raises(npcaffe.NpcaffeError, match="expected TOP=N"):
        parse_data_shapes([arg])


def test_generated_data_net_trains_on_dummy_data(quiet_log):
    from npcaffe.synthetic import LABEL_MARGIN, generated_data_net
    model = shared_path("model-zoo", "bvlc", "examples_cifar10_cifar10_quick_train_test.prototxt")
    param = generated_data_net(read_net(model), {"data": (5, 3, 32, 32), "label": (5,)})
    data_layers = [layer for layer in param.layer if layer.name == "cifar"]
    assert [layer.type for layer in data_layers] == ["DummyData", "DummyData"]  # TRAIN and TEST
    fillers = data_layers[0].dummy_data_param.data_filler
    assert (fillers[0].type, fillers[1].type, fillers[1].max) == ("gaussian", "uniform", pytest.approx(10 - LABEL_MARGIN))
    net = npcaffe.Net(param, npcaffe.TRAIN)
    seen = []
    for _ in range(3):  # refilled at every forward
        net.forward_from_to()
        seen.append(net.blobs["label"].data.copy())
        assert np.isfinite(net.blobs["loss"].data).all()
    assert 0 <= np.trunc(np.concatenate(seen)).min() and np.trunc(np.concatenate(seen)).max() <= 9
    assert not np.array_equal(seen[0], seen[1])
    with pytest.raises(npcaffe.NpcaffeError, match="--data_shape names \\['pixels'\\]"):
        generated_data_net(read_net(model), {"pixels": (1, 3, 32, 32), "data": (1, 3, 32, 32), "label": (1,)})
