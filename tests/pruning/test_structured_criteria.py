"""The data-driven structured criteria against brute force on tiny nets: APoZ, mean activation and
entropy from a reference convolution and explicit loops, the Taylor criterion against finite
differences of the loss when a channel's activation is scaled, NISP against an explicit per-neuron
propagation through the layers' dense matrices."""
import math

import numpy as np
import pytest

from conv_reference import reference_convolution
from npcaffe.errors import NpcaffeError
from npcaffe.pruning import structured
from npcaffe.pruning.criteria.common import feed
from npcaffe.pruning.structured.common import passed_on_blob
from pruning_nets import CONV_NET, assert_close, conv, inputs, ip, make_net


def _batches(count, n=3, seed=5):
    rng = np.random.default_rng(seed)
    return [{"data": rng.normal(size=(n, 2, 6, 6)), "label": rng.integers(0, 4, size=n).astype(np.float64)}
            for _ in range(count)]


def _relu_conv_outputs(net, batches):
    """CONV_NET's conv outputs after its ReLU, by the reference convolution: [(N, C, H, W)] per batch."""
    layer = net.layer_dict["conv"]
    w, b = layer.blobs[0].data.astype(np.float64), layer.blobs[1].data.astype(np.float64)
    return [np.maximum(reference_convolution(batch["data"], w, b, (2, 2), (1, 1), (1, 1), 1), 0) for batch in batches]


def test_apoz_counts_zeros_with_loops():
    net = make_net(*CONV_NET, classes=4)
    batches = _batches(3)
    outputs = _relu_conv_outputs(net, batches)
    zeros, total = [0] * 3, 0
    for y in outputs:
        for n, c, h, w in np.ndindex(y.shape):
            zeros[c] += y[n, c, h, w] == 0
        total += y.shape[0] * y.shape[2] * y.shape[3]
    got = structured.scores("apoz", net, layers=["conv"], batches=batches)["conv"]
    np.testing.assert_allclose(got, [1 - z / total for z in zeros], rtol=1e-12)
    assert 0 < min(zeros) and max(zeros) < total  # the sample has zeros and non-zeros in every channel


def test_mean_activation_and_a_separate_relu_top():
    net = make_net(*CONV_NET, classes=4)
    batches = _batches(2)
    outputs = _relu_conv_outputs(net, batches)
    expected = sum(y.sum(axis=(0, 2, 3)) for y in outputs) / sum(y.size / y.shape[1] for y in outputs)
    got = structured.scores("mean-activation", net, layers=["conv"], batches=batches)["conv"]
    assert_close(got, expected, 1e-5)
    # the same net with the ReLU writing a blob of its own: the criteria read the rectified blob
    layers = [text.replace('top: "conv" }', 'top: "rect" }').replace('bottom: "conv" top: "ip"', 'bottom: "rect" top: "ip"')
              if "relu" in text or '"ip"' in text else text for text in CONV_NET]
    other = make_net(*layers, classes=4)
    assert passed_on_blob(other, "conv") == "rect" and passed_on_blob(net, "conv") == "conv"
    assert_close(structured.scores("mean-activation", other, layers=["conv"], batches=batches)["conv"], expected, 1e-5)


def test_entropy_of_pooled_outputs_with_explicit_bins():
    net = make_net(*CONV_NET, classes=4)
    batches = _batches(6)
    pooled = np.concatenate([y.mean(axis=(2, 3)) for y in _relu_conv_outputs(net, batches)])  # (18, 3)
    bins = 4
    expected = []
    for c in range(pooled.shape[1]):
        values = pooled[:, c]
        low, high = values.min(), values.max()
        counts = [0] * bins
        for v in values:
            counts[min(int((v - low) / (high - low) * bins), bins - 1)] += 1
        expected.append(-sum(k / len(values) * math.log(k / len(values)) for k in counts if k))
    got = structured.scores("entropy", net, layers=["conv"], batches=batches, bins=bins)["conv"]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert max(expected) > 0
    with pytest.raises(NpcaffeError, match="bins must be at least 2"):
        structured.scores("entropy", net, batches=batches, bins=1)


def _scaled_loss(net, name, channel, alpha, batch):
    """The loss with channel `channel` of layer `name` scaled by alpha (its weight row and bias: the
    output, and after a ReLU the activation, scale with them)."""
    layer = net.layer_dict[name]
    saved = [blob.data.copy() for blob in layer.blobs]
    layer.blobs[0].data[channel] *= alpha
    layer.blobs[1].data[channel] *= alpha
    feed(net, batch)
    value = float(net.forward_from_to())
    for blob, data in zip(layer.blobs, saved):
        blob.data[...] = data
    return value


