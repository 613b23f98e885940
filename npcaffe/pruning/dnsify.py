"""Turn a plain Caffe net into a DNS net (`dnsify`), and its baked result back into the user's net (`undnsify`).

`dnsify` rewrites a NetParameter: each chosen Convolution / InnerProduct
layer becomes a CConvolution / CInnerProduct (npcaffe.layerlib.dns) with
the given surgery settings and all-ones mask fillers; every other field of
the layer (names, bottoms, tops, param specs, convolution_param /
inner_product_param, phase rules) is kept.  It returns the converted net and
a record of what it changed, which `undnsify` uses to give a baked model
(masks.plain_model) exactly the user's own layer parameters back, so the
user's own train or deploy prototxt loads it, in npcaffe and in BVLC Caffe.

A layer with `bias_term: false`: the DNS layers need a bias (the fork's
layer reads four blobs; see layerlib/dns.py), so dnsify gives it a constant
0 bias with bias mask 0 and lr_mult / decay_mult 0.  A zero bias never
counts in the DNS statistics, is never spliced and never moves; the baked
model drops that blob and the layer gets `bias_term: false` back.

Defaults (`npcaffe surgery --solver` and `npcaffe dnsify` state them too):
- gamma 1e-4, power 1: the surgery settings embedded in the DNS release's
  LeNet-5 and LeNet-300-100 models, the only ones published with the paper.
  The gate then opens with probability 1 / (1 + 1e-4 iter): always at
  first, half the time at iteration 10,000.
- c_rate 3, for every layer not given one: the fork's own field default
  (CConvolutionParameter / CInnerProductParameter).  The threshold is
  mu + c_rate * std of |w|; the release's LeNets use 2 to 5 per layer, so 3
  is a middle value to tune per layer from the report.
- iter_stop: 80% of the solver's max_iter (`default_iter_stop`), so the
  last fifth of the run trains the kept weights with the masks frozen.  The
  release's LeNet recipes stop at 14,000 of 16,000 (87.5%) and 20,000 of
  25,000 (80%) iterations.
- weight and bias mask fillers constant 1: every weight starts kept (the
  fork's own default, constant 0, would start with every weight pruned).

DNS-CP (`channels=True`, `npcaffe dnsify --channels`, `npcaffe surgery
--solver S --channels`): the layers become CPConvolution / CPInnerProduct
(npcaffe.layerlib.dns_cp) with channel_surgery_param; gamma, power and
iter_stop default as above, c_rate to 0.1, the seed's "generally" value
(the thresholds are mu -/+ c_rate * std of |w| and the channel means lie
close to mu, so small rates already prune many channels); every channel
starts kept.  By default every Convolution / InnerProduct that does not read
a data layer's top is converted: a net cannot drop its input's channels.
"""
from typing import NamedTuple

from ..errors import NetError
from ..proto import caffe_pb2

GAMMA = 1e-4
POWER = 1.0
C_RATE = 3.0
ITER_STOP_SHARE = 0.8

# plain type -> (DNS type, the plain layer's parameter field, the surgery parameter field)
DNS_TYPES = {"Convolution": ("CConvolution", "convolution_param", "cconvolution_param"),
             "InnerProduct": ("CInnerProduct", "inner_product_param", "cinner_product_param")}
# the same for DNS-CP (channels=True): one message for both types
CP_TYPES = {"Convolution": ("CPConvolution", "convolution_param", "channel_surgery_param"),
            "InnerProduct": ("CPInnerProduct", "inner_product_param", "channel_surgery_param")}
_DNS_TYPE_NAMES = ("CConvolution", "CMaskedConvolution", "CInnerProduct", "CMaskedInnerProduct", "CPConvolution",
                   "CPInnerProduct")
# DNS-CP defaults (channels=True), see the module docstring
CP_C_RATE = 0.1
# Layers whose tops are a net's input: a layer reading them directly has the data's channels as input
# channels, which no net can drop, so DNS-CP leaves it out unless named.
_DATA_TYPES = ("Data", "Input", "DummyData", "MemoryData", "HDF5Data", "ImageData", "WindowData", "Python")


class Conversion(NamedTuple):
    """One layer dnsify converted: its name, the user's own LayerParameter, what was set."""
    name: str
    original: caffe_pb2.LayerParameter  # the user's layer, as it was
    c_rate: float
    zero_bias: bool  # bias_term: false in the user's layer; the DNS layer got a constant 0 bias


def default_iter_stop(max_iter):
    """80% of max_iter (rounded down): the masks are frozen for the last fifth of the run."""
    return int(max_iter) * 4 // 5


