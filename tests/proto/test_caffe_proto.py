"""npcaffe/proto: the generated caffe_pb2 matches caffe.proto; the DNS fork's fields and BVLC's numbers."""
import os
import subprocess
import sys

import pytest

from npcaffe.proto import caffe_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_generated_module_matches_proto():
    pytest.importorskip("grpc_tools")
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gen_proto.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dns_fork_fields_and_defaults():
    layer = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
    assert layer["cconvolution_param"].number == 140
    assert layer["cinner_product_param"].number == 141
    conv = caffe_pb2.CConvolutionParameter()
    ip = caffe_pb2.CInnerProductParameter()
    assert (conv.gamma, conv.power, conv.iter_stop, conv.c_rate) == pytest.approx((0.001, 1, 10000, 3))
    assert (ip.gamma, ip.power, ip.iter_stop, ip.c_rate) == pytest.approx((0.001, 1, 8000, 3))
    numbers = {f.name: f.number for f in caffe_pb2.CConvolutionParameter.DESCRIPTOR.fields}
    assert numbers == {"gamma": 1, "power": 2, "iter_stop": 3, "c_rate": 4, "weight_mask_filler": 5, "bias_mask_filler": 6}


def test_bvlc_field_numbers_kept():
    # A sample of BVLC 1.0 numbers that binary files depend on.
    f = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
    assert (f["convolution_param"].number, f["inner_product_param"].number, f["blobs"].number) == (106, 117, 7)
    s = caffe_pb2.SolverParameter.DESCRIPTOR.fields_by_name
    assert (s["solver_type"].number, s["type"].number, s["momentum2"].number) == (30, 40, 39)
    assert caffe_pb2.NetParameter.DESCRIPTOR.fields_by_name["layers"].number == 2
    assert caffe_pb2.V1LayerParameter.DESCRIPTOR.fields_by_name["layer"].number == 1
    b = caffe_pb2.BlobProto.DESCRIPTOR.fields_by_name
    assert (b["shape"].number, b["data"].number, b["double_data"].number, b["num"].number) == (7, 5, 8, 1)
