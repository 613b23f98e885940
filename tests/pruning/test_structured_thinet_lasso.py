"""ThiNet and He et al.'s LASSO on nets (npcaffe.pruning.structured.thinet / lasso / sampling): the
sampled contributions against the consumer's own outputs, the replayed data, planted channels
found, the rescaling and the least-squares refit against np.linalg.lstsq on the same samples, and
the methods through the registry's StructuredStep (the masks npcaffe prune sets)."""
import numpy as np
import pytest

from npcaffe.pruning import structured
from npcaffe.pruning.structured import lasso, reconstruction as rc, thinet
from npcaffe.pruning.structured.sampling import Consumer, Replay
from npcaffe.pruning.structured.select import StructuredStep
from pruning_nets import conv, inputs, ip, make_net

# conv1 (4 filters) -> ReLU -> conv2 (3 filters, reads conv1's 4 channels) -> ip (reads conv2's 3 x 3 x 3)
NET = (inputs(("data", (6, 2, 7, 7))), conv("conv1", "data", 4, "kernel_size: 3"),
       'layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }',
       conv("conv2", "conv1", 3, "kernel_size: 3"), ip("ip", "conv2", 5))


def _net(weak=()):
    net = make_net(*NET)
    w = net.layer_dict["conv2"].blobs[0].data
    for c in weak:
        w[:, c] *= 1e-3            # conv2 barely reads these channels of conv1
    net.forward()
    return net


def _batches(count=3, seed=5):
    rng = np.random.default_rng(seed)
    return [{"data": rng.normal(size=(6, 2, 7, 7))} for _ in range(count)]


@pytest.mark.parametrize("name,channels", [("conv2", 4), ("ip", 3)])
def test_sampled_outputs_are_the_consumers_outputs(name, channels):
    net = _net()
    replay = Replay(net, _batches(1))
    consumer = Consumer(net, name, channels)
    x, y = lasso.outputs(consumer, replay, per_image=4)
    net.forward_from_to(replay.first)  # the rest of the net on the (one) replayed batch
    top = net.blobs[net.top_names[name][0]].data.astype(np.float64)
    bias = net.layer_dict[name].blobs[1].data.astype(np.float64)
    columns = top.reshape(top.shape[0], top.shape[1], -1)
    per_image = x.shape[0] // top.shape[0]
    for s in range(x.shape[0]):
        image = columns[s // per_image].T - bias          # (positions, n): the outputs without bias
        assert np.min(np.abs(image - y[s]).max(axis=1)) < 1e-4 * (1 + np.abs(y[s]).max())


def test_replay_gives_the_same_data_and_positions_again():
    net = _net()
    replay = Replay(net, _batches(2))
    consumer = Consumer(net, "conv2", 4)
    first = consumer.collect(replay, 3, seed=1)
    net.blobs["data"].data[...] = 0                         # anything else in the net's input meanwhile
    np.testing.assert_array_equal(consumer.collect(replay, 3, seed=1), first)
    assert first.shape == (2 * 6 * 3, 4, 9)


def test_thinet_removes_the_planted_channel_first_and_rescales_by_lstsq():
    net = _net(weak=(2,))
    ranks = thinet.scores(net, ["conv2"], batches=_batches())["conv2"]
    assert ranks[2] == 0 and sorted(ranks) == [0, 1, 2, 3]
    replay = Replay(net, _batches())
    consumer = Consumer(net, "conv2", 4)
    before = consumer.weight()
    x = thinet.contributions(consumer, replay)
    kept = thinet.choose(consumer, replay, 2, np.arange(4))
    order = rc.thinet_removal_order(x)
    assert list(kept) == sorted(order[2:]) and 2 not in kept
    expected, *_ = np.linalg.lstsq(x[:, kept], x.sum(axis=1), rcond=None)
    after = consumer.weight()
    np.testing.assert_allclose(after[:, kept], before[:, kept] * expected[None, :, None], rtol=1e-5, atol=1e-7)


def test_lasso_keeps_the_planted_channels_and_refits_by_lstsq():
    net = _net(weak=(1, 3))
    replay = Replay(net, _batches())
    consumer = Consumer(net, "conv2", 4)
    x, target = lasso.outputs(consumer, replay)
    gram, corr = lasso.normal_equations(consumer.weight(), x, target, np.arange(4))
    picked, beta, _ = rc.lasso_select(gram, corr, 2)
    assert list(picked) == [0, 2]
    lasso.refit(consumer, x, target, picked)
    flat = x[:, picked].reshape(x.shape[0], -1)
    expected, *_ = np.linalg.lstsq(flat, target, rcond=None)
    np.testing.assert_allclose(consumer.weight()[:, picked].reshape(3, -1), expected.T, rtol=1e-4, atol=1e-6)
    scores = lasso.scores(net, ["conv2"], batches=_batches())["conv2"]
    assert min(scores[0], scores[2]) > max(scores[1], scores[3])


@pytest.mark.parametrize("method", ["thinet", "lasso"])
def test_methods_through_the_structured_step(method):
    net = _net(weak=(1,))
    assert structured.method(method).prune is not None
    step = StructuredStep(method, ["conv2", "ip"], batches=_batches())
    masks = step(net, {"conv2": 0.5, "ip": 1 / 3})
    assert 1 not in step.kept["conv2"] and len(step.kept["conv2"]) == 2 and len(step.kept["ip"]) == 2
    removed = np.setdiff1d(np.arange(4), step.kept["conv2"])
    assert not masks["conv1"][0][removed].any() and masks["conv1"][0][step.kept["conv2"]].all()
    assert not masks["conv2"][0][:, removed].any()
    gone = np.setdiff1d(np.arange(3), step.kept["ip"])[0]
    assert not masks["conv2"][0][gone].any() and not masks["ip"][0][:, gone * 9:(gone + 1) * 9].any()
    # a second step keeps the first step's removals
    again = step(net, {"conv2": 0.75, "ip": 1 / 3})
    assert len(step.kept["conv2"]) == 1 and step.kept["conv2"][0] not in removed
    assert not again["conv1"][0][removed].any()


def test_lasso_step_refits_against_the_unpruned_outputs():
    net = _net(weak=(1,))
    replay = Replay(net, _batches())
    unpruned = lasso.outputs(Consumer(net, "ip", 3), replay)[1]
    step = StructuredStep("lasso", ["conv2", "ip"], batches=_batches())
    step(net, {"conv2": 0.5, "ip": 0.0})
    from npcaffe.pruning.select import set_masks
    set_masks(net, step(net, {"conv2": 0.5, "ip": 0.0}))
    pruned = lasso.outputs(Consumer(net, "ip", 3), replay)[1]
    # ip was refitted on the pruned conv2 to the unpruned outputs: closer than without the refit
    error = np.abs(pruned - unpruned).mean()
    assert error < 0.5 * np.abs(unpruned).mean()