def weight_layer_names(net_param):
    """Names of the net's Convolution / InnerProduct layers and DNS layers, in net order, once each."""
    names = []
    for layer in net_param.layer:
        if (layer.type in DNS_TYPES or layer.type in _DNS_TYPE_NAMES) and layer.name not in names:
            names.append(layer.name)
    return names


def _layer_list(names):
    return ", ".join(names) if names else "none"


def data_fed_layers(net_param):
    """Names of the layers that read a data layer's top directly (their input channels are the data's)."""
    data_tops = {top for layer in net_param.layer if layer.type in _DATA_TYPES for top in layer.top}
    return {layer.name for layer in net_param.layer if layer.type not in _DATA_TYPES
            and any(bottom in data_tops for bottom in layer.bottom)}


def _chosen_layers(net_param, layers, where, channels=False):
    """The names to convert: `layers`, checked, or every Convolution / InnerProduct layer (with
    `channels`, those that do not read the net's data)."""
    weight_layers = weight_layer_names(net_param)
    types = {}
    for layer in net_param.layer:
        types.setdefault(layer.name, layer.type)
    if layers is None:
        skip = data_fed_layers(net_param) if channels else set()
        chosen = [name for name in weight_layers if types[name] in DNS_TYPES and name not in skip]
        if not chosen:
            raise NetError(f"{where}: no Convolution or InnerProduct layer to convert "
                           f"(weight layers: {_layer_list(weight_layers)})")
        return chosen
    chosen = []
    for name in layers:
        if name not in types:
            raise NetError(f"{where}: no layer named '{name}'; the net's weight layers are "
                           f"{_layer_list(weight_layers)}")
        if types[name] in _DNS_TYPE_NAMES:
            raise NetError(f"{where}: layer '{name}' is already a DNS layer ({types[name]}); edit its "
                           "surgery parameters in the prototxt instead")
        if types[name] not in DNS_TYPES:
            raise NetError(f"{where}: layer '{name}' is {types[name]}; only Convolution and InnerProduct "
                           f"layers become DNS layers (the net's: {_layer_list(weight_layers)})")
        if name not in chosen:
            chosen.append(name)
    if not chosen:
        raise NetError(f"{where}: no layers given to convert (the net's weight layers: {_layer_list(weight_layers)})")
    return chosen


def _rates(chosen, c_rate, default_c_rate, weight_layers, where):
    if not isinstance(c_rate, dict):
        value = default_c_rate if c_rate is None else c_rate
        return {name: float(value) for name in chosen}
    for name in c_rate:
        if name not in chosen:
            why = ("it is not one of the layers to convert (" + _layer_list(chosen) + ")"
                   if name in weight_layers else f"the net's weight layers are {_layer_list(weight_layers)}")
            raise NetError(f"{where}: c_rate given for layer '{name}', but {why}")
    return {name: float(c_rate.get(name, default_c_rate)) for name in chosen}


def dnsify(net_param, layers=None, c_rate=None, *, iter_stop, gamma=GAMMA, power=POWER,
           default_c_rate=None, where=None, channels=False):
    """(converted NetParameter, [Conversion]): the chosen layers as DNS layers.

    channels: DNS-CP instead (npcaffe.layerlib.dns_cp): CPConvolution /
    CPInnerProduct with channel_surgery_param, one mask entry per input
    channel; layers then defaults to every Convolution / InnerProduct that
    does not read a data layer's top, default_c_rate to 0.1 (the seed's).

    layers: names of Convolution / InnerProduct layers (default: all of
    them).  c_rate: one value for every converted layer, or {layer: value}
    (layers not in it get default_c_rate).  iter_stop: the iteration from
    which the masks stay fixed (default_iter_stop(max_iter) is the usual
    choice).  Every layer of a name is converted (a layer defined once per
    phase).  Unknown names, layers of other types, InnerProduct with
    `transpose: true` (CInnerProduct has no transposed weights) are
    NetErrors naming the layer and listing the net's weight layers.
    `net_param` is not changed."""
    where = where or f"net '{net_param.name}'"
    if default_c_rate is None:
        default_c_rate = CP_C_RATE if channels else C_RATE
    chosen = _chosen_layers(net_param, layers, where, channels)
    rates = _rates(chosen, c_rate, default_c_rate, weight_layer_names(net_param), where)
    types = CP_TYPES if channels else DNS_TYPES
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net_param)
    record = []
    for layer in out.layer:
        if layer.name not in rates:
            continue
        original = caffe_pb2.LayerParameter()
        original.CopyFrom(layer)
        dns_type, base_field, surgery_field = types[layer.type]
        base = getattr(layer, base_field)
        if layer.type == "InnerProduct" and base.transpose:
            raise NetError(f"{where}: layer '{layer.name}' (InnerProduct) has transpose: true, which "
                           f"{dns_type} does not support (the DNS fork has no transposed weights); "
                           "leave it out of the layers to convert")
        zero_bias = not base.bias_term
        layer.type = dns_type
        if zero_bias:
            base.ClearField("bias_term")
            base.bias_filler.Clear()
            base.bias_filler.type = "constant"
            base.bias_filler.value = 0
            while len(layer.param) < 2:
                layer.param.add()
            layer.param[1].lr_mult = 0
            layer.param[1].decay_mult = 0
        surgery = getattr(layer, surgery_field)
        surgery.gamma = gamma
        surgery.power = power
        surgery.c_rate = rates[layer.name]
        surgery.iter_stop = iter_stop
        if not channels:
            surgery.weight_mask_filler.type = "constant"
            surgery.weight_mask_filler.value = 1
            surgery.bias_mask_filler.type = "constant"
            surgery.bias_mask_filler.value = 0 if zero_bias else 1
        record.append(Conversion(layer.name, original, rates[layer.name], zero_bias))
    return out, record


