"""npcaffe slim (npcaffe.pruning.slim): the slim net computes what the masked net computed, with the
parameters and multiply-adds the plan predicts, in BVLC layer types; and it refuses what it cannot do."""
import os

import numpy as np
import pytest
from google.protobuf import text_format

import npcaffe
from npcaffe import masks as mask_core
from npcaffe.fileio.caffemodel import read_caffemodel, write_caffemodel
from npcaffe.fileio.prototxt import read_net, write_text
from npcaffe.proto import caffe_pb2
from npcaffe.pruning import slim
from npcaffe.pruning.groups import channel_groups, set_channel_masks

from slim_nets import NETS, conv, data, ip, layer, make, net_param, relu

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def mask_half(net, seed=1):
    """Channel masks keeping a random ~half of every prunable group's units (at least one)."""
    rng = np.random.default_rng(seed)
    for g in channel_groups(net).prunable():
        keep = rng.random(g.size) < 0.5
        keep[rng.integers(g.size)] = True
        set_channel_masks(net, g, keep)


def zero_filters(net, seed=1):
    """Zero the weights (not the biases) of a random ~half of every prunable group's producing filters:
    the units then carry constants (bias, BatchNorm / Scale shift) that slimming folds."""
    rng = np.random.default_rng(seed)
    for g in channel_groups(net).prunable():
        gone = rng.random(g.size) < 0.5
        for m in g.members_of("out"):
            rows = m.positions[gone[m.units]]
            weight = net.layer_dict[m.layer].blobs[0].data
            if m.type == "Deconvolution":
                weight[:, rows] = 0
            else:
                weight[rows] = 0


def outputs(net):
    net.forward()
    return {name: net.blobs[name].data.astype(np.float64).copy() for name in net.outputs}


def assert_same_outputs(expected, actual):
    assert set(expected) == set(actual)
    for name, a in expected.items():
        b = actual[name]
        assert a.shape == b.shape, name
        assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max(), name


def slim_through_files(net, param, tmp_path, keep_unremovable=False):
    """Slim, write the prototxt and caffemodel, and load them fresh into a plain TEST net."""
    result = slim.slim_net(net, param, keep_unremovable)
    write_text(result["param"], tmp_path / "slim.prototxt")
    write_caffemodel(slim._weights_param(result["net"]), tmp_path / "slim.caffemodel")
    fresh = npcaffe.Net(str(tmp_path / "slim.prototxt"), npcaffe.TEST, weights=str(tmp_path / "slim.caffemodel"))
    for name in fresh.inputs:
        fresh.blobs[name].data[...] = net.blobs[name].data
    return result, fresh


def check_counts(result, fresh):
    after = slim.count_rows(fresh)
    assert after == result["after"]
    assert {n: (p, m) for n, (_, p, m) in after.items()} == dict(result["predicted"])


@pytest.mark.parametrize("name", sorted(set(NETS) - {"deconv"}))  # Deconvolution takes no masks (masks.py)
def test_slim_of_channel_masks_equals_the_masked_net(name, tmp_path):
    net = make(name)
    mask_half(net)
    expected = outputs(net)
    result, fresh = slim_through_files(net, net_param(name), tmp_path)
    assert result["removed"]
    assert_same_outputs(expected, outputs(fresh))
    check_counts(result, fresh)
    before, after = result["before"], result["after"]
    assert sum(v[1] for v in after.values()) < sum(v[1] for v in before.values())


@pytest.mark.parametrize("name", sorted(NETS))
def test_slim_of_zeroed_filters_folds_their_constants(name, tmp_path):
    net = make(name, seed=3)
    zero_filters(net, seed=3)
    expected = outputs(net)
    result, fresh = slim_through_files(net, net_param(name), tmp_path, keep_unremovable=True)
    assert result["removed"]
    assert_same_outputs(expected, outputs(fresh))
    check_counts(result, fresh)


def test_channel_masks_refuse_a_deconvolution_member():
    net = make("deconv")
    with pytest.raises(npcaffe.errors.NetError, match=r"layer 'up' \(Deconvolution\) of channel group 'c1' cannot"):
        set_channel_masks(net, channel_groups(net).group("c1"), [0, 1])


