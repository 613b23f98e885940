"""Compressed weights (`npcaffe compress`, `write_compressed` / `read_compressed`).

An .npz (NumPy zip, deflated) with, for every layer with parameters, in net
order:
    layers                     the layer names (str array), in order
    <name>/type                the layer type (str)
    <name>/<j>/shape           int64 shape of parameter blob j (0 weight, 1 bias)
    <name>/<j>/index           int32 flat indices of the kept entries, ascending
    <name>/<j>/value           float32 values of the kept entries
Kept entries are the nonzeros of the effective parameters: W * T and
b * T_b for DNS layers (masks dropped), W and b otherwise.  Loading gives
back dense blobs with zeros elsewhere (a DNS layer then keeps its filler
masks, all ones in our nets, so W * T = W).  The file is for inference: the
pruned weights a DNS run keeps learning are not stored.
"""
import math
import os
import zipfile
import zlib

import numpy as np

from ..errors import WeightsError
from ..masks import effective_params, is_masked, stored_effective
from ..proto import caffe_pb2
from .caffemodel import blob_to_array
from .limits import MAX_BLOB_COUNT, check_regular_file


def compress_layers(layers):
    """{npz key: array} for [(name, type, [effective param arrays])]."""
    out = {"layers": np.array([name for name, _, _ in layers], dtype=str)}
    for name, layer_type, arrays in layers:
        out[f"{name}/type"] = np.array(layer_type)
        for j, array in enumerate(arrays):
            flat = np.ascontiguousarray(array, np.float32).ravel()
            index = np.flatnonzero(flat).astype(np.int32)
            out[f"{name}/{j}/shape"] = np.array(array.shape, np.int64)
            out[f"{name}/{j}/index"] = index
            out[f"{name}/{j}/value"] = flat[index]
    return out


def layers_from_net(net):
    """[(name, type, [effective weight, bias])] of a Net's layers with parameters."""
    layers = []
    for name, layer in zip(net.layer_names, net.layers):
        if not layer.blobs:
            continue
        if is_masked(layer):
            weight, bias = effective_params(layer)
            arrays = [weight] + ([] if bias is None else [bias])
        else:
            arrays = [b.data for b in layer.blobs]
        layers.append((name, layer.type, arrays))
    return layers


def layers_from_caffemodel(net_param, where):
    """The same from a caffemodel's NetParameter: DNS layers with 4 blobs are masked."""
    layers = []
    for lp in net_param.layer:
        if not lp.blobs:
            continue
        arrays = [blob_to_array(b, f"{where}: layer '{lp.name}' blob {j}") for j, b in enumerate(lp.blobs)]
        layers.append((lp.name, lp.type, stored_effective(lp.type, arrays)))
    return layers


def write_compressed(path, layers):
    np.savez_compressed(path, **compress_layers(layers))


def _header(archive, key, path):
    """(shape, dtype) of an .npz member from its .npy header, read before the member's data."""
    try:
        with archive.zip.open(key + ".npy") as fp:
            version = np.lib.format.read_magic(fp)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(fp)
    except KeyError:
        raise WeightsError(f"{path}: no entry '{key}'; not written by `npcaffe compress`, or damaged") from None
    return shape, dtype


def _member(archive, key, path, max_count, kind):
    """archive[key] once its header says it is a 1-D (or 0-D) array of `kind` ('i', 'f', 'U')
    with at most max_count values."""
    shape, dtype = _header(archive, key, path)
    if len(shape) > 1 or math.prod(shape) > max_count or dtype.kind not in kind:
        raise WeightsError(f"{path}: entry '{key}' is {dtype} of shape {shape}; expected at most {max_count} "
                           f"values of kind '{kind}' (the file is damaged or not written by `npcaffe compress`)")
    return archive[key]


def read_compressed(path, expected=None):
    """A NetParameter with the dense blobs of a compressed .npz, for Net.copy_from.

    Every member's .npy header is checked before its data is read (a 1 KB file may declare
    gigabytes): shapes against Caffe's INT_MAX and, with expected ({layer name: [param
    shapes]}, the net's), against the net's own; a layer the net lacks comes back without
    blobs and is not expanded."""
    path = os.fspath(path)
    try:
        check_regular_file(path, WeightsError)
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, NotImplementedError) as e:  # zipfile: unknown method
        raise WeightsError(f"{path}: not a readable npcaffe compressed weights file (.npz): {e}") from None
    try:
        with archive:
            return _read_layers(archive, path, expected)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError) as e:
        raise WeightsError(f"{path}: damaged npcaffe compressed weights file (.npz): {e}") from None


def _read_layers(archive, path, expected):
    if "layers" not in archive.files:
        raise WeightsError(f"{path}: no 'layers' entry; not written by `npcaffe compress`")
    net_param = caffe_pb2.NetParameter()
    for name in _member(archive, "layers", path, 100000, "U"):
        name = str(name)
        lp = net_param.layer.add()
        lp.name = name
        lp.type = str(_member(archive, f"{name}/type", path, 1, "U"))
        if expected is not None and name not in expected:
            continue  # Net.copy_from logs it as ignored
        j = 0
        while f"{name}/{j}/shape" in archive.files:
            shape = tuple(int(d) for d in _member(archive, f"{name}/{j}/shape", path, 32, "iu"))
            if any(d < 0 for d in shape) or math.prod(shape) > MAX_BLOB_COUNT:
                raise WeightsError(f"{path}: layer '{name}' blob {j}: shape {shape} is not a blob's (negative, "
                                   "or more values than Caffe's INT_MAX)")
            targets = expected.get(name) if expected is not None else None
            if targets is not None and (j >= len(targets) or tuple(targets[j]) != shape):
                target = f"shape {tuple(targets[j])}" if j < len(targets) else f"{len(targets)} blobs"
                raise WeightsError(f"{path}: cannot copy param {j} of layer '{name}': shape mismatch. "
                                   f"Source shape {shape}; target {target}")
            count = math.prod(shape)
            index = _member(archive, f"{name}/{j}/index", path, count, "iu")
            value = _member(archive, f"{name}/{j}/value", path, count, "f")
            if index.shape != value.shape or (index.size and (index.min() < 0 or index.max() >= count)):
                raise WeightsError(f"{path}: layer '{name}' blob {j}: {index.size} indices / {value.size} "
                                   f"values do not fit shape {shape}; the file is damaged")
            dense = np.zeros(count, np.float32)
            dense[index] = value
            blob = lp.blobs.add()
            blob.shape.dim.extend(shape)
            blob.data.extend(dense.tolist())
            j += 1
    return net_param


def is_compressed(path):
    return isinstance(path, (str, os.PathLike)) and os.fspath(path).endswith(".npz")
