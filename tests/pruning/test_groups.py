"""Channel groups (npcaffe.pruning.groups): which channels go together, and channel masks."""
import numpy as np
import pytest
from google.protobuf import text_format

import npcaffe
from npcaffe import masks as mask_core
from npcaffe.errors import NetError
from npcaffe.proto import caffe_pb2
from npcaffe.pruning.groups import channel_groups, row_col_keep, set_channel_masks

from slim_nets import conv, data, ip, layer, make, relu


def members(group, role):
    """{layer: [(position, unit), ...]} of a group's members in one role."""
    out = {}
    for m in group.members_of(role):
        out.setdefault(m.layer, []).extend(zip(m.positions.tolist(), m.units.tolist()))
    return out


def test_bn_scale_and_relu_in_place_follow_the_producer():
    graph = channel_groups(make("bn_scale"))
    g = graph.group("c1")
    assert g.size == 6 and g.prunable
    assert members(g, "out") == {"c1": [(k, k) for k in range(6)]}
    assert members(g, "param") == {"bn_c1": [(k, k) for k in range(6)], "scale_c1": [(k, k) for k in range(6)]}
    assert members(g, "in") == {"c2": [(k, k) for k in range(6)]}


def test_residual_sum_ties_both_branches():
    g = channel_groups(make("eltwise")).group("c1")
    assert g.producers == ["c1", "c2b"] and set(g.consumers) == {"c2a", "c3"}
    assert members(g, "out")["c2b"] == [(k, k) for k in range(6)]
    assert set(members(g, "param")) == {"bn_c2b", "scale_c2b"}


def test_concat_offsets():
    graph = channel_groups(make("concat"))
    a, b = graph.group("ca"), graph.group("cb")
    assert members(a, "in") == {"c2": [(0, 0), (1, 1), (2, 2), (3, 3)]}
    # cb's channels are the concat's 4..6, and the whole of 'side's input
    assert members(b, "in") == {"c2": [(4, 0), (5, 1), (6, 2)], "side": [(0, 0), (1, 1), (2, 2)]}


def test_slice_offsets():
    g = channel_groups(make("slice")).group("c1")
    assert members(g, "in") == {"ca": [(0, 0), (1, 1), (2, 2)], "cb": [(0, 3), (1, 4), (2, 5), (3, 6)]}


def test_grouped_convolution_ties_position_within_group_and_depthwise_ties_in_to_out():
    graph = channel_groups(make("grouped"))
    c1 = graph.group("c1")
    assert c1.size == 4  # 8 channels into 2 groups of 4: channel j of each group is one unit
    assert members(c1, "out")["c1"] == [(k, k % 4) for k in range(8)]
    g2 = graph.group("g2")
    assert g2.size == 3 and g2.producers == ["g2", "dw"]
    assert members(g2, "in")["dw"] == [(k, k % 3) for k in range(6)]
    assert members(g2, "out")["dw"] == [(k, k % 3) for k in range(6)]
    assert members(g2, "in")["c3"] == [(k, k % 3) for k in range(6)]