def test_bn_scale_counts_by_hand(tmp_path):
    net = make("bn_scale")
    graph = channel_groups(net)
    set_channel_masks(net, graph.group("c1"), [0, 2, 5])      # c1: 6 -> 3 filters
    set_channel_masks(net, graph.group("c2"), [1, 2, 3, 4])   # c2: 5 -> 4 filters
    expected = outputs(net)
    result, fresh = slim_through_files(net, net_param("bn_scale"), tmp_path)
    assert_same_outputs(expected, outputs(fresh))
    # c1: 3 x 3 x 3 x 3 + 3 on a 6x6 output; c2: 4 x 3 + 4 on 6x6; out reads 4 channels of 3x3: 4 x 36 + 4
    assert result["after"] == {"c1": ("Convolution", 84, 81 * 36), "c2": ("Convolution", 16, 12 * 36),
                               "out": ("InnerProduct", 148, 144)}
    bn = fresh.layer_dict["bn_c1"]
    assert bn.blobs[0].shape == (3,)
    np.testing.assert_array_equal(bn.blobs[0].data, net.layer_dict["bn_c1"].blobs[0].data[[0, 2, 5]])


def test_slice_points_follow_the_kept_channels(tmp_path):
    net = make("slice")
    set_channel_masks(net, channel_groups(net).group("c1"), [0, 3, 4, 6])  # 3 + 4 -> 1 + 3
    result, _ = slim_through_files(net, net_param("slice"), tmp_path)
    sl = [lp for lp in result["param"].layer if lp.name == "sl"][0]
    assert list(sl.slice_param.slice_point) == [1]


def test_a_slice_top_keeps_one_channel(tmp_path):
    net = make("slice")
    set_channel_masks(net, channel_groups(net).group("c1"), [3, 4, 6])  # none of the first top's 3 channels
    expected = outputs(net)
    result, fresh = slim_through_files(net, net_param("slice"), tmp_path)
    sl = [lp for lp in result["param"].layer if lp.name == "sl"][0]
    assert list(sl.slice_param.slice_point) == [1] and result["removed"]["c1"] == (3, 7)
    assert_same_outputs(expected, outputs(fresh))


def test_depthwise_group_shrinks_with_its_channels(tmp_path):
    net = make("grouped")
    set_channel_masks(net, channel_groups(net).group("g2"), [0, 2])  # 3 units of 2 channels -> 2 units
    result, fresh = slim_through_files(net, net_param("grouped"), tmp_path)
    dw = [lp for lp in result["param"].layer if lp.name == "dw"][0]
    assert dw.convolution_param.num_output == 4 and dw.convolution_param.group == 4
    g2 = [lp for lp in result["param"].layer if lp.name == "g2"][0]
    assert g2.convolution_param.num_output == 4 and g2.convolution_param.group == 2


def build_param(*layers):
    return text_format.Parse("\n".join(layers), caffe_pb2.NetParameter())


def refused(param, zero_layer, rows):
    npcaffe.set_random_seed(0)
    net = npcaffe.Net(param, npcaffe.TEST)
    from slim_nets import randomize
    randomize(net)
    net.layer_dict[zero_layer].blobs[0].data[rows] = 0
    with pytest.raises(slim.SlimError) as info:
        slim.slim_net(net, param)
    return str(info.value)


def test_refuses_a_pruned_channel_read_by_lrn_across_channels():
    param = build_param(data(), conv("c1", "data", 4), layer("norm", "LRN", ["c1"], ["norm"],
                                                            "lrn_param { local_size: 3 }"), ip("out", "norm", 2))
    message = refused(param, "c1", [1])
    assert "group 'c1' unit 1" in message and "layer 'norm' (LRN)" in message and "across channels" in message


def test_refuses_a_pruned_channel_read_by_an_unknown_layer():
    param = build_param(data(), conv("c1", "data", 4), layer("mvn", "MVN", ["c1"], ["mvn"]), ip("out", "mvn", 2))
    message = refused(param, "c1", [2])
    assert "layer 'mvn' (MVN)" in message and "--keep_unremovable" in message