def _rules(layer):
    return ([r.SerializeToString() for r in layer.include], [r.SerializeToString() for r in layer.exclude])


def undnsify(net_param, record):
    """Copy of a baked NetParameter (masks.plain_model) with each converted layer's own parameters back.

    Each layer dnsify converted gets the user's LayerParameter (of the same
    name and phase rules) and its baked blobs; a layer that had `bias_term:
    false` drops its zero bias blob.  A layer that still has its masks (more
    than weight and bias) is a NetError: bake the net first."""
    by_name = {}
    for conversion in record:
        by_name.setdefault(conversion.name, []).append(conversion)
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net_param)
    for layer in out.layer:
        candidates = by_name.get(layer.name)
        if not candidates:
            continue
        if len(layer.blobs) > 2:
            raise NetError(f"layer '{layer.name}' ({layer.type}) has {len(layer.blobs)} blobs: bake its masks "
                           "first (npcaffe.masks.plain_model), then restore the plain layer")
        conversion = next((c for c in candidates if _rules(c.original) == _rules(layer)), candidates[0])
        blobs = list(layer.blobs)
        if conversion.zero_bias:
            blobs = blobs[:1]
        layer.CopyFrom(conversion.original)
        del layer.blobs[:]
        layer.blobs.extend(blobs)
    return out


def baked_model(net, record):
    """The trained DNS net as the user's plain net with W ⊙ T and b ⊙ T_b: what BVLC Caffe loads."""
    from ..masks import plain_model
    return undnsify(plain_model(net), record)


def parse_c_rates(items):
    """--c_rate values -> (rate for every layer or None, {layer: rate}): "3.5" or "conv1=2"."""
    default, per_layer = None, {}
    for item in items or ():
        name, sep, value = item.rpartition("=")
        try:
            rate = float(value)
        except ValueError:
            rate = None
        if rate is None or rate != rate or (sep and not name):
            raise NetError(f"--c_rate '{item}': expected LAYER=VALUE (e.g. conv1=2.5) or one VALUE for every layer")
        if sep:
            per_layer[name] = rate
        else:
            default = rate
    return default, per_layer


def parse_layers(items):
    """--layers values (comma-separated, repeatable) -> [names], or None for all."""
    names = [name for item in items or () for name in item.split(",") if name]
    return names or None


def describe(record, gamma, power, iter_stop, channels=False):
    """One comment block saying what dnsify did (the head of a converted prototxt)."""
    if channels:
        lines = [f"DNS-CP channel surgery layers (npcaffe dnsify --channels): gamma {gamma:g}, power {power:g}, "
                 f"iter_stop {iter_stop}, every channel kept at first"]
    else:
        lines = [f"DNS layers (npcaffe dnsify): gamma {gamma:g}, power {power:g}, iter_stop {iter_stop}, "
                 "mask fillers constant 1"]
    types = CP_TYPES if channels else DNS_TYPES
    done = set()
    for c in record:
        if c.name in done:
            continue
        done.add(c.name)
        note = ""
        if c.zero_bias:
            note = (" (bias_term: false -> constant 0 bias, lr_mult 0)" if channels else
                    " (bias_term: false -> constant 0 bias, bias mask 0, lr_mult 0)")
        lines.append(f"  {c.name}: {c.original.type} -> {types[c.original.type][0]}, c_rate {c.c_rate:g}{note}")
    return lines


def converted_text(net_param, record, gamma, power, iter_stop, source=None, channels=False):
    """The converted net as readable prototxt, headed by comments saying what was converted."""
    from ..fileio.prototxt import to_text
    head = ([f"Converted from {source}"] if source else []) + describe(record, gamma, power, iter_stop, channels)
    return "".join(f"# {line}\n" for line in head) + to_text(net_param)
