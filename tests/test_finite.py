"""Non-finite weights and outputs are errors naming the layer and blob (npcaffe.finite), not scores."""
import numpy as np
import pytest

from npcaffe import Net
from npcaffe.cli import main
from npcaffe.errors import NonFiniteError
from npcaffe.finite import check_outputs, check_params, first_non_finite_param
from npcaffe.layer import TEST

NET = """
name: "tiny"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 4 dim: 6 } shape { dim: 4 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "acc" type: "Accuracy" bottom: "ip2" bottom: "label" top: "acc" }
"""


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    return path


def test_one_nan_weight_fails_npcaffe_test(model, tmp_path, capsys):
    net = Net(str(model), TEST)
    good = tmp_path / "good.caffemodel"
    net.save(str(good))
    net.params["ip2"][0].data[1, 2] = np.nan
    bad = tmp_path / "bad.caffemodel"
    net.save(str(bad))
    assert main(["test", "--model", str(model), "--weights", str(good), "--iterations", "2"]) == 0
    capsys.readouterr()
    assert main(["test", "--model", str(model), "--weights", str(bad), "--iterations", "2"]) == 1
    err = capsys.readouterr().err
    assert "layer 'ip2'" in err and "param 0" in err and "1 of 15 values" in err and str(bad) in err
    assert "acc =" not in capsys.readouterr().out


def test_outputs_name_the_first_non_finite_top(model):
    net = Net(str(model), TEST)
    net.params["ip1"][1].data[3] = np.inf  # finite weights check passes on ip2, fails on ip1
    assert "layer 'ip1'" in first_non_finite_param(net)
    with pytest.raises(NonFiniteError, match="layer 'ip1'"):
        check_params(net, "w")
    net.forward()
    with pytest.raises(NonFiniteError, match=r"output 'acc'.*blob 'ip1' \(top of layer 'ip1'") as e:
        net.blobs["acc"].data[...] = np.nan  # Accuracy itself never yields NaN; its inputs do
        check_outputs(net, "batch 0")
    assert "batch 0" in str(e.value)
