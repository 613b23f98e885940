"""Network slimming and SSL as structured methods (npcaffe.pruning.structured.slimming / ssl): |γ| of
the Scale after BatchNorm, the global threshold against a brute-force sort, SSL's filter x column
norms against loops over the weights, and both through the registry's StructuredStep."""
import numpy as np
import pytest

from npcaffe.errors import NetError
from npcaffe.pruning import structured
from npcaffe.pruning.structured import slimming, ssl
from npcaffe.pruning.structured.select import StructuredStep
from pruning_nets import CONV_NET, conv, inputs, ip, make_net


def _bn(name, bottom):
    return (f'layer {{ name: "{name}_bn" type: "BatchNorm" bottom: "{bottom}" top: "{bottom}" }}',
            f'layer {{ name: "{name}_scale" type: "Scale" bottom: "{bottom}" top: "{bottom}" '
            'scale_param { bias_term: true } }')


# conv1 (4) -> BN -> Scale -> ReLU -> conv2 (5) -> BN -> Scale -> ip (reads conv2's 5 x 2 x 2)
BN_NET = (inputs(("data", (3, 2, 6, 6))), conv("conv1", "data", 4), *_bn("conv1", "conv1"),
          'layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }',
          conv("conv2", "conv1", 5), *_bn("conv2", "conv2"), ip("ip", "conv2", 3))
GAMMA1 = [0.5, -0.01, 2.0, 0.3]
GAMMA2 = [0.02, -1.5, 0.25, 0.001, 0.4]


def _bn_net():
    net = make_net(*BN_NET)
    net.layer_dict["conv1_scale"].blobs[0].data[...] = GAMMA1
    net.layer_dict["conv2_scale"].blobs[0].data[...] = GAMMA2
    return net


def test_slimming_scores_are_the_scales_gammas():
    got = structured.scores("slimming", _bn_net(), layers=["conv1", "conv2"])
    np.testing.assert_allclose(got["conv1"], np.abs(GAMMA1), rtol=1e-6)
    np.testing.assert_allclose(got["conv2"], np.abs(GAMMA2), rtol=1e-6)
    with pytest.raises(NetError, match="no Scale after a BatchNorm"):
        structured.scores("slimming", make_net(*CONV_NET, classes=4), layers=["conv"])


def test_global_threshold_is_a_sort_of_all_gammas():
    values = {"a": np.abs(GAMMA1), "b": np.abs(GAMMA2)}
    for total in range(0, 8):
        kept = slimming.global_keep(values, {"a": total, "b": 0})
        everything = sorted((v, name, c) for name in values for c, v in enumerate(values[name]))
        expected = {name: sorted(set(range(len(values[name]))) - {c for _, n, c in everything[:total] if n == name})
                    for name in values}
        assert {name: list(k) for name, k in kept.items()} == expected
    # one channel of each layer stays, whatever the threshold; earlier removals go first
    kept = slimming.global_keep(values, {"a": 4, "b": 5})
    assert [len(k) for k in kept.values()] == [1, 1]
    kept = slimming.global_keep(values, {"a": 1, "b": 0}, earlier={"a": [2]})
    assert list(kept["a"]) == [0, 1, 3] and list(kept["b"]) == list(range(5))


def test_slimming_through_the_structured_step():
    net = _bn_net()
    step = StructuredStep("slimming", ["conv1", "conv2"])
    masks = step(net, {"conv1": 0.5, "conv2": 0.4})      # 2 + 2 channels, the four smallest |gamma|
    # the four smallest |gamma| of both layers: conv2's 0.001, conv1's 0.01, conv2's 0.02 and 0.25
    assert list(step.kept["conv1"]) == [0, 2, 3] and list(step.kept["conv2"]) == [1, 4]
    assert not masks["conv1"][0][1].any() and not masks["conv2"][0][:, 1].any()
    assert not masks["conv2"][0][[0, 2, 3]].any() and masks["conv2"][0][[1, 4]][:, [0, 2, 3]].all()
    ip_mask = masks["ip"][0]
    assert not ip_mask[:, 0:4].any() and not ip_mask[:, 8:16].any() and ip_mask[:, 4:8].all() and ip_mask[:, 16:].all()
    per_layer = StructuredStep("slimming", ["conv1", "conv2"], options={"global": "false"})
    per_layer(_bn_net(), {"conv1": 0.5, "conv2": 0.4})
    assert list(per_layer.kept["conv1"]) == [0, 2] and list(per_layer.kept["conv2"]) == [1, 2, 4]


# conv1 (3) -> ReLU -> conv2 (4, reads conv1) -> ip (reads conv2's 4 x 2 x 2)
SSL_NET = (inputs(("data", (2, 2, 6, 6))), conv("conv1", "data", 3),
           'layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }', conv("conv2", "conv1", 4),
           ip("ip", "conv2", 3))


def test_ssl_scores_are_filter_norm_times_column_norm():
    net = make_net(*SSL_NET)
    net.layer_dict["conv1"].blobs[0].data[1] = 0            # a filter group at zero
    net.layer_dict["conv1"].blobs[1].data[1] = 0
    got = ssl.scores(net, ["conv1", "conv2"])
    layers = net.layer_dict
    for producer, consumer, block in (("conv1", "conv2", 1), ("conv2", "ip", 4)):
        w, b = layers[producer].blobs[0].data.astype(float), layers[producer].blobs[1].data.astype(float)
        v = layers[consumer].blobs[0].data.astype(float)
        for c in range(w.shape[0]):
            row = sum(x * x for x in w[c].ravel()) + b[c] ** 2
            column = sum(v[o, c * block + j] ** 2 if consumer == "ip" else float((v[o, c] ** 2).sum())
                         for o in range(v.shape[0]) for j in range(block if consumer == "ip" else 1))
            assert got[producer][c] == pytest.approx(np.sqrt(row) * np.sqrt(column), rel=1e-6)
    assert got["conv1"][1] == 0
    step = StructuredStep("ssl", ["conv1"])
    step(net, {"conv1": 1 / 3})
    assert list(step.kept["conv1"]) == [0, 2]
