"""Our ResNet-50 deploy net, written by tools/make_resnet50_prototxt.py in the original release's layout."""
import os
import subprocess
import sys

import numpy as np

import npcaffe
from npcaffe.fileio.prototxt import read_net

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTOTXT = os.path.join(ROOT, "prototxt", "resnet50", "ResNet-50-deploy.prototxt")


def test_generator_reproduces_the_checked_in_file(tmp_path):
    out = tmp_path / "r50.prototxt"
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_resnet50_prototxt.py"), str(out)],
                   check=True, capture_output=True)
    assert out.read_text() == open(PROTOTXT).read()


def test_layer_names_follow_the_original():
    names = [layer.name for layer in read_net(PROTOTXT).layer]
    # The legacy `input:` header becomes an Input layer named "input" on upgrade, as in Caffe.
    assert names[:9] == ["input", "conv1", "bn_conv1", "scale_conv1", "conv1_relu", "pool1",
                         "res2a_branch1", "bn2a_branch1", "scale2a_branch1"]
    assert names[-3:] == ["pool5", "fc1000", "prob"]
    for name in ("res2c", "res3d", "res4f", "res5c", "res5c_relu", "bn5c_branch2c", "scale4a_branch1"):
        assert name in names


def test_builds_counts_parameters_and_runs_one_image():
    net = npcaffe.Net(PROTOTXT, npcaffe.TEST)
    assert net.inputs == ["data"] and net.blobs["data"].shape == (1, 3, 224, 224)
    learned = sum(b.count for b, lr in zip(net.learnable_params, net.params_lr) if lr != 0)
    statistics = sum(b.count for b, lr in zip(net.learnable_params, net.params_lr) if lr == 0)
    # 25,557,032 (the usual ResNet-50 count: convolutions, BN gamma/beta as Scale, fc1000)
    # + 64 for conv1's bias, which the original Caffe release has.
    assert learned == 25_557_096
    bn = [layer for layer in net.layers if layer.type == "BatchNorm"]
    assert len(bn) == 53
    assert statistics == sum(2 * layer.channels + 1 for layer in bn) == 53_173
    gen = np.random.default_rng(0)
    for layer in net.layers:  # a plausible trained state: unit variances, small weights
        if layer.type == "BatchNorm":
            layer.blobs[1].data[...] = 1
            layer.blobs[2].data[...] = 1
        elif layer.type in ("Convolution", "InnerProduct"):
            w = layer.blobs[0].data
            w[...] = gen.standard_normal(w.shape) * np.sqrt(1.0 / w[0].size)
    net.blobs["data"].data[...] = gen.standard_normal((1, 3, 224, 224))
    out = net.forward()
    assert out["prob"].shape == (1, 1000)
    assert np.isfinite(out["prob"]).all() and abs(float(out["prob"].sum()) - 1) < 1e-4
    assert net.blobs["pool5"].shape == (1, 2048, 1, 1)
    assert net.blobs["res4f"].shape == (1, 1024, 14, 14)
