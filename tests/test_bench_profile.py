"""tools/bench.py's profile: layer-by-layer times and the multiply-adds a pass must compute."""
import numpy as np

import npcaffe
from tests.helpers import load_tool

NET = """
name: "p"
force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 3 dim: 2 dim: 6 dim: 6 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.1 } } }
"""


def _net(tmp_path, force_backward):
    path = tmp_path / "p.prototxt"
    path.write_text(NET if force_backward else NET.replace("force_backward: true", ""))
    net = npcaffe.Net(str(path), npcaffe.TEST)
    net.blobs["data"].data[...] = np.random.default_rng(0).normal(size=(3, 2, 6, 6))
    return net


def test_profile_counts_each_product_the_pass_computes(tmp_path):
    bench = load_tool("bench")
    conv, ip = 4 * 2 * 9 * 16, 5 * 64  # mult-adds per image: 4x4 outputs of 2*3*3 taps; 64 inputs to 5
    net = _net(tmp_path, force_backward=True)
    by_type, whole_ms, macs = bench.layer_profile(net, {"ip": np.ones((3, 5), np.float32)}, backward=True,
                                                  repeats=2)
    assert set(by_type) >= {"Convolution", "ReLU", "InnerProduct"} and whole_ms > 0
    assert macs == 3 * (3 * conv + 3 * ip)  # forward, weight gradient, bottom gradient (the input's too)
    net = _net(tmp_path, force_backward=False)
    _, _, forward_only = bench.layer_profile(net, {}, backward=False, repeats=1)
    assert forward_only == 3 * (conv + ip)
    line = bench.profile_line("forward", {"Convolution": 2.0, "InnerProduct": 1.0, "ReLU": 1.0}, 4.0, 3e6, 1e9,
                              theirs_ms=6.0)
    assert "the weighted layers 3.0 ms (75%)" in line and "at 1.0 G/s = 100% of sgemm's" in line
    assert "ReLU 1.0" in line and "take 3 ms: at most 2.00x PyTorch's 6 ms" in line


def test_profile_skips_the_bottom_gradient_nobody_needs(tmp_path):
    """Without force_backward no layer needs the input's gradient: conv's product counts twice, ip's three times."""
    bench = load_tool("bench")
    path = tmp_path / "loss.prototxt"
    path.write_text(NET.replace("force_backward: true", "") + """
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 3 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
""")
    net = npcaffe.Net(str(path), npcaffe.TRAIN)
    net.blobs["data"].data[...] = np.random.default_rng(0).normal(size=(3, 2, 6, 6))
    net.blobs["label"].data[...] = [0, 1, 2]
    _, _, macs = bench.layer_profile(net, {}, backward=True, repeats=1)
    assert macs == 3 * (2 * 4 * 2 * 9 * 16 + 3 * 5 * 64)


def test_verdict_names_the_miss_and_its_distance():
    bench = load_tool("bench")
    assert bench.verdict(5.0, 12.0, 2.0) == "met"
    assert bench.verdict(8.0, 12.0, 2.0) == "MISSED (1.50x of 2x: needs <= 6.00 ms)"
    assert bench.verdict(11.0, 30.0, 2.0, limit_ms=10.0) == "MISSED (1.00 ms over 10 ms)"
    assert bench.verdict(300.0, 360.0, 1.5) == "MISSED (1.20x of 1.5x: needs <= 240.0 ms)"


def test_needed_rate_asks_the_weighted_layers_for_what_the_goal_leaves_them():
    bench = load_tool("bench")
    by_type = {"Convolution": 8.0, "InnerProduct": 2.0, "ReLU": 3.0}  # weighted layers 10 ms, the rest 3
    rate = 100e9  # sgemm's square rate: 100 G mult-adds/s
    line = bench.needed_rate(by_type, 13.0, 1e9, rate, needed_ms=8.0)  # 1 G mult-adds in 8 - 3 = 5 ms
    assert "200 G/s = 200% of sgemm's square rate (now 100 G/s)" in line
    assert "the other layers alone take 3.0 ms" in bench.needed_rate(by_type, 13.0, 1e9, rate, needed_ms=2.5)
    profile = bench.profile_line("forward", by_type, 13.0, 1e9, rate, theirs_ms=16.0, goal=2.0)
    assert profile.endswith("2x PyTorch: " + line)
    assert "x PyTorch:" not in bench.profile_line("forward", by_type, 13.0, 1e9, rate, theirs_ms=30.0, goal=2.0)