def test_refuses_a_constant_read_by_a_padded_convolution_and_keeps_it_on_request():
    param = build_param(data(), conv("c1", "data", 4), relu("r1", "c1"), conv("c2", "c1", 3), ip("out", "c2", 2))
    npcaffe.set_random_seed(0)
    net = npcaffe.Net(param, npcaffe.TEST)
    from slim_nets import randomize
    randomize(net)
    net.layer_dict["c1"].blobs[0].data[[0, 1]] = 0
    net.layer_dict["c1"].blobs[1].data[[0, 1]] = [0.5, -0.5]  # ReLU: 0.5 stays, -0.5 becomes 0
    with pytest.raises(slim.SlimError, match=r"unit 0 .*layer 'c2' \(Convolution\).*constant 0\.5.*pads by"):
        slim.slim_net(net, param)
    expected = outputs(net)
    result = slim.slim_net(net, param, keep_unremovable=True)
    assert result["removed"] == {"c1": (1, 4)}  # unit 1 is a constant 0, which the padding reads alike
    assert_same_outputs(expected, outputs(result["net"]))
    assert "kept 1 pruned channel" in result["notes"][0]


def test_padded_average_pooling_makes_a_constant_fixed_but_not_uniform():
    """Caffe divides a padded window by its size with the padding, so a constant channel comes out
    smaller at the border: an InnerProduct still folds it (column by column), a convolution cannot."""
    from slim_nets import pool, randomize
    body = [data(), conv("c1", "data", 4), relu("r1", "c1"), pool("p1", "c1", "AVE", "kernel_size: 3 stride: 2 pad: 1")]
    for consumer, folds in ((ip("out", "p1", 3), True), (conv("c2", "p1", 3, "kernel_size: 1"), False)):
        param = build_param(*body, consumer, *([] if folds else [ip("out", "c2", 2)]))
        npcaffe.set_random_seed(0)
        net = randomize(npcaffe.Net(param, npcaffe.TEST))
        net.layer_dict["c1"].blobs[0].data[2] = 0
        net.layer_dict["c1"].blobs[1].data[2] = 0.7
        if folds:
            expected = outputs(net)
            result = slim.slim_net(net, param)
            assert result["removed"] == {"c1": (1, 4)}
            assert_same_outputs(expected, outputs(result["net"]))
        else:
            with pytest.raises(slim.SlimError, match="unit 2 .*'c2'.*input-independent but not constant"):
                slim.slim_net(net, param)


def test_dns_four_blob_snapshot_becomes_plain_layers(tmp_path):
    from pruning_nets import DNS_NET, make_net
    dns = make_net(*DNS_NET, classes=4)
    set_channel_masks(dns, channel_groups(dns).group("conv"), [0, 2])
    model = tmp_path / "dns.prototxt"
    model.write_text("\n".join(DNS_NET))
    dns.save(str(tmp_path / "dns.caffemodel"))
    assert len(read_caffemodel(str(tmp_path / "dns.caffemodel")).layer[1].blobs) == 4
    out_model, out_weights = tmp_path / "slim.prototxt", tmp_path / "slim.caffemodel"
    result = slim.run(str(model), str(tmp_path / "dns.caffemodel"), str(out_model), str(out_weights))
    types = [lp.type for lp in read_net(str(out_model)).layer]
    assert types == ["Input", "Convolution", "ReLU", "Pooling", "InnerProduct", "SoftmaxWithLoss"]
    assert all(t in slim.BVLC_TYPES for t in types)
    stored = {lp.name: [tuple(b.shape.dim) for b in lp.blobs] for lp in read_caffemodel(str(out_weights)).layer}
    assert stored["conv"] == [(2, 2, 3, 3), (2,)] and stored["ip"] == [(4, 2 * 2 * 2), (4,)]
    assert result["differences"]["loss"] <= 1e-5
    assert (tmp_path / "slim.report.txt").exists() and (tmp_path / "slim.report.json").exists()


