"""npcaffe's DNS files read by the DNS fork's own schema (tests/data/dns_fork/caffe.proto, compiled here).

A run moves to the fork's GPU Caffe with its files unchanged: the 4-blob snapshot (.caffemodel,
.solverstate) and the prototxt npcaffe writes must parse with the fork's schema, every field
known to it (text format fails on an unknown field; binary keeps it aside, which we look for),
the numbers where the fork's layers read them.
"""
import os

import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from google.protobuf.unknown_fields import UnknownFieldSet

from npcaffe.proto import caffe_pb2

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
FORK_PROTO_DIR = os.path.join(os.path.dirname(HERE), "data", "dns_fork")


@pytest.fixture(scope="module")
def fork(tmp_path_factory):
    """name -> the fork's message class, from its caffe.proto, in a descriptor pool of its own (ours
    holds the package `caffe` already)."""
    from grpc_tools import protoc
    out = tmp_path_factory.mktemp("fork") / "caffe.desc"
    assert protoc.main(["protoc", f"-I{FORK_PROTO_DIR}", f"--descriptor_set_out={out}", "caffe.proto"]) == 0
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    return lambda name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{name}"))


def unknown_fields(message, path="message"):
    """Paths of the (sub)messages holding fields the schema does not know."""
    found = [path] if len(UnknownFieldSet(message)) else []
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        values = value if field.is_repeated else [value]
        for i, item in enumerate(values):
            found += unknown_fields(item, f"{path}.{field.name}[{i}]")
    return found


def test_the_fork_schema_is_the_fork_s(fork):
    # The DNS parameters sit where the fork's layers read them; BVLC 1.0 later gave 140 / 141 to elu / bias.
    layer = fork("LayerParameter").DESCRIPTOR
    assert layer.fields_by_name["cconvolution_param"].number == 140
    assert layer.fields_by_name["cinner_product_param"].number == 141
    assert "elu_param" not in layer.fields_by_name and "type" not in fork("SolverParameter").DESCRIPTOR.fields_by_name
    # and the checks below can fail: a field the fork lacks, in text and in binary
    with pytest.raises(text_format.ParseError, match="input_param"):
        text_format.Parse('layer { name: "data" type: "Input" input_param { shape { dim: 1 } } }',
                          fork("NetParameter")())
    ours = caffe_pb2.NetParameter()
    ours.layer.add(name="data", type="Input").input_param.shape.add(dim=[1])
    assert unknown_fields(fork("NetParameter").FromString(ours.SerializeToString())) == ["message.layer[0]"]


def _dns_snapshot(tmp_path):
    """A LeNet-5 DNS solver (our prototxt, batch 4 from an LMDB of 8 random images) after 3 iterations,
    and its snapshot."""
    import lmdb
    from npcaffe import glog
    from npcaffe.fileio.prototxt import read_net
    from npcaffe.io import array_to_datum
    from npcaffe.solvers import SGDSolver
    generator = np.random.default_rng(0)
    env = lmdb.open(str(tmp_path / "lmdb"), map_size=1 << 22)
    with env.begin(write=True) as txn:
        for i in range(8):
            image = generator.integers(0, 256, (1, 28, 28), dtype=np.uint8)
            txn.put(f"{i:08d}".encode(), array_to_datum(image, int(i % 10)).SerializeToString())
    env.close()
    net = read_net(os.path.join(REPO, "prototxt", "lenet5", "lenet5_dns_train_test.prototxt"))
    for layer in net.layer:
        if layer.type == "Data":
            layer.data_param.source, layer.data_param.batch_size = str(tmp_path / "lmdb"), 4
    param = caffe_pb2.SolverParameter(base_lr=0.01, momentum=0.9, weight_decay=0.0005, lr_policy="fixed",
                                      max_iter=10, display=0, random_seed=3, snapshot_prefix=str(tmp_path / "lenet5"))
    param.net_param.CopyFrom(net)
    glog.set_quiet(True)
    try:
        solver = SGDSolver(param, where="test")
        solver.step(3)
        model, state = solver.snapshot()
    finally:
        glog.set_quiet(False)
    return solver, net, model, state


