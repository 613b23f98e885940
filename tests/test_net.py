import numpy as np
import pytest
from google.protobuf import text_format

import npcaffe
from npcaffe.errors import NetError, WeightsError
from npcaffe.proto import caffe_pb2

MLP = '''
name: "mlp"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 6 } shape { dim: 4 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip2" bottom: "label" top: "acc" include { phase: TEST } }
'''


def make(text, phase=npcaffe.TRAIN, **kw):
    return npcaffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), phase, **kw)


def feed(net, seed=0):
    rng = np.random.default_rng(seed)
    net.blobs["data"].data[...] = rng.normal(size=net.blobs["data"].shape)
    net.blobs["label"].data[...] = rng.integers(0, 3, size=net.blobs["label"].shape)


def test_structure_splits_and_outputs():
    net = make(MLP, npcaffe.TEST)
    assert list(net.blobs) == ["data", "label", "label_data_1_split_0", "label_data_1_split_1", "ip1",
                               "ip2", "ip2_ip2_0_split_0", "ip2_ip2_0_split_1", "loss", "acc"]
    assert net.outputs == ["acc", "loss"]  # sorted by name, as Caffe's std::set
    assert net.inputs == ["data", "label"]
    assert list(net.params) == ["ip1", "ip2"] and net.params["ip1"][0].shape == (5, 6)
    assert net.blob_loss_weights["loss"] == 1 and net.blob_loss_weights["acc"] == 0
    assert [l.type for l in net.layers].count("Split") == 2
    train = make(MLP, npcaffe.TRAIN)
    assert "acc" not in train.blobs and train.outputs == ["loss"]


def test_need_backward_rules():
    net = make(MLP)
    need = dict(zip(net.layer_names, net.layer_need_backward))
    assert need["ip1"] and need["ip2"] and need["loss"] and not need["data"]
    # ip1's bottom is data: no gradient needed there.
    assert net.bottom_need_backward[net.layer_names.index("ip1")] == [False]
    frozen = MLP.replace('layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"',
                         'layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1" param { lr_mult: 0 } param { lr_mult: 0 }')
    net = make(frozen)
    need = dict(zip(net.layer_names, net.layer_need_backward))
    assert not need["ip1"] and not need["relu1"] and need["ip2"]
    forced = make("force_backward: true\n" + MLP)
    assert forced.bottom_need_backward[forced.layer_names.index("ip1")] == [True]
    # The label bottom of a loss layer is never forced.
    loss_id = forced.layer_names.index("loss")
    assert forced.bottom_need_backward[loss_id] == [True, False]


def test_propagate_down_false_stops_backward():
    text = MLP.replace('layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"',
                       'layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" propagate_down: false')
    net = make(text)
    need = dict(zip(net.layer_names, net.layer_need_backward))
    assert need["ip2"] and not need["relu1"] and not need["ip1"]


def test_forward_backward_matches_numeric_gradient():
    npcaffe.set_random_seed(1)  # the fillers' weights, whatever tests ran before (a ReLU kink near a probe fails it)
    net = make(MLP)
    feed(net)
    net.clear_param_diffs()
    loss = float(net.forward_backward())
    w = net.params["ip1"][0]
    analytic = w.diff.copy()
    eps = 1e-2
    for idx in [(0, 0), (2, 3), (4, 5)]:
        orig = w.data[idx]
        w.data[idx] = orig + eps
        lp = float(net.forward_from_to())
        w.data[idx] = orig - eps
        lm = float(net.forward_from_to())
        w.data[idx] = orig
        assert analytic[idx] == pytest.approx((lp - lm) / (2 * eps), abs=2e-3)
    assert loss > 0


def test_param_diffs_accumulate_until_cleared():
    net = make(MLP)
    feed(net)
    net.clear_param_diffs()
    net.forward_backward()
    once = net.params["ip2"][0].diff.copy()
    net.forward_backward()
    np.testing.assert_allclose(net.params["ip2"][0].diff, 2 * once, rtol=1e-6)


def test_explicit_loss_weight_on_plain_layer():
    text = '''
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" loss_weight: 0.5
            inner_product_param { num_output: 2 weight_filler { type: "constant" value: 1 } } }'''
    net = make(text)
    net.blobs["data"].data[...] = [[1, 2, 3], [4, 5, 6]]
    loss = net.forward_from_to()
    assert float(loss) == pytest.approx(0.5 * (6 * 2 + 15 * 2))
    net.clear_param_diffs()
    net.backward_from_to()
    # d(0.5 * sum(ip)) / dW[j, k] = 0.5 * sum_n data[n, k]
    np.testing.assert_allclose(net.params["ip"][0].diff, 0.5 * np.array([[5, 7, 9], [5, 7, 9]]))


