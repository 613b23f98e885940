from google.protobuf import text_format

import npcaffe as caffe
from npcaffe import layers as L, params as P


def lenet(batch):
    n = caffe.NetSpec()
    n.data, n.label = L.Data(batch_size=batch, backend=P.Data.LMDB, source="mnist_lmdb",
                             transform_param=dict(scale=1. / 255), ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20, weight_filler=dict(type="xavier"))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.fc1 = L.InnerProduct(n.pool1, num_output=500, weight_filler=dict(type="xavier"), param=[dict(lr_mult=1), dict(lr_mult=2)])
    n.relu1 = L.ReLU(n.fc1, in_place=True)
    n.score = L.InnerProduct(n.relu1, num_output=10)
    n.loss = L.SoftmaxWithLoss(n.score, n.label)
    return n.to_proto()


def test_netspec_as_pycaffe_writes_it():
    net = lenet(64)
    assert [(l.name, l.type) for l in net.layer] == [
        ("data", "Data"), ("conv1", "Convolution"), ("pool1", "Pooling"), ("fc1", "InnerProduct"),
        ("relu1", "ReLU"), ("score", "InnerProduct"), ("loss", "SoftmaxWithLoss")]
    assert list(net.layer[0].top) == ["data", "label"] and net.layer[0].data_param.batch_size == 64
    assert net.layer[0].data_param.backend == caffe.proto.caffe_pb2.DataParameter.LMDB
    assert list(net.layer[1].convolution_param.kernel_size) == [5]  # repeated field from a scalar
    assert [p.lr_mult for p in net.layer[3].param] == [1, 2]
    assert list(net.layer[4].bottom) == list(net.layer[4].top) == ["fc1"]  # in place
    assert net.layer[2].pooling_param.pool == P.Pooling.MAX


def test_auto_names_and_dns_layers():
    data = L.Input(shape=dict(dim=[2, 3]))
    out = L.CInnerProduct(data, num_output=4, cinner_product_param=dict(c_rate=2.5))
    net = caffe.to_proto(out)
    assert [l.name for l in net.layer] == ["Input1", "CInnerProduct1"]
    assert net.layer[1].inner_product_param.num_output == 4 and net.layer[1].cinner_product_param.c_rate == 2.5
    built = caffe.Net(text_format.Parse(str(net), caffe.proto.caffe_pb2.NetParameter()), caffe.TEST)
    assert built.blobs["CInnerProduct1"].shape == (2, 4)
