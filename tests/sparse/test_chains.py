"""Fused chains of sparse inference layers (npcaffe.sparse.chains.ChainPlan): the same bits as layer by layer."""
import numpy as np
import pytest
from google.protobuf import text_format

import npcaffe
from npcaffe.sparse import packing
from npcaffe.proto import caffe_pb2

# An MLP with what a deploy net has around its inner products: in-place and separate
# ReLUs, a Split (ip2 feeds ip3 and prob), a softmax; and, after `stop`, layers that
# end a chain: a leaky ReLU and a Dropout.
MLP = """
name: "mlp"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 12 dim: 12 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1" inner_product_param { num_output: 40 } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" inner_product_param { num_output: 30 } }
layer { name: "relu2" type: "ReLU" bottom: "ip2" top: "relu2" }
layer { name: "ip3" type: "InnerProduct" bottom: "relu2" top: "ip3" inner_product_param { num_output: 10 } }
layer { name: "prob" type: "Softmax" bottom: "relu2" top: "prob" }
layer { name: "stop" type: "ReLU" bottom: "ip3" top: "stop" relu_param { negative_slope: 0.1 } }
layer { name: "ip4" type: "InnerProduct" bottom: "stop" top: "ip4" inner_product_param { num_output: 20 } }
layer { name: "relu4" type: "ReLU" bottom: "ip4" top: "ip4" }
layer { name: "drop" type: "Dropout" bottom: "ip4" top: "drop" }
layer { name: "ip5" type: "InnerProduct" bottom: "drop" top: "ip5" inner_product_param { num_output: 5 } }
"""


def _mlp(fused=True, density=0.04, seed=0):
    net = npcaffe.Net(text_format.Parse(MLP, caffe_pb2.NetParameter()), npcaffe.TEST)
    rng = np.random.default_rng(seed)
    for name, params in net.params.items():
        weight = rng.standard_normal(params[0].shape).astype(np.float32)
        weight[rng.random(weight.shape) >= density] = 0
        weight[0, 0] = 1  # every layer keeps a weight
        params[0].data[...] = weight
        params[1].data[...] = rng.standard_normal(params[1].shape).astype(np.float32)
    packing.sparsify(net)
    if not fused:
        net.plan.chains = None
    return net


def _run(net, images, **kwargs):
    net.blobs["data"].reshape(*images.shape)
    net.reshape()
    net.forward(data=images, **kwargs)
    return {name: blob.data.copy() for name, blob in net.blobs.items()}


def _images(batch, seed=1):
    images = np.random.default_rng(seed).random((batch, 1, 12, 12), dtype=np.float32)
    images[images < 0.5] = 0  # zero inputs: the batch-1 column kernel skips them
    return images


def _chains(net):
    """{first layer name: last layer name} of the chains the next forward runs."""
    names = net.layer_names
    return {names[first]: names[chain.last] for first, chain in net.plan.chains.current().items()}


def _count_layer_calls(net):
    calls = []
    for layer in net.layers:
        # Layer.forward reshapes, then calls forward_reshaped; the net's plan calls it alone for settled layers.
        def counted(bottom, top, layer=layer, forward=layer.forward_reshaped):
            calls.append(layer.name)
            return forward(bottom, top)
        layer.forward_reshaped = counted
    return calls


@pytest.mark.parametrize("batch", [1, 3, 20])
def test_chains_give_the_bits_of_the_layer_by_layer_forward(batch):
    fused, plain = _mlp(), _mlp(fused=False)
    images = _images(batch)
    assert set(packing.sparsify(fused)) == {"ip1", "ip2", "ip3", "ip4", "ip5"}
    calls = _count_layer_calls(fused)
    for _ in range(3):  # the first forwards settle the shapes, later ones run the chains
        got, want = _run(fused, images), _run(plain, images)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert _chains(fused) == {"data": "prob", "ip4": "relu4"}
    calls.clear()
    _run(fused, images)
    assert calls == ["stop", "drop", "ip5"]  # the rest ran as two kernel calls


