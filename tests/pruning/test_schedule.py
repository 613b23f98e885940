"""Schedules (npcaffe.pruning.schedule): direct and iterative pruning to a target on a tiny net, with
retraining through the solver and fixed masks."""
import numpy as np
import pytest
from google.protobuf import text_format

from npcaffe import masks
from npcaffe.errors import NetError, NpcaffeError
from npcaffe.proto import caffe_pb2
from npcaffe.pruning import criteria, schedule, select
from npcaffe.pruning.criteria import lobs
from npcaffe.pruning.schedule import Target
from npcaffe.solvers import get_solver
from pruning_nets import DNS_NET, ip, make_net

# Input -> Convolution -> ReLU -> InnerProduct -> SoftmaxWithLoss (+ Accuracy when testing); 16 images of 6x6.
NET = """
layer { name: "input" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 16 dim: 1 dim: 6 dim: 6 } shape { dim: 16 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" }
                            bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
        inner_product_param { num_output: 4 weight_filler { type: "xavier" }
                              bias_filler { type: "constant" value: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy" include { phase: TEST } }
"""
SOLVER = """
test_iter: 1 test_interval: 0 base_lr: 0.05 lr_policy: "fixed" momentum: 0.9 weight_decay: 0.0005
display: 0 max_iter: 20 random_seed: 3 snapshot_after_train: false
"""


def _images(seed):
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(16, 1, 6, 6)).astype(np.float32)
    quadrants = [data[:, 0, :3, :3], data[:, 0, :3, 3:], data[:, 0, 3:, :3], data[:, 0, 3:, 3:]]
    label = np.argmax([q.sum(axis=(1, 2)) for q in quadrants], axis=0).astype(np.float32)
    return data, label


def make_solver():
    """A fresh solver on the tiny net: training and test images fixed in the Input blobs."""
    param = text_format.Parse(SOLVER, caffe_pb2.SolverParameter())
    param.net_param.CopyFrom(text_format.Parse(NET, caffe_pb2.NetParameter()))
    solver = get_solver(param)
    for net, seed in [(solver.net, 1)] + [(net, 2) for net in solver.test_nets]:
        net.blobs["data"].data[...], net.blobs["label"].data[...] = _images(seed)
    return solver


def zeros(layer):
    weight_mask, bias_mask = masks.mask_arrays(layer)
    return int(np.count_nonzero(weight_mask == 0)), None if bias_mask is None else int(np.count_nonzero(bias_mask == 0))


def test_step_targets_direct_and_iterative():
    target = Target(sparsity={"a": 0.9, "b": 0.5})
    direct = schedule.step_targets(target, ["a", "b", "c"], 1)
    assert direct == [{"a": 0.9, "b": 0.5, "c": 0.0}]
    steps = schedule.step_targets(target, ["a", "b", "c"], 3)
    kept = [1 - s["a"] for s in steps]  # each step keeps the same share of what was kept: 0.1^(1/3)
    np.testing.assert_allclose([kept[0], kept[1] / kept[0], kept[2] / kept[1]], 0.1 ** (1 / 3))
    assert steps[-1] == {"a": 0.9, "b": 0.5, "c": 0.0}  # the last step is the target itself
    assert schedule.step_targets(Target(sparsity=0.75, global_=True), ["a"], 2) == [0.5, 0.75]
    assert schedule.step_targets(Target(quality=1.5), ["a"], 3) == [{"a": 0.5}, {"a": 1.0}, {"a": 1.5}]


@pytest.mark.parametrize("steps", [1, 3])
def test_sparsity_targets_are_met_exactly_and_pruned_weights_stay_zero(quiet_log, steps):
    result = schedule.run(make_solver, "magnitude", Target(sparsity={"conv": 0.5, "ip": 0.8}),
                          weights=None, steps=steps, retrain_iter=5)
    net = result.solver.net
    conv, fc = net.layer_dict["conv"], net.layer_dict["ip"]
    assert zeros(conv) == (select.pruned_count(0.5, 36), None)  # biases untouched: no bias mask
    assert zeros(fc) == (select.pruned_count(0.8, 4 * 4 * 4 * 4), None)
    assert len(result.steps) == steps and all(s.iterations == 5 for s in result.steps)
    assert result.solver.iter == 5  # each step retrains in a fresh solver
    # Step by step the kept counts fall to the target, and equal the mask core's.
    kept = [s.kept["ip"].kept for s in result.steps]
    assert kept == sorted(kept, reverse=True) and kept[-1] == 256 - select.pruned_count(0.8, 256) + 4
    assert result.steps[-1].kept["ip"] == masks.layer_kept(fc)
    for layer in (conv, fc):
        weight_mask, _ = masks.mask_arrays(layer)
        w = layer.blobs[0].flat_data
        assert np.all(w[weight_mask == 0] == 0) and np.all(w[weight_mask == 1] != 0)
        assert np.all(layer.blobs[1].data != 0)  # biases kept and trained
    assert set(result.dense_scores) == {"accuracy", "loss"} and set(result.steps[-1].retrained_scores) == {"accuracy",
                                                                                                            "loss"}


