"""Caffe's debug_info lines (net.cpp ForwardDebugInfo / BackwardDebugInfo / UpdateDebugInfo): the
mean absolute value of every top, bottom diff and parameter, layer by layer, to find where a run
turns to NaN.  `npcaffe train --debug_info` (or `debug_info: true` in the solver) prints them at
each display iteration, as Caffe 1.0's Solver::Step does.

Upstream quirks mirrored: the whole-net norms line after a backward pass is logged at ERROR level,
as net.cpp does; an [Update] line is written just before each owned parameter is updated, its diff
being the update value (the solver runs its unfused rule while debug_info is on, which computes
the same numbers)."""
import numpy as np

from . import glog


def _abs_mean(values):
    return np.float32(np.abs(values).sum(dtype=np.float32) / np.float32(max(values.size, 1)))


def forward(net, layer_id):
    name = net.layer_names[layer_id]
    for blob, blob_id in zip(net.top_vecs[layer_id], net.top_id_vecs[layer_id]):
        glog.info(f"    [Forward] Layer {name}, top blob {net._blob_names[blob_id]} data: "
                  f"{glog.fmt(_abs_mean(blob.flat_data))}")
    for j, blob in enumerate(net.layers[layer_id].blobs):
        glog.info(f"    [Forward] Layer {name}, param blob {j} data: {glog.fmt(_abs_mean(blob.flat_data))}")


def backward(net, layer_id):
    name = net.layer_names[layer_id]
    layer = net.layers[layer_id]
    for bottom_id, (blob, blob_id) in enumerate(zip(net.bottom_vecs[layer_id], net.bottom_id_vecs[layer_id])):
        if net.bottom_need_backward[layer_id][bottom_id]:
            glog.info(f"    [Backward] Layer {name}, bottom blob {net._blob_names[blob_id]} diff: "
                      f"{glog.fmt(_abs_mean(blob.flat_diff))}")
    for j, blob in enumerate(layer.blobs):
        if layer.param_needs_backward(j):
            glog.info(f"    [Backward] Layer {name}, param blob {j} diff: {glog.fmt(_abs_mean(blob.flat_diff))}")


def net_norms(net):
    owned = [b for b, owner in zip(net.params_list, net.param_owners) if owner < 0]
    asum_data = sum(np.abs(b.flat_data).sum(dtype=np.float32) for b in owned)
    asum_diff = sum(np.abs(b.flat_diff).sum(dtype=np.float32) for b in owned)
    l2_data = np.sqrt(sum(np.dot(b.flat_data, b.flat_data) for b in owned))
    l2_diff = np.sqrt(sum(np.dot(b.flat_diff, b.flat_diff) for b in owned))
    glog.error(f"    [Backward] All net params (data, diff): L1 norm = ({glog.fmt(np.float32(asum_data))}, "
               f"{glog.fmt(np.float32(asum_diff))}); L2 norm = ({glog.fmt(np.float32(l2_data))}, "
               f"{glog.fmt(np.float32(l2_diff))})")


def update(net, learnable_id):
    blob = net.learnable_params[learnable_id]
    param_id = next(i for i, b in enumerate(net.params_list) if b is blob)
    layer_id, _ = net.param_layer_indices[param_id]
    glog.info(f"    [Update] Layer {net.layer_names[layer_id]}, param {net.param_display_names[param_id]} "
              f"data: {glog.fmt(_abs_mean(blob.flat_data))}; diff: {glog.fmt(_abs_mean(blob.flat_diff))}")
