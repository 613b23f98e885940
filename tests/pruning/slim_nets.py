"""Tiny nets, one per channel-tying construct, for the channel-group and slimming tests."""
import numpy as np
from google.protobuf import text_format

import npcaffe
from npcaffe.proto import caffe_pb2

FILLERS = 'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 }'


def data(shape=(2, 3, 6, 6)):
    dims = " ".join(f"dim: {d}" for d in shape)
    return f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}'


def conv(name, bottom, outputs, extra="kernel_size: 3 pad: 1", top=None, bias=True):
    bias_text = "" if bias else "bias_term: false"
    return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{top or name}" '
            f'convolution_param {{ num_output: {outputs} {extra} {bias_text} {FILLERS} }} }}')


def ip(name, bottom, outputs, top=None):
    return (f'layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "{top or name}" '
            f'inner_product_param {{ num_output: {outputs} {FILLERS} }} }}')


def bn_scale(prefix, blob):
    return (f'layer {{ name: "bn_{prefix}" type: "BatchNorm" bottom: "{blob}" top: "{blob}" }} '
            f'layer {{ name: "scale_{prefix}" type: "Scale" bottom: "{blob}" top: "{blob}" '
            f'scale_param {{ bias_term: true }} }}')


def layer(name, type_, bottoms, tops, extra=""):
    b = " ".join(f'bottom: "{x}"' for x in bottoms)
    t = " ".join(f'top: "{x}"' for x in tops)
    return f'layer {{ name: "{name}" type: "{type_}" {b} {t} {extra} }}'


def relu(name, blob):
    return layer(name, "ReLU", [blob], [blob])


def pool(name, bottom, kind="MAX", extra="kernel_size: 2 stride: 2"):
    return layer(name, "Pooling", [bottom], [name], f"pooling_param {{ pool: {kind} {extra} }}")