def test_pruned_weights_stay_zero_whatever_the_solver_does(quiet_log):
    # A high rate, momentum and weight decay: a pruned weight would move at once if it were not held.
    result = schedule.run(make_solver, "magnitude", Target(sparsity=0.7), steps=2, retrain_iter=10)
    for name in ("conv", "ip"):
        layer = result.solver.net.layer_dict[name]
        assert np.all(layer.blobs[0].flat_data[masks.mask_arrays(layer)[0] == 0] == 0)
    # The test net computes with the same pruned weights.
    test = result.solver.test_nets[0]
    assert np.count_nonzero(test.layer_dict["ip"].blobs[0].data) == result.steps[-1].kept["ip"].kept - 4


@pytest.mark.parametrize("name", ["conv", "ip"])
def test_pruned_weights_get_no_gradient(quiet_log, name):
    # The fixed masks' contract (npcaffe.masks): the gradient of W ⊙ T, none for a pruned weight.
    result = schedule.run(make_solver, "magnitude", Target(sparsity=0.7), retrain_iter=2)
    net = result.solver.net
    net.clear_param_diffs()
    net.forward_backward()
    layer = net.layer_dict[name]
    mask = masks.mask_arrays(layer)[0]
    assert np.all(layer.blobs[0].flat_diff[mask == 0] == 0) and np.any(layer.blobs[0].flat_diff[mask == 1] != 0)


def test_global_and_bias_targets_count_together(quiet_log):
    result = schedule.run(make_solver, "magnitude", Target(sparsity=0.6, global_=True), bias=True, steps=2,
                          retrain_iter=2)
    net = result.solver.net
    entries = 36 + 4 + 256 + 4
    pruned = [zeros(net.layer_dict[name]) for name in ("conv", "ip")]
    assert all(bias is not None for _, bias in pruned)  # with bias=True the biases carry masks
    assert sum(w + b for w, b in pruned) == select.pruned_count(0.6, entries)


def test_biases_are_pruned_only_when_asked(quiet_log):
    for bias in (False, True):
        result = schedule.run(make_solver, "magnitude", Target(sparsity=1.0), bias=bias, retrain_iter=0)
        layer = result.solver.net.layer_dict["ip"]
        assert np.count_nonzero(layer.blobs[0].data) == 0
        assert np.count_nonzero(layer.blobs[1].data) == (0 if bias else 4)
        assert result.steps[0].kept["ip"].kept == (0 if bias else 4)


def test_entries_pruned_earlier_stay_pruned_whatever_their_new_score():
    scores = {"a": np.array([5.0, 1.0, 2.0, 3.0])}
    previous = {"a": np.array([0.0, 1.0, 1.0, 1.0])}  # entry 0 was pruned; now it scores highest
    out = schedule.step_masks(scores, {"a": 0.5}, Target(sparsity=0.5), previous)
    assert out["a"].tolist() == [0, 0, 1, 1]
    out = schedule.step_masks(scores, 0.5, Target(sparsity=0.5, global_=True), previous)
    assert out["a"].tolist() == [0, 0, 1, 1]
    out = schedule.step_masks(scores, {"a": 0.5}, Target(quality=1.0), previous, sigma={"a": 3.0})
    assert out["a"].tolist() == [0, 0, 1, 1]  # |w| <= 0.5 x 3 pruned, and entry 0 stays pruned
    pair = schedule.step_masks({"a": (scores["a"], np.array([0.5]))}, 0.4, Target(sparsity=0.4, global_=True),
                               {"a": (previous["a"], np.array([1.0]))})
    assert pair["a"][0].tolist() == [0, 1, 1, 1] and pair["a"][1].tolist() == [0]


