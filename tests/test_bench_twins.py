"""tools/bench.py --big: the PyTorch twin of an npcaffe Net computes what the Net computes (skipped without torch)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import npcaffe  # noqa: E402
from npcaffe.fileio.prototxt import read_net  # noqa: E402
from tests.helpers import load_tool  # noqa: E402

# Every layer type the twin translates, on a few channels.  The poolings are chosen for Caffe's rounding:
# 11 -> 6 with kernel 3, stride 2, pad 1 (ceil); AVE 6 -> 4 whose last window overhangs the padded image
# (Caffe divides by the clipped window); kernel 2, stride 2, pad 1 on 11 -> 6, where the ceil gives 7 and
# Caffe drops the window that would start in the padding; kernel 3, stride 2 on 6 -> 3 (the floor: 2).
# WITHIN_CHANNEL LRN is given a k, which Caffe ignores there.
TINY_NET = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 4 dim: 11 dim: 11 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 6 kernel_size: 3 pad: 1 group: 2 } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" batch_norm_param { eps: 0.001 } }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" relu_param { negative_slope: 0.1 } }
layer { name: "norm1" type: "LRN" bottom: "conv1" top: "norm1"
        lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 } }
layer { name: "pool1" type: "Pooling" bottom: "norm1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "conv2a" type: "Convolution" bottom: "pool1" top: "conv2a"
        convolution_param { num_output: 6 kernel_size: 3 pad: 2 dilation: 2 bias_term: false } }
layer { name: "scale2" type: "Scale" bottom: "conv2a" top: "conv2a" }
layer { name: "conv2b" type: "Convolution" bottom: "pool1" top: "conv2b"
        convolution_param { num_output: 6 kernel_size: 1 } }
layer { name: "sum" type: "Eltwise" bottom: "conv2a" bottom: "conv2b" top: "sum"
        eltwise_param { operation: SUM coeff: 2 coeff: -0.5 } }
layer { name: "prod" type: "Eltwise" bottom: "sum" bottom: "conv2b" top: "prod" eltwise_param { operation: PROD } }
layer { name: "max" type: "Eltwise" bottom: "sum" bottom: "pool1" top: "max" eltwise_param { operation: MAX } }
layer { name: "norm2" type: "LRN" bottom: "max" top: "norm2"
        lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 norm_region: WITHIN_CHANNEL } }
layer { name: "cat" type: "Concat" bottom: "prod" bottom: "norm2" top: "cat" }
layer { name: "pool2" type: "Pooling" bottom: "cat" top: "pool2"
        pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "gpool" type: "Pooling" bottom: "pool2" top: "gpool" pooling_param { pool: AVE global_pooling: true } }
layer { name: "ip1" type: "InnerProduct" bottom: "gpool" top: "ip1" inner_product_param { num_output: 5 } }
layer { name: "drop" type: "Dropout" bottom: "ip1" top: "ip1" dropout_param { dropout_ratio: 0.5 } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 4 transpose: true } }
layer { name: "prob" type: "Softmax" bottom: "ip2" top: "prob" }
layer { name: "edge_max" type: "Pooling" bottom: "data" top: "edge_max"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 pad: 1 } }
layer { name: "edge_ave" type: "Pooling" bottom: "data" top: "edge_ave"
        pooling_param { pool: AVE kernel_size: 2 stride: 2 pad: 1 } }
layer { name: "edges" type: "Concat" bottom: "edge_max" bottom: "edge_ave" top: "edges" }
layer { name: "ip3" type: "InnerProduct" bottom: "edges" top: "side" inner_product_param { num_output: 3 } }
layer { name: "pool3" type: "Pooling" bottom: "max" top: "pool3" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "ip4" type: "InnerProduct" bottom: "pool3" top: "corner" inner_product_param { num_output: 2 } }
"""


def _bench():
    return load_tool("bench")


