"""Scores to masks (npcaffe.pruning.select) for every criterion of the registry
(npcaffe.pruning.criteria), and masks onto plain and DNS layers."""
import numpy as np
import pytest

from npcaffe import masks
from npcaffe.errors import NetError, NpcaffeError
from npcaffe.pruning import criteria, select
from npcaffe.pruning.criteria import common
from pruning_nets import CONV_NET, DNS_NET, make_net


@pytest.mark.parametrize("name", sorted(criteria.CRITERIA))
@pytest.mark.parametrize("bias", [False, True])
def test_each_criterion_prunes_exactly_the_target_count(name, bias):
    net = make_net(*CONV_NET, classes=4)
    scores = criteria.scores(name, net, bias=bias)
    assert list(scores) == ["conv", "ip"]

    def zeros(value):
        parts = value if isinstance(value, tuple) else (value,)
        return sum(int(np.count_nonzero(p == 0)) for p in parts if p is not None)

    def size(value):
        parts = value if isinstance(value, tuple) else (value,)
        return sum(p.size for p in parts if p is not None)

    for sparsity in (0.0, 0.3, 0.75, 1.0):
        per_layer = select.layer_masks(scores, sparsity)
        for layer, mask in per_layer.items():
            assert zeros(mask) == select.pruned_count(sparsity, size(scores[layer]))
        together = select.global_masks(scores, sparsity)
        total = sum(size(v) for v in scores.values())
        assert sum(zeros(m) for m in together.values()) == select.pruned_count(sparsity, total)
    per_layer = select.layer_masks(scores, {"conv": 0.5})
    assert zeros(per_layer["ip"]) == 0 and zeros(per_layer["conv"]) == select.pruned_count(0.5, size(scores["conv"]))
    # the lowest scores are the ones pruned (weights and biases ranked together)
    mask = select.layer_masks(scores, 0.5)["ip"]
    pairs = zip(scores["ip"], mask) if bias else [(scores["ip"], mask)]
    values = [(v[m == 1], v[m == 0]) for v, m in pairs]
    assert max(p.max() for _, p in values) <= min(k.min() for k, _ in values)


def test_ties_go_by_position_and_rounding_is_half_up():
    scores = {"a": np.zeros((2, 3)), "b": (np.zeros(2), np.zeros(2))}
    assert select.pruned_count(0.5, 5) == 3 and select.pruned_count(0.25, 2) == 1
    assert select.pruned_count(0.9, 100) == 90
    layer = select.layer_masks(scores, 0.5)
    np.testing.assert_array_equal(layer["a"], [[0, 0, 0], [1, 1, 1]])
    np.testing.assert_array_equal(layer["b"][0], [0, 0])
    np.testing.assert_array_equal(layer["b"][1], [1, 1])
    together = select.global_masks(scores, 0.6)  # 6 of the 10 entries: all of a, which comes first
    np.testing.assert_array_equal(together["a"], np.zeros((2, 3)))
    assert together["b"][0].tolist() == [1, 1] and together["b"][1].tolist() == [1, 1]
    assert select.pruned_share(together) == {"a": 1.0, "b": 0.0}
    with pytest.raises(NpcaffeError, match="sparsity"):
        select.layer_masks(scores, 1.5)
    with pytest.raises(NpcaffeError, match="NaN"):
        select.layer_masks({"a": np.array([1.0, np.nan])}, 0.5)


def test_thresholds_keep_what_is_above():
    scores = {"a": np.array([0.1, 0.5, 0.9]), "b": np.array([1.0, 2.0])}
    out = select.threshold_masks(scores, {"a": 0.5, "b": 1.5})
    assert out["a"].tolist() == [0, 0, 1] and out["b"].tolist() == [0, 1]
    assert select.threshold_masks(scores, 0.2)["a"].tolist() == [0, 1, 1]


def test_set_masks_attaches_to_plain_layers_and_writes_dns_masks():
    net = make_net(*DNS_NET, classes=4)
    plain = make_net(*CONV_NET, classes=4)
    for target in (net, plain):
        scores = criteria.scores("magnitude", target)
        layer_masks = select.layer_masks(scores, 0.6)
        stored = {n: target.layer_dict[n].blobs[0].data.copy() for n in layer_masks}
        select.set_masks(target, layer_masks)
        for name, mask in layer_masks.items():
            layer = target.layer_dict[name]
            assert masks.is_masked(layer)
            np.testing.assert_array_equal(masks.mask_blobs(layer)[0].data, mask)
            effective, _ = masks.effective_params(layer)
            np.testing.assert_array_equal(effective, stored[name] * mask)
            if target is net:  # DNS keeps its pruned weights (they may be spliced back)
                np.testing.assert_array_equal(layer.blobs[0].data, stored[name])
            else:              # attached masks zero them
                assert np.all(layer.blobs[0].data[mask == 0] == 0)
    with pytest.raises(NetError, match="no layer 'nope'"):
        select.set_masks(plain, {"nope": np.ones(3)})


def test_registry_and_layer_choice():
    net = make_net(*CONV_NET, classes=4)
    known = ", ".join(sorted(criteria.CRITERIA))
    with pytest.raises(NpcaffeError, match=f"unknown pruning criterion 'obs'; known: {known}"):
        criteria.scores("obs", net)
    with pytest.raises(NetError, match="'relu' \\(ReLU\\) has no weights"):
        criteria.scores("magnitude", net, layers=["relu"])
    with pytest.raises(NetError, match="no layer 'ip9'"):
        criteria.scores("magnitude", net, layers=["ip9"])
    assert list(criteria.scores("magnitude", net, layers=["ip", "conv"])) == ["conv", "ip"]
    with pytest.raises(NpcaffeError, match="'conv' is not an input.*Input blobs: data, label"):
        list(common.forward_batches(net, {"conv": np.zeros((3, 3, 3, 3))}))
    with pytest.raises(NpcaffeError, match="empty"):
        list(common.forward_batches(net, []))
