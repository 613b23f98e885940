"""Structured selection (npcaffe.pruning.structured.select, .channels): scores -> kept channels -> masks
on the producers' rows and the consumers' columns, checked entry by entry on a tiny net."""
import numpy as np
import pytest

from npcaffe import masks
from npcaffe.errors import NetError, NpcaffeError
from npcaffe.pruning import select as weight_select
from npcaffe.pruning.structured import channels, select
from pruning_nets import conv, inputs, ip, make_net

# conv1 (4) -> ReLU -> MAX pool 2 -> conv2 (3) -> ip1 (5, reading 3 x 2 x 2) -> ReLU -> ip2 (4) -> loss
NET = (inputs(("data", (2, 2, 8, 8)), ("label", (2,))), conv("conv1", "data", 4, "kernel_size: 3"),
       'layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }',
       'layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" '
       'pooling_param { pool: MAX kernel_size: 2 stride: 2 } }',
       conv("conv2", "pool1", 3, "kernel_size: 2"), ip("ip1", "conv2", 5),
       'layer { name: "relu2" type: "ReLU" bottom: "ip1" top: "ip1" }', ip("ip2", "ip1", 4),
       'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }')


def test_each_scored_layer_stands_for_one_group():
    net = make_net(*NET, classes=4)
    filters = select.channel_groups(net, ["conv1", "conv2"], "filters")
    assert [(g.name, g.channels, g.positions.tolist()) for g in filters.values()] == [
        ("conv1", 4, [0, 1, 2, 3]), ("conv2", 3, [0, 1, 2])]
    assert filters["conv2"].group.consumers == ["ip1"]  # conv2's 3 x 2 x 2 output, 4 columns per channel
    readers = select.channel_groups(net, ["conv2", "ip1"], "input channels")
    assert [g.name for g in readers.values()] == ["conv1", "conv2"]
    assert channels.unit_scores(filters["conv1"], [1.0, 2.0, 3.0, 4.0]).tolist() == [1.0, 2.0, 3.0, 4.0]


def test_blocked_groups_and_classifiers_are_refused_with_the_reason():
    net = make_net(*NET, classes=4)
    with pytest.raises(NetError, match="layer 'ip2': its output channels cannot be pruned: .*loss"):
        select.channel_groups(net, ["ip2"], "filters")
    with pytest.raises(NetError, match="layer 'conv1': the channels it reads cannot be pruned: .*net input"):
        select.channel_groups(net, ["conv1"], "input channels")


def test_kept_channels_lowest_go_ties_by_index_earlier_first():
    assert list(select.kept_channels([3.0, 1.0, 2.0, 1.0], 2)) == [0, 2]
    assert list(select.kept_channels([1.0, 1.0, 1.0], 1)) == [1, 2]
    # channel 0, removed before, goes first although it now scores highest
    assert list(select.kept_channels([9.0, 1.0, 2.0, 3.0], 2, earlier=[0])) == [2, 3]
    assert select.removed_count(0.5, 5, "x") == weight_select.pruned_count(0.5, 5) == 3
    with pytest.raises(NpcaffeError, match="layer 'conv1': removing 0.9 of its 4 channels leaves none"):
        select.removed_count(0.9, 4, "conv1")
    with pytest.raises(NpcaffeError, match="NaN"):
        select.kept_channels([1.0, np.nan], 1)
    assert select.shares_from_counts({"a": 10}, {"a": 20}) == {"a": 0.5}
    with pytest.raises(NpcaffeError, match="layer 'a': keep between 1 and its 20 channels, not 0"):
        select.shares_from_counts({"a": 0}, {"a": 20})


