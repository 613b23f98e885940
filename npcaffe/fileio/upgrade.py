"""Upgrade old net and solver definitions to the current schema, as Caffe does on load
(src/caffe/util/upgrade_proto.cpp): V0 layers → V1, V1 data-layer transformation
fields → transform_param, V1 `layers` → `layer`, net-level `input` fields → an
Input layer named "input", old three-param BatchNorm, and the solver's
`solver_type` enum → `type` string.

Caffe logs upgrade problems and goes on; npcaffe raises a NetError instead,
because a half-upgraded net silently computes something else.
"""
from ..errors import NetError, SolverError
from ..proto import caffe_pb2

V1 = caffe_pb2.V1LayerParameter

# V0 type string -> V1 enum name (upgrade_proto.cpp: UpgradeV0LayerType).
_V0_TYPES = {
    "accuracy": "ACCURACY", "bnll": "BNLL", "concat": "CONCAT", "conv": "CONVOLUTION",
    "data": "DATA", "dropout": "DROPOUT", "euclidean_loss": "EUCLIDEAN_LOSS",
    "flatten": "FLATTEN", "hdf5_data": "HDF5_DATA", "hdf5_output": "HDF5_OUTPUT",
    "im2col": "IM2COL", "images": "IMAGE_DATA", "infogain_loss": "INFOGAIN_LOSS",
    "innerproduct": "INNER_PRODUCT", "lrn": "LRN",
    "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS", "pool": "POOLING",
    "relu": "RELU", "sigmoid": "SIGMOID", "softmax": "SOFTMAX", "softmax_loss": "SOFTMAX_LOSS",
    "split": "SPLIT", "tanh": "TANH", "window_data": "WINDOW_DATA",
}

# V0 field -> {V0 type: (V1 sub-message, field)}; "*" means any type.
_V0_FIELDS = {
    "num_output": {"conv": ("convolution_param", "num_output"), "innerproduct": ("inner_product_param", "num_output")},
    "biasterm": {"conv": ("convolution_param", "bias_term"), "innerproduct": ("inner_product_param", "bias_term")},
    "weight_filler": {"conv": ("convolution_param", "weight_filler"), "innerproduct": ("inner_product_param", "weight_filler")},
    "bias_filler": {"conv": ("convolution_param", "bias_filler"), "innerproduct": ("inner_product_param", "bias_filler")},
    "pad": {"conv": ("convolution_param", "pad"), "pool": ("pooling_param", "pad")},
    "kernelsize": {"conv": ("convolution_param", "kernel_size"), "pool": ("pooling_param", "kernel_size")},
    "group": {"conv": ("convolution_param", "group")},
    "stride": {"conv": ("convolution_param", "stride"), "pool": ("pooling_param", "stride")},
    "pool": {"pool": ("pooling_param", "pool")},
    "dropout_ratio": {"dropout": ("dropout_param", "dropout_ratio")},
    "local_size": {"lrn": ("lrn_param", "local_size")},
    "alpha": {"lrn": ("lrn_param", "alpha")},
    "beta": {"lrn": ("lrn_param", "beta")},
    "k": {"lrn": ("lrn_param", "k")},
    "source": {"data": ("data_param", "source"), "hdf5_data": ("hdf5_data_param", "source"),
               "images": ("image_data_param", "source"), "window_data": ("window_data_param", "source"),
               "infogain_loss": ("infogain_loss_param", "source")},
    "scale": {"*": ("transform_param", "scale")},
    "meanfile": {"*": ("transform_param", "mean_file")},
    "batchsize": {"data": ("data_param", "batch_size"), "hdf5_data": ("hdf5_data_param", "batch_size"),
                  "images": ("image_data_param", "batch_size"), "window_data": ("window_data_param", "batch_size")},
    "cropsize": {"*": ("transform_param", "crop_size")},
    "mirror": {"*": ("transform_param", "mirror")},
    "rand_skip": {"data": ("data_param", "rand_skip"), "images": ("image_data_param", "rand_skip")},
    "shuffle_images": {"images": ("image_data_param", "shuffle")},
    "new_height": {"images": ("image_data_param", "new_height")},
    "new_width": {"images": ("image_data_param", "new_width")},
    "concat_dim": {"concat": ("concat_param", "concat_dim")},
    "det_fg_threshold": {"window_data": ("window_data_param", "fg_threshold")},
    "det_bg_threshold": {"window_data": ("window_data_param", "bg_threshold")},
    "det_fg_fraction": {"window_data": ("window_data_param", "fg_fraction")},
    "det_context_pad": {"window_data": ("window_data_param", "context_pad")},
    "det_crop_mode": {"window_data": ("window_data_param", "crop_mode")},
    "hdf5_output_param": {"hdf5_output": ("hdf5_output_param", None)},
}


