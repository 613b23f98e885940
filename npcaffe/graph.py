"""Net-definition transforms applied before a Net is built, as Caffe's net.cpp and
insert_splits.cpp: phase/stage/level filtering and automatic Split insertion.
"""
from .errors import NetError
from .proto import caffe_pb2


def state_meets_rule(state, rule):
    """NetStateRule test (Net::StateMeetsRule): phase, min/max level, stages, not_stages."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    if any(s not in stages for s in rule.stage):
        return False
    if any(s in stages for s in rule.not_stage):
        return False
    return True


def filter_net(param):
    """Copy of `param` holding only the layers its `state` includes (Net::FilterNet)."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    for layer in param.layer:
        if len(layer.include) and len(layer.exclude):
            raise NetError(f"layer '{layer.name}': specify either include rules or exclude rules, not both")
        included = len(layer.include) == 0
        if included and any(state_meets_rule(param.state, rule) for rule in layer.exclude):
            included = False
        if not included and any(state_meets_rule(param.state, rule) for rule in layer.include):
            included = True
        if included:
            out.layer.add().CopyFrom(layer)
    return out


def split_layer_name(layer_name, blob_name, top_index):
    return f"{blob_name}_{layer_name}_{top_index}_split"


def split_blob_name(layer_name, blob_name, top_index, split_index):
    return f"{blob_name}_{layer_name}_{top_index}_split_{split_index}"


def insert_splits(param):
    """Copy of `param` where every top consumed more than once feeds a Split layer.

    Names, order and loss-weight handling follow Caffe's InsertSplits: a top
    with a nonzero explicit loss_weight counts as one more consumer, and the
    weight moves to the Split's first output.
    """
    last_top = {}
    consumers = {}
    loss_weight = {}
    source_of = {}
    for i, layer in enumerate(param.layer):
        for j, blob in enumerate(layer.bottom):
            if blob not in last_top:
                raise NetError(f"layer '{layer.name}': unknown bottom blob '{blob}' (bottom index {j}); "
                               "no earlier layer produces it")
            source = last_top[blob]
            source_of[(i, j)] = source
            consumers[source] = consumers.get(source, 0) + 1
        for j, blob in enumerate(layer.top):
            last_top[blob] = (i, j)
        for j in range(min(len(layer.loss_weight), len(layer.top))):
            source = last_top[layer.top[j]]
            loss_weight[source] = layer.loss_weight[j]
            if loss_weight[source]:
                consumers[source] = consumers.get(source, 0) + 1

    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    next_split = {}
    for i, layer in enumerate(param.layer):
        new = out.layer.add()
        new.CopyFrom(layer)
        for j, blob in enumerate(layer.bottom):
            source = source_of[(i, j)]
            if consumers.get(source, 0) > 1:
                k = next_split.get(source, 0)
                new.bottom[j] = split_blob_name(param.layer[source[0]].name, blob, source[1], k)
                next_split[source] = k + 1
        for j, blob in enumerate(layer.top):
            count = consumers.get((i, j), 0)
            if count <= 1:
                continue
            weight = loss_weight.get((i, j), 0)
            if weight:
                new.ClearField("loss_weight")
                next_split[(i, j)] = next_split.get((i, j), 0) + 1
            split = out.layer.add()
            split.name = split_layer_name(layer.name, blob, j)
            split.type = "Split"
            split.bottom.append(blob)
            for k in range(count):
                split.top.append(split_blob_name(layer.name, blob, j, k))
                if weight:
                    split.loss_weight.append(weight if k == 0 else 0)
    return out


DATA_LAYER_TYPES = ("Data", "ImageData", "HDF5Data", "WindowData", "MemoryData", "Input", "DummyData")


def replace_data_layers(param, shapes):
    """Copy of `param` where every data layer becomes an Input layer of given shapes.

    `shapes` maps a top name to its shape, e.g. {"data": (64, 1, 28, 28), "label": (64,)}.
    Used to run published nets without their datasets (`npcaffe time --data_shape`).
    Every top of a replaced layer needs a shape; a missing one is a NetError naming it.
    """
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    for layer in out.layer:
        if layer.type not in DATA_LAYER_TYPES:
            continue
        missing = [t for t in layer.top if t not in shapes]
        if missing:
            raise NetError(f"data layer '{layer.name}' ({layer.type}) has top(s) {missing} with no shape given "
                           f"(pass e.g. --data_shape {missing[0]}=N,C,H,W)")
        tops, name, include, exclude = list(layer.top), layer.name, list(layer.include), list(layer.exclude)
        layer.Clear()
        layer.name, layer.type = name, "Input"
        layer.top.extend(tops)
        layer.include.extend(include)
        layer.exclude.extend(exclude)
        for top in tops:
            layer.input_param.shape.add().dim.extend(int(d) for d in shapes[top])
    return out
