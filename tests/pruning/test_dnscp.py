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


RESNET50 = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "prototxt", "resnet50", "ResNet-50-deploy.prototxt")


def _resnet50_training_files(directory):
    """ResNet-50 as a training net (its Input also gives a label; SoftmaxWithLoss instead of prob), a
    two-iteration solver, and generated weights in a plausible trained state."""
    from npcaffe.fileio.caffemodel import write_caffemodel
    from npcaffe.fileio.prototxt import to_text
    from npcaffe.proto import caffe_pb2
    deploy = read_net(RESNET50)
    net = npcaffe.Net(deploy, npcaffe.TEST)
    gen = np.random.default_rng(0)
    for layer in net.layers:
        if layer.type == "BatchNorm":
            layer.blobs[0].data[...] = gen.standard_normal(layer.blobs[0].shape) * 0.1
            layer.blobs[1].data[...] = 1
            layer.blobs[2].data[...] = 1
        elif layer.type in ("Convolution", "InnerProduct"):
            w = layer.blobs[0].data
            w[...] = gen.standard_normal(w.shape) * np.sqrt(1.0 / w[0].size)
    weights = str(directory / "r50.caffemodel")
    net.save(weights)
    train = caffe_pb2.NetParameter()
    train.CopyFrom(deploy)
    del train.layer[:]
    for layer in deploy.layer:
        if layer.name == "prob":
            continue
        added = train.layer.add()
        added.CopyFrom(layer)
        if layer.type == "Input":
            added.top.append("label")
            added.input_param.shape.add().dim.append(1)
    loss = train.layer.add()
    loss.name, loss.type = "loss", "SoftmaxWithLoss"
    loss.bottom.extend(["fc1000", "label"])
    loss.top.append("loss")
    (directory / "r50_train.prototxt").write_text(to_text(train))
    (directory / "r50_solver.prototxt").write_text(
        'net: "r50_train.prototxt"\nbase_lr: 0.0001\nlr_policy: "fixed"\nmomentum: 0.9\nweight_decay: 0.0001\n'
        'display: 1\nmax_iter: 2\nrandom_seed: 1\n')
    return weights


@pytest.mark.slow
def test_dnscp_on_resnet50_end_to_end(tmp_path, monkeypatch, capsys):
    """Masks, gate, tailoring (slim across the residual sums) and one fine-tuning step on ResNet-50 with
    generated data, batch 1."""
    monkeypatch.chdir(tmp_path)
    weights = _resnet50_training_files(tmp_path)
    assert cli.main(["surgery", "--solver", "r50_solver.prototxt", "--weights", weights, "--channels",
                     "--c_rate", "0", "--data_shape", "data=1,3,224,224", "--data_shape", "label=1",
                     "--finetune_iter", "1", "--quiet"]) == 0
    report = json.loads((tmp_path / "runs" / "r50_solver" / "report.json").read_text())
    channels = report["channels"]
    layers = channels["layers"]
    assert len(layers) == 53 and "conv1" not in layers and "fc1000" in layers   # conv1 reads the data
    # The gate was open at iteration 0 (p = 1).  Random weights' channel means lie close together (the
    # seed's 0.1 prunes channels in only 29 of the 53 layers); c_rate 0 (a = b = mu) prunes those below
    # the layer's mean everywhere, never all of them.
    assert all(0 < c["kept"] < c["total"] for c in layers.values())
    assert report["settings"]["iter_stop"] == 1 and report["iterations"] == 2
    # Tailored: smaller, the same outputs as the masked net; fine-tuned one step.
    tailored = channels["tailored"]
    assert tailored is not None, "npcaffe.pruning.slim is missing"
    assert max(tailored["output_difference"].values()) <= 1e-5
    assert channels["finetuned_params"] < report["params"]
    assert os.path.isfile(channels["finetuned_model"]) and channels["finetune_iter"] == 1
    slim_net = read_net(tailored["model"])
    widths = {lp.name: lp.convolution_param.num_output for lp in slim_net.layer if lp.type == "Convolution"}
    assert widths["res2a_branch2a"] < 64 or widths["res3a_branch2a"] < 128
