"""The Net's forward plan (npcaffe.plan): reshapes skipped only while no blob of that net moved."""
import numpy as np
import pytest
from google.protobuf import text_format

import npcaffe
from npcaffe.proto import caffe_pb2

NET = '''
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } } }
layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } } }
layer { name: "sum" type: "Eltwise" bottom: "ip" bottom: "ip" top: "sum" }
'''


def make():
    return npcaffe.Net(text_format.Parse(NET, caffe_pb2.NetParameter()), npcaffe.TEST)


def count_reshapes(net):
    calls = {}
    for layer in net.layers:
        def counted(bottom, top, layer=layer, reshape=layer.reshape):
            calls[layer.name] = calls.get(layer.name, 0) + 1
            reshape(bottom, top)
        layer.reshape = counted
    return calls


def expected(net, images):
    pooled = images.reshape(images.shape[0], 3, images.shape[2] // 2, 2, images.shape[3] // 2, 2).max(axis=(3, 5))
    weight, bias = (b.data for b in net.params["ip"])
    return 2 * (pooled.reshape(images.shape[0], -1) @ weight.T + bias)


def test_reshape_skipped_while_the_net_holds_still_and_rerun_when_a_blob_moves():
    net = make()
    calls = count_reshapes(net)
    net.forward()
    net.forward()
    net.forward()
    # Pooling and InnerProduct settle after one reshape; Eltwise (no reshape_from_shapes) reshapes every time.
    assert calls == {"data": 3, "pool": 1, "ip": 1, "ip_ip_0_split": 1, "sum": 3}
    images = np.random.default_rng(0).standard_normal((5, 3, 4, 4)).astype(np.float32)
    net.blobs["data"].reshape(*images.shape)            # a new batch: reshaped again
    out = net.forward(data=images)["sum"]
    assert calls["pool"] == 2 and calls["ip"] == 2 and net.blobs["pool"].shape == (5, 3, 2, 2)
    np.testing.assert_allclose(out, expected(net, images), rtol=1e-5, atol=1e-5)
    net.blobs["pool"].reshape(1)                        # someone else reshaped a top: reshaped again
    out = net.forward(data=images)["sum"]
    assert calls["pool"] == 3 and net.blobs["pool"].shape == (5, 3, 2, 2)
    np.testing.assert_allclose(out, expected(net, images), rtol=1e-5, atol=1e-5)


def test_nets_keep_their_own_clocks():
    first, second = make(), make()
    assert first.layout is not second.layout
    assert all(blob.clock is first.layout for blob in first.blobs.values())
    assert all(p.clock is first.layout for params in first.params.values() for p in params)
    calls = count_reshapes(second)
    second.forward()
    first.blobs["data"].reshape(4, 3, 4, 4)  # moves the first net only
    first.forward()
    second.forward()
    assert calls["pool"] == 1 and calls["ip"] == 1


def test_kept_views_follow_new_storage_in_a_net():
    net = make()
    for batch in (2, 2, 7, 1, 7):  # grows (new storage), shrinks, grows back
        images = np.random.default_rng(batch).standard_normal((batch, 3, 4, 4)).astype(np.float32)
        net.blobs["data"].reshape(*images.shape)
        out = net.forward(data=images)["sum"]
        np.testing.assert_allclose(out, expected(net, images), rtol=1e-5, atol=1e-5)


# -- affine runs: BatchNorm (stored statistics) -> Scale -> ReLU as one pass ---------------------------------
AFFINE = '''
{force}
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 2 dim: 3 dim: 5 dim: 4 }} }} }}
layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param {{ num_output: 4 kernel_size: 3 pad: 1 weight_filler {{ type: "gaussian" }} }} }}
layer {{ name: "bn" type: "BatchNorm" bottom: "conv" top: "{bn_top}" batch_norm_param {{ use_global_stats: true }} }}
layer {{ name: "scale" type: "Scale" bottom: "{bn_top}" top: "{bn_top}" scale_param {{ bias_term: {bias} }} }}
layer {{ name: "relu" type: "ReLU" bottom: "{bn_top}" top: "{bn_top}" relu_param {{ negative_slope: {slope} }} }}
layer {{ name: "pool" type: "Pooling" bottom: "{bn_top}" top: "pool" pooling_param {{ pool: AVE global_pooling: true }} }}
'''


def affine_net(bn_top="conv", bias="true", slope=0, force=""):
    net = npcaffe.Net(text_format.Parse(AFFINE.format(bn_top=bn_top, bias=bias, slope=slope, force=force),
                                        caffe_pb2.NetParameter()), npcaffe.TEST)
    rng = np.random.default_rng(4)
    bn, scale = net.params["bn"], net.params["scale"]
    bn[0].data[...] = rng.normal(size=4) * 3
    bn[1].data[...] = rng.uniform(0.5, 2, size=4) * 3
    bn[2].data[...] = 3
    scale[0].data[...] = rng.normal(size=4)
    if len(scale) > 1:
        scale[1].data[...] = rng.normal(size=4)
    net.blobs["data"].data[...] = rng.normal(size=net.blobs["data"].shape)
    return net


def layer_by_layer(net):
    """Every blob after a forward one layer at a time (no run spans a one-layer range)."""
    for i in range(len(net.layers)):
        net.forward_from_to(i, i)
    return {name: blob.data.copy() for name, blob in net.blobs.items()}


def fused_calls(net):
    """Count the runs' passes: patch each run's forward."""
    calls = []
    for run in net.plan.affine_runs.values():
        def counted(run=run, forward=run.forward):
            calls.append(run.first)
            forward()
        run.forward = counted
    return calls


def test_affine_run_gives_the_layers_bits():
    for bn_top, bias, slope, run_layers in (("conv", "true", 0, 3), ("bn", "true", 0, 3), ("conv", "false", 0, 3),
                                            ("conv", "true", 0.1, 2)):
        net = affine_net(bn_top, bias, slope)
        runs = net.plan.affine_runs
        assert [(r.first, r.last) for r in runs.values()] == [(2, 2 + run_layers - 1)], (bn_top, bias, slope)
        expected = layer_by_layer(net)
        assert (expected[bn_top] < 0).any() == (slope != 0)  # the ReLU (or not) did act on these inputs
        calls = fused_calls(net)
        net.forward()  # the layers settled in layer_by_layer: the run is used at once
        assert calls == [2]
        for name, blob in net.blobs.items():
            np.testing.assert_array_equal(blob.data, expected[name], err_msg=f"{name} {bn_top} {bias} {slope}")


def test_affine_run_reads_the_statistics_and_parameters_of_each_forward():
    net = affine_net()
    net.forward()
    net.forward()
    net.params["bn"][1].data[...] *= 2
    net.params["scale"][1].data[...] -= 1
    fused = (net.forward(), net.blobs["conv"].data.copy())[1]
    np.testing.assert_array_equal(fused, layer_by_layer(net)["conv"])


@pytest.mark.parametrize("bn_top", ["conv", "bn"])
def test_affine_run_before_a_backward_gives_the_layers_gradients(bn_top):
    """With a backward through them the run also writes the copy of its input an in-place Scale keeps
    for its scale's gradient: every diff is the layer-by-layer forward's, to the bit."""
    results = []
    for fused in (False, True):
        npcaffe.rng.set_random_seed(2)  # the same convolution weights
        net = affine_net(bn_top, force="force_backward: true")
        assert [(r.first, r.last) for r in net.plan.affine_runs.values()] == [(2, 4)]
        layer_by_layer(net)  # settles the layers: a whole forward then takes the run
        net.blobs["data"].data[...] = np.random.default_rng(7).normal(size=net.blobs["data"].shape)
        calls = fused_calls(net)
        if fused:
            net.forward()
        else:
            layer_by_layer(net)
        assert calls == ([2] if fused else [])
        net.blobs["pool"].diff[...] = np.random.default_rng(8).normal(size=net.blobs["pool"].shape)
        net.clear_param_diffs()
        net.backward()
        results.append({name: (blob.data.copy(), blob.diff.copy()) for name, blob in net.blobs.items()}
                       | {f"{name}/{i}": (None, p.diff.copy()) for name, ps in net.params.items()
                          for i, p in enumerate(ps)})
    layered, fused = results
    assert layered.keys() == fused.keys()
    assert np.abs(layered["scale/0"][1]).max() > 0  # the scale's gradient reads the kept input
    for name, (data, diff) in layered.items():
        if data is not None:
            np.testing.assert_array_equal(fused[name][0], data, err_msg=name)
        np.testing.assert_array_equal(fused[name][1], diff, err_msg=name)


def test_no_affine_run_with_batch_statistics():
    train = npcaffe.Net(text_format.Parse(AFFINE.format(bn_top="conv", bias="true", slope=0, force="")
                                          .replace("use_global_stats: true", "use_global_stats: false"),
                                          caffe_pb2.NetParameter()), npcaffe.TEST)
    assert train.plan.affine_runs == {}