def test_dns_snapshot_parses_with_the_fork_schema(fork, tmp_path):
    solver, net_param, model, state = _dns_snapshot(tmp_path)
    theirs = fork("NetParameter").FromString(open(model, "rb").read())
    assert unknown_fields(theirs) == []
    layers = {layer.name: layer for layer in theirs.layer}
    given = {layer.name: layer for layer in net_param.layer}
    checked = 0
    for name, layer in zip(solver.net.layer_names, solver.net.layers):
        if not layer.blobs:
            continue
        stored = layers[name]
        assert stored.type == layer.type in ("CConvolution", "CInnerProduct")
        assert len(stored.blobs) == 4  # weight, bias, weight mask, bias mask: the fork's layout
        for blob, proto in zip(layer.blobs, stored.blobs):
            assert tuple(proto.shape.dim) == blob.shape
            np.testing.assert_array_equal(np.array(proto.data, np.float32).reshape(blob.shape), blob.data)
        field_name = "cconvolution_param" if layer.type == "CConvolution" else "cinner_product_param"
        assert stored.HasField(field_name)
        surgery, ours = getattr(stored, field_name), getattr(given[name], field_name)
        for field in ("gamma", "power", "c_rate", "iter_stop"):
            assert getattr(surgery, field) == getattr(ours, field), (name, field)
        assert surgery.weight_mask_filler.value == 1
        checked += 1
    assert checked == 4  # conv1, conv2, ip1, ip2
    solver_state = fork("SolverState").FromString(open(state, "rb").read())
    assert unknown_fields(solver_state) == []
    assert solver_state.iter == 3 and solver_state.learned_net == model
    history = [h for h in solver_state.history]
    assert [tuple(h.shape.dim) for h in history] == [b.shape for b in solver.net.learnable_params]
    np.testing.assert_array_equal(np.array(history[0].data, np.float32), solver.history[0])


def test_dns_prototxt_npcaffe_writes_parses_with_the_fork_schema(fork, tmp_path):
    from npcaffe.fileio.prototxt import read_net, to_text
    from npcaffe.pruning import dnsify as dz
    from npcaffe.solvers import load_solver_param
    source = os.path.join(REPO, "prototxt", "lenet5", "lenet5_train_test.prototxt")
    converted, record = dz.dnsify(read_net(source), None, {"conv1": 2.0}, iter_stop=800, default_c_rate=3.0)
    text = dz.converted_text(converted, record, gamma=dz.GAMMA, power=dz.POWER, iter_stop=800, source=source)
    theirs = text_format.Parse(text, fork("NetParameter")())  # fails on any field the fork does not know
    c_layers = [layer for layer in theirs.layer if layer.type in ("CConvolution", "CInnerProduct")]
    assert [layer.name for layer in c_layers] == ["conv1", "conv2", "ip1", "ip2"]
    assert c_layers[0].cconvolution_param.c_rate == 2 and c_layers[2].cinner_product_param.c_rate == 3
    assert c_layers[2].cinner_product_param.iter_stop == 800
    for net in ("lenet5/lenet5_dns_train_test.prototxt", "lenet300100/lenet300100_dns_train_test.prototxt"):
        with open(os.path.join(REPO, "prototxt", net)) as f:
            text_format.Parse(f.read(), fork("NetParameter")())
    # The DNS solvers as npcaffe writes them (npcaffe surgery --solver: to_text of the loaded solver).
    for solver in ("lenet5/lenet5_dns_solver.prototxt", "lenet300100/lenet300100_dns_solver.prototxt"):
        param, _ = load_solver_param(os.path.join(REPO, "prototxt", solver))
        text_format.Parse(to_text(param), fork("SolverParameter")())
