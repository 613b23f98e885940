import pytest

from npcaffe.errors import NetError
from npcaffe.fileio.prototxt import read_net
from npcaffe.graph import filter_net, insert_splits


def net(text):
    return read_net(text, is_text=True)


def test_split_inserted_with_caffe_names():
    n = net('''
      layer { name: "data" type: "Input" top: "data" top: "label" }
      layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" }
      layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
      layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" }''')
    out = insert_splits(n)
    names = [l.name for l in out.layer]
    assert names == ["data", "label_data_1_split", "ip", "ip_ip_0_split", "loss", "acc"]
    split = out.layer[3]
    assert split.type == "Split" and list(split.bottom) == ["ip"]
    assert list(split.top) == ["ip_ip_0_split_0", "ip_ip_0_split_1"]
    assert list(out.layer[4].bottom) == ["ip_ip_0_split_0", "label_data_1_split_0"]
    assert list(out.layer[5].bottom) == ["ip_ip_0_split_1", "label_data_1_split_1"]


def test_explicit_loss_weight_moves_to_first_split_output():
    n = net('''
      layer { name: "data" type: "Input" top: "data" }
      layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" loss_weight: 2 }
      layer { name: "r" type: "ReLU" bottom: "ip" top: "r" }''')
    out = insert_splits(n)
    ip, split, relu = out.layer[1], out.layer[2], out.layer[3]
    assert len(ip.loss_weight) == 0
    assert list(split.top) == ["ip_ip_0_split_0", "ip_ip_0_split_1"] and list(split.loss_weight) == [2, 0]
    assert list(relu.bottom) == ["ip_ip_0_split_1"]


def test_in_place_chain_not_split():
    n = net('''
      layer { name: "data" type: "Input" top: "data" }
      layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" }
      layer { name: "r" type: "ReLU" bottom: "ip" top: "ip" }
      layer { name: "ip2" type: "InnerProduct" bottom: "ip" top: "ip2" }''')
    assert [l.type for l in insert_splits(n).layer] == ["Input", "InnerProduct", "ReLU", "InnerProduct"]


def test_unknown_bottom_names_layer():
    n = net('layer { name: "ip" type: "InnerProduct" bottom: "nothing" top: "ip" }')
    with pytest.raises(NetError, match="layer 'ip': unknown bottom blob 'nothing'"):
        insert_splits(n)


@pytest.mark.parametrize("state,expected", [
    ("phase: TRAIN", ["all", "train", "stage_a_or_level"]),
    ("phase: TEST", ["all", "test"]),
    ("phase: TEST stage: 'a'", ["all", "test", "stage_a_or_level", "not_train_exclude"]),
    ("phase: TEST level: 3", ["all", "test", "stage_a_or_level"]),
])
def test_filter_by_state(state, expected):
    n = net(f'''
      state {{ {state} }}
      layer {{ name: "all" type: "ReLU" }}
      layer {{ name: "train" type: "ReLU" include {{ phase: TRAIN }} }}
      layer {{ name: "test" type: "ReLU" include {{ phase: TEST }} }}
      layer {{ name: "stage_a_or_level" type: "ReLU" include {{ stage: "a" }} include {{ min_level: 2 }} include {{ phase: TRAIN }} }}
      layer {{ name: "not_train_exclude" type: "ReLU" exclude {{ phase: TRAIN }} exclude {{ not_stage: "a" phase: TEST }} }}''')
    assert [l.name for l in filter_net(n).layer] == expected


def test_include_and_exclude_together_is_an_error():
    n = net('layer { name: "x" type: "ReLU" include { phase: TRAIN } exclude { phase: TEST } }')
    with pytest.raises(NetError, match="either include rules or exclude rules"):
        filter_net(n)
