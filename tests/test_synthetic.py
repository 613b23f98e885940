"""npcaffe/synthetic.py: generated inputs for nets run without their datasets (`npcaffe time --data_shape`)."""
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


@pytest.mark.parametrize("arg", ["data", "data=", "data=1,x", "=1", "data=0,3"])
def test_bad_data_shape(arg):
    with pytest.raises(npcaffe.NpcaffeError, match="expected TOP=N"):
        parse_data_shapes([arg])
