"""The mask core (npcaffe.masks): one predicate, effective parameters, kept counts, bake, and
fixed masks attached to plain Convolution / InnerProduct layers."""
import numpy as np
import pytest
from google.protobuf import text_format

import npcaffe
from gradient_check import check_gradient
from helpers import layer_param, make_blob
from npcaffe import masks
from npcaffe.sparse import packing
from npcaffe.errors import NetError
from npcaffe.layer import create_layer
from npcaffe.proto import caffe_pb2
from npcaffe.solvers import get_solver

MIXED = '''
name: "mixed"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 1 dim: 6 dim: 6 } shape { dim: 4 } } }
layer { name: "conv" type: "CConvolution" bottom: "data" top: "conv"
        convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "gaussian" std: 0.5 }
                            bias_filler { type: "gaussian" std: 0.5 } }
        cconvolution_param { weight_mask_filler { type: "constant" value: 1 }
                             bias_mask_filler { type: "constant" value: 1 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "conv" top: "ip1"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.5 }
                              bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "ip2" type: "CInnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 }
                              bias_filler { type: "gaussian" std: 0.5 } }
        cinner_product_param { weight_mask_filler { type: "constant" value: 1 }
                               bias_mask_filler { type: "constant" value: 1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
'''


# The same net with BVLC layer types only.
PLAIN = '''
name: "plain"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 1 dim: 6 dim: 6 } shape { dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "gaussian" std: 0.5 }
                            bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "conv" top: "ip1"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.5 }
                              bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
'''


def make(text=MIXED, phase=npcaffe.TEST):
    net = npcaffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), phase)
    rng = np.random.default_rng(3)
    net.blobs["data"].data[...] = rng.normal(size=net.blobs["data"].shape)
    net.blobs["label"].data[...] = rng.integers(0, 3, size=4)
    if "conv" in net.layer_dict and masks.is_masked(net.layer_dict["conv"]):
        weight_mask = masks.mask_blobs(net.layer_dict["conv"])[0]
        weight_mask.data[...] = rng.random(weight_mask.shape) < 0.5
    return net


def test_one_predicate_for_dns_and_attached_masks():
    net = make()
    assert [name for name, _ in masks.masked_layers(net)] == ["conv", "ip2"]
    assert not masks.is_masked(net.layer_dict["ip1"]) and masks.mask_blobs(net.layer_dict["ip1"]) is None
    masks.attach_masks(net.layer_dict["ip1"], np.ones((5, 48), np.float32))
    assert [name for name, _ in masks.masked_layers(net)] == ["conv", "ip1", "ip2"]
    masks.detach_masks(net.layer_dict["ip1"])
    assert not masks.is_masked(net.layer_dict["ip1"])


def test_kept_counts_count_nonzero_masked_entries():
    weight = np.array([[0.5, 0.0, -1.0], [2.0, 3.0, 0.0]], np.float32)
    mask = np.array([[1, 1, 0], [1, 0, 0]], np.float32)
    # kept: 0.5 and 2.0; the zero weight under a 1 and the nonzeros under 0 do not count
    assert masks.kept_counts(weight, np.array([1.0, 0.0], np.float32), mask, np.array([1, 1], np.float32)) == (8, 3)
    assert masks.kept_counts(weight) == (6, 4)  # no mask: the nonzeros


def test_layer_kept_matches_the_blobs():
    net = make()
    conv = net.layer_dict["conv"]
    w, b, wm, bm = (blob.data for blob in conv.blobs)
    expected = int(np.count_nonzero(w * wm)) + int(np.count_nonzero(b * bm))
    assert masks.layer_kept(conv) == (w.size + b.size, expected) and expected < w.size + b.size
    assert masks.mask_entries(conv) == (int(np.count_nonzero(wm)), int(np.count_nonzero(bm)))


def test_stored_layout_by_layer_type():
    w, b = np.ones((2, 3), np.float32), np.ones(2, np.float32)
    wm, bm = np.zeros((2, 3), np.float32), np.ones(2, np.float32)
    assert masks.stored_layout("CInnerProduct", [w, b, wm, bm])[2] is wm
    assert masks.stored_layout("CMaskedConvolution", [w, b, wm, bm])[3] is bm
    assert masks.stored_layout("CInnerProduct", [w, b])[2] is None  # the DNS release's two-blob models
    assert masks.stored_layout("BatchNorm", [w, b, wm, bm])[2] is None  # four blobs but no masks
    assert masks.stored_kept("CInnerProduct", [w, b, wm, bm]) == (8, 2)
    assert masks.stored_kept("InnerProduct", [w, b, wm, bm]) == (8, 8)
    assert [a.tolist() for a in masks.stored_effective("CInnerProduct", [w, b, wm, bm])] == [wm.tolist(), [1, 1]]


def test_plain_model_computes_as_the_masked_net():
    net = make()
    net.forward()
    expected = net.blobs["ip2"].data.copy()
    plain_param = masks.plain_model(net)
    assert [lp.type for lp in plain_param.layer if lp.blobs] == ["Convolution", "InnerProduct", "InnerProduct"]
    assert all(len(lp.blobs) == 2 for lp in plain_param.layer if lp.blobs)
    assert not any(lp.HasField("cconvolution_param") or lp.HasField("cinner_product_param") for lp in plain_param.layer)
    plain = npcaffe.Net(plain_param, npcaffe.TEST)
    plain.copy_from(plain_param)
    assert masks.masked_layers(plain) == []
    plain.blobs["data"].data[...] = net.blobs["data"].data
    plain.forward()
    np.testing.assert_array_equal(plain.blobs["ip2"].data, expected)
    # The net itself is unchanged: its masked-out weights are still there.
    conv = net.layer_dict["conv"]
    assert np.count_nonzero(conv.blobs[0].data) > np.count_nonzero(plain.params["conv"][0].data)