def _nets(bench, text, seed=0):
    """(deploy Net, the same with force_backward) holding the same generated weights."""
    param = read_net(text, is_text=True)
    net = npcaffe.Net(param, npcaffe.TEST)
    bench.generate_weights(net, np.random.default_rng(seed))
    for layer in net.layers:
        if layer.type == "BatchNorm":  # statistics stored as sums, as after Caffe's training: mean = sum / factor
            layer.blobs[2].data[...] = 2.5
    param.force_backward = True
    train = npcaffe.Net(param, npcaffe.TEST)
    for source, target in zip(net.layers, train.layers):
        for a, b in zip(source.blobs, target.blobs):
            b.data[...] = a.data
    return net, train


def test_twin_covers_every_translated_type():
    bench = _bench()
    net, _ = _nets(bench, TINY_NET)
    used = {layer.layer_param.type for layer in net.layers}
    assert used == set(bench.TWIN_LAYER_TYPES)  # Split: npcaffe inserts it where pool1 and sum fan out
    assert net.blobs["pool1"].shape == (2, 6, 6, 6)
    assert net.blobs["pool2"].shape == (2, 12, 4, 4)
    assert net.blobs["edge_max"].shape == (2, 4, 6, 6)
    assert net.blobs["pool3"].shape == (2, 6, 3, 3)


def test_twin_outputs_and_gradients_match_npcaffe():
    bench = _bench()
    net, train = _nets(bench, TINY_NET)
    twin = bench.torch_twin(torch, net)
    rng = np.random.default_rng(3)
    images = rng.normal(size=net.blobs["data"].shape).astype(np.float32)
    top_diffs = {n: rng.normal(size=net.blobs[n].shape).astype(np.float32) for n in net.outputs}
    ours = {n: a.copy() for n, a in net.forward(data=images).items()}
    train.clear_param_diffs()
    train.forward(data=images)
    input_grad = train.backward(**top_diffs)["data"].copy()

    x = torch.from_numpy(images.copy()).requires_grad_(True)
    theirs = twin(data=x)
    assert sorted(theirs) == sorted(ours) == ["corner", "prob", "side"]
    torch.autograd.backward([theirs[n] for n in top_diffs], [torch.from_numpy(d) for d in top_diffs.values()])
    for name, value in ours.items():
        np.testing.assert_allclose(theirs[name].detach().numpy(), value, rtol=1e-4, atol=1e-5 * np.abs(value).max())
    np.testing.assert_allclose(x.grad.numpy(), input_grad, rtol=1e-4, atol=1e-5 * np.abs(input_grad).max())
    # Parameter gradients too: the twin's parameters are the non-BatchNorm blobs, in layer order.
    blobs = [b for layer in train.layers if layer.type != "BatchNorm" for b in layer.blobs]
    assert len(blobs) == len(twin.weights)
    for blob, weight in zip(blobs, twin.weights):
        diff = blob.diff.reshape(weight.shape)
        np.testing.assert_allclose(weight.grad.numpy(), diff, rtol=1e-4, atol=1e-5 * np.abs(diff).max())
    out_diff, grad_diff = bench.twin_difference(torch, net, train, bench.torch_twin(torch, net),
                                                {"data": images}, top_diffs)
    assert out_diff < 1e-5 and grad_diff < 1e-5


def test_twin_refuses_what_it_does_not_translate():
    bench = _bench()
    net, _ = _nets(bench, """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 3 dim: 3 } } }
layer { name: "squash" type: "Sigmoid" bottom: "data" top: "squash" }
""")
    with pytest.raises(ValueError, match="layer 'squash' has type 'Sigmoid'"):
        bench.torch_twin(torch, net)


def test_alexnet_deploy_is_plain_and_has_an_input():
    bench = _bench()
    path, image_shape = bench.BIG_NETS["alexnet"]
    param = bench.deploy_param(path, 3, image_shape)
    types = [layer.type for layer in param.layer]
    assert types[0] == "Input" and list(param.layer[0].input_param.shape[0].dim) == [3, 3, 227, 227]
    assert set(types) == {"Input", "Convolution", "ReLU", "LRN", "Pooling", "InnerProduct", "Dropout"}
    assert not any(layer.HasField("cconvolution_param") or layer.HasField("cinner_product_param")
                   for layer in param.layer)