def test_without_retraining_iterative_magnitude_equals_direct(quiet_log):
    for target in (Target(sparsity={"conv": 0.4, "ip": 0.9}), Target(quality=0.8)):
        direct = schedule.run(make_solver, "magnitude", target, retrain_iter=0).solver.net
        iterative = schedule.run(make_solver, "magnitude", target, steps=4, retrain_iter=0).solver.net
        for name in ("conv", "ip"):
            np.testing.assert_array_equal(masks.mask_arrays(direct.layer_dict[name])[0],
                                          masks.mask_arrays(iterative.layer_dict[name])[0])


def test_quality_is_hans_threshold_on_the_weights_before_pruning(quiet_log):
    reference = make_solver().net
    result = schedule.run(make_solver, "magnitude", Target(quality={"conv": 0.5, "ip": 1.2}), retrain_iter=0)
    for name, q in (("conv", 0.5), ("ip", 1.2)):
        w = reference.layer_dict[name].blobs[0].data
        expected = (np.abs(w) > q * np.std(w.astype(np.float64))).astype(np.float32)
        np.testing.assert_array_equal(masks.mask_blobs(result.solver.net.layer_dict[name])[0].data, expected)


def test_lobs_applies_the_compensating_update(quiet_log):
    result = schedule.run(make_solver, "lobs", Target(sparsity=0.6), score_batches=1, retrain_iter=0)
    # The same by hand: Hessians, sensitivities, masks, the update.
    net = make_solver().net
    hessians = lobs.layer_hessians(net, ["conv", "ip"], batches=1)
    chosen = select.layer_masks(lobs.scores(net, ["conv", "ip"], hessians=hessians), 0.6)
    updates = lobs.compensation(net, chosen, hessians=hessians)
    for name in ("conv", "ip"):
        layer = net.layer_dict[name]
        expected_w = (layer.blobs[0].data.astype(np.float64) + updates[name].weight).astype(np.float32)
        expected_b = (layer.blobs[1].data.astype(np.float64) + updates[name].bias).astype(np.float32)
        pruned = result.solver.net.layer_dict[name]
        np.testing.assert_array_equal(masks.mask_blobs(pruned)[0].data, chosen[name])
        np.testing.assert_allclose(pruned.blobs[0].data, expected_w * chosen[name], rtol=0, atol=1e-6)
        np.testing.assert_allclose(pruned.blobs[1].data, expected_b, rtol=0, atol=1e-6)
        assert np.abs(updates[name].weight[chosen[name] == 1]).max() > 1e-4  # kept weights really moved
    assert set(result.steps[0].lobs_error) == {"conv", "ip"}


def test_every_method_runs_a_step(quiet_log):
    for method in schedule.METHODS:
        result = schedule.run(make_solver, method, Target(sparsity=0.5), score_batches=1, steps=2, retrain_iter=1)
        assert result.steps[-1].kept["ip"].kept == 128 + 4


def test_bad_targets_and_layers_are_named():
    names = ["conv", "ip"]
    with pytest.raises(NpcaffeError, match="--quality .* needs --method magnitude"):
        schedule.check_target(Target(quality=1.0), "obd", names)
    with pytest.raises(NpcaffeError, match="--global"):
        schedule.check_target(Target(sparsity={"conv": 0.5}, global_=True), "snip", names)
    with pytest.raises(NpcaffeError, match="--sparsity fc=0.5: no layer 'fc'"):
        schedule.check_target(Target(sparsity={"fc": 0.5}), "magnitude", names)
    with pytest.raises(NpcaffeError, match=r"--sparsity conv=1.5: .* in \[0, 1\]"):
        schedule.check_target(Target(sparsity={"conv": 1.5}), "magnitude", names)
    with pytest.raises(NpcaffeError, match="give a target"):
        schedule.check_target(Target(), "magnitude", names)
    with pytest.raises(NetError, match="layer 'ip' .CInnerProduct. is a DNS layer"):
        schedule.prunable_layers(make_net(*DNS_NET, classes=4), ["ip"])
    with pytest.raises(NetError, match="has no layer 'fc'"):
        schedule.prunable_layers(make_net(*DNS_NET, classes=4), ["fc"])
    assert schedule.prunable_layers(make_net(*DNS_NET, ip("fc", "ip", 2), classes=4)) == ["fc"]