def _set(message, field, value):
    descriptor = message.DESCRIPTOR.fields_by_name[field]
    if descriptor.is_repeated:
        getattr(message, field).append(value)
    elif descriptor.message_type is not None:
        getattr(message, field).CopyFrom(value)
    else:
        setattr(message, field, value)


def _upgrade_v0_layer(connection, where):
    v0 = connection.layer
    out = caffe_pb2.V1LayerParameter()
    out.bottom.extend(connection.bottom)
    out.top.extend(connection.top)
    if v0.HasField("name"):
        out.name = v0.name
    kind = v0.type
    if v0.HasField("type"):
        if kind not in _V0_TYPES:
            raise NetError(f"{where}: V0 layer '{v0.name}' has unknown type '{kind}'")
        out.type = V1.LayerType.Value(_V0_TYPES[kind])
    out.blobs.extend(v0.blobs)
    out.blobs_lr.extend(v0.blobs_lr)
    out.weight_decay.extend(v0.weight_decay)
    for field, targets in _V0_FIELDS.items():
        if not v0.HasField(field):
            continue
        target = targets.get(kind) or targets.get("*")
        if target is None:
            raise NetError(f"{where}: V0 layer '{v0.name}' of type '{kind}' cannot carry parameter '{field}'")
        sub, name = target
        value = getattr(v0, field)
        if field == "pool":
            value = caffe_pb2.PoolingParameter.PoolMethod.Value(caffe_pb2.V0LayerParameter.PoolMethod.Name(value))
        if name is None:
            getattr(out, sub).CopyFrom(value)
        else:
            _set(getattr(out, sub), name, value)
    return out