def test_bake_writes_effective_params():
    net = make()
    conv = net.layer_dict["conv"]
    expected = masks.effective_params(conv)
    masks.bake(conv)
    np.testing.assert_array_equal(conv.blobs[0].data, expected[0])
    np.testing.assert_array_equal(conv.blobs[1].data, expected[1])


@pytest.mark.parametrize("kind", ["InnerProduct", "Convolution"])
def test_attached_masks_forward_with_w_times_t(kind):
    net = make()
    layer_name = "ip1" if kind == "InnerProduct" else "conv"
    if kind == "Convolution":
        net = make(PLAIN)
    layer = net.layer_dict[layer_name]
    rng = np.random.default_rng(0)
    mask = (rng.random(layer.blobs[0].shape) < 0.5).astype(np.float32)
    net.forward()
    dense = net.blobs[layer_name].data.copy()
    weight = layer.blobs[0].data.copy()
    masks.attach_masks(layer, mask)
    np.testing.assert_array_equal(layer.blobs[0].data, weight * mask)  # pruned entries zeroed at once
    # Weights written through the Python API after pruning still compute as pruned.
    net.params[layer_name][0].data[...] = weight
    net.forward()
    pruned = net.blobs[layer_name].data.copy()
    assert not np.allclose(pruned, dense)
    layer.blobs[0].data[...] = weight * mask
    masks.detach_masks(layer)
    net.forward()
    np.testing.assert_array_equal(net.blobs[layer_name].data, pruned)


def test_attached_masks_gradient_check():
    param = layer_param('''name: "ip" type: "InnerProduct"
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 } }''')
    layer = create_layer(param)
    bottom, top = [make_blob((3, 5), seed=2)], [npcaffe.Blob(1)]
    layer.setup(bottom, top)
    rng = np.random.default_rng(1)
    masks.attach_masks(layer, (rng.random((4, 5)) < 0.5).astype(np.float32), np.array([1, 0, 1, 1], np.float32))
    check_gradient(layer, bottom, top)


def test_fixed_masks_survive_momentum_and_weight_decay():
    text = PLAIN
    solver_param = caffe_pb2.SolverParameter(base_lr=0.01, momentum=0.9, weight_decay=0.01, lr_policy="fixed",
                                             max_iter=10, display=0, snapshot_after_train=False)
    solver_param.net_param.CopyFrom(text_format.Parse(text, caffe_pb2.NetParameter()))
    for solver_type in ("SGD", "Adam"):  # the fused SGD update and the general one
        solver_param.type = solver_type
        solver = get_solver(solver_param)
        net = solver.net
        rng = np.random.default_rng(5)
        net.blobs["data"].data[...] = rng.normal(size=net.blobs["data"].shape)
        net.blobs["label"].data[...] = rng.integers(0, 3, size=4)
        solver.step(3)  # some momentum history for every weight
        ip1 = net.layer_dict["ip1"]
        mask = (rng.random(ip1.blobs[0].shape) < 0.3).astype(np.float32)
        masks.attach_masks(ip1, mask)
        before = ip1.blobs[0].data.copy()
        solver.step(3)
        after = ip1.blobs[0].data
        assert np.all(after[mask == 0] == 0), solver_type
        assert not np.array_equal(after[mask == 1], before[mask == 1]), solver_type  # the kept ones still learn
        net.clear_param_diffs()
        net.forward_backward()
        assert np.all(ip1.blobs[0].diff[mask == 0] == 0) and np.any(ip1.blobs[0].diff[mask == 1] != 0), solver_type


def test_attached_masks_pack_for_sparse_inference():
    net = make(PLAIN.replace('layer { name: "loss"', '# '))  # no loss: nothing needs backward
    ip1 = net.layer_dict["ip1"]
    weight = ip1.blobs[0].data.copy()
    mask = np.zeros(weight.shape, np.float32)
    mask[:, :3] = 1
    masks.attach_masks(ip1, mask)
    ip1.blobs[0].data[...] = weight  # written back: only the masks say what is pruned
    np.testing.assert_array_equal(masks.effective_params(ip1)[0], weight * mask)
    net.forward()
    dense = net.blobs["ip1"].data.copy()
    assert "ip1" in packing.sparsify(net)  # 3 of 48 inputs kept: packed
    net.blobs["ip1"].data[...] = np.nan
    net.forward()
    np.testing.assert_allclose(net.blobs["ip1"].data, dense, rtol=1e-5, atol=1e-6)


def test_attach_masks_refuses_bad_input():
    net = make()
    ip1 = net.layer_dict["ip1"]
    with pytest.raises(NetError, match=r"ip1.*weight mask of shape \(2, 2\) does not fit"):
        masks.attach_masks(ip1, np.ones((2, 2)))
    with pytest.raises(NetError, match="only 0 and 1"):
        masks.attach_masks(ip1, np.full((5, 48), 0.5))
    with pytest.raises(NetError, match="DNS layers carry their own"):
        masks.attach_masks(net.layer_dict["ip2"], np.ones((3, 5)))
    with pytest.raises(NetError, match="bias mask"):
        masks.attach_masks(ip1, None, np.ones(7))
