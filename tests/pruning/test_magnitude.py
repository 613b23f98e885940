"""Magnitude (npcaffe.pruning.criteria.magnitude): |w| of the stored weights, Han et al.'s quality x σ rule."""
import numpy as np

from npcaffe.pruning import select
from npcaffe.pruning.criteria import magnitude
from pruning_nets import CONV_NET, DNS_NET, make_net


def test_scores_are_the_absolute_stored_weights():
    net = make_net(*CONV_NET, classes=4)
    scores = magnitude.scores(net, bias=True)
    assert list(scores) == ["conv", "ip"]
    for name, (weight_scores, bias_scores) in scores.items():
        weight, bias = net.layer_dict[name].blobs[:2]
        assert weight_scores.dtype == np.float64
        np.testing.assert_array_equal(weight_scores, np.abs(weight.data))
        np.testing.assert_array_equal(bias_scores, np.abs(bias.data))
    np.testing.assert_array_equal(magnitude.scores(net, layers="ip")["ip"], scores["ip"][0])


def test_dns_layers_are_scored_on_their_stored_weights():
    net = make_net(*DNS_NET, classes=4)
    assert list(magnitude.scores(net)) == ["conv", "ip"]
    np.testing.assert_array_equal(magnitude.scores(net)["ip"], np.abs(net.layer_dict["ip"].blobs[0].data))


def test_han_quality_times_sigma():
    net = make_net(*CONV_NET, classes=4)
    scores = magnitude.scores(net)
    quality = 0.8
    layer_masks = select.quality_masks(net, scores, quality)
    for name, mask in layer_masks.items():
        weight = net.layer_dict[name].blobs[0].data.astype(np.float64)
        np.testing.assert_array_equal(mask, np.abs(weight) > quality * weight.std())
        assert 0 < np.count_nonzero(mask) < mask.size
