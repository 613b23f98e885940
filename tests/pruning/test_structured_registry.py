"""The structured methods' registry (npcaffe.pruning.structured) and the criteria without data:
L1-norm of filters and matrix (neuron) pruning, against loops over the weights."""
import numpy as np
import pytest

from npcaffe import masks
from npcaffe.errors import NetError, NpcaffeError
from npcaffe.pruning import structured
from pruning_nets import CONV_NET, make_net


def test_registry_knows_what_each_method_ranks():
    assert structured.method("l1-filter").ranks == structured.FILTERS
    assert structured.method("neurons").ranks == structured.NEURONS
    assert structured.method("neurons").layer_types == ("InnerProduct",)
    assert structured.is_structured("l1-filter") and not structured.is_structured("magnitude")
    with pytest.raises(NpcaffeError, match="unknown structured pruning method 'l2-filter'.*l1-filter"):
        structured.method("l2-filter")
    with pytest.raises(NpcaffeError, match="registered twice"):
        structured.register("l1-filter", lambda net, layers=None, batches=None: {}, structured.FILTERS, "again")
    with pytest.raises(NpcaffeError, match="ranks must be one of"):
        structured.register("rows", lambda net, layers=None, batches=None: {}, "rows", "nowhere")


def test_l1_filter_sums_each_filters_absolute_weights():
    net = make_net(*CONV_NET, classes=4)
    got = structured.scores("l1-filter", net)
    assert list(got) == ["conv", "ip"]
    for name in ("conv", "ip"):
        weight = net.layer_dict[name].blobs[0].data
        expected = np.zeros(weight.shape[0])
        for i in range(weight.shape[0]):
            for index in np.ndindex(weight.shape[1:]):
                expected[i] += abs(float(weight[(i,) + index]))
        np.testing.assert_allclose(got[name], expected, rtol=1e-12)


def test_l1_filter_rates_the_masked_weights():
    net = make_net(*CONV_NET, classes=4)
    layer = net.layer_dict["conv"]
    mask = np.ones(layer.blobs[0].shape, np.float32)
    mask[1] = 0
    mask[2, 0] = 0
    expected_2 = np.abs(layer.blobs[0].data[2, 1]).sum()
    masks.attach_masks(layer, mask)
    got = structured.scores("l1-filter", net, layers=["conv"])["conv"]
    assert got[1] == 0
    assert got[2] == pytest.approx(expected_2, rel=1e-6)


def test_neurons_norm_of_each_row():
    net = make_net(*CONV_NET, classes=4)
    weight = net.layer_dict["ip"].blobs[0].data
    l2 = structured.scores("neurons", net)["ip"]
    l1 = structured.scores("neurons", net, norm="l1")["ip"]
    for i in range(weight.shape[0]):
        assert l2[i] == pytest.approx(sum(float(w) ** 2 for w in weight[i]) ** 0.5, rel=1e-9)
        assert l1[i] == pytest.approx(sum(abs(float(w)) for w in weight[i]), rel=1e-9)
    with pytest.raises(NetError, match="layer 'conv' \\(Convolution\\): neurons rates the channels of InnerProduct"):
        structured.scores("neurons", net, layers=["conv"])
    with pytest.raises(NpcaffeError, match="norm must be one of l2, l1"):
        structured.scores("neurons", net, norm="max")
