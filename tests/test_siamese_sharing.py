"""Parameters shared by name across layers (siamese nets): one owner, gradients summed into it."""
import numpy as np
from google.protobuf import text_format

import npcaffe
from npcaffe import rng
from npcaffe.proto import caffe_pb2

SIAMESE = """
name: "siamese"
force_backward: true
layer { name: "input" type: "Input" top: "a" top: "b" top: "sim"
        input_param { shape { dim: 4 dim: 5 } shape { dim: 4 dim: 5 } shape { dim: 4 dim: 1 dim: 1 dim: 1 } } }
layer { name: "ip_a" type: "InnerProduct" bottom: "a" top: "fa"
        param { name: "w" lr_mult: 1 } param { name: "bias" lr_mult: 2 }
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 }
                              bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "ip_b" type: "InnerProduct" bottom: "b" top: "fb"
        param { name: "w" lr_mult: 1 } param { name: "bias" lr_mult: 2 }
        inner_product_param { num_output: 3 } }
layer { name: "ra" type: "Reshape" bottom: "fa" top: "fa4" reshape_param { shape { dim: 0 dim: 0 dim: 1 dim: 1 } } }
layer { name: "rb" type: "Reshape" bottom: "fb" top: "fb4" reshape_param { shape { dim: 0 dim: 0 dim: 1 dim: 1 } } }
layer { name: "loss" type: "ContrastiveLoss" bottom: "fa4" bottom: "fb4" bottom: "sim"
        contrastive_loss_param { margin: 2 } }
"""


def build():
    rng.set_random_seed(1)
    net = npcaffe.Net(text_format.Parse(SIAMESE, caffe_pb2.NetParameter()), npcaffe.TRAIN)
    gen = np.random.default_rng(0)
    net.blobs["a"].data[...] = gen.standard_normal((4, 5))
    net.blobs["b"].data[...] = gen.standard_normal((4, 5))
    net.blobs["sim"].data[...] = np.array([1, 0, 1, 0]).reshape(4, 1, 1, 1)
    return net


def test_shared_params_have_one_owner_and_one_storage():
    net = build()
    wa, wb = net.params["ip_a"][0], net.params["ip_b"][0]
    assert wa.shares_data_with(wb)
    np.testing.assert_array_equal(wa.data, wb.data)
    assert len(net.learnable_params) == 2  # w and bias, owned by ip_a
    assert net.param_owners == [-1, -1, 0, 1]
    assert net.params_lr == [1, 2]


def test_shared_gradient_is_the_sum_over_both_uses():
    net = build()
    net.clear_param_diffs()
    net.forward_backward()
    w = net.params["ip_a"][0]
    computed = w.diff.copy()
    # Each use alone: freeze the other branch's contribution by recomputing its share by hand.
    fa, fb = net.blobs["fa"], net.blobs["fb"]
    grad_a = fa.diff.T @ net.blobs["a"].data
    grad_b = fb.diff.T @ net.blobs["b"].data
    np.testing.assert_allclose(computed, grad_a + grad_b, rtol=1e-5, atol=1e-6)
    assert np.abs(grad_a).max() > 0 and np.abs(grad_b).max() > 0

    # and it is the derivative of the net's loss, by central differences
    step = 1e-2
    for index in [(0, 0), (1, 3), (2, 4)]:
        orig = w.data[index]
        w.data[index] = orig + step
        plus = float(net.forward_from_to())
        w.data[index] = orig - step
        minus = float(net.forward_from_to())
        w.data[index] = orig
        assert computed[index] == np.float32(computed[index])
        assert abs(computed[index] - (plus - minus) / (2 * step)) <= 2e-3 * max(1, abs(computed[index]))


def test_update_moves_both_branches():
    net = build()
    net.clear_param_diffs()
    net.forward_backward()
    before = net.params["ip_b"][0].data.copy()
    net.update()
    after = net.params["ip_b"][0].data
    np.testing.assert_allclose(after, before - net.params["ip_a"][0].diff, rtol=1e-6)
    np.testing.assert_array_equal(after, net.params["ip_a"][0].data)