def test_the_chain_matches_the_dense_path():
    net, dense = _mlp(), _mlp(fused=False)
    packing.sparsify(dense, threshold=0)
    images = _images(1)
    for _ in range(3):
        got, want = _run(net, images), _run(dense, images)
    for name in ("ip3", "prob", "ip5"):
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5 * float(np.abs(want[name]).max()))


def test_a_range_ending_or_starting_inside_a_chain_runs_layer_by_layer():
    fused, plain = _mlp(), _mlp(fused=False)
    images = _images(1)
    for _ in range(3):
        _run(fused, images), _run(plain, images)
    calls = _count_layer_calls(fused)
    # ip1 alone: its in-place ReLU must not have run.
    got, want = _run(fused, images, end="ip1"), _run(plain, images, end="ip1")
    np.testing.assert_array_equal(got["ip1"], want["ip1"])
    assert (got["ip1"] < 0).any()
    assert calls == ["data", "ip1"]
    calls.clear()
    got, want = _run(fused, images, start="relu1"), _run(plain, images, start="relu1")
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert calls[:6] == ["relu1", "ip2", "relu2", "relu2_relu2_0_split", "ip3", "prob"]


@pytest.mark.parametrize("verify", [True, False])
def test_weights_written_after_the_chain_was_built(verify):
    """With the Python API (verify) a write reaches the next forward; `npcaffe test`
    (verify=False) promises never to write, as without chains."""
    fused, plain = _mlp(), _mlp(fused=False)
    if not verify:
        packing.sparsify(fused, verify=False)
    images = _images(1)
    for _ in range(3):
        _run(fused, images), _run(plain, images)
    assert fused.plan.chains.current()
    for net in (fused, plain):
        net.params["ip2"][0].data[...] *= 2
        net.params["ip2"][1].data[...] = 0
    if verify:
        got, want = _run(fused, images), _run(plain, images)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
        for _ in range(2):
            got = _run(fused, images)
        assert fused.plan.chains.current()   # rebuilt on the repacked weights
        np.testing.assert_array_equal(got["prob"], want["prob"])
    # Pruned no more: ip1 returns to the dense path and its chain shrinks to what stays sparse.
    fused.params["ip1"][0].data[...] = 0.5
    plain.params["ip1"][0].data[...] = 0.5
    if not verify:
        return
    for _ in range(3):
        got, want = _run(fused, images), _run(plain, images)
    assert fused.layer_dict["ip1"].packed is None
    assert _chains(fused) == {"relu1": "prob", "ip4": "relu4"}
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_batch_changes_and_dense_at_small_batches():
    """A layer packed but dense below SMALL_BATCH (density above SMALL_BATCH_DENSITY_THRESHOLD)
    ends the chain at batch 1 and joins it at batch 20."""
    fused, plain = _mlp(density=0.08), _mlp(fused=False, density=0.08)
    assert fused.layer_dict["ip1"].packed.min_batch == packing.SMALL_BATCH
    for batch in (1, 20, 1, 5):
        images = _images(batch)
        for _ in range(3):
            got, want = _run(fused, images), _run(plain, images)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
        assert ("data" in _chains(fused)) == (batch >= packing.SMALL_BATCH), batch


def test_dense_nets_and_loss_layers_make_no_chains():
    net = _mlp()
    packing.sparsify(net, threshold=0)
    assert net.plan.chains is None
    param = text_format.Parse(MLP, caffe_pb2.NetParameter())
    param.layer[6].loss_weight.append(1)  # prob now counts in the loss
    net = npcaffe.Net(param, npcaffe.TEST)
    for name, params in _mlp().params.items():
        for mine, theirs in zip(net.params[name], params):
            mine.data[...] = theirs.data
    packing.sparsify(net)
    images = _images(1)
    for _ in range(3):
        _run(net, images)
    # ip1 and ip2 now feed the loss, so need backward and stay dense; the softmax is left out.
    assert net.layer_dict["ip2"].packed is None and net.layer_dict["ip3"].packed is not None
    assert _chains(net) == {"relu2": "ip3", "ip4": "relu4"}
