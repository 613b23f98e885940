"""The Net's forward plan (npcaffe.plan): reshapes skipped only while no blob of that net moved."""
import numpy as np
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