def _merge_v0_padding_layers(net, where):
    """Fold V0 'padding' layers into the pad of the conv/pool layer that reads them."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    del out.layers[:]
    last_top = {name: -1 for name in net.input}
    for i, connection in enumerate(net.layers):
        kind = connection.layer.type
        if kind != "padding":
            out.layers.add().CopyFrom(connection)
        for j, blob in enumerate(connection.bottom):
            if blob not in last_top:
                raise NetError(f"{where}: unknown blob '{blob}' input to V0 layer '{connection.layer.name}'")
            source = last_top[blob]
            if source >= 0 and net.layers[source].layer.type == "padding":
                pad = net.layers[source]
                if kind not in ("conv", "pool") or len(connection.bottom) != 1 or len(pad.bottom) != 1 or len(pad.top) != 1:
                    raise NetError(f"{where}: V0 padding layer '{pad.layer.name}' must feed a single-input conv or pool layer")
                out.layers[-1].layer.pad = pad.layer.pad
                out.layers[-1].bottom[j] = pad.bottom[0]
        for blob in connection.top:
            last_top[blob] = i
    return out


def _upgrade_v0_net(net, where):
    padded = _merge_v0_padding_layers(net, where)
    out = caffe_pb2.NetParameter()
    if padded.HasField("name"):
        out.name = padded.name
    for connection in padded.layers:
        out.layers.add().CopyFrom(_upgrade_v0_layer(connection, where))
    out.input.extend(padded.input)
    out.input_dim.extend(padded.input_dim)
    if padded.HasField("force_backward"):
        out.force_backward = padded.force_backward
    return out


_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")
_V1_DATA_PARAMS = {V1.DATA: "data_param", V1.IMAGE_DATA: "image_data_param", V1.WINDOW_DATA: "window_data_param"}


def _upgrade_data_transformation(net):
    for layer in net.layers:
        sub_name = _V1_DATA_PARAMS.get(layer.type)
        if sub_name is None:
            continue
        sub = getattr(layer, sub_name)
        for field in _TRANSFORM_FIELDS:
            if sub.HasField(field):
                setattr(layer.transform_param, field, getattr(sub, field))
                sub.ClearField(field)


def v1_type_name(v1_type):
    """Current type string of a V1 layer enum value (UpgradeV1LayerType)."""
    if v1_type == V1.NONE:
        return ""
    names = {
        "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL", "CONCAT": "Concat",
        "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution", "DECONVOLUTION": "Deconvolution",
        "DATA": "Data", "DROPOUT": "Dropout", "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss",
        "ELTWISE": "Eltwise", "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data",
        "HDF5_OUTPUT": "HDF5Output", "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
        "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
        "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss", "MVN": "MVN",
        "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
        "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence", "SOFTMAX": "Softmax",
        "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice", "TANH": "TanH",
        "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
    }
    return names[V1.LayerType.Name(v1_type)]


def _upgrade_v1_layer(v1, where):
    layer = caffe_pb2.LayerParameter()
    layer.bottom.extend(v1.bottom)
    layer.top.extend(v1.top)
    if v1.HasField("name"):
        layer.name = v1.name
    layer.include.extend(v1.include)
    layer.exclude.extend(v1.exclude)
    if v1.HasField("type"):
        layer.type = v1_type_name(v1.type)
    layer.blobs.extend(v1.blobs)

    def param(i):
        while len(layer.param) <= i:
            layer.param.add()
        return layer.param[i]

    for i, name in enumerate(v1.param):
        param(i).name = name
    for i, mode in enumerate(v1.blob_share_mode):
        param(i).share_mode = caffe_pb2.ParamSpec.DimCheckMode.Value(V1.DimCheckMode.Name(mode))
    for i, lr in enumerate(v1.blobs_lr):
        param(i).lr_mult = lr
    for i, decay in enumerate(v1.weight_decay):
        param(i).decay_mult = decay
    layer.loss_weight.extend(v1.loss_weight)
    # Every *_param sub-message (and transform/loss params) keeps its name in the new schema.
    for field, value in v1.ListFields():
        if field.name.endswith("_param") and field.name in layer.DESCRIPTOR.fields_by_name:
            getattr(layer, field.name).CopyFrom(value)
    if v1.HasField("layer"):
        raise NetError(f"{where}: layer '{v1.name}' mixes V0 and V1 definitions")
    return layer


def _upgrade_input_fields(net, where):
    has_shape, has_dim = len(net.input_shape) > 0, len(net.input_dim) > 0
    if has_shape or has_dim:
        if has_shape and len(net.input_shape) != len(net.input):
            raise NetError(f"{where}: {len(net.input)} 'input' blobs but {len(net.input_shape)} 'input_shape' entries")
        if has_dim and len(net.input_dim) != 4 * len(net.input):
            raise NetError(f"{where}: {len(net.input)} 'input' blobs need {4 * len(net.input)} 'input_dim' values, "
                           f"got {len(net.input_dim)}")
        layer = caffe_pb2.LayerParameter(name="input", type="Input")
        for i, name in enumerate(net.input):
            layer.top.append(name)
            shape = layer.input_param.shape.add()
            if has_shape:
                shape.CopyFrom(net.input_shape[i])
            else:
                shape.dim.extend(net.input_dim[4 * i: 4 * i + 4])
        layers = [layer] + list(net.layer)
        del net.layer[:]
        net.layer.extend(layers)
    net.ClearField("input")
    net.ClearField("input_shape")
    net.ClearField("input_dim")


def upgrade_net(net, where="<net>"):
    """Upgrade a NetParameter in place to the current format; returns it."""
    if any(connection.HasField("layer") for connection in net.layers):
        net.CopyFrom(_upgrade_v0_net(net, where))
    _upgrade_data_transformation(net)
    if len(net.layers):
        if len(net.layer):
            raise NetError(f"{where}: the definition mixes 'layer' (current) and 'layers' (V1) fields; "
                           "write every layer in one format")
        layers = [_upgrade_v1_layer(v1, where) for v1 in net.layers]
        del net.layers[:]
        net.layer.extend(layers)
    if len(net.input):
        _upgrade_input_fields(net, where)
    for layer in net.layer:
        if layer.type == "BatchNorm" and len(layer.param) == 3:
            for spec in layer.param:
                spec.lr_mult = 0
                spec.decay_mult = 0
    return net


_SOLVER_TYPES = {"SGD": "SGD", "NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad",
                 "RMSPROP": "RMSProp", "ADADELTA": "AdaDelta", "ADAM": "Adam"}


def upgrade_solver(solver, where="<solver>"):
    """Move the legacy `solver_type` enum into the `type` string (UpgradeSolverType)."""
    if solver.HasField("solver_type"):
        if solver.HasField("type"):
            raise SolverError(f"{where}: give either 'solver_type' (old enum) or 'type' (string), not both")
        solver.type = _SOLVER_TYPES[caffe_pb2.SolverParameter.SolverType.Name(solver.solver_type)]
        solver.ClearField("solver_type")
    return solver