def test_cli_slim_writes_a_net_bvlc_layers_load(tmp_path, capsys):
    from npcaffe.cli import main
    net = make("concat")
    mask_half(net)
    write_text(net_param("concat"), tmp_path / "m.prototxt")
    write_caffemodel(mask_core.plain_model(net), tmp_path / "w.caffemodel")
    code = main(["slim", "--model", str(tmp_path / "m.prototxt"), "--weights", str(tmp_path / "w.caffemodel"),
                 "--out-model", str(tmp_path / "s.prototxt"), "--out_weights", str(tmp_path / "s.caffemodel")])
    assert code == 0
    text = capsys.readouterr().out
    assert "the slim net's counts are the predicted ones" in text and "channels removed: ca" in text
    expected = outputs(net)
    fresh = npcaffe.Net(str(tmp_path / "s.prototxt"), npcaffe.TEST, weights=str(tmp_path / "s.caffemodel"))
    fresh.blobs["data"].data[...] = net.blobs["data"].data
    assert_same_outputs(expected, outputs(fresh))


def test_a_batch_1_net_is_checked_on_two_samples_and_written_as_batch_1(tmp_path, monkeypatch):
    text = "\n".join(NETS["bn_scale"]).replace("dim: 2 dim: 3 dim: 6 dim: 6", "dim: 1 dim: 3 dim: 6 dim: 6")
    (tmp_path / "m.prototxt").write_text(text)
    net = npcaffe.Net(str(tmp_path / "m.prototxt"), npcaffe.TEST)
    from slim_nets import randomize
    randomize(net)
    set_channel_masks(net, channel_groups(net).group("c1"), [1, 3])
    write_caffemodel(mask_core.plain_model(net), tmp_path / "w.caffemodel")
    batches = []
    real_plan = slim.plan
    monkeypatch.setattr(slim, "plan", lambda n, *a, **k: batches.append(n.blobs["data"].shape[0]) or real_plan(n, *a, **k))
    result = slim.run(str(tmp_path / "m.prototxt"), str(tmp_path / "w.caffemodel"), str(tmp_path / "s.prototxt"),
                      str(tmp_path / "s.caffemodel"))
    assert batches == [2] and result["removed"]["c1"] == (4, 6)
    written = read_net(str(tmp_path / "s.prototxt"))
    assert list(written.layer[0].input_param.shape[0].dim) == [1, 3, 6, 6]


def test_cli_slim_asks_for_data_shapes_of_a_dataset_net(tmp_path, capsys):
    from npcaffe.cli import main
    model = os.path.join(ROOT, "prototxt", "lenet5", "lenet5_train_test.prototxt")
    weights = os.path.join(ROOT, "..", "shared", "upstream-dns", "caffe_lenet5_sparse.caffemodel")
    if not os.path.exists(weights):
        pytest.skip("../shared/upstream-dns is not here")
    code = main(["slim", "--model", model, "--weights", weights, "--out_model", str(tmp_path / "s.prototxt"),
                 "--out_weights", str(tmp_path / "s.caffemodel")])
    assert code == 1 and "--data_shape" in capsys.readouterr().err


# -- the big nets (slow) -------------------------------------------------------------------
def randomize_deep(net, seed=0):
    """He-scaled convolution and InnerProduct weights, BatchNorm statistics near (0, 1), Scale near (1, 0):
    a deep net's activations stay of order one."""
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        if not layer.blobs:
            continue
        if layer.type == "BatchNorm":
            c = layer.blobs[0].shape[0]
            layer.blobs[0].data[...] = rng.normal(0, 0.1, c)
            layer.blobs[1].data[...] = rng.uniform(0.5, 1.5, c)
            layer.blobs[2].data[...] = 1
        elif layer.type in ("Scale", "Bias", "PReLU"):
            for j, blob in enumerate(layer.blobs):
                blob.data[...] = rng.uniform(0.5, 1.0, blob.shape) if j == 0 and layer.type != "Bias" \
                    else rng.normal(0, 0.1, blob.shape)
        else:
            weight = layer.blobs[0]
            fan_in = weight.count // weight.shape[0]
            weight.data[...] = rng.normal(0, np.sqrt(2.0 / fan_in), weight.shape)
            for blob in layer.blobs[1:]:
                blob.data[...] = rng.normal(0, 0.1, blob.shape)
    for name in net.inputs:
        net.blobs[name].data[...] = rng.normal(size=net.blobs[name].shape)


