"""SNIP (npcaffe.pruning.criteria.snip): scores against finite differences of the loss in a mask
entry; the ranking against brute-force removal; SNIP-at-init, masks, SGD training with them."""
import numpy as np
import pytest
from google.protobuf import text_format

import npcaffe
from npcaffe import masks
from npcaffe.errors import NetError
from npcaffe.proto import caffe_pb2
from npcaffe.pruning import select
from npcaffe.pruning.criteria import snip
from npcaffe.solvers import get_solver
from pruning_nets import CONV_NET, assert_close, dns_net_and_baked_plain_twin, inputs, ip, loss, make_net

def test_scores_are_the_loss_derivative_in_a_mask_entry():
    """|∂L/∂c_j| with the layer computing w_j c_j: central differences of the loss with w_j scaled by 1 ± h."""
    net = make_net(*CONV_NET, classes=4)
    scores = snip.scores(net, bias=True)
    step = 1e-2
    for name in ("conv", "ip"):
        for blob_index in (0, 1):
            data = net.layer_dict[name].blobs[blob_index].data
            expected = np.zeros(data.shape)
            for index in np.ndindex(data.shape):
                old = data[index]
                data[index] = old * (1 + step)
                plus = loss(net)
                data[index] = old * (1 - step)
                minus = loss(net)
                data[index] = old
                expected[index] = abs(plus - minus) / (2 * step)
            # float32 losses: differences good to ~1e-4 of the largest score
            assert_close(scores[name][blob_index], expected, 2e-4)


def test_dns_mask_entries_pruned_or_kept():
    """On a DNS net the mask entry exists: its derivative, at 1 for kept weights and at 0 for pruned
    ones (the derivative of splicing back), by finite differences of the mask itself."""
    net, _ = dns_net_and_baked_plain_twin()
    scores = snip.scores(net)
    step = 1e-2
    for name in ("conv", "ip"):
        weight_mask, _ = masks.mask_blobs(net.layer_dict[name])
        t = weight_mask.data
        assert 0 < np.count_nonzero(t) < t.size
        rng = np.random.default_rng(0)
        for flat in rng.choice(t.size, 12, replace=False):
            index = np.unravel_index(flat, t.shape)
            old = t[index]
            t[index] = old + step
            plus = loss(net)
            t[index] = old - step
            minus = loss(net)
            t[index] = old
            assert scores[name][index] == pytest.approx(abs(plus - minus) / (2 * step), abs=2e-5)


@pytest.mark.parametrize("seed", range(4))
def test_the_top_score_is_the_weight_whose_removal_changes_the_loss_most(seed):
    """Brute force: remove each weight in turn (w = 0) and measure |ΔL|."""
    net = make_net(inputs(("data", (8, 5)), ("label", (8,))), ip("ip1", "data", 4),
                   'layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }', ip("ip2", "ip1", 3),
                   'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }',
                   classes=3, seed=seed)
    scores = snip.scores(net)
    base = loss(net)
    flat_scores, flat_change = [], []
    for name in ("ip1", "ip2"):
        data = net.layer_dict[name].blobs[0].data
        for index in np.ndindex(data.shape):
            old = data[index]
            data[index] = 0
            flat_change.append(abs(loss(net) - base))
            data[index] = old
            flat_scores.append(scores[name][index])
    assert np.argmax(flat_scores) == np.argmax(flat_change)


def test_diffs_are_restored_batches_averaged_normalisation():
    net = make_net(*CONV_NET, classes=4)
    for blob in net.learnable_params:
        blob.diff[...] = 7
    rng = np.random.default_rng(3)
    batches = [{"data": rng.normal(size=(3, 2, 6, 6)), "label": rng.integers(0, 4, size=3)} for _ in range(2)]
    both = snip.gradients(net, batches=batches)
    each = [snip.gradients(net, batches=[b]) for b in batches]
    assert all(np.all(blob.diff == 7) for blob in net.learnable_params)
    for name in ("conv", "ip"):
        np.testing.assert_allclose(both[name][0], (each[0][name][0] + each[1][name][0]) / 2, rtol=1e-12)
    normalized = snip.scores(net, batches=batches, normalize=True)
    assert sum(s.sum() for s in normalized.values()) == pytest.approx(1.0)


def test_refuses_a_layer_whose_gradient_the_net_does_not_compute():
    frozen = list(CONV_NET)
    frozen[1] = frozen[1].replace('convolution_param', 'param { lr_mult: 0 } param { lr_mult: 0 } convolution_param')
    net = make_net(*frozen, classes=4)
    with pytest.raises(NetError, match="'conv'.*no gradient"):
        snip.scores(net)
    assert list(snip.scores(net, layers=["ip"])) == ["ip"]


MLP = '''
name: "mlp"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 16 dim: 20 } shape { dim: 16 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param { num_output: 30 weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 5 weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
'''


def test_snip_at_init_to_90_percent_then_sgd_keeps_the_pruned_weights_at_zero(quiet_log):
    npcaffe.set_random_seed(11)
    solver_param = caffe_pb2.SolverParameter(type="SGD", base_lr=0.1, momentum=0.9, weight_decay=5e-4,
                                             lr_policy="fixed", max_iter=20, display=0, snapshot_after_train=False)
    solver_param.net_param.CopyFrom(text_format.Parse(MLP, caffe_pb2.NetParameter()))
    solver = get_solver(solver_param)
    net = solver.net
    rng = np.random.default_rng(12)
    # a learnable batch: labels from a fixed random linear map of the inputs
    data = rng.normal(size=(16, 20)).astype(np.float32)
    net.blobs["data"].data[...] = data
    net.blobs["label"].data[...] = np.argmax(data @ rng.normal(size=(20, 5)), axis=1)
    scores = snip.scores(net, normalize=True)
    layer_masks = select.global_masks(scores, 0.9)
    total = sum(m.size for m in layer_masks.values())
    assert sum(int(np.count_nonzero(m == 0)) for m in layer_masks.values()) == select.pruned_count(0.9, total)
    select.set_masks(net, layer_masks)
    start = loss(net)
    solver.step(20)
    end = loss(net)
    for name, mask in layer_masks.items():
        layer = net.layer_dict[name]
        assert masks.is_masked(layer)
        weight = layer.blobs[0].data
        assert np.all(weight[mask == 0] == 0)
        assert np.count_nonzero(weight) == np.count_nonzero(mask)  # kept weights are all still nonzero
    assert end < start
