"""Tiny nets and brute-force derivatives for the criteria tests (tests/pruning/test_*.py)."""
import numpy as np
from google.protobuf import text_format

import npcaffe
from npcaffe import masks
from npcaffe.proto import caffe_pb2

FILLERS = 'weight_filler { type: "gaussian" std: 0.6 } bias_filler { type: "gaussian" std: 0.4 }'


def ip(name, bottom, outputs, top=None, extra=""):
    return (f'layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "{top or name}" '
            f'inner_product_param {{ num_output: {outputs} {FILLERS} {extra} }} }}')


def conv(name, bottom, outputs, extra="kernel_size: 3", top=None):
    return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{top or name}" '
            f'convolution_param {{ num_output: {outputs} {extra} {FILLERS} }} }}')


def inputs(*shapes):
    tops = " ".join(f'top: "{name}"' for name, _ in shapes)
    dims = " ".join("shape { " + " ".join(f"dim: {d}" for d in shape) + " }" for _, shape in shapes)
    return f'layer {{ name: "input" type: "Input" {tops} input_param {{ {dims} }} }}'


def make_net(*layers, phase=npcaffe.TEST, seed=0, classes=None):
    """A Net from layer texts; Input blobs filled from a seeded generator ('label': class indices
    below `classes`, anything else normal)."""
    npcaffe.set_random_seed(seed)
    net = npcaffe.Net(text_format.Parse("\n".join(layers), caffe_pb2.NetParameter()), phase)
    rng = np.random.default_rng(seed + 100)
    for name in net.inputs:
        blob = net.blobs[name]
        if name == "label":
            blob.data[...] = rng.integers(0, classes, size=blob.shape)
        else:
            blob.data[...] = rng.normal(size=blob.shape)
    return net


# Convolution -> ReLU -> InnerProduct -> SoftmaxWithLoss (4 classes)
CONV_NET = (inputs(("data", (3, 2, 6, 6)), ("label", (3,))), conv("conv", "data", 3, "kernel_size: 3 pad: 1 stride: 2"),
            'layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }', ip("ip", "conv", 4),
            'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }')

# CConvolution -> ReLU -> AVE Pooling -> CInnerProduct -> SoftmaxWithLoss (4 classes)
DNS_NET = (inputs(("data", (3, 2, 5, 5)), ("label", (3,))),
           'layer { name: "conv" type: "CConvolution" bottom: "data" top: "conv" convolution_param { num_output: 3 '
           'kernel_size: 3 weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 } } '
           'cconvolution_param { weight_mask_filler { type: "constant" value: 1 } '
           'bias_mask_filler { type: "constant" value: 1 } } }',
           'layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }',
           'layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" '
           'pooling_param { pool: AVE kernel_size: 2 stride: 1 } }',
           'layer { name: "ip" type: "CInnerProduct" bottom: "pool" top: "ip" inner_product_param { num_output: 4 '
           'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 } } '
           'cinner_product_param { weight_mask_filler { type: "constant" value: 1 } '
           'bias_mask_filler { type: "constant" value: 1 } } }',
           'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }')


def dns_net_and_baked_plain_twin():
    """A DNS net with some weights pruned, and the plain net computing the same (its W = W ⊙ T)."""
    dns = make_net(*DNS_NET, classes=4)
    rng = np.random.default_rng(2)
    for name in ("conv", "ip"):
        weight_mask, _ = masks.mask_blobs(dns.layer_dict[name])
        weight_mask.data[...] = rng.random(weight_mask.shape) < 0.6
    plain = make_net(*(text.replace('"CConvolution"', '"Convolution"').replace('"CInnerProduct"', '"InnerProduct"')
                       for text in DNS_NET), classes=4)
    for name in ("conv", "ip"):
        weight, bias = masks.effective_params(dns.layer_dict[name])
        plain.layer_dict[name].blobs[0].data[...] = weight
        plain.layer_dict[name].blobs[1].data[...] = bias
    return dns, plain


def loss(net):
    return float(net.forward_from_to())


def gradient(net, name, blob_index=0):
    """The loss gradient of a layer's parameter blob, float64 (the engine's backward)."""
    net.clear_param_diffs()
    net.forward_from_to()
    net.backward_from_to()
    return net.layer_dict[name].blobs[blob_index].diff.astype(np.float64)


def fd_hessian_diagonal(net, name, blob_index=0, step=1e-2):
    """∂²L/∂θ_i² for every entry of a parameter blob: central differences of the engine's gradient."""
    data = net.layer_dict[name].blobs[blob_index].data
    out = np.zeros(data.shape)
    for index in np.ndindex(data.shape):
        old = data[index]
        data[index] = old + step
        plus = gradient(net, name, blob_index)[index]
        data[index] = old - step
        minus = gradient(net, name, blob_index)[index]
        data[index] = old
        out[index] = (plus - minus) / (2 * step)
    return out


def fd_jacobian(net, name, blob, blob_index=0, step=1e-3):
    """∂(net.blobs[blob]) / ∂θ_i by central differences of the forward pass: (count(blob), params)."""
    data = net.layer_dict[name].blobs[blob_index].data
    columns = []
    for index in np.ndindex(data.shape):
        old = data[index]
        data[index] = old + step
        net.forward_from_to()
        plus = net.blobs[blob].data.astype(np.float64).ravel()
        data[index] = old - step
        net.forward_from_to()
        minus = net.blobs[blob].data.astype(np.float64).ravel()
        data[index] = old
        columns.append((plus - minus) / (2 * step))
    net.forward_from_to()
    return np.stack(columns, axis=1)


def assert_close(actual, expected, rtol):
    """Equal within rtol of the largest |expected| (the gradient checker's scale)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(np.abs(expected).max(), 1e-12)
    worst = np.abs(actual - expected).max() / scale
    assert worst <= rtol, f"largest difference {worst:.3g} of the largest value {scale:.3g} > {rtol}"
