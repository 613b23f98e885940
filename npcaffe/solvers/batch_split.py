"""One training iteration on both cores: the batch split in parts that run on threads (opt-in).

`Solver.set_batch_split(parts)` (`npcaffe train|surgery --batch_split 2`): each
iteration's forward and backward run on `parts` nets of batch N / parts, one per
thread (the calling thread runs the first), and their gradients are summed in
part order and scaled by 1 / parts, as the MPI ranks' are (npcaffe.distributed):

- Data: the train net's leading data layers (those without bottoms) run as
  usual on the whole batch; part k gets rows [k N/parts, (k+1) N/parts) of
  each of their tops, through an Input layer in its place.
- Parameters: every part shares the train net's parameter data (weights,
  masks) and has diffs of its own; the solver updates the train net's.
- DNS surgery (CConvolution / CInnerProduct, CPConvolution / CPInnerProduct):
  the statistics, the glibc rand() gate and the mask update depend on the
  weights and the iteration, not on the data, so they run once per
  iteration, on the train net's layers in layer order, before the parts
  start - the same draws in the same order as an unsplit forward; the
  parts' layers compute with the masks as they are (`surgery_outside`).
- Loss layers normalise by their part's batch (as each GPU's in Caffe); the
  gradient of the whole batch is the mean of the parts', and so is the loss
  the solver displays.  With ignore_label the parts' normalisers differ and
  the two are not the same (Caffe's multi-GPU training has the same property).
- Determinism: each part computes the same way every time and the sum runs in
  a fixed order, so a run repeats to the bit for a given number of parts; it
  differs from the unsplit run by rounding (the sum over the batch is formed
  in another order), which is why it is not the default.

Refused, naming the layer: BatchNorm with batch statistics (each part would
update the shared running statistics at once) and a batch that the parts do
not divide.  The kernels release the GIL (Numba nogil, NumPy, BLAS), so the
parts really run at the same time; the Python between them is serial.
"""
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .. import rng
from ..errors import NetError
from ..kernels.sgd import add_mean_of_two
from ..layerlib.dns import is_dns_layer
from ..proto import caffe_pb2

f32 = np.float32