def slim_big(path, tmp_path):
    param = read_net(path)
    net = npcaffe.Net(param, npcaffe.TEST)
    randomize_deep(net)
    mask_half(net)
    expected = outputs(net)
    result, fresh = slim_through_files(net, param, tmp_path)
    assert_same_outputs(expected, outputs(fresh))
    check_counts(result, fresh)
    before = sum(v[2] for v in result["before"].values())
    after = sum(v[2] for v in result["after"].values())
    assert after < 0.5 * before
    return result


@pytest.mark.slow
def test_slim_resnet50(tmp_path):
    result = slim_big(os.path.join(ROOT, "prototxt", "resnet50", "ResNet-50-deploy.prototxt"), tmp_path)
    assert len(result["removed"]) == 37  # every prunable group lost units


@pytest.mark.slow
@pytest.mark.parametrize("relative", ["resnet50/ResNet-50-deploy.prototxt", "mobilenet_v2/mobilenet_v2_deploy.prototxt"])
def test_slim_folds_batchnorm_shifts_of_zeroed_filters_in_deep_nets(relative, tmp_path):
    """Only the producing filters zeroed (their BatchNorm / Scale shifts stay): the residual streams' and
    the 1x1 convolutions' inputs fold into biases; what a padded 3x3 convolution reads is kept."""
    path = os.path.join(ROOT, "prototxt", relative)
    if not os.path.exists(path):
        pytest.skip(f"prototxt/{relative} is not here")
    param = read_net(path)
    net = npcaffe.Net(param, npcaffe.TEST)
    randomize_deep(net)
    zero_filters(net)
    expected = outputs(net)
    result, fresh = slim_through_files(net, param, tmp_path, keep_unremovable=True)
    assert_same_outputs(expected, outputs(fresh))
    check_counts(result, fresh)
    assert sum(v[2] for v in result["after"].values()) < 0.6 * sum(v[2] for v in result["before"].values())
    if relative.startswith("resnet50"):  # its convolutions have no bias; a fold gives the consumer one
        before = [lp for lp in param.layer if lp.name == "res2b_branch2a"][0]
        after = [lp for lp in result["param"].layer if lp.name == "res2b_branch2a"][0]
        assert not before.convolution_param.bias_term and after.convolution_param.bias_term


EFFICIENT = ["mobilenet_v2/mobilenet_v2_deploy.prototxt", "se_resnet50/SE-ResNet-50-deploy.prototxt",
             "mobilenet_v1/mobilenet_v1_depthwise_deploy.prototxt", "shufflenet_v2/shufflenet_v2_1x_deploy.prototxt",
             "squeezenet_v1_1/squeezenet_v1_1_deploy.prototxt", "densenet121/DenseNet-121-deploy.prototxt",
             "se_resnext50/SE-ResNeXt-50-deploy.prototxt"]


@pytest.mark.slow
@pytest.mark.parametrize("relative", EFFICIENT)
def test_slim_efficient_architectures(relative, tmp_path):
    path = os.path.join(ROOT, "prototxt", relative)
    if not os.path.exists(path):
        pytest.skip(f"prototxt/{relative} is not here")
    slim_big(path, tmp_path)


@pytest.mark.slow
def test_shufflenet_v1_bottlenecks_are_one_unit_but_the_stream_slims(tmp_path):
    """Grouped 1x1 convolutions on both sides of a ShuffleChannel tie every bottleneck channel together
    (each group must keep as many channels as the others), so only the concatenated stream is prunable."""
    path = os.path.join(ROOT, "prototxt", "shufflenet_v1", "shufflenet_v1_g3_deploy.prototxt")
    if not os.path.exists(path):
        pytest.skip("prototxt/shufflenet_v1 is not here")
    param = read_net(path)
    graph = channel_groups(npcaffe.Net(param, npcaffe.TEST))
    assert graph.group("resx2_conv1").size == 1 and graph.group("conv1").prunable
    param = read_net(path)
    net = npcaffe.Net(param, npcaffe.TEST)
    randomize_deep(net)
    mask_half(net)
    expected = outputs(net)
    result, fresh = slim_through_files(net, param, tmp_path)
    assert_same_outputs(expected, outputs(fresh))
    check_counts(result, fresh)
