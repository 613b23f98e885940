"""Sparse inference in TEST nets (npcaffe.sparse.packing and the layers' sparse_forward): the same
outputs as the dense path, and weights written after packing are seen."""
import numpy as np
import pytest

import npcaffe
from helpers import shared_path
from npcaffe.sparse import packing

NETS = [("lenet5", "ip2"), ("lenet300100", "ip3")]


def _images(n):
    from npcaffe.data.mnist import read_idx
    images = read_idx(shared_path("data", "mnist", "t10k-images-idx3-ubyte.gz"))[:n]
    return images.reshape(-1, 1, 28, 28).astype(np.float32) * np.float32(0.00390625)


def _forward(net, images, blob):
    net.blobs["data"].reshape(*images.shape)
    net.reshape()
    net.forward(data=images)
    return net.blobs[blob].data.copy()


def _close(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


@pytest.mark.parametrize("net_name, logits", NETS)
@pytest.mark.parametrize("batch", [1, 100])
def test_pruned_upstream_models_match_dense_path(net_name, logits, batch):
    prototxt = shared_path("upstream-dns", f"{net_name}.prototxt")
    weights = shared_path("upstream-dns", f"caffe_{net_name}_sparse.caffemodel")
    net = npcaffe.Net(prototxt, weights, npcaffe.TEST)
    for layer in net.layers:
        if layer.blobs:
            density = np.count_nonzero(layer.blobs[0].data) / layer.blobs[0].count
            assert (layer.packed is not None) == (density < packing.DENSITY_THRESHOLD), layer.name
    assert sum(layer.packed is not None for layer in net.layers) >= 2
    images = _images(batch)
    got = _forward(net, images, logits)
    packing.sparsify(net, threshold=0)  # everything dense
    assert all(getattr(layer, "packed", None) is None for layer in net.layers)
    _close(got, _forward(net, images, logits))


def test_dense_model_stays_dense_and_train_nets_are_untouched():
    net = npcaffe.Net(shared_path("upstream-dns", "lenet5.prototxt"),
                      shared_path("upstream-dns", "caffe_lenet5_original.caffemodel"), npcaffe.TEST)
    assert all(getattr(layer, "packed", None) is None for layer in net.layers)
    train = npcaffe.Net(shared_path("upstream-dns", "lenet5.prototxt"),
                        shared_path("upstream-dns", "caffe_lenet5_sparse.caffemodel"), npcaffe.TRAIN)
    assert all(getattr(layer, "packed", None) is None for layer in train.layers)


def test_writing_weights_after_loading_is_seen():
    """The packed copy is a cache: new values in net.params reach the next forward."""
    net = npcaffe.Net(shared_path("upstream-dns", "lenet300100.prototxt"),
                      shared_path("upstream-dns", "caffe_lenet300100_sparse.caffemodel"), npcaffe.TEST)
    images = _images(3)
    before = _forward(net, images, "ip3")
    net.params["ip3"][0].data[...] *= 2          # still sparse: repacked
    net.params["ip3"][1].data[...] = 0
    doubled = _forward(net, images, "ip3")
    assert net.layer_dict["ip3"].packed is not None
    net.params["ip1"][0].data[...] = 0.5          # dense now: back to the dense path
    changed = _forward(net, images, "ip3")
    assert net.layer_dict["ip1"].packed is None
    dense = npcaffe.Net(shared_path("upstream-dns", "lenet300100.prototxt"), npcaffe.TEST)
    for name in net.params:
        for mine, theirs in zip(net.params[name], dense.params[name]):
            theirs.data[...] = mine.data
    _close(changed, _forward(dense, images, "ip3"))
    assert not np.allclose(before, doubled)


@pytest.mark.parametrize("verify", [True, False])
def test_batch_one_uses_the_cheap_check_and_still_sees_writes(verify):
    """Batch 1 as the benchmark runs it (the deploy net's batch 64 reshaped to 1): after the
    first forward the weights check is the stamp comparison; a write is still seen."""
    net = npcaffe.Net(shared_path("upstream-dns", "lenet5.prototxt"),
                      shared_path("upstream-dns", "caffe_lenet5_sparse.caffemodel"), npcaffe.TEST)
    if not verify:
        packing.sparsify(net, verify=False)
    image = _images(1)
    first = _forward(net, image, "ip2")
    for _ in range(2):
        np.testing.assert_array_equal(_forward(net, image, "ip2"), first)
    packed = [layer.packed for layer in net.layers if layer.packed is not None]
    assert len(packed) == 4 and all(p.stamps is not None for p in packed if p.verify)
    assert net.layer_dict["ip1"].packed.csc is not None          # batch 1 on the columns
    dense = npcaffe.Net(shared_path("upstream-dns", "lenet5.prototxt"), npcaffe.TEST)
    for name in net.params:
        for mine, theirs in zip(net.params[name], dense.params[name]):
            theirs.data[...] = mine.data
    _close(first, _forward(dense, image, "ip2"))
    if verify:
        net.params["conv2"][0].data[...] *= 2
        dense.params["conv2"][0].data[...] *= 2
        _close(_forward(net, image, "ip2"), _forward(dense, image, "ip2"))


def test_writes_through_views_held_across_forwards_are_seen():
    """A forward with no view of the weights alive skips the comparison; any hand-out or
    live view of them makes the next forward compare again."""
    net = npcaffe.Net(shared_path("upstream-dns", "lenet300100.prototxt"),
                      shared_path("upstream-dns", "caffe_lenet300100_sparse.caffemodel"), npcaffe.TEST)
    images = _images(2)
    layer = net.layer_dict["ip1"]
    first = _forward(net, images, "ip3")
    _forward(net, images, "ip3")
    assert layer.packed.stamps is not None                   # untouched: the cheap check holds
    held = net.params["ip1"][0].data                         # a view kept across forwards
    _forward(net, images, "ip3")
    assert layer.packed.stamps is None
    held[...] *= 0.5                                         # written while packed
    halved = _forward(net, images, "ip3")
    del held
    assert not np.allclose(first, halved)
    dense = npcaffe.Net(shared_path("upstream-dns", "lenet300100.prototxt"), npcaffe.TEST)
    for name in net.params:
        for mine, theirs in zip(net.params[name], dense.params[name]):
            theirs.data[...] = mine.data
    _close(halved, _forward(dense, images, "ip3"))
    flat = net.params["ip2"][1].flat_data                    # a flat view, written after a forward, then dropped
    _forward(net, images, "ip3")
    flat[:] = 0
    del flat
    zero_bias = _forward(net, images, "ip3")
    dense.params["ip2"][1].data[...] = 0
    _close(zero_bias, _forward(dense, images, "ip3"))
