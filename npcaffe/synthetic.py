"""Run a published net without its dataset: generated inputs and finiteness checks.

`npcaffe time --data_shape` uses these with graph.replace_data_layers: the
data layers become Input layers of the given shapes, the data tops get
Gaussian values, and the label tops get valid class indices, the number of
classes read from the channel count of the prediction that a loss or
Accuracy layer compares the label with.  A label top given no shape gets
(N,), the batch of its data layer's other tops, as a Data layer's label.
"""
import numpy as np

from . import glog
from .errors import NetError

_LABEL_CONSUMERS = ("SoftmaxWithLoss", "Accuracy", "HingeLoss", "MultinomialLogisticLoss", "InfogainLoss")


def parse_data_shapes(items):
    """["data=64,1,28,28", "label=64"] -> {"data": (64, 1, 28, 28), "label": (64,)}."""
    shapes = {}
    for item in items or ():
        name, sep, dims = item.partition("=")
        try:
            shape = tuple(int(d) for d in dims.split(","))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or min(shape) < 1:
            raise NetError(f"--data_shape '{item}': expected TOP=N[,C,H,W...] with positive integers, "
                           "e.g. data=10,3,227,227 or label=10")
        shapes[name] = shape
    return shapes


def with_label_shapes(param, shapes):
    """`shapes` ({top: shape}) plus (N,) for each top of a data layer of `param` that a loss or Accuracy
    layer reads as labels and that has no shape given, N the batch (first dimension) of the shape given
    for another top of the same data layer: `--data_shape data=64,1,28,28` alone runs a LeNet."""
    from .graph import DATA_LAYER_TYPES
    readers = {}
    for layer in param.layer:
        if layer.type in _LABEL_CONSUMERS and len(layer.bottom) > 1:
            readers.setdefault(layer.bottom[1], layer.name)
    out = dict(shapes)
    for layer in param.layer:
        given = [(top, shapes[top]) for top in layer.top if top in shapes]
        if layer.type not in DATA_LAYER_TYPES or not given:
            continue
        for top in layer.top:
            if top not in out and top in readers:
                out[top] = (given[0][1][0],)
                glog.info(f"--data_shape {top}={out[top][0]}: the batch of {given[0][0]}, as labels for layer "
                          f"'{readers[top]}'")
    return out


def label_consumers(net):
    """{input blob name: (layer name, number of classes)} for inputs a classifier layer reads as labels."""
    found = {}
    producers = {}
    for layer_name, layer_param in zip(net.layer_names, net.param.layer):
        if layer_param.type == "Split":
            for top in layer_param.top:
                producers[top] = producers.get(layer_param.bottom[0], layer_param.bottom[0])
    for layer_id, (layer_name, layer_param) in enumerate(zip(net.layer_names, net.param.layer)):
        if layer_param.type not in _LABEL_CONSUMERS or len(layer_param.bottom) < 2:
            continue
        source = producers.get(layer_param.bottom[1], layer_param.bottom[1])
        prediction = net.bottom_vecs[layer_id][0]
        classes = prediction.shape[1] if prediction.num_axes > 1 else 1
        found.setdefault(source, (layer_name, classes))
    return found


def fill_inputs(net, seed=0):
    """Gaussian data in every Input top; class indices 0..K-1 in the label ones."""
    gen = np.random.default_rng(seed)
    labels = label_consumers(net)
    for name in net.inputs:
        blob = net.blobs[name]
        if name in labels:
            blob.data[...] = gen.integers(0, labels[name][1], size=blob.shape)
        else:
            blob.data[...] = gen.standard_normal(blob.shape).astype(np.float32)


# A label filled uniformly in [0, K - LABEL_MARGIN] truncates to 0..K-1: Caffe's uniform filler may
# return its max itself (it draws up to nextafter(max)), so max K could give the invalid label K.
LABEL_MARGIN = 1e-3


def generated_data_net(param, shapes):
    """Copy of `param` whose data layers are DummyData layers of the given shapes, for training without a dataset.

    Data tops: Gaussian values (mean 0, std 1).  Label tops (those a loss or
    Accuracy layer reads as labels, in either phase): uniform values in
    [0, K - LABEL_MARGIN], which those layers truncate to class indices
    0..K-1 (K from the prediction's channels).  Both are refilled at every
    forward from npcaffe's seeded generator, as Caffe's DummyData does, so
    the net file alone trains (in npcaffe or BVLC Caffe) and a snapshot resumes.
    Every top of a data layer needs a shape (graph.replace_data_layers); a label top gets its batch
    (with_label_shapes)."""
    from .graph import DATA_LAYER_TYPES, replace_data_layers
    from .layer import TEST, TRAIN
    from .net import Net
    from .proto import caffe_pb2
    data_tops = {top for layer in param.layer if layer.type in DATA_LAYER_TYPES for top in layer.top}
    unknown = sorted(set(shapes) - data_tops)
    if unknown:
        raise NetError(f"--data_shape names {unknown}, which are not tops of a data layer of net '{param.name}' "
                       f"(its data tops: {sorted(data_tops)})")
    shapes = with_label_shapes(param, shapes)
    inputs = replace_data_layers(param, shapes)
    classes = {}
    for phase in (TRAIN, TEST):
        for top, (_, count) in label_consumers(Net(inputs, phase)).items():
            classes.setdefault(top, count)
    out = caffe_pb2.NetParameter()
    out.CopyFrom(inputs)
    for layer, original in zip(out.layer, param.layer):
        if original.type in DATA_LAYER_TYPES:
            layer.type = "DummyData"
            layer.ClearField("input_param")
            for top in layer.top:
                layer.dummy_data_param.shape.add().dim.extend(int(d) for d in shapes[top])
                filler = layer.dummy_data_param.data_filler.add()
                if top in classes:
                    filler.type, filler.min, filler.max = "uniform", 0, classes[top] - LABEL_MARGIN
                else:
                    filler.type, filler.std = "gaussian", 1
    return out


def first_non_finite(net, what="data"):
    """(blob name, number of bad values, count) of the first blob with NaN/inf in its data or diff, else None."""
    for name, blob in net.blobs.items():
        values = blob.flat_data if what == "data" else blob.flat_diff
        bad = values.size - int(np.count_nonzero(np.isfinite(values)))
        if bad:
            return name, bad, values.size
    return None


def check_finite(net, stage, diffs=False):
    for what in ("data", "diff") if diffs else ("data",):
        hit = first_non_finite(net, what)
        if hit:
            name, bad, count = hit
            producer = next((layer for layer, tops in net.top_names.items() if name in tops), "?")
            raise NetError(f"after {stage}, blob '{name}' (top of layer '{producer}', shape {net.blobs[name].shape}) "
                           f"has {bad} non-finite {what} value(s) of {count}")