def test_shared_params_share_storage_and_accumulate():
    text = '''
    layer { name: "data" type: "Input" top: "a" top: "b" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "ip_a" type: "InnerProduct" bottom: "a" top: "ya" param { name: "w" } param { name: "bias" }
            inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }
    layer { name: "ip_b" type: "InnerProduct" bottom: "b" top: "yb" param { name: "w" } param { name: "bias" }
            inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }
    layer { name: "la" type: "Power" bottom: "ya" top: "la" loss_weight: 1 }
    '''.replace('layer { name: "la" type: "Power" bottom: "ya" top: "la" loss_weight: 1 }', '')
    text += ('layer { name: "sum_a" type: "InnerProduct" bottom: "ya" top: "sa" loss_weight: 1 param { lr_mult: 0 } param { lr_mult: 0 } '
             'inner_product_param { num_output: 1 weight_filler { type: "constant" value: 1 } } }\n'
             'layer { name: "sum_b" type: "InnerProduct" bottom: "yb" top: "sb" loss_weight: 1 param { lr_mult: 0 } param { lr_mult: 0 } '
             'inner_product_param { num_output: 1 weight_filler { type: "constant" value: 1 } } }\n')
    net = make(text)
    wa, wb = net.params["ip_a"][0], net.params["ip_b"][0]
    assert wa.shares_data_with(wb)
    assert len(net.learnable_params) == 2 + 4  # shared w and bias counted once
    net.blobs["a"].data[...] = [[1, 0, 0], [0, 1, 0]]
    net.blobs["b"].data[...] = [[0, 0, 1], [0, 0, 1]]
    net.clear_param_diffs()
    net.forward_backward()
    # d/dW of sum(W a) + sum(W b) = column sums of inputs, for every output row
    np.testing.assert_allclose(wa.diff, [[1, 1, 2], [1, 1, 2]])


def test_shared_param_shape_mismatch():
    text = '''
    layer { name: "data" type: "Input" top: "a" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "ip_a" type: "InnerProduct" bottom: "a" top: "ya" param { name: "w" } inner_product_param { num_output: 2 } }
    layer { name: "ip_b" type: "InnerProduct" bottom: "a" top: "yb" param { name: "w" } inner_product_param { num_output: 4 } }'''
    with pytest.raises(NetError, match="shared parameter 'w' has shape"):
        make(text)


# Parameters shared by name across layers (siamese nets): one owner, gradients summed into it.

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


def siamese():
    npcaffe.set_random_seed(1)
    net = make(SIAMESE)
    gen = np.random.default_rng(0)
    net.blobs["a"].data[...] = gen.standard_normal((4, 5))
    net.blobs["b"].data[...] = gen.standard_normal((4, 5))
    net.blobs["sim"].data[...] = np.array([1, 0, 1, 0]).reshape(4, 1, 1, 1)
    return net


def test_shared_params_have_one_owner_and_one_storage():
    net = siamese()
    wa, wb = net.params["ip_a"][0], net.params["ip_b"][0]
    assert wa.shares_data_with(wb)
    np.testing.assert_array_equal(wa.data, wb.data)
    assert len(net.learnable_params) == 2  # w and bias, owned by ip_a
    assert net.param_owners == [-1, -1, 0, 1]
    assert net.params_lr == [1, 2]


def test_shared_gradient_is_the_sum_over_both_uses():
    net = siamese()
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
    net = siamese()
    net.clear_param_diffs()
    net.forward_backward()
    before = net.params["ip_b"][0].data.copy()
    net.update()
    after = net.params["ip_b"][0].data
    np.testing.assert_allclose(after, before - net.params["ip_a"][0].diff, rtol=1e-6)
    np.testing.assert_array_equal(after, net.params["ip_a"][0].data)


def test_unknown_layer_type_lists_known_types(tmp_path):
    path = tmp_path / "bad.prototxt"
    path.write_text('layer { name: "x" type: "Convolutionn" top: "x" }\n')
    with pytest.raises(NetError) as e:
        npcaffe.Net(str(path), npcaffe.TEST)
    assert "layer 'x': unknown layer type 'Convolutionn'" in str(e.value) and "InnerProduct" in str(e.value)