def _fd(net, name, channel, batch, step=1e-2):
    return (_scaled_loss(net, name, channel, 1 + step, batch) - _scaled_loss(net, name, channel, 1 - step, batch)) / (2 * step)


@pytest.mark.parametrize("name, channels, positions", [("conv", 3, 9), ("ip", 4, 1)])
def test_taylor_against_finite_differences_of_the_loss(name, channels, positions):
    net = make_net(*CONV_NET, classes=4)
    batch = _batches(1, n=3)[0]
    n = 3
    # per_example=False: |dC/dα| / (N M), C the batch's mean loss
    whole = [abs(_fd(net, name, k, batch)) / (n * positions) for k in range(channels)]
    assert_close(structured.scores("taylor", net, layers=[name], batches=[batch], per_example=False)[name], whole, 2e-3)
    # the paper's per example: 1/N Σ_n |dC_n/dα| / (M N), C_n the loss of image n alone
    single = [{"data": batch["data"][i:i + 1], "label": batch["label"][i:i + 1]} for i in range(n)]
    per_example = [sum(abs(_fd(net, name, k, one)) for one in single) / (n * positions * n) for k in range(channels)]
    got = structured.scores("taylor", net, layers=[name], batches=[batch])[name]
    assert_close(got, per_example, 2e-3)
    normalized = structured.scores("taylor", net, layers=[name], batches=[batch], normalize=True)[name]
    assert_close(normalized, np.asarray(per_example) / np.linalg.norm(per_example), 2e-3)
    assert not np.allclose(whole, per_example)  # the two definitions differ on this batch


# data (2 x 6 x 6) -> conv1 (3, 3x3) -> ReLU -> conv2 (2, 2x2) -> ip1 (4) -> ReLU -> ip2 (3) -> loss
NISP_NET = (inputs(("data", (2, 2, 6, 6)), ("label", (2,))), conv("conv1", "data", 3, "kernel_size: 3"),
            'layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }', conv("conv2", "conv1", 2, "kernel_size: 2"),
            ip("ip1", "conv2", 4), 'layer { name: "relu2" type: "ReLU" bottom: "ip1" top: "ip1" }', ip("ip2", "ip1", 3),
            'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }')


def _conv_matrix(w, size):
    """The dense (outputs x inputs) matrix of a stride-1, unpadded convolution of size x size inputs."""
    o_count, c_count, k, _ = w.shape
    out = size - k + 1
    a = np.zeros((o_count * out * out, c_count * size * size))
    for o, y, x, c, i, j in np.ndindex(o_count, out, out, c_count, k, k):
        a[(o * out + y) * out + x, (c * size + y + i) * size + x + j] = w[o, c, i, j]
    return a


def test_nisp_equals_the_explicit_per_neuron_propagation():
    net = make_net(*NISP_NET, classes=3)
    w = {name: net.layer_dict[name].blobs[0].data.astype(np.float64) for name in ("conv1", "conv2", "ip1", "ip2")}
    final = np.array([1.0, 2.0, 0.5])
    s_ip1 = np.abs(w["ip2"]).T @ final                       # through ReLU unchanged
    s_conv2 = np.abs(w["ip1"]).T @ s_ip1                     # one per conv2 output neuron (2 x 3 x 3)
    s_conv1 = np.abs(_conv_matrix(w["conv2"], 4)).T @ s_conv2   # one per conv1 output neuron (3 x 4 x 4)
    got = structured.scores("nisp", net, final_importance=final)
    np.testing.assert_allclose(got["ip1"], s_ip1, rtol=1e-12)
    np.testing.assert_allclose(got["conv2"], s_conv2.reshape(2, -1).sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(got["conv1"], s_conv1.reshape(3, -1).sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(got["ip2"], final)
    assert list(structured.scores("nisp", net, layers=["conv2"])) == ["conv2"]


def test_nisp_gives_both_branches_of_a_residual_sum_the_sum_channels_importance():
    net = make_net(inputs(("data", (2, 2, 5, 5))), conv("a", "data", 3), conv("b", "data", 3),
                   'layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "sum" }', ip("ip1", "sum", 4),
                   ip("ip2", "ip1", 2))
    w1, w2 = (net.layer_dict[n].blobs[0].data.astype(np.float64) for n in ("ip1", "ip2"))
    s_sum = (np.abs(w1).T @ (np.abs(w2).T @ np.ones(2))).reshape(3, 9).sum(axis=1)
    got = structured.scores("nisp", net)
    np.testing.assert_allclose(got["a"], s_sum, rtol=1e-12)
    np.testing.assert_allclose(got["b"], s_sum, rtol=1e-12)
