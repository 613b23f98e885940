"""pycaffe's net_spec: write nets in Python and get a NetParameter.

    from npcaffe import layers as L, params as P, to_proto, NetSpec
    n = NetSpec()
    n.data, n.label = L.Data(source="mnist_lmdb", backend=P.Data.LMDB, batch_size=64, ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20, weight_filler=dict(type="xavier"))
    n.loss = L.SoftmaxWithLoss(n.conv1, n.label)
    print(n.to_proto())

Keyword arguments of a layer go into its own `<type>_param` message (e.g.
kernel_size into convolution_param), or onto the LayerParameter itself
(loss_weight, include, param, ...); `ntop` sets the number of tops and
`in_place=True` reuses the bottom.  Layers not given a name by NetSpec are
named after their type and a counter (Convolution1, ...), as in pycaffe.  One
addition: the DNS layers CConvolution / CInnerProduct take the
convolution_param / inner_product_param fields directly too.
"""
from collections import Counter, OrderedDict

from .proto import caffe_pb2

# Keyword arguments the DNS layers borrow from their plain twins.
_BASE_PARAM = {"CConvolution": "convolution", "CMaskedConvolution": "convolution",
               "CInnerProduct": "inner_product", "CMaskedInnerProduct": "inner_product"}


def param_name_dict():
    """{layer type: parameter field prefix}, e.g. {"Convolution": "convolution", "InnerProduct": "inner_product"}."""
    out = {}
    for field in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        if field.name.endswith("_param") and field.message_type is not None:
            type_name = field.message_type.name
            if type_name.endswith("Parameter"):
                out[type_name[: -len("Parameter")]] = field.name[: -len("_param")]
    out.update({"CMaskedConvolution": "cconvolution", "CMaskedInnerProduct": "cinner_product"})
    return out


_PARAM_NAMES = param_name_dict()


def assign_proto(proto, name, value):
    """Set proto.name from Python values: dicts become messages, lists repeated fields
    (a single value given for a repeated field becomes a one-element list)."""
    field = getattr(proto, name)
    repeated = hasattr(field, "extend")
    if repeated and not isinstance(value, list):
        value = [value]
    if isinstance(value, list):
        if value and isinstance(value[0], dict):
            for item in value:
                message = field.add()
                for key, sub in item.items():
                    assign_proto(message, key, sub)
        else:
            field.extend(value)
    elif isinstance(value, dict):
        for key, sub in value.items():
            assign_proto(field, key, sub)
    else:
        setattr(proto, name, value)


class Top:
    """One output blob of a layer function."""

    def __init__(self, fn, n):
        self.fn, self.n = fn, n

    def to_proto(self):
        return to_proto(self)

    def _to_proto(self, layers, names, autonames):
        return self.fn._to_proto(layers, names, autonames)


class Function:
    """A layer: its type, its input Tops and its parameters."""

    def __init__(self, type_name, inputs, params):
        for i, item in enumerate(inputs):
            if not isinstance(item, Top):
                raise TypeError(f"{type_name} input {i} is not a Top (type is {type(item)})")  # pycaffe's wording
        self.type_name = type_name
        self.inputs = inputs
        self.params = dict(params)
        self.ntop = self.params.pop("ntop", 1)
        self.in_place = self.params.pop("in_place", False)
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _top_name(self, top, names, autonames):
        if top not in names:
            autonames[top.fn.type_name] += 1
            names[top] = f"{top.fn.type_name}{autonames[top.fn.type_name]}"
        return names[top]

    def _name(self, names, autonames):
        if self not in names:
            if self.ntop > 0:
                names[self] = self._top_name(self.tops[0], names, autonames)
            else:
                autonames[self.type_name] += 1
                names[self] = f"{self.type_name}{autonames[self.type_name]}"
        return names[self]

    def _assign(self, layer, key, value):
        if key.endswith("param"):
            assign_proto(layer, key, value)
            return
        targets = [_PARAM_NAMES.get(self.type_name), _BASE_PARAM.get(self.type_name)]
        for prefix in targets:
            if prefix is None:
                continue
            message = getattr(layer, prefix + "_param")
            if key in message.DESCRIPTOR.fields_by_name:
                assign_proto(message, key, value)
                return
        assign_proto(layer, key, value)

    def _to_proto(self, layers, names, autonames):
        if self in layers:
            return
        bottoms = []
        for item in self.inputs:
            item._to_proto(layers, names, autonames)
            bottoms.append(layers[item.fn].top[item.n])
        layer = caffe_pb2.LayerParameter(type=self.type_name)
        layer.bottom.extend(bottoms)
        if self.in_place:
            layer.top.extend(layer.bottom)
        else:
            layer.top.extend(self._top_name(top, names, autonames) for top in self.tops)
        layer.name = self._name(names, autonames)
        for key, value in self.params.items():
            self._assign(layer, key, value)
        layers[self] = layer


def to_proto(*tops):
    """NetParameter with every layer needed to compute the given Tops (intermediate names generated)."""
    layers, autonames = OrderedDict(), Counter()
    for top in tops:
        top.fn._to_proto(layers, {}, autonames)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


class NetSpec:
    """Tops assigned as attributes (or items) name their layers and blobs in to_proto()."""

    def __init__(self):
        super().__setattr__("tops", OrderedDict())

    def __setattr__(self, name, value):
        self.tops[name] = value

    def __getattr__(self, name):
        try:
            return self.tops[name]
        except KeyError:
            raise AttributeError(name) from None

    __setitem__ = __setattr__

    def __getitem__(self, name):
        return self.tops[name]

    def to_proto(self):
        names = {top: name for name, top in self.tops.items()}
        layers, autonames = OrderedDict(), Counter()
        for top in self.tops.values():
            top._to_proto(layers, names, autonames)
        net = caffe_pb2.NetParameter()
        net.layer.extend(layers.values())
        return net


class Layers:
    """`layers.Convolution(bottom, ...)` makes a layer function of that type."""

    def __getattr__(self, type_name):
        def layer_fn(*inputs, **params):
            fn = Function(type_name, inputs, params)
            if fn.ntop == 0:
                return fn
            return fn.tops[0] if fn.ntop == 1 else fn.tops
        return layer_fn


class Parameters:
    """`params.Pooling.MAX` is PoolingParameter.MAX, and so on."""

    def __getattr__(self, name):
        message = getattr(caffe_pb2, name + "Parameter")

        class _Enums:
            def __getattr__(self, value_name):
                return getattr(message, value_name)
        return _Enums()


layers = Layers()
params = Parameters()
