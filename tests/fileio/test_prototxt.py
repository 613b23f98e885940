import glob
import os

import pytest

from helpers import shared_path
from npcaffe.errors import NetError, ParseError
from npcaffe.fileio.prototxt import read_net, read_solver, to_text
from npcaffe.proto import caffe_pb2


def write(tmp_path, text, name="net.prototxt"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, 'name: "x"\nlayer {\n  name: "a"\n  type: "ReLU"\n  bottom "x"\n}\n')
    with pytest.raises(ParseError) as e:
        read_net(path)
    assert path in str(e.value) and ":5" in str(e.value)
    assert e.value.line == 5


def test_unknown_field_named(tmp_path):
    path = write(tmp_path, 'name: "x"\nlayer {\n  name: "a"\n  typo_field: 3\n}\n')
    with pytest.raises(ParseError) as e:
        read_net(path)
    assert e.value.field == "typo_field" and e.value.line == 4


def test_wrong_enum_value_named(tmp_path):
    path = write(tmp_path, 'layer {\n name: "p"\n type: "Pooling"\n pooling_param {\n  pool: MAXIMUM\n }\n}\n')
    with pytest.raises(ParseError) as e:
        read_net(path)
    assert "MAXIMUM" in str(e.value) and e.value.line == 5


def test_missing_file():
    with pytest.raises(ParseError, match="file not found"):
        read_net("/nonexistent/net.prototxt")


def test_solver_type_enum_upgraded(tmp_path):
    path = write(tmp_path, 'net: "n.prototxt"\nsolver_type: NESTEROV\nbase_lr: 0.1\n', "solver.prototxt")
    solver = read_solver(path)
    assert solver.type == "Nesterov" and not solver.HasField("solver_type")


def test_input_dim_becomes_input_layer():
    net = read_net('name: "n"\ninput: "data"\ninput_dim: 64\ninput_dim: 1\ninput_dim: 28\ninput_dim: 28\n'
                   'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }', is_text=True)
    assert [l.name for l in net.layer] == ["input", "r"]
    assert net.layer[0].type == "Input" and list(net.layer[0].input_param.shape[0].dim) == [64, 1, 28, 28]
    assert len(net.input) == 0 and len(net.input_dim) == 0


def test_v1_upgrade_matches_current_lenet():
    v1 = read_net(shared_path("model-zoo", "v1", "examples_mnist_lenet_train_test.prototxt"))
    current = read_net(shared_path("model-zoo", "bvlc", "examples_mnist_lenet_train_test.prototxt"))
    assert [(l.name, l.type) for l in v1.layer] == [(l.name, l.type) for l in current.layer]
    conv1_v1 = next(l for l in v1.layer if l.name == "conv1")
    conv1 = next(l for l in current.layer if l.name == "conv1")
    assert [p.lr_mult for p in conv1_v1.param] == [p.lr_mult for p in conv1.param]
    assert conv1_v1.convolution_param == conv1.convolution_param
    data_v1 = [l for l in v1.layer if l.type == "Data"]
    assert data_v1[0].transform_param.scale == pytest.approx(0.00390625)
    assert data_v1[0].include[0].phase in (caffe_pb2.TRAIN, caffe_pb2.TEST)


def test_v0_upgrade_with_padding_layer():
    text = '''
    name: "v0"
    input: "data"
    input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
    layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
    layers { layer { name: "conv1" type: "conv" num_output: 4 kernelsize: 3 stride: 1 biasterm: false
                     weight_filler { type: "gaussian" std: 0.01 } blobs_lr: 1 weight_decay: 1 } bottom: "pad1" top: "conv1" }
    layers { layer { name: "pool1" type: "pool" pool: MAX kernelsize: 2 stride: 2 } bottom: "conv1" top: "pool1" }
    layers { layer { name: "drop" type: "dropout" dropout_ratio: 0.3 } bottom: "pool1" top: "pool1" }
    '''
    net = read_net(text, is_text=True)
    assert [(l.name, l.type) for l in net.layer] == [("input", "Input"), ("conv1", "Convolution"),
                                                     ("pool1", "Pooling"), ("drop", "Dropout")]
    conv = net.layer[1]
    assert list(conv.bottom) == ["data"] and list(conv.convolution_param.pad) == [2]
    assert conv.convolution_param.num_output == 4 and not conv.convolution_param.bias_term
    assert conv.param[0].lr_mult == 1 and conv.param[0].decay_mult == 1
    assert net.layer[2].pooling_param.pool == caffe_pb2.PoolingParameter.MAX
    assert net.layer[3].dropout_param.dropout_ratio == pytest.approx(0.3)


def test_v0_unknown_parameter_for_type_is_an_error():
    text = 'input: "x" layers { layer { name: "r" type: "relu" num_output: 3 } bottom: "x" top: "x" }'
    with pytest.raises(NetError, match="num_output"):
        read_net(text, is_text=True)


def test_mixing_layer_and_layers_is_an_error():
    with pytest.raises(NetError, match="mixes"):
        read_net('layer { name: "a" type: "ReLU" } layers { name: "b" type: RELU }', is_text=True)


def test_every_model_zoo_prototxt_parses():
    zoo = shared_path("model-zoo")
    files = sorted(glob.glob(os.path.join(zoo, "*", "*.prototxt")))
    assert len(files) >= 10
    for path in files:
        if "solver" in os.path.basename(path):
            solver = read_solver(path)
            assert solver.base_lr > 0, path
        else:
            net = read_net(path)
            assert len(net.layer) > 0 and len(net.layers) == 0, path


def test_text_round_trip_identical(tmp_path):
    net = read_net(shared_path("model-zoo", "bvlc", "models_bvlc_alexnet_train_val.prototxt"))
    text = to_text(net)
    again = read_net(text, is_text=True)
    assert again == net and to_text(again) == text