NETS = {
    # conv -> BN -> Scale -> ReLU -> conv (pad 0) -> ReLU -> max pool -> InnerProduct
    "bn_scale": [data(), conv("c1", "data", 6), bn_scale("c1", "c1"), relu("r1", "c1"),
                 conv("c2", "c1", 5, "kernel_size: 1"), relu("r2", "c2"), pool("p2", "c2"), ip("out", "p2", 4)],
    # a residual block: c1 -> (c2a -> BN/Scale -> ReLU -> c2b) + c1 -> ReLU -> 1x1 conv -> global pool -> ip
    "eltwise": [data(), conv("c1", "data", 6), relu("r1", "c1"),
                conv("c2a", "c1", 5), bn_scale("c2a", "c2a"), relu("r2a", "c2a"),
                conv("c2b", "c2a", 6, bias=False), bn_scale("c2b", "c2b"),
                layer("sum", "Eltwise", ["c1", "c2b"], ["sum"]), relu("rsum", "sum"),
                conv("c3", "sum", 4, "kernel_size: 1"), pool("p3", "c3", "AVE", "global_pooling: true"),
                ip("out", "p3", 3)],
    # two producers concatenated (channel offsets 0 and 4), then a consumer of all 7, and a branch of one
    "concat": [data(), conv("ca", "data", 4), conv("cb", "data", 3, "kernel_size: 1"), relu("ra", "ca"),
               layer("cat", "Concat", ["ca", "cb"], ["cat"]), conv("c2", "cat", 5, "kernel_size: 1"),
               relu("r2", "c2"), ip("out", "c2", 3), ip("side", "cb", 2)],
    # a slice of one producer's 7 channels into 3 + 4 going different ways
    "slice": [data(), conv("c1", "data", 7), bn_scale("c1", "c1"),
              layer("sl", "Slice", ["c1"], ["s0", "s1"], "slice_param { axis: 1 slice_point: 3 }"),
              conv("ca", "s0", 4, "kernel_size: 1"), conv("cb", "s1", 2, "kernel_size: 3"),
              ip("out_a", "ca", 3), ip("out_b", "cb", 2)],
    # grouped (2 groups: 8 -> 6) and depthwise (6 channels, multiplier 1) convolutions
    "grouped": [data((2, 4, 6, 6)), conv("c1", "data", 8, "kernel_size: 1"), relu("r1", "c1"),
                conv("g2", "c1", 6, "kernel_size: 1 group: 2"), bn_scale("g2", "g2"), relu("r2", "g2"),
                conv("dw", "g2", 6, "kernel_size: 3 pad: 1 group: 6"), bn_scale("dw", "dw"), relu("rdw", "dw"),
                conv("c3", "dw", 4, "kernel_size: 1"), ip("out", "c3", 3)],
    # depthwise with a channel multiplier of 2 (5 channels -> 10)
    "depthwise": [data((2, 3, 5, 5)), conv("c1", "data", 5, "kernel_size: 1"), relu("r1", "c1"),
                  conv("dw", "c1", 10, "kernel_size: 3 group: 5"), relu("rdw", "dw"),
                  conv("c3", "dw", 4, "kernel_size: 1"), ip("out", "c3", 3)],
    # conv -> pool -> Flatten -> InnerProduct (one channel = 3x3 consecutive inputs), and an IP on a 4-D blob
    "flatten_ip": [data((2, 2, 6, 6)), conv("c1", "data", 5), relu("r1", "c1"), pool("p1", "c1", "AVE"),
                   layer("flat", "Flatten", ["p1"], ["flat"]), ip("fc", "flat", 6), relu("rfc", "fc"),
                   ip("out", "fc", 3), ip("side", "p1", 2)],
    # PReLU's per-channel slopes, and a Reshape to (N, C*H*W)
    "prelu": [data(), conv("c1", "data", 5), layer("pr", "PReLU", ["c1"], ["c1"]),
              pool("p1", "c1", "MAX", "kernel_size: 3 stride: 3"),
              layer("rs", "Reshape", ["p1"], ["rs"], "reshape_param { shape { dim: 0 dim: -1 } }"),
              ip("out", "rs", 3)],
    # a squeeze-and-excitation block: x ⊙ sigmoid(fc2(relu(fc1(global pool x)))) with a 2-bottom Scale
    "scale2": [data(), conv("c1", "data", 6), relu("r1", "c1"), pool("gp", "c1", "AVE", "global_pooling: true"),
               ip("fc1", "gp", 3), relu("rfc1", "fc1"), ip("fc2", "fc1", 6), layer("sig", "Sigmoid", ["fc2"], ["fc2"]),
               layer("se", "Scale", ["c1", "fc2"], ["se"], "scale_param { axis: 0 }"),
               conv("c2", "se", 4, "kernel_size: 1"), ip("out", "c2", 3)],
    # a Deconvolution (stride 2) between two convolutions
    "deconv": [data((2, 3, 4, 4)), conv("c1", "data", 5), relu("r1", "c1"),
               layer("up", "Deconvolution", ["c1"], ["up"],
                     f"convolution_param {{ num_output: 4 kernel_size: 3 stride: 2 {FILLERS} }}"),
               relu("rup", "up"), conv("c2", "up", 3, "kernel_size: 1"), ip("out", "c2", 2)],
}


def net_param(name):
    return text_format.Parse("\n".join(NETS[name]), caffe_pb2.NetParameter())


def randomize(net, seed=0):
    """Random parameters everywhere (BatchNorm statistics with positive variances and factor 1, PReLU
    slopes around 0.25) and random inputs."""
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        if layer.type == "BatchNorm":
            layer.blobs[0].data[...] = rng.normal(size=layer.blobs[0].shape)
            layer.blobs[1].data[...] = rng.uniform(0.5, 2.0, size=layer.blobs[1].shape)
            layer.blobs[2].data[...] = 1.0
        elif layer.type == "PReLU":
            layer.blobs[0].data[...] = rng.uniform(0.0, 0.5, size=layer.blobs[0].shape)
        else:
            for blob in layer.blobs:
                blob.data[...] = rng.normal(0, 0.5, size=blob.shape)
    for name in net.inputs:
        net.blobs[name].data[...] = rng.normal(size=net.blobs[name].shape)
    return net


def make(name, seed=0):
    npcaffe.set_random_seed(seed)
    return randomize(npcaffe.Net(net_param(name), npcaffe.TEST), seed)
