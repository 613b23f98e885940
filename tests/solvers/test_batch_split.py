"""npcaffe.solvers.batch_split: one iteration's forward and backward on threads, the batch split in parts.

Against the unsplit run of the same DNS net: the same masks and gate draws (the surgery runs once, in
layer order), weights within rounding (the batch's sum is formed in another order); two split runs give
the same bits; what it cannot split is refused by name; `npcaffe train --batch_split 2` runs."""
import numpy as np
import pytest
from google.protobuf import text_format

from npcaffe.cli import main
from npcaffe.errors import NetError
from npcaffe.kernels import glibc_rand
from npcaffe.proto import caffe_pb2
from npcaffe.solvers import get_solver

NET = """
name: "tiny_dns"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 8 dim: 2 dim: 7 dim: 7 } shape { dim: 8 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "uniform" min: 0 max: 2.99 } } }
layer { name: "conv" type: "CConvolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.3 }
                      bias_filler { type: "constant" value: 0.1 } }
  cconvolution_param { gamma: 0.01 power: 1 c_rate: 0.5 iter_stop: 100
    weight_mask_filler { type: "constant" value: 1 } bias_mask_filler { type: "constant" value: 1 } } }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "CInnerProduct" bottom: "pool" top: "ip1"
  inner_product_param { num_output: 6 weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "constant" value: 0.1 } }
  cinner_product_param { gamma: 0.01 power: 1 c_rate: 0.5 iter_stop: 100
    weight_mask_filler { type: "constant" value: 1 } bias_mask_filler { type: "constant" value: 1 } } }
layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""


def _solver(net_text=NET, parts=None):
    param = caffe_pb2.SolverParameter(base_lr=0.05, momentum=0.9, weight_decay=0.0005, lr_policy="fixed",
                                      max_iter=100, display=0, random_seed=3)
    param.net_param.CopyFrom(text_format.Parse(net_text, caffe_pb2.NetParameter()))
    glibc_rand.reset()
    solver = get_solver(param)
    if parts:
        solver.set_batch_split(parts)
    return solver


def _train(parts, iterations=12):
    solver = _solver(parts=parts)
    losses = []
    for _ in range(iterations):
        solver.step(1)
        losses.append(float(solver.smoothed_loss))
    state = glibc_rand.get_state()
    params = {name: [b.data.copy() for b in blobs] for name, blobs in solver.net.params.items()}
    if solver.batch_split:
        solver.batch_split.close()
    return params, losses, state


def test_split_run_has_the_unsplit_masks_and_draws_and_its_weights_within_rounding():
    unsplit, unsplit_losses, unsplit_rand = _train(None)
    split, split_losses, split_rand = _train(2)
    assert unsplit_rand == split_rand  # one gate draw per C-layer per iteration, as unsplit
    for name in ("conv", "ip1"):
        for mask in (2, 3):  # weight and bias masks: the same updates
            np.testing.assert_array_equal(split[name][mask], unsplit[name][mask])
        assert 0 < split[name][2].mean() < 1  # the surgery did prune (and the test could tell)
    for name, blobs in unsplit.items():
        for mine, theirs in zip(split[name], blobs):
            np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(split_losses, unsplit_losses, rtol=1e-4)


def test_split_runs_repeat_to_the_bit():
    first, first_losses, _ = _train(2)
    again, again_losses, _ = _train(2)
    assert first_losses == again_losses
    for name, blobs in first.items():
        for mine, theirs in zip(again[name], blobs):
            np.testing.assert_array_equal(mine, theirs)


def test_what_cannot_be_split_is_refused_by_name():
    with pytest.raises(NetError, match=r"top 'data' of data layer 'data' has shape \(8, 2, 7, 7\).*3 parts"):
        _solver(parts=3)
    batch_norm = NET.replace('layer { name: "pool"', 'layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }\n'
                                                     'layer { name: "pool"')
    with pytest.raises(NetError, match="layer 'bn' \\(BatchNorm\\) computes batch statistics"):
        _solver(batch_norm, parts=2)


def test_train_cli_takes_batch_split(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text('net: "net.prototxt"\nbase_lr: 0.05\nmomentum: 0.9\nlr_policy: "fixed"\n'
                                              'display: 1\nmax_iter: 4\nsnapshot_prefix: "snap/tiny"\nrandom_seed: 3\n')
    (tmp_path / "snap").mkdir()
    assert main(["train", "--solver", "solver.prototxt", "--batch_split", "2", "--quiet"]) == 0
    assert (tmp_path / "snap" / "tiny_iter_4.caffemodel").is_file()


def test_the_two_part_sum_kernel_rounds_as_the_numpy_passes():
    from npcaffe.kernels.sgd import add_mean_of_two
    rng = np.random.default_rng(2)
    first, second, out = (rng.normal(size=1001).astype(np.float32) * 1e3 for _ in range(3))
    want = out.copy()
    total = first + second
    total *= np.float32(0.5)
    want += total
    add_mean_of_two(first, second, np.float32(0.5), out)
    np.testing.assert_array_equal(out, want)


def test_the_train_nets_outputs_are_the_parts_mean():
    net = NET.replace('layer { name: "loss"', 'layer { name: "acc" type: "Accuracy" bottom: "ip2" bottom: "label" '
                                              'top: "acc" }\nlayer { name: "loss"')
    solver = _solver(net, parts=2)
    solver.step(1)
    parts = solver.batch_split.part_nets
    for name in ("loss", "acc"):
        want = (parts[0].blobs[name].data + parts[1].blobs[name].data) * np.float32(0.5)
        np.testing.assert_array_equal(solver.net.blobs[name].data, want)
    assert solver.net.blobs["loss"].data > 0
    solver.batch_split.close()
