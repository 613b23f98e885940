"""npcaffe/pruning/dnsify.py: plain Convolution / InnerProduct layers to DNS layers and back."""
import os

import numpy as np
import pytest

import npcaffe
from npcaffe import masks
from npcaffe.errors import NetError
from npcaffe.fileio.prototxt import read_net
from npcaffe.proto import caffe_pb2
from npcaffe.pruning.dnsify import (baked_model, default_iter_stop, dnsify, parse_c_rates, parse_layers,
                                    undnsify)

PROTOTXT = os.path.join(os.path.dirname(__file__), "..", "..", "prototxt")

NET = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 2 dim: 6 dim: 6 } shape { dim: 4 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { lr_mult: 1 } param { lr_mult: 2 }
        convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
        param { lr_mult: 1 decay_mult: 1 }
        convolution_param { num_output: 4 kernel_size: 3 bias_term: false weight_filler { type: "xavier" } } }
layer { name: "pool" type: "Pooling" bottom: "conv2" top: "pool" pooling_param { pool: MAX kernel_size: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def tiny():
    return read_net(NET, is_text=True)


def test_converted_types_and_surgery_params():
    net, record = dnsify(tiny(), c_rate={"ip": 4.5}, iter_stop=80)
    layers = {layer.name: layer for layer in net.layer}
    assert [layers[n].type for n in ("conv1", "conv2", "pool", "ip")] == \
        ["CConvolution", "CConvolution", "Pooling", "CInnerProduct"]
    ip = layers["ip"].cinner_product_param
    assert (ip.gamma, ip.power, ip.c_rate, ip.iter_stop) == (pytest.approx(1e-4), 1, 4.5, 80)
    assert (ip.weight_mask_filler.type, ip.weight_mask_filler.value) == ("constant", 1)
    assert (ip.bias_mask_filler.type, ip.bias_mask_filler.value) == ("constant", 1)
    assert layers["conv1"].cconvolution_param.c_rate == 3  # the default
    # Everything else of the user's layer is kept.
    assert layers["conv1"].convolution_param == tiny().layer[1].convolution_param
    assert list(layers["conv1"].param) == list(tiny().layer[1].param)
    assert [(c.name, c.c_rate, c.zero_bias) for c in record] == \
        [("conv1", 3, False), ("conv2", 3, True), ("ip", 4.5, False)]


def test_bias_term_false_gets_a_frozen_zero_bias():
    net, _ = dnsify(tiny(), layers=["conv2"], c_rate=2, iter_stop=5)
    conv2 = next(layer for layer in net.layer if layer.name == "conv2")
    assert conv2.convolution_param.bias_term
    assert (conv2.convolution_param.bias_filler.type, conv2.convolution_param.bias_filler.value) == ("constant", 0)
    assert conv2.cconvolution_param.bias_mask_filler.value == 0
    assert (conv2.param[0].lr_mult, conv2.param[1].lr_mult, conv2.param[1].decay_mult) == (1, 0, 0)
    assert [layer.type for layer in net.layer if layer.name in ("conv1", "ip")] == ["Convolution", "InnerProduct"]


def _bake(net_param, record, seed=0):
    """A NetParameter as masks.plain_model gives it: DNS layers as plain types with W * T, b * T_b."""
    net = npcaffe.Net(net_param, npcaffe.TRAIN)
    rng = np.random.default_rng(seed)
    for _, layer in masks.masked_layers(net):
        weight_mask, _ = masks.mask_arrays(layer)
        weight_mask[...] = rng.random(weight_mask.size) < 0.5
    return net, baked_model(net, record)


def test_undnsify_restores_the_users_layers_exactly(quiet_log):
    original = tiny()
    net_param, record = dnsify(original, c_rate=2.5, iter_stop=10)
    net, baked = _bake(net_param, record)
    for before, stored in zip(original.layer, baked.layer):
        after = caffe_pb2.LayerParameter()
        after.CopyFrom(stored)
        blobs = list(after.blobs)
        del after.blobs[:]
        if before.type not in ("Convolution", "InnerProduct"):
            after.ClearField("phase")  # Net.to_proto writes the phase, as Caffe's ToProto
        assert after == before  # type, params, bias_term: false, param specs: all the user's own
        expected = masks.effective_params(net.layers[list(net.layer_names).index(before.name)]) \
            if before.type in ("Convolution", "InnerProduct") else []
        expected = [a for a in expected if a is not None]
        if before.name == "conv2":
            expected = expected[:1]  # the zero bias dnsify added is dropped
        assert len(blobs) == len(expected)
        for blob, array in zip(blobs, expected):
            np.testing.assert_array_equal(np.array(blob.data, np.float32).reshape(array.shape), array)
    # The baked model loads into the user's own plain net, blob counts checked as Caffe does.
    plain = npcaffe.Net(original, npcaffe.TEST)
    plain.copy_from(baked)
    assert plain.params["conv2"][0].data.any() and len(plain.params["conv2"]) == 1


def test_undnsify_refuses_unbaked_layers(quiet_log):
    net_param, record = dnsify(tiny(), iter_stop=10)
    net = npcaffe.Net(net_param, npcaffe.TRAIN)
    with pytest.raises(NetError, match="'conv1' .* 4 blobs: bake"):
        undnsify(net.to_proto(), record)


def test_zero_bias_stays_zero_and_is_not_counted(quiet_log):
    from npcaffe.proto import caffe_pb2 as pb
    net_param, record = dnsify(tiny(), layers=["conv2"], iter_stop=10)
    solver_param = pb.SolverParameter(base_lr=0.1, lr_policy="fixed", momentum=0.9, weight_decay=0.01,
                                      max_iter=5, display=0, snapshot_after_train=False)
    solver_param.net_param.CopyFrom(net_param)
    solver = npcaffe.get_solver(solver_param)
    layer = solver.net.layers[list(solver.net.layer_names).index("conv2")]
    solver.net.blobs["data"].data[...] = np.random.default_rng(0).standard_normal((4, 2, 6, 6))
    solver.net.blobs["label"].data[...] = [0, 1, 2, 3]
    solver.step(5)
    weight, bias = masks.effective_params(layer)
    assert not layer.blobs[1].data.any() and not bias.any()
    assert layer.mu != 0  # the statistics ran, over the weights alone (a zero bias never counts)


@pytest.mark.parametrize("net,rates,iter_stop", [
    ("lenet5", {"conv1": 2, "conv2": 3, "ip1": 4, "ip2": 2.5}, 14000),
    ("lenet300100", {"ip1": 5, "ip2": 3, "ip3": 3}, 20000)])
def test_named_recipes_are_dnsify_of_the_dense_nets(net, rates, iter_stop):
    dense = read_net(os.path.join(PROTOTXT, net, f"{net}_train_test.prototxt"))
    recipe = read_net(os.path.join(PROTOTXT, net, f"{net}_dns_train_test.prototxt"))
    converted, _ = dnsify(dense, c_rate=rates, iter_stop=iter_stop)
    converted.name = recipe.name
    assert converted == recipe


def test_default_iter_stop_is_four_fifths():
    assert default_iter_stop(10000) == 8000 and default_iter_stop(25000) == 20000 and default_iter_stop(7) == 5


@pytest.mark.parametrize("kwargs,message", [
    ({"layers": ["conv9"]}, "no layer named 'conv9'; the net's weight layers are conv1, conv2, ip"),
    ({"layers": ["pool"]}, "layer 'pool' is Pooling; only Convolution and InnerProduct"),
    ({"c_rate": {"conv9": 2}}, "c_rate given for layer 'conv9', but the net's weight layers are conv1, conv2, ip"),
    ({"layers": ["ip"], "c_rate": {"conv1": 2}}, "'conv1', but it is not one of the layers to convert \\(ip\\)"),
])
def test_bad_layer_names_are_errors_listing_the_weight_layers(kwargs, message):
    with pytest.raises(NetError, match=message):
        dnsify(tiny(), iter_stop=10, **kwargs)


def test_already_dns_and_transposed_layers_are_errors():
    net_param, _ = dnsify(tiny(), layers=["ip"], iter_stop=10)
    with pytest.raises(NetError, match="'ip' is already a DNS layer \\(CInnerProduct\\)"):
        dnsify(net_param, layers=["ip"], iter_stop=10)
    # With the default (all), the DNS layer is left as it is and the plain ones are converted.
    again, record = dnsify(net_param, iter_stop=10)
    assert [c.name for c in record] == ["conv1", "conv2"]
    param = tiny()
    param.layer[4].inner_product_param.transpose = True
    with pytest.raises(NetError, match="'ip' \\(InnerProduct\\) has transpose: true"):
        dnsify(param, iter_stop=10)


def test_a_net_without_weight_layers_is_an_error():
    param = caffe_pb2.NetParameter(name="empty")
    param.layer.add(name="data", type="Input", top=["data"])
    with pytest.raises(NetError, match="no Convolution or InnerProduct layer to convert"):
        dnsify(param, iter_stop=10)


def test_parse_flags():
    assert parse_c_rates(["conv1=2", "2.5", "ip=4"]) == (2.5, {"conv1": 2.0, "ip": 4.0})
    assert parse_c_rates(None) == (None, {})
    assert parse_layers(["conv1,ip", "conv2"]) == ["conv1", "ip", "conv2"] and parse_layers(None) is None
    for bad in ("conv1=", "=2", "x", "conv1=nan"):
        with pytest.raises(NetError, match="expected LAYER=VALUE"):
            parse_c_rates([bad])
