"""Weights in Caffe's HDF5 layout (Net::ToHDF5 / CopyTrainedLayersFromHDF5, pycaffe save_hdf5 / load_hdf5)."""
import os

import numpy as np
import pytest
from google.protobuf import text_format

import npcaffe
from npcaffe import rng
from npcaffe.errors import WeightsError
from npcaffe.proto import caffe_pb2

h5py = pytest.importorskip("h5py")

SHARED = """
name: "shared"
layer { name: "input" type: "Input" top: "a" top: "b" input_param { shape { dim: 2 dim: 5 } } }
layer { name: "ip_a" type: "InnerProduct" bottom: "a" top: "fa" param { name: "w" } param { name: "bias" }
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 }
                              bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "ip_b" type: "InnerProduct" bottom: "b" top: "fb" param { name: "w" } param { name: "bias" }
        inner_product_param { num_output: 3 } }
layer { name: "own" type: "InnerProduct" bottom: "fb" top: "out"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
"""


def _net(seed, phase=npcaffe.TRAIN):
    rng.set_random_seed(seed)
    return npcaffe.Net(text_format.Parse(SHARED, caffe_pb2.NetParameter()), phase)


def test_layout_and_round_trip(tmp_path):
    net = _net(1)
    net.params["own"][0].diff[...] = 3
    path = str(tmp_path / "w.caffemodel.h5")
    net.save_hdf5(path, write_diff=True)
    with h5py.File(path, "r") as f:
        assert list(f["data"]) == ["input", "ip_a", "ip_b", "own"]  # every layer, as Caffe
        assert sorted(f["data/ip_a"]) == ["0", "1"] and len(f["data/ip_b"]) == 0  # shared: stored by the owner
        assert sorted(f["diff/ip_b"]) == ["0", "1"]                               # diffs of every parameter
        np.testing.assert_array_equal(f["data/own/0"][()], net.params["own"][0].data)
        np.testing.assert_array_equal(f["diff/own/0"][()], 3)
        assert f["data/ip_a/0"].dtype == np.float32 and f["data/ip_a/0"].shape == (3, 5)
    other = _net(2)
    assert not np.array_equal(other.params["own"][0].data, net.params["own"][0].data)
    other.load_hdf5(path)
    for name in ("ip_a", "ip_b", "own"):
        for mine, theirs in zip(other.params[name], net.params[name]):
            np.testing.assert_array_equal(mine.data, theirs.data)
    third = _net(3, npcaffe.TEST)
    third.copy_from(path)  # Caffe's CopyTrainedLayersFrom picks HDF5 by the .h5 suffix
    np.testing.assert_array_equal(third.params["ip_b"][0].data, net.params["ip_a"][0].data)


def test_missing_or_misshapen_parameters_are_errors(tmp_path):
    path = str(tmp_path / "bad.h5")
    with h5py.File(path, "w") as f:
        f.create_dataset("data/own/0", data=np.zeros((2, 4), np.float32))
    with pytest.raises(WeightsError, match="param 0 of layer 'own': shape mismatch.*\\(2, 4\\).*\\(2, 3\\)"):
        _net(1).load_hdf5(path)
    with h5py.File(path, "w") as f:
        f.create_dataset("data/own/0", data=np.zeros((2, 3), np.float32))
    with pytest.raises(WeightsError, match="no dataset data/own/1"):
        _net(1).load_hdf5(path)
    with h5py.File(path, "w") as f:
        f.create_group("weights")
    with pytest.raises(WeightsError, match="no 'data' group"):
        _net(1).load_hdf5(path)
    with pytest.raises(WeightsError, match="file not found"):
        _net(1).load_hdf5(str(tmp_path / "none.h5"))


def test_solver_hdf5_snapshot_resumes(tmp_path):
    net = ("name: 'n' layer { name: 'data' type: 'DummyData' top: 'x' top: 'y' dummy_data_param { "
           "shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 } data_filler { type: 'gaussian' } "
           "data_filler { type: 'gaussian' } } } "
           "layer { name: 'ip' type: 'InnerProduct' bottom: 'x' top: 'p' "
           "inner_product_param { num_output: 2 weight_filler { type: 'gaussian' } } } "
           "layer { name: 'loss' type: 'EuclideanLoss' bottom: 'p' bottom: 'y' top: 'loss' }")
    param = caffe_pb2.SolverParameter(base_lr=0.1, lr_policy="fixed", momentum=0.9, max_iter=10, display=0,
                                      snapshot=5, snapshot_format=caffe_pb2.SolverParameter.HDF5,
                                      snapshot_prefix=str(tmp_path / "s"), random_seed=5)
    param.net_param.CopyFrom(text_format.Parse(net, caffe_pb2.NetParameter()))
    from npcaffe.solvers import solver_class
    straight = solver_class("SGD")(param, where="test")
    straight.solve()
    assert os.path.exists(tmp_path / "s_iter_5.caffemodel.h5")
    resumed = solver_class("SGD")(param, where="test")
    resumed.restore(str(tmp_path / "s_iter_5.solverstate.h5"))
    resumed.solve()
    np.testing.assert_array_equal(resumed.net.params["ip"][0].data, straight.net.params["ip"][0].data)


def test_dns_layers_load_without_their_masks(tmp_path):
    text = ("name: 'd' input: 'x' input_shape { dim: 2 dim: 4 } "
            "layer { name: 'ip' type: 'CInnerProduct' bottom: 'x' top: 'y' inner_product_param { num_output: 3 "
            "weight_filler { type: 'gaussian' } } cinner_product_param { weight_mask_filler { type: 'constant' "
            "value: 1 } bias_mask_filler { type: 'constant' value: 1 } } }")
    net = npcaffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), npcaffe.TEST)
    path = str(tmp_path / "plain.h5")
    weight = np.arange(12, dtype=np.float32).reshape(3, 4)
    with h5py.File(path, "w") as f:
        f.create_dataset("data/ip/0", data=weight)
        f.create_dataset("data/ip/1", data=np.ones(3, np.float32))
    net.load_hdf5(path)
    np.testing.assert_array_equal(net.params["ip"][0].data, weight)
    np.testing.assert_array_equal(net.params["ip"][2].data, 1)  # the mask keeps its filler
