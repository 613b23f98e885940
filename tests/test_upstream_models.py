"""Issue acceptance: the four upstream DNS caffemodels score on all 10,000 MNIST test
images exactly as upstream `caffe test` did (../shared/crosscheck/upstream-test-accuracy.txt),
through `npcaffe test` on our LMDB test nets and through the Python API on the
upstream deploy prototxts."""
import os
import re

import numpy as np
import pytest

import npcaffe
from helpers import shared_path
from npcaffe import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (net, model, upstream accuracy, upstream loss) from upstream-test-accuracy.txt
UPSTREAM = [
    ("lenet5", "original", 0.9909, 0.029206),
    ("lenet5", "sparse", 0.9909, 0.0310067),
    ("lenet300100", "original", 0.9772, 0.0724059),
    ("lenet300100", "sparse", 0.9801, 0.067314),
]


def _test_images():
    from npcaffe.data.mnist import read_idx
    images = read_idx(shared_path("data", "mnist", "t10k-images-idx3-ubyte.gz"))
    labels = read_idx(shared_path("data", "mnist", "t10k-labels-idx1-ubyte.gz"))
    # Caffe's transform: uint8 -> float, times scale, in float32.
    return images.reshape(-1, 1, 28, 28).astype(np.float32) * np.float32(0.00390625), labels


@pytest.mark.parametrize("net_name,model,accuracy,loss", UPSTREAM)
def test_npcaffe_test_matches_upstream(net_name, model, accuracy, loss, tmp_path, monkeypatch, capsys):
    lmdb = shared_path("data", "mnist-lmdb", "mnist_test_lmdb")
    weights = shared_path("upstream-dns", f"caffe_{net_name}_{model}.caffemodel")
    os.makedirs(tmp_path / "data" / "mnist")
    os.symlink(lmdb, tmp_path / "data" / "mnist" / "mnist_test_lmdb")
    monkeypatch.chdir(tmp_path)
    prototxt = os.path.join(ROOT, "prototxt", net_name, f"{net_name}_train_test.prototxt")
    assert cli.main(["test", "--model", prototxt, "--weights", weights, "--iterations", "100"]) == 0
    out = capsys.readouterr().out
    got_acc = float(re.search(r"^accuracy = (\S+)$", out, re.M).group(1))
    got_loss = float(re.search(r"^loss = (\S+) \(\* 1 = ", out, re.M).group(1))
    assert abs(got_acc - accuracy) <= 1e-4 + 1e-7, out  # within one image of 10,000
    assert got_loss == pytest.approx(loss, rel=1e-4), out


@pytest.mark.parametrize("net_name,model,accuracy,loss", UPSTREAM)
def test_python_api_on_upstream_deploy_prototxt(net_name, model, accuracy, loss):
    images, labels = _test_images()
    net = npcaffe.Net(shared_path("upstream-dns", f"{net_name}.prototxt"),
                      shared_path("upstream-dns", f"caffe_{net_name}_{model}.caffemodel"), npcaffe.TEST)
    net.blobs["data"].reshape(100, 1, 28, 28)
    net.reshape()
    logits = "ip2" if net_name == "lenet5" else "ip3"
    correct = 0
    for start in range(0, 10000, 100):
        net.forward(data=images[start:start + 100])
        correct += int((net.blobs[logits].data.argmax(axis=1) == labels[start:start + 100]).sum())
    assert abs(correct - round(accuracy * 10000)) <= 1
    if net_name == "lenet300100":
        # Upstream's deploy net feeds `prob` from the 100-wide ip2, not ip3: replayed as written.
        assert net.blobs["prob"].shape == (100, 100)
    else:
        assert net.blobs["prob"].shape == (100, 10)
