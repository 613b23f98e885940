"""Compressed weights (`npcaffe compress`, npcaffe.fileio.compressed): the round trip gives the same
weights and outputs; DNS layers store W * T; a damaged file is a WeightsError."""
import os

import numpy as np
import pytest

import npcaffe
from helpers import shared_path
from npcaffe import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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


@pytest.mark.parametrize("net_name, logits", NETS)
def test_compress_round_trip(net_name, logits, tmp_path, capsys):
    weights = shared_path("upstream-dns", f"caffe_{net_name}_sparse.caffemodel")
    out = tmp_path / "w.npz"
    assert cli.main(["compress", "--weights", weights, "--out", str(out)]) == 0
    report = capsys.readouterr().out
    assert "kept" in report and out.exists()
    prototxt = shared_path("upstream-dns", f"{net_name}.prototxt")
    from_npz = npcaffe.Net(prototxt, weights=str(out), phase=npcaffe.TEST)
    from_caffemodel = npcaffe.Net(prototxt, weights, npcaffe.TEST)
    for name in from_caffemodel.params:
        for a, b in zip(from_npz.params[name], from_caffemodel.params[name]):
            np.testing.assert_array_equal(a.data, b.data)
    again = npcaffe.Net(prototxt, npcaffe.TEST)
    again.copy_from(str(out))
    images = _images(10)
    np.testing.assert_array_equal(_forward(again, images, logits), _forward(from_caffemodel, images, logits))


def test_compress_with_model_masks_dns_layers(tmp_path):
    """With --model the weights go through the net (here its deploy form) before being stored."""
    model = os.path.join(ROOT, "prototxt", "lenet5", "lenet5_deploy.prototxt")
    weights = shared_path("upstream-dns", "caffe_lenet5_sparse.caffemodel")
    out = tmp_path / "w.npz"
    assert cli.main(["compress", "--weights", weights, "--out", str(out), "--model", model]) == 0
    archive = np.load(out)
    kept = sum(archive[f"{name}/{j}/value"].size for name in archive["layers"] for j in (0, 1))
    assert kept == 3993  # upstream README: nonzero weights + biases of the pruned LeNet-5


def test_damaged_file_is_a_weights_error(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    net = npcaffe.Net(shared_path("upstream-dns", "lenet300100.prototxt"), npcaffe.TEST)
    with pytest.raises(npcaffe.errors.WeightsError, match="bad.npz"):
        net.copy_from(str(bad))