class BatchSplit:
    def __init__(self, net, parts):
        from ..net import Net
        parts = int(parts)
        if parts < 2:
            raise NetError(f"batch split: the number of parts must be at least 2, got {parts}")
        self.net, self.parts = net, parts
        self.data_end = _leading_data_layers(net)
        shapes = {}
        for i in range(self.data_end):
            for name, blob in zip(net.param.layer[i].top, net.top_vecs[i]):
                num = blob.shape[0] if blob.shape else 0
                if num % parts:
                    raise NetError(f"batch split: top '{name}' of data layer '{net.layer_names[i]}' has shape "
                                   f"{blob.shape}: its first axis ({num}) is not a multiple of the {parts} parts")
                shapes[name] = (num // parts,) + tuple(blob.shape[1:])
        for name, layer in zip(net.layer_names, net.layers):
            if layer.type == "BatchNorm" and not layer.use_global_stats:
                raise NetError(f"batch split: layer '{name}' (BatchNorm) computes batch statistics and updates its "
                               "running statistics in forward; the parts would update them at once. Train this "
                               "net unsplit (or with use_global_stats: true)")
        param = _part_param(net.param, self.data_end, shapes)
        state = rng.get_state()  # the parts' fillers must not move the run's random stream
        try:
            self.part_nets = [Net(param, caffe_pb2.TRAIN) for _ in range(parts)]
        finally:
            rng.set_state(state)
        owners = dict(zip(net.layer_names, net.layers))
        self.shared = []  # (a part's parameter blob, the train net's) whose data it shares
        for part in self.part_nets:
            for name, layer in zip(part.layer_names, part.layers):
                if name not in owners:  # the Input in place of the data layers
                    continue
                for mine, theirs in zip(layer.blobs, owners[name].blobs):
                    mine.share_data(theirs)
                    self.shared.append((mine, theirs))
                if hasattr(layer, "surgery"):
                    layer.surgery_outside = True
                if is_dns_layer(layer):
                    layer.masked_from = owners[name]
        self.surgery_layers = [layer for layer in net.layers if hasattr(layer, "surgery")]
        self.inputs = list(shapes)
        self._pool = ThreadPoolExecutor(max_workers=parts - 1, thread_name_prefix="npcaffe-batch-part")

    def forward_backward(self):
        """The train net's data layers, the surgery once, then forward+backward of every part at once;
        adds the parts' mean gradient into the train net's parameter diffs and returns the mean loss."""
        net, parts = self.net, self.part_nets
        for mine, theirs in self.shared:  # a restore or a user may have given a parameter new storage
            if not mine.shares_data_with(theirs):
                mine.share_data(theirs)
        net.forward_from_to(0, self.data_end - 1)
        iteration = getattr(net.layers[0], "iter", 0)
        for layer in self.surgery_layers:
            layer.surgery()
            if is_dns_layer(layer):
                layer.masked_params()  # W * T or its CSR, once, for every part (their layers' masked_from)
        for hook in net.forward_hooks:  # as after the unsplit forward (the DNS trace reads the gate draws)
            hook(net)
        for k, part in enumerate(parts):
            part.set_iter(iteration)
            for name in self.inputs:
                rows = part.blobs[name].shape[0]
                part.blobs[name].data[...] = net.blobs[name].data[k * rows:(k + 1) * rows]
        futures = [self._pool.submit(_forward_backward, part) for part in parts[1:]]
        losses = [_forward_backward(parts[0])] + [f.result() for f in futures]
        scale = f32(1) / f32(self.parts)
        for i, blob in enumerate(net.learnable_params):
            if len(parts) == 2:
                add_mean_of_two(parts[0].learnable_params[i].flat_diff, parts[1].learnable_params[i].flat_diff,
                                scale, blob.flat_diff)
                continue
            blob.flat_diff[...] += _mean_in_order([part.learnable_params[i].flat_diff for part in parts], scale)
        self._gather_outputs(scale)
        loss = f32(0)
        for value in losses:
            loss += f32(value)
        return loss * scale

    def _gather_outputs(self, scale):
        """The train net's output blobs (the solver displays them; MPI averages them) from the parts':
        the mean of those shaped alike (a loss, an accuracy), the parts' rows in order for per-image ones."""
        net, parts = self.net, self.part_nets
        for name in net.outputs:
            mine = net.blobs[name]
            theirs = [part.blobs[name] for part in parts]
            if theirs[0].shape == mine.shape:
                mine.flat_data[...] = _mean_in_order([blob.flat_data for blob in theirs], scale)
            elif mine.shape and theirs[0].shape[1:] == mine.shape[1:] and theirs[0].shape[0] * len(parts) == mine.shape[0]:
                mine.data[...] = np.concatenate([blob.data for blob in theirs])

    def first_non_finite_top(self):
        """Where a part's forward first made NaN / inf (npcaffe.finite), for the divergence message."""
        from ..finite import first_non_finite_top
        for k, part in enumerate(self.part_nets):
            where = first_non_finite_top(part)
            if where:
                return f"{where}, in part {k} of the split batch"
        return None

    def close(self):
        self._pool.shutdown(wait=True)


def _mean_in_order(arrays, scale):
    """(((a0 + a1) + a2) + ...) * scale in float32, the parts in order (the same bits every run)."""
    total = arrays[0].copy()
    for array in arrays[1:]:
        total += array
    total *= scale
    return total


def _forward_backward(part):
    part.clear_param_diffs(deferred=True)
    return part.forward_backward()


def _leading_data_layers(net):
    """How many layers at the start of the net take no bottom (the data layers the split feeds from)."""
    count = 0
    for bottoms in net.bottom_vecs:
        if bottoms:
            break
        count += 1
    if count == 0 or count == len(net.layers):
        raise NetError("batch split: the train net must start with its data layers (layers without bottoms) "
                       "followed by layers that read them")
    return count


def _part_param(param, data_end, shapes):
    """The train net's parameter with its first `data_end` layers replaced by one Input layer of the
    parts' shapes (the same top names)."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:data_end]
    data = caffe_pb2.LayerParameter(name="batch_split_input", type="Input")
    for name, shape in shapes.items():
        data.top.append(name)
        data.input_param.shape.add().dim.extend(shape)
    rest = list(out.layer)
    del out.layer[:]
    out.layer.extend([data] + rest)
    return out