def test_depthwise_multiplier_ties_each_input_to_its_outputs():
    g = channel_groups(make("depthwise")).group("c1")
    assert members(g, "in")["dw"] == [(k, k) for k in range(5)]
    assert members(g, "out")["dw"] == [(k, k // 2) for k in range(10)]
    assert members(g, "in")["c3"] == [(k, k // 2) for k in range(10)]


def test_flatten_and_inner_product_on_a_4d_blob():
    g = channel_groups(make("flatten_ip")).group("c1")
    fc = [m for m in g.members_of("in") if m.layer == "fc"][0]
    side = [m for m in g.members_of("in") if m.layer == "side"][0]
    # pool 3x3 -> flattened: 9 consecutive inputs per channel; 'side' reads the 4-D blob in blocks of 9
    assert fc.block == 1 and fc.units.tolist() == np.repeat(np.arange(5), 9).tolist()
    assert side.block == 9 and side.units.tolist() == list(range(5))


def test_prelu_slopes_and_reshape():
    g = channel_groups(make("prelu")).group("c1")
    assert members(g, "param") == {"pr": [(k, k) for k in range(5)]}
    assert members(g, "in")["out"] == [(k, k // 4) for k in range(20)]


def test_two_bottom_scale_ties_the_excitation_to_the_channels():
    g = channel_groups(make("scale2")).group("c1")
    assert g.producers == ["c1", "fc2"] and set(g.consumers) == {"fc1", "c2"}


def build(*layers):
    return npcaffe.Net(text_format.Parse("\n".join(layers), caffe_pb2.NetParameter()), npcaffe.TEST)


def test_blocks_name_the_layer_and_why():
    net = build(data(), conv("c1", "data", 4), layer("norm", "LRN", ["c1"], ["norm"], "lrn_param { local_size: 3 }"),
                conv("c2", "norm", 3), layer("mvn", "MVN", ["c2"], ["mvn"]), ip("out", "mvn", 2))
    graph = channel_groups(net)
    c1, c2 = graph.group("c1"), graph.group("c2")
    assert not c1.prunable and "layer 'norm' (LRN)" in c1.blocked[0] and "across channels" in c1.blocked[0]
    assert not c2.prunable and "layer 'mvn' (MVN)" in c2.blocked[0] and "CHANNEL_RULES" in c2.blocked[0]
    assert "net input" in graph.group("data").blocked[0] and graph.group("data").boundary == graph.group("data").blocked
    assert "output of the net" in graph.group("out").blocked[0] and graph.group("out").boundary
    assert c1.boundary == [] and c2.boundary == []
    with pytest.raises(NetError, match="'c1' is not prunable.*LRN"):
        set_channel_masks(net, c1, np.ones(4, bool))


def test_within_channel_lrn_passes_through():
    net = build(data(), conv("c1", "data", 4),
                layer("norm", "LRN", ["c1"], ["norm"], "lrn_param { local_size: 3 norm_region: WITHIN_CHANNEL }"),
                conv("c2", "norm", 3), ip("out", "c2", 2))
    assert channel_groups(net).group("c1").prunable


def test_channel_masks_zero_rows_columns_and_biases_and_compute_as_zeroed_weights():
    net = make("concat")
    graph = channel_groups(net)
    set_channel_masks(net, graph.group("cb"), [0, 2])      # drops unit 1: cb's channel 1, concat's channel 5
    set_channel_masks(net, graph.group("ca"), np.array([1, 0, 1, 1], bool))
    ca, cb, c2, side = (net.layer_dict[n] for n in ("ca", "cb", "c2", "side"))
    assert mask_core.is_masked(cb) and mask_core.is_masked(c2)
    w, b = mask_core.effective_params(cb)
    assert not w[1].any() and b[1] == 0 and w[[0, 2]].all()
    w2 = mask_core.effective_params(c2)[0]
    assert not w2[:, [1, 5]].any() and w2[:, [0, 2, 3, 4, 6]].all()
    side_w = mask_core.effective_params(side)[0].reshape(2, 3, 36)  # 'side' reads cb's (N, 3, 6, 6) blob
    assert not side_w[:, 1].any() and side_w[:, [0, 2]].all()
    assert not mask_core.effective_params(ca)[0][1].any()
    # calling again for a group replaces its part of the masks only (the weights it zeroed stay zero)
    set_channel_masks(net, graph.group("cb"), [0, 1, 2])
    mask = mask_core.mask_blobs(c2)[0].data
    assert mask[:, 5].all() and not mask[:, 1].any()


def test_channel_masks_keep_a_layers_earlier_mask():
    net = make("bn_scale")
    c2 = net.layer_dict["c2"]
    mask_core.attach_masks(c2, np.ones(c2.blobs[0].shape) * (np.arange(5) != 0)[:, None, None, None])
    set_channel_masks(net, "c1", np.arange(6) != 3)
    mask = mask_core.mask_blobs(c2)[0].data
    assert not mask[0].any() and not mask[:, 3].any() and mask[1:, [0, 1, 2, 4, 5]].all()


def test_row_col_keep_of_a_grouped_convolution():
    net = make("grouped")
    g2 = net.layer_dict["g2"]  # 8 inputs, 6 outputs, 2 groups: weight (6, 4, 1, 1)
    in_keep = np.array([1, 1, 0, 1, 1, 0, 1, 1], bool)
    grid = row_col_keep(g2, np.ones(6, bool), in_keep)[:, :, 0, 0]
    assert grid[:3].tolist() == [[1, 1, 0, 1]] * 3 and grid[3:].tolist() == [[1, 0, 1, 1]] * 3


def test_masks_on_a_dns_layer_go_to_its_mask_blobs():
    from pruning_nets import DNS_NET, make_net
    net = make_net(*DNS_NET, classes=4)
    graph = channel_groups(net)
    set_channel_masks(net, graph.group("conv"), [0, 2])
    weight_mask, bias_mask = mask_core.mask_blobs(net.layer_dict["conv"])
    assert not weight_mask.data[1].any() and bias_mask.data.tolist() == [1, 0, 1]
    ip_mask = mask_core.mask_blobs(net.layer_dict["ip"])[0].data
    per_channel = ip_mask.reshape(4, 3, -1)
    assert not per_channel[:, 1].any() and per_channel[:, [0, 2]].all()


def test_a_single_input_channel_is_not_mistaken_for_depthwise():
    net = build(data((2, 1, 6, 6)), conv("c1", "data", 4), ip("out", "c1", 2))
    g = channel_groups(net).group("c1")
    assert g.prunable and g.size == 4 and g.producers == ["c1"]


def test_resnet50_groups():
    import os
    path = os.path.join(os.path.dirname(__file__), "..", "..", "prototxt", "resnet50", "ResNet-50-deploy.prototxt")
    graph = channel_groups(npcaffe.Net(path, npcaffe.TEST))
    stage2 = graph.group("res2a_branch1")  # the residual stream of stage 2: four producers, one group
    assert stage2.size == 256 and stage2.producers == ["res2a_branch1", "res2a_branch2c", "res2b_branch2c",
                                                       "res2c_branch2c"]
    assert len(graph.prunable()) == 1 + 16 * 2 + 4  # conv1, two inner convs per block, four residual streams
    assert "fc1000" in graph.group("res5a_branch1").consumers


def test_layers_sharing_parameters_block_their_channels():
    shared = 'param { name: "w" } param { name: "b" } convolution_param'
    net = build(data(), conv("c1", "data", 4),
                conv("c2", "c1", 4, "kernel_size: 1").replace("convolution_param", shared),
                conv("c3", "c1", 4, "kernel_size: 1").replace("convolution_param", shared),
                layer("sum", "Eltwise", ["c2", "c3"], ["sum"]), ip("out", "sum", 2))
    c1 = channel_groups(net).group("c1")
    assert not c1.prunable and "layer 'c3' (Convolution) shares parameters with layer 'c2'" in c1.blocked
