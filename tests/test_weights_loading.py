"""Weights load as Caffe's CopyTrainedLayersFrom does, and louder; damaged or hostile weight files
are errors naming the file before anything large is allocated."""
import os
import zipfile

import numpy as np
import pytest

from npcaffe import Net
from npcaffe.errors import WeightsError
from npcaffe.fileio import compressed
from npcaffe.layer import TEST
from npcaffe.proto import caffe_pb2

NET = """
name: "twins"
input: "data" input_shape { dim: 2 dim: 3 }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "a"
  inner_product_param { num_output: 2 weight_filler { type: "constant" value: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "b"
  inner_product_param { num_output: 2 weight_filler { type: "constant" value: 2 } } }
"""


@pytest.fixture
def net(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    return Net(str(path), TEST)


def caffemodel(tmp_path, layers):
    param = caffe_pb2.NetParameter(name="src")
    for name, arrays in layers:
        lp = param.layer.add(name=name, type="InnerProduct")
        for a in arrays:
            b = lp.blobs.add()
            b.shape.dim.extend(a.shape)
            b.data.extend(a.ravel().tolist())
    path = tmp_path / "w.caffemodel"
    path.write_bytes(param.SerializeToString())
    return path


def test_two_layers_of_one_name_the_first_gets_the_weights(net, tmp_path, glog_capture):
    w = np.full((2, 3), 7, np.float32)
    net.copy_from(str(caffemodel(tmp_path, [("ip", [w, np.zeros(2, np.float32)])])))
    first, second = [layer for name, layer in zip(net.layer_names, net.layers) if name == "ip"]
    assert (first.blobs[0].data == 7).all() and (second.blobs[0].data == 2).all()


def test_ignored_layers_are_logged_and_nothing_matched_warns(net, tmp_path, glog_capture):
    path = caffemodel(tmp_path, [("fc6", [np.ones((2, 3), np.float32)]), ("fc7", [np.ones((1,), np.float32)])])
    net.copy_from(str(path))
    log = glog_capture.getvalue()
    assert "Ignoring source layer fc6" in log and "Ignoring source layer fc7" in log
    assert f"{path}: none of its 2 layers with weights matched a layer of net 'twins'" in log
    assert log.splitlines()[-1].startswith("W")


def test_diff_of_the_wrong_length_names_layer_and_blob(net, tmp_path):
    path = caffemodel(tmp_path, [("ip", [np.ones((2, 3), np.float32), np.ones(2, np.float32)])])
    param = caffe_pb2.NetParameter.FromString(path.read_bytes())
    param.layer[0].blobs[0].diff.extend([1.0, 2.0])
    path.write_bytes(param.SerializeToString())
    with pytest.raises(WeightsError, match=r"w\.caffemodel: layer 'ip' blob 0: shape \(2, 3\) needs 6 values but "
                                           r"the file holds 2 \(diff\)"):
        net.copy_from(str(path))


@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_special_files_are_refused(net, tmp_path, special):
    if special == "fifo":
        special = str(tmp_path / "fifo")
        os.mkfifo(special)
    with pytest.raises(WeightsError, match="not a regular file"):
        net.copy_from(special)
    with pytest.raises(Exception, match="not a regular file"):
        Net(special, TEST)


def test_hdf5_dataset_declared_huge_is_refused_before_reading(net, tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "bomb.caffemodel.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data/ip/0", shape=(2 ** 20, 2 ** 10), dtype="f4", chunks=(2 ** 10, 2 ** 6),
                         compression="gzip")
    assert path.stat().st_size < 20000
    with pytest.raises(WeightsError, match=r"bomb\.caffemodel\.h5: cannot copy param 0 of layer 'ip': shape "
                                           r"mismatch. Source shape \(1048576, 1024\)"):
        net.copy_from(str(path))


def npz_with_shape(tmp_path, shape):
    path = tmp_path / "bomb.npz"
    arrays = compressed.compress_layers([("ip", "InnerProduct", [np.ones((2, 3), np.float32)])])
    arrays["ip/0/shape"] = np.array(shape, np.int64)
    np.savez_compressed(path, **arrays)
    return path


def test_npz_declaring_gigabytes_is_refused_before_allocating(net, tmp_path):
    path = npz_with_shape(tmp_path, [2 ** 14, 2 ** 16])  # 4 GiB of float32
    with pytest.raises(WeightsError, match=r"bomb\.npz: cannot copy param 0 of layer 'ip': shape mismatch"):
        net.copy_from(str(path))
    with pytest.raises(WeightsError, match=r"bomb\.npz: layer 'ip' blob 0: shape \(2147483648, 2\) is not a blob's"):
        compressed.read_compressed(str(npz_with_shape(tmp_path, [2 ** 31, 2])))


def test_npz_member_header_declaring_a_huge_index_is_refused(net, tmp_path):
    path = npz_with_shape(tmp_path, [2, 3])
    # replace the index member by a header that declares 2**33 int32 values and holds none
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.int32))
    header["shape"] = (2 ** 33,)
    import io
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    members["ip/0/index.npy"] = buf.getvalue()
    with zipfile.ZipFile(path, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
    with pytest.raises(WeightsError, match=r"bomb\.npz: entry 'ip/0/index' is int32 of shape \(8589934592,\)"):
        net.copy_from(str(path))


def test_the_command_line_names_a_special_file_as_such(capsys):
    from npcaffe.cli import main
    assert main(["test", "--model", "/dev/zero", "--iterations", "1"]) == 1
    assert "--model: '/dev/zero' is a special file (a device or FIFO), not a regular file" in capsys.readouterr().err