def test_channel_masks_rows_bias_and_columns_entry_by_entry():
    net = make_net(*NET, classes=4)
    groups = channels.scored_groups(net, ["conv1", "conv2"], "filters")
    assert [(g.name, g.channels) for g in groups.values()] == [("conv1", 4), ("conv2", 3)]
    out = channels.channel_masks(net, {"conv1": [0, 2], "conv2": [1]}, groups)
    assert list(out) == ["conv1", "conv2", "ip1"]
    w1, b1 = out["conv1"]
    for i in range(4):
        assert (w1[i] == (i in (0, 2))).all() and b1[i] == (i in (0, 2))
    w2, b2 = out["conv2"]
    for o in range(3):
        assert b2[o] == (o == 1)
        for c in range(4):
            assert (w2[o, c] == (o == 1 and c in (0, 2))).all()
    w3, b3 = out["ip1"]
    assert (b3 == 1).all()
    for j in range(12):  # input j of ip1 is channel j // 4 of conv2
        assert (w3[:, j] == (j // 4 == 1)).all()


def test_masked_channels_no_longer_matter():
    net = make_net(*NET, classes=4)
    step = select.StructuredStep("l1-filter", ["conv1", "conv2"])
    weight_select.set_masks(net, step(net, {"conv1": 0.5, "conv2": 0.34}))
    assert [len(step.kept[n]) for n in ("conv1", "conv2")] == [2, 2]
    before = net.forward_from_to()
    removed = np.setdiff1d(np.arange(4), step.kept["conv1"])
    layer = net.layer_dict["conv1"]
    layer.blobs[0].data[removed] = 5.0  # a pruned filter's stored weights do not reach the output
    masks.apply_masks(layer)
    assert net.forward_from_to() == before
    assert (net.blobs["conv1"].data[:, removed] == 0).all()


def test_structured_step_nests_removed_channels_across_steps():
    net = make_net(*NET, classes=4)
    step = select.StructuredStep("l1-filter", ["conv1"])
    weight_select.set_masks(net, step(net, {"conv1": 0.25}))
    first = set(step.kept["conv1"])
    removed = (set(range(4)) - first).pop()
    # make the removed filter's stored weights the largest: its masked effective weights still score 0
    net.layer_dict["conv1"].blobs[0].data[removed] = 10.0
    weight_select.set_masks(net, step(net, {"conv1": 0.5}))
    assert set(step.kept["conv1"]) < first and len(step.kept["conv1"]) == 2


def test_two_readers_of_one_producer_are_one_group():
    net = make_net(inputs(("data", (2, 2, 5, 5))), conv("a", "data", 3), conv("b", "a", 2), conv("c", "a", 2),
                   ip("ipb", "b", 2), ip("ipc", "c", 2))
    assert select.channel_groups(net, ["a"], "filters")["a"].group.consumers == ["b", "c"]
    out = channels.channel_masks(net, {"b": [1]}, select.channel_groups(net, ["b"], "input channels"))
    assert [(out[n][0][:, [0, 2]] == 0).all() and (out[n][0][:, 1] == 1).all() for n in ("b", "c")] == [True, True]
    with pytest.raises(NetError, match="layers 'b' and 'c' name the same channels \\(group 'a'\\)"):
        select.channel_groups(net, ["b", "c"], "input channels")


def test_a_residual_sum_prunes_both_branches_and_the_reader():
    net = make_net(inputs(("data", (2, 2, 5, 5))), conv("a", "data", 3), conv("b", "data", 3),
                   'layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "sum" }', ip("ip", "sum", 2))
    step = select.StructuredStep("l1-filter", ["a"])
    out = step(net, {"a": 0.34})
    assert list(out) == ["a", "b", "ip"] and len(step.kept["a"]) == 2
    gone = np.setdiff1d(np.arange(3), step.kept["a"])[0]
    for name in ("a", "b"):  # the same channel of both branches goes, row and bias
        weight_mask, bias_mask = out[name]
        assert (weight_mask[gone] == 0).all() and bias_mask[gone] == 0 and weight_mask.sum() == 2 * 2 * 9
    assert (out["ip"][0].reshape(2, 3, 9)[:, gone] == 0).all() and out["ip"][0].sum() == 2 * 2 * 9
