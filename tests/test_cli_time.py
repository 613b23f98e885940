"""`npcaffe time` on published nets: generated data, label classes, finiteness, parameter counts."""
import os

import numpy as np
import pytest

import npcaffe
from helpers import shared_path
from npcaffe import cli
from npcaffe.graph import replace_data_layers
from npcaffe.fileio.prototxt import read_net
from npcaffe.synthetic import fill_inputs, label_consumers, parse_data_shapes


def run(argv, capsys):
    rc = cli.main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def zoo(name):
    return shared_path("model-zoo", "bvlc", name)


def test_alexnet_train_val_with_generated_data(capsys):
    rc, out, err = run(["time", "--model", zoo("models_bvlc_alexnet_train_val.prototxt"), "--iterations", "1",
                        "--data-shape", "data=1,3,227,227", "--data-shape", "label=1"], capsys)
    assert rc == 0, err
    assert "norm1\tforward:" in out.replace(" ", "")
    assert "Learnable parameters: 60,965,224" in out


def test_caffenet_deploy_uses_its_input_shapes(capsys):
    rc, out, err = run(["time", "--model", zoo("models_bvlc_reference_caffenet_deploy.prototxt"),
                        "--iterations", "1", "--phase", "TEST", "--data-shape", "data=1,3,227,227"], capsys)
    assert rc == 0, err
    assert "Learnable parameters: 60,965,224" in out
    for layer in ("conv1", "norm2", "fc8", "prob"):
        assert f"{layer}\tforward:" in out.replace(" ", "")


def test_resnet50_time_reports_statistics_separately(capsys):
    model = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "prototxt", "resnet50", "ResNet-50-deploy.prototxt")
    rc, out, err = run(["time", "--model", model, "--iterations", "1", "--phase", "TEST"], capsys)
    assert rc == 0, err
    assert "Learnable parameters: 25,557,096" in out
    assert "Parameters with lr_mult 0 (e.g. BatchNorm statistics): 53,173" in out


def test_labels_are_valid_class_indices():
    param = replace_data_layers(read_net(zoo("examples_cifar10_cifar10_quick_train_test.prototxt")),
                                {"data": (6, 3, 32, 32), "label": (6,)})
    net = npcaffe.Net(param, npcaffe.TEST)
    assert {k: v[1] for k, v in label_consumers(net).items()} == {"label": 10}
    fill_inputs(net, seed=1)
    labels = net.blobs["label"].data
    assert labels.min() >= 0 and labels.max() <= 9 and np.array_equal(labels, labels.round())
    net.forward_from_to()


def test_non_finite_blob_is_named(tmp_path, capsys):
    model = tmp_path / "nan.prototxt"
    model.write_text('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }\n'
                     'layer { name: "log" type: "Log" bottom: "x" top: "y" }\n')
    rc, out, err = run(["time", "--model", str(model), "--iterations", "1", "--phase", "TEST"], capsys)
    assert rc == 1
    assert "blob 'y' (top of layer 'log', shape (2, 3)) has" in err and "non-finite data" in err


@pytest.mark.parametrize("arg", ["data", "data=", "data=1,x", "=1", "data=0,3"])
def test_bad_data_shape(arg):
    with pytest.raises(npcaffe.NpcaffeError, match="expected TOP=N"):
        parse_data_shapes([arg])
