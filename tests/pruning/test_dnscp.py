"""DNS-CP end to end: dnsify --channels, npcaffe surgery --solver --channels (surgery, bake, tailoring,
fine-tuning, report) on a tiny net with generated data, and the DNS-CP run on ResNet-50 (slow)."""
import json
import os

import numpy as np
import pytest

import npcaffe
from npcaffe import cli
from npcaffe.errors import NetError
from npcaffe.fileio.caffemodel import read_caffemodel
from npcaffe.fileio.prototxt import read_net
from npcaffe.pruning import dnscp
from npcaffe.pruning.dnsify import baked_model, dnsify

TINY_NET = """
name: "tinycp"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        data_param { source: "no_such_train_lmdb" batch_size: 8 backend: LMDB } }
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
        data_param { source: "no_such_test_lmdb" batch_size: 8 backend: LMDB } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 6 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
        convolution_param { num_output: 5 kernel_size: 3 bias_term: false weight_filler { type: "xavier" } } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "ip1" type: "InnerProduct" bottom: "conv2" top: "ip1"
        inner_product_param { num_output: 4 weight_filler { type: "xavier" } } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip1" bottom: "label" top: "accuracy" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }
"""
TINY_SOLVER = """
net: "tinycp_train_test.prototxt"
test_iter: 2
test_interval: 100
base_lr: 0.05
lr_policy: "fixed"
momentum: 0.9
weight_decay: 0.0005
display: 5
max_iter: 6
random_seed: 1
"""
SHAPES = ["--data_shape", "data=8,2,8,8", "--data_shape", "label=8"]


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tinycp_train_test.prototxt").write_text(TINY_NET)
    (tmp_path / "tinycp_solver.prototxt").write_text(TINY_SOLVER)
    return tmp_path


def test_dnsify_channels_converts_the_layers_not_reading_data(tiny):
    net = read_net("tinycp_train_test.prototxt")
    converted, record = dnsify(net, iter_stop=5, channels=True)
    types = {layer.name: layer.type for layer in converted.layer}
    assert types["conv1"] == "Convolution"                        # reads the data: left alone
    assert (types["conv2"], types["ip1"]) == ("CPConvolution", "CPInnerProduct")
    conv2 = next(layer for layer in converted.layer if layer.name == "conv2")
    assert conv2.channel_surgery_param.c_rate == pytest.approx(0.1) and conv2.channel_surgery_param.iter_stop == 5
    assert not conv2.HasField("cconvolution_param")
    assert conv2.convolution_param.bias_term and conv2.param[1].lr_mult == 0   # the zero bias never learns
    assert [c.zero_bias for c in record] == [True, False]
    # Named, a data-fed layer is converted (the user asked for it).
    converted, _ = dnsify(net, ["conv1"], iter_stop=5, channels=True)
    assert next(layer for layer in converted.layer if layer.name == "conv1").type == "CPConvolution"
    with pytest.raises(NetError, match="already a DNS layer"):
        dnsify(converted, ["conv1"], iter_stop=5, channels=True)


def test_baked_model_is_the_users_net_with_zero_columns(tiny):
    net_param = read_net("tinycp_train_test.prototxt")
    converted, record = dnsify(net_param, iter_stop=5, channels=True)
    from npcaffe.graph import replace_data_layers
    net = npcaffe.Net(replace_data_layers(converted, {"data": (8, 2, 8, 8), "label": (8,)}), npcaffe.TEST)
    net.layer_dict["conv2"].channel_mask[...] = [1, 0, 1, 0, 1, 1]
    net.layer_dict["ip1"].channel_mask[...] = [0, 1, 1, 0, 1]
    baked = {layer.name: layer for layer in baked_model(net, record).layer}
    assert baked["conv2"].type == "Convolution" and not baked["conv2"].convolution_param.bias_term
    assert len(baked["conv2"].blobs) == 1 and len(baked["ip1"].blobs) == 2
    w2 = np.array(baked["conv2"].blobs[0].data).reshape(5, 6, 3, 3)
    assert not w2[:, [1, 3]].any() and np.count_nonzero(w2[:, [0, 2, 4, 5]]) == 5 * 4 * 9
    w3 = np.array(baked["ip1"].blobs[0].data).reshape(4, 5, 16)     # conv2's 4x4 output: 16 inputs a channel
    assert not w3[:, [0, 3]].any() and np.count_nonzero(w3[:, [1, 2, 4]]) == 4 * 3 * 16
    assert dnscp.channel_counts(net) == {"conv2": (4, 6), "ip1": (3, 5)}


def test_surgery_channels_end_to_end(tiny, capsys):
    assert cli.main(["surgery", "--solver", "tinycp_solver.prototxt", *SHAPES, "--channels", "--c_rate", "0",
                     "--finetune_iter", "3", "--quiet"]) == 0
    out = capsys.readouterr().out
    run = tiny / "runs" / "tinycp_solver"
    report = json.loads((run / "report.json").read_text())
    channels = report["channels"]
    assert set(channels["layers"]) == {"conv2", "ip1"}
    assert "DNS-CP channel surgery" in out and "input channels (DNS-CP):" in out
    # c_rate 0: a = b = mu, so at iteration 0 (gate open: p = 1) every channel below the layer's mean goes.
    snapshot = npcaffe.Net(report["net_prototxt"], npcaffe.TEST)
    snapshot.copy_from(report["snapshot_model"])
    for name, counts in channels["layers"].items():
        mask = snapshot.layer_dict[name].channel_mask
        assert (counts["kept"], counts["total"]) == (int(mask.sum()), mask.size)
        assert 0 < counts["kept"] < counts["total"]
    # The baked model: plain types, pruned channels zero.
    pruned = {layer.name: layer for layer in read_caffemodel(report["pruned_model"]).layer if layer.blobs}
    assert {name: layer.type for name, layer in pruned.items()} == {
        "conv1": "Convolution", "conv2": "Convolution", "ip1": "InnerProduct"}
    w2 = np.array(pruned["conv2"].blobs[0].data).reshape(5, 6, 3, 3)
    gone = np.flatnonzero(snapshot.layer_dict["conv2"].channel_mask == 0)
    assert not w2[:, gone].any()
    # Tailoring (slim when present) and fine-tuning ran; the fine-tuned model loads in its net.
    assert channels["finetune_iter"] == 3 and os.path.isfile(channels["finetuned_model"])
    if channels["tailored"] is not None:
        tailored = npcaffe.Net(channels["tailored"]["model"], npcaffe.TEST)
        assert tailored.params["conv2"][0].data.shape[1] == int(snapshot.layer_dict["conv2"].channel_mask.sum())
        assert channels["finetuned_params"] < report["params"] + 6   # fewer than the masked net's
    else:  # the masked model fine-tuned: its pruned channels held at zero
        assert "not tailored" in out
        tuned = {layer.name: layer for layer in read_caffemodel(channels["finetuned_model"]).layer}
        w2_tuned = np.array(tuned["conv2"].blobs[0].data).reshape(5, 6, 3, 3)
        assert not w2_tuned[:, gone].any() and np.count_nonzero(w2_tuned) == np.count_nonzero(w2)
        assert not np.array_equal(w2_tuned, w2)
    assert "fine-tuned 3 iterations" in out


def test_finetune_flags_need_channels(tiny, capsys):
    assert cli.main(["surgery", "--solver", "tinycp_solver.prototxt", *SHAPES, "--finetune_iter", "3"]) == 1
    assert "add --channels" in capsys.readouterr().err