def test_bottom_never_produced_names_file_and_layer(tmp_path):
    path = tmp_path / "bad.prototxt"
    path.write_text('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 } } }\n'
                    'layer { name: "r" type: "ReLU" bottom: "dta" top: "r" }\n')
    with pytest.raises(NetError, match="layer 'r': unknown bottom blob 'dta'"):
        npcaffe.Net(str(path), npcaffe.TEST)


def test_top_produced_twice():
    text = '''
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 } } }
    layer { name: "r1" type: "ReLU" bottom: "data" top: "x" }
    layer { name: "r2" type: "ReLU" bottom: "data" top: "x" }'''
    with pytest.raises(NetError, match="top blob 'x' is produced by multiple sources"):
        make(text)


def test_save_and_copy_from_round_trip(tmp_path):
    net = make(MLP)
    path = tmp_path / "w.caffemodel"
    net.save(str(path))
    other = make(MLP)
    other.copy_from(str(path))
    for name in net.params:
        for a, b in zip(net.params[name], other.params[name]):
            assert np.array_equal(a.data, b.data)
    # And through the pycaffe constructor forms.
    model = tmp_path / "mlp.prototxt"
    model.write_text(MLP)
    for n in (npcaffe.Net(str(model), str(path), npcaffe.TEST), npcaffe.Net(str(model), npcaffe.TEST, weights=str(path))):
        assert np.array_equal(n.params["ip2"][0].data, net.params["ip2"][0].data)


def test_copy_from_shape_mismatch_names_layer(tmp_path):
    net = make(MLP)
    path = tmp_path / "w.caffemodel"
    net.save(str(path))
    wider = make(MLP.replace("num_output: 5", "num_output: 7"))
    with pytest.raises(WeightsError, match="cannot copy param 0 of layer 'ip1': shape mismatch.*\\(5, 6\\).*\\(7, 6\\)"):
        wider.copy_from(str(path))


def test_pycaffe_forward_and_backward_kwargs():
    net = make("force_backward: true\n" + MLP, npcaffe.TRAIN)
    rng = np.random.default_rng(1)
    data = rng.normal(size=(4, 6)).astype(np.float32)
    label = np.array([0, 1, 2, 1], dtype=np.float32)
    out = net.forward(data=data, label=label)
    assert set(out) == {"loss"}
    np.testing.assert_array_equal(net.blobs["data"].data, data)
    diffs = net.backward()
    assert set(diffs) == {"data", "label"} and np.abs(diffs["data"]).sum() > 0
    part = net.forward(end="ip2")
    assert set(part) == {"ip2"}
    with pytest.raises(NetError, match="do not match the net inputs"):
        net.forward(data=data)


def test_reshape_input_then_forward():
    net = make(MLP, npcaffe.TEST)
    net.blobs["data"].reshape(7, 6)
    net.blobs["label"].reshape(7)
    net.reshape()
    assert net.blobs["ip2"].shape == (7, 3)
    net.blobs["label"].data[...] = 0
    net.forward()
    assert net.blobs["ip2"].shape == (7, 3)


def test_forward_all_pads_the_last_batch():
    net = make('''
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 6 } } }
    layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
            inner_product_param { num_output: 3 weight_filler { type: "gaussian" } } }
    layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }''', npcaffe.TEST)
    data = np.random.default_rng(3).normal(size=(10, 6)).astype(np.float32)
    out = net.forward_all(blobs=["ip"], data=data)
    assert out["prob"].shape == (10, 3) and out["ip"].shape == (10, 3)
    net.forward(data=np.concatenate([data[8:10], data[:2]]))
    np.testing.assert_allclose(out["prob"][8:10], net.blobs["prob"].data[:2], rtol=1e-6)


def test_pycaffe_module_level_names():
    import npcaffe as caffe
    assert not caffe.has_nccl()
    assert (caffe.solver_count(), caffe.solver_rank()) == (1, 0)
    caffe.set_solver_count(1)
    caffe.set_multiprocess(False)
    caffe.init_log()
    with pytest.raises(caffe.NpcaffeError, match="trains with 1 solver.*mpirun -n N"):
        caffe.set_solver_count(2)
    timer = caffe.Timer()
    timer.start()
    sum(range(10000))
    timer.stop()
    assert timer.ms > 0
