import numpy as np
import pytest

from helpers import shared_path
from npcaffe.errors import WeightsError
from npcaffe.fileio.caffemodel import (array_to_blob, blob_to_array, read_caffemodel, serialize_net,
                                       write_caffemodel)
from npcaffe.proto import caffe_pb2


def test_upstream_caffemodel_resave_is_byte_identical(tmp_path):
    path = shared_path("upstream-dns", "caffe_lenet5_sparse.caffemodel")
    net = read_caffemodel(path)
    out = tmp_path / "again.caffemodel"
    write_caffemodel(net, out)
    assert out.read_bytes() == open(path, "rb").read()
    again = read_caffemodel(out)
    for a, b in zip(net.layer, again.layer):
        for ba, bb in zip(a.blobs, b.blobs):
            assert np.array_equal(blob_to_array(ba).view(np.uint32), blob_to_array(bb).view(np.uint32))


def test_dns_layer_parameters_read_from_upstream_sparse_model():
    net = read_caffemodel(shared_path("upstream-dns", "caffe_lenet5_sparse.caffemodel"))
    rates = {l.name: (l.cconvolution_param.c_rate if l.type == "CConvolution" else l.cinner_product_param.c_rate)
             for l in net.layer if l.type.startswith("C")}
    assert rates == pytest.approx({"conv1": 2, "conv2": 3, "ip1": 4, "ip2": 2.5})
    assert net.layer[1].cconvolution_param.iter_stop == 14000


def test_truncated_caffemodel_is_a_clear_error(tmp_path):
    data = open(shared_path("upstream-dns", "caffe_lenet5_original.caffemodel"), "rb").read()
    bad = tmp_path / "cut.caffemodel"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="cut.caffemodel.*truncated or corrupt"):
        read_caffemodel(bad)


def test_text_file_given_as_caffemodel(tmp_path):
    bad = tmp_path / "net.prototxt"
    bad.write_text('name: "x"\nlayer { name: "a" type: "ReLU" }\n')
    with pytest.raises(WeightsError, match="net.prototxt"):
        read_caffemodel(bad)


def test_blob_forms():
    legacy = caffe_pb2.BlobProto(num=1, channels=1, height=2, width=3, data=[1, 2, 3, 4, 5, 6])
    assert blob_to_array(legacy).shape == (1, 1, 2, 3)
    doubles = caffe_pb2.BlobProto(double_data=[0.5, 1.5])
    doubles.shape.dim.extend([2])
    assert blob_to_array(doubles).tolist() == [0.5, 1.5] and blob_to_array(doubles).dtype == np.float32
    wrong = caffe_pb2.BlobProto(data=[1, 2, 3])
    wrong.shape.dim.extend([2, 2])
    with pytest.raises(WeightsError, match=r"\(2, 2\) needs 4 values but the file holds 3"):
        blob_to_array(wrong)
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert np.array_equal(blob_to_array(array_to_blob(a)), a)


def test_elu_and_bias_parameters_use_bvlc_field_numbers():
    net = caffe_pb2.NetParameter()
    elu = net.layer.add(name="elu", type="ELU")
    elu.elu_param.alpha = 0.25
    bias = net.layer.add(name="b", type="Bias")
    bias.bias_param.axis = 2
    bias.bias_param.num_axes = 1
    data = serialize_net(net)
    # BVLC numbering: LayerParameter field 140 (elu_param) holds ELUParameter{alpha=0.25}.
    elu_bytes = caffe_pb2.ELUParameter(alpha=0.25).SerializeToString()
    assert bytes([0xE2, 0x08, len(elu_bytes)]) + elu_bytes in data  # key of field 140, wire type 2
    parsed = caffe_pb2.NetParameter.FromString(data)
    from npcaffe.fileio.caffemodel import _fix_bvlc_fields_after_read
    _fix_bvlc_fields_after_read(parsed)
    assert parsed.layer[0].elu_param.alpha == pytest.approx(0.25)
    assert parsed.layer[1].bias_param.axis == 2 and parsed.layer[1].bias_param.num_axes == 1
    assert not parsed.layer[0].HasField("cconvolution_param") and not parsed.layer[1].HasField("cinner_product_param")


def test_written_files_get_ordinary_permissions(tmp_path):
    import os
    import stat
    from npcaffe.fileio.atomic import atomic_write
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "x.caffemodel", b"abc")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "x.caffemodel").st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["x.caffemodel"]  # no temporary left behind
