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
import os

import numpy as np

from ..errors import WeightsError
from ..masks import effective_params, is_masked, stored_effective
from ..proto import caffe_pb2
from .caffemodel import blob_to_array


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


def read_compressed(path):
    """A NetParameter with the dense blobs of a compressed .npz, for Net.copy_from."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise WeightsError(f"{path}: not a readable npcaffe compressed weights file (.npz): {e}") from None
    with archive:
        if "layers" not in archive.files:
            raise WeightsError(f"{path}: no 'layers' entry; not written by `npcaffe compress`")
        net_param = caffe_pb2.NetParameter()
        for name in archive["layers"]:
            name = str(name)
            lp = net_param.layer.add()
            lp.name = name
            lp.type = str(archive[f"{name}/type"])
            j = 0
            while f"{name}/{j}/shape" in archive.files:
                shape = tuple(int(d) for d in archive[f"{name}/{j}/shape"])
                index, value = archive[f"{name}/{j}/index"], archive[f"{name}/{j}/value"]
                count = int(np.prod(shape, dtype=np.int64))
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
