"""Binary protos: .caffemodel (a NetParameter with blobs), .binaryproto (one BlobProto),
and conversion between BlobProto and numpy in every form Caffe writes.

Layer-parameter numbering: our schema gives fields 140/141 to the DNS fork's
cconvolution_param / cinner_product_param, while BVLC files store elu_param /
bias_param there (see caffe.proto).  Readers and writers here translate, so an
ELU or Bias layer round-trips with upstream BVLC Caffe.
"""
import math
import os

import numpy as np
from google.protobuf.message import DecodeError

from ..errors import WeightsError
from ..proto import caffe_pb2
from .atomic import atomic_write
from .limits import MAX_PROTO_BYTES, read_bounded
from .upgrade import upgrade_net

_BVLC_MOVED = {"ELU": ("cconvolution_param", "elu_param", 140),
               "Bias": ("cinner_product_param", "bias_param", 141)}


def blob_shape(proto):
    """Shape of a BlobProto: legacy num/channels/height/width as 4-D, else `shape`."""
    if proto.HasField("num") or proto.HasField("channels") or proto.HasField("height") or proto.HasField("width"):
        return (proto.num, proto.channels, proto.height, proto.width)
    return tuple(proto.shape.dim)


def _checked_count(shape, values, where, what):
    # math.prod on Python ints: dims such as 2**32 overflow NumPy's int64 product to a small count.
    if any(d < 0 for d in shape):
        raise WeightsError(f"{where}: negative dimension in shape {shape}")
    count = math.prod(shape)
    if len(values) != count:
        raise WeightsError(f"{where}: shape {shape} needs {count} values but the file holds {len(values)} "
                           f"({what})")


def blob_to_array(proto, where="blob"):
    """float32 ndarray of a BlobProto's data (double_data converted)."""
    shape = blob_shape(proto)
    values = proto.double_data if len(proto.double_data) else proto.data
    _checked_count(shape, values, where, "data")
    return np.asarray(values, dtype=np.float32).reshape(shape)


def blob_diff_to_array(proto, where="blob"):
    """float32 ndarray of a BlobProto's diff, or None when it stores none."""
    shape = blob_shape(proto)
    values = proto.double_diff if len(proto.double_diff) else proto.diff
    if len(values) == 0:
        return None
    _checked_count(shape, values, where, "diff")
    return np.asarray(values, dtype=np.float32).reshape(shape)


def array_to_blob(array, proto=None, diff=None):
    """Fill a BlobProto (current `shape` form, float data) from arrays."""
    proto = proto if proto is not None else caffe_pb2.BlobProto()
    array = np.asarray(array, dtype=np.float32)
    proto.shape.dim.extend(array.shape)
    proto.data.extend(array.ravel().tolist())
    if diff is not None:
        proto.diff.extend(np.asarray(diff, dtype=np.float32).ravel().tolist())
    return proto


def _fix_bvlc_fields_after_read(net):
    for layer in net.layer:
        moved = _BVLC_MOVED.get(layer.type)
        if moved and layer.HasField(moved[0]):
            ours, theirs, _ = moved
            getattr(layer, theirs).ParseFromString(getattr(layer, ours).SerializeToString())
            layer.ClearField(ours)


def read_proto_file(path, message, what, error=WeightsError):
    """Parse a binary proto file into `message`; a missing, unreadable or corrupt file
    raises `error` naming the path and what the file should have been."""
    path = os.fspath(path)
    try:
        # Upstream's bundles ship snapshots gzipped; read those as they are.
        data = read_bounded(path, MAX_PROTO_BYTES, error, what)
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except (OSError, EOFError) as e:
        raise error(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    try:
        message.ParseFromString(data)
    except DecodeError as e:
        raise error(f"{path}: not a valid {what} (truncated or corrupt file, {len(data)} bytes): {e}") from None
    return message


def read_caffemodel(path, upgrade=True):
    """NetParameter (with blobs) from a binary .caffemodel, upgraded from V0/V1."""
    path = os.fspath(path)
    net = read_proto_file(path, caffe_pb2.NetParameter(), "caffemodel (binary NetParameter)")
    if not len(net.layer) and not len(net.layers):
        raise WeightsError(f"{path}: no layers in this file; is it a caffemodel? "
                           "(a .prototxt or .solverstate given by mistake?)")
    if upgrade:
        upgrade_net(net, path)
    _fix_bvlc_fields_after_read(net)
    return net


def caffemodel_arrays(path):
    """{layer name: [float32 arrays]} of the layers with blobs in a .caffemodel (or .caffemodel.gz)."""
    net = read_caffemodel(path)
    return {layer.name: [blob_to_array(b, f"{path}: layer '{layer.name}' blob {j}") for j, b in enumerate(layer.blobs)]
            for layer in net.layer if len(layer.blobs)}


def caffemodel_layers(path):
    """[(layer name, layer type, [float32 arrays])] of the layers with blobs in a .caffemodel (or .gz), in order."""
    net = read_caffemodel(path)
    return [(layer.name, layer.type,
             [blob_to_array(b, f"{path}: layer '{layer.name}' blob {j}") for j, b in enumerate(layer.blobs)])
            for layer in net.layer if len(layer.blobs)]


def serialize_net(net):
    """Bytes of a NetParameter, with ELU/Bias parameters at BVLC's field numbers."""
    if not any(layer.type in _BVLC_MOVED and layer.HasField(_BVLC_MOVED[layer.type][1]) for layer in net.layer):
        return net.SerializeToString()
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    layer_bytes = []
    for layer in out.layer:
        moved = _BVLC_MOVED.get(layer.type)
        if moved and layer.HasField(moved[1]):
            sub = getattr(layer, moved[1]).SerializeToString()
            layer.ClearField(moved[1])
            tail = _key(moved[2], 2) + _varint(len(sub)) + sub
        else:
            tail = b""
        layer_bytes.append(layer.SerializeToString() + tail)
    del out.layer[:]
    head = out.SerializeToString()
    body = b"".join(_key(100, 2) + _varint(len(b)) + b for b in layer_bytes)
    return head + body


def _varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field_number, wire_type):
    return _varint((field_number << 3) | wire_type)


def write_caffemodel(net, path):
    atomic_write(path, serialize_net(net))


def read_binaryproto(path):
    """A BlobProto from a .binaryproto file (e.g. a mean image)."""
    return read_proto_file(path, caffe_pb2.BlobProto(), "binaryproto (BlobProto)")


def write_binaryproto(proto, path):
    atomic_write(path, proto.SerializeToString())
