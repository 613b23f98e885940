"""Sparse inference and storage for pruned nets.

Inference.  In a TEST-phase Net, every InnerProduct / Convolution layer
(and the DNS CInnerProduct / CConvolution, whose effective weights are W * T)
that does not need backward and whose weight density (nonzeros / size) is
below DENSITY_THRESHOLD computes with a packed CSR copy of its weights and
the kernels in npcaffe.kernels.sparse, instead of im2col + GEMM.  The Net
calls `sparsify(net)` after loading weights (Net(model, weights, TEST),
net.copy_from(...)).  Outputs equal the dense path's to float rounding (the
sums are taken in another order; tests/test_sparse.py checks 1e-5 relative).
The packed form is a cache: each forward first makes sure that the layer's
weights (and masks) still hold the values it was packed from, and repacks
(or returns to the dense path) if not, so writing into net.params[...]
keeps working as in pycaffe.  When no view of those blobs has been handed
out since the last check and none is alive (Blob.data_stamp), they cannot
have been written and the check is free; otherwise it compares every value
with a copy (about as long as a dense batch-1 InnerProduct).  `npcaffe
test`, which never changes weights, packs with verify=False and skips it.  Convolution
with group > 1 stays dense.  Below SMALL_BATCH images a convolution unrolls
its input (im2col, small then) and adds one column row per kept weight;
from SMALL_BATCH on it uses the batch-innermost direct kernel.

Runs of packed inner products with the ReLU, Split, Softmax and Input
layers around them run as one kernel call each (ChainPlan, used by
Net.forward_from_to): at batch 1 a pruned MLP otherwise spends most of its
forward calling layers.  The same kernels on the same arrays, so the same
bits as layer by layer.

DENSITY_THRESHOLD and SMALL_BATCH_DENSITY_THRESHOLD were measured with
`python tools/bench.py --threshold`: each weight layer of LeNet-5 and
LeNet-300-100, pruned at random to a given density, sparse kernels against
the dense path at batch 1 and 100 (one BLAS thread).  At batch 100 the
sparse kernels stop winning between 20% and 40% density (lowest: LeNet-5's
ip1 and LeNet-300-100's ip1/ip2, 10-20%); at batch 1 between 20% and 40%
for the convolutions but 3-10% for the inner products (a batch-1 product is
a matrix-vector one, fast dense).  Each threshold is about the lowest
crossover of its regime, so a layer runs sparse only where that was faster
on every layer shape measured; inner products below SMALL_BATCH samples use
the second.  Figures in README, section Speed.

Storage (`npcaffe compress`, `write_compressed` / `read_compressed`): an
.npz (NumPy zip, deflated) with, for every layer with parameters, in net
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

from .errors import WeightsError
from .blob import Blob
from .kernels.sparse import (CHAIN_COLUMNS, CHAIN_RELU, CHAIN_ROWS, CHAIN_SOFTMAX, CHAIN_STEP_WIDTH,
                             csc_vector_product, csr_columns_product, csr_convolution, csr_convolution_stride1,
                             csr_inner_product, csr_vector_product, dense_to_csr, same_values_chunked,
                             sparse_chain_forward, stride1_tap_offsets)
from .masks import effective_params, is_masked, stored_effective
from .proto.caffe_pb2 import TEST
from .proto import caffe_pb2

# Measured crossovers (see the module docstring); a layer denser than this runs dense.
DENSITY_THRESHOLD = 0.15
SMALL_BATCH = 8
SMALL_BATCH_DENSITY_THRESHOLD = 0.05  # inner products only
# Training (the DNS layers, npcaffe.layerlib.dns): W * T below these densities runs the
# forward product and the bottom gradient on the sparse kernels.  Measured on LeNet-5's
# layers at batch 64, forward + backward, random masks: the sparse path stops winning
# near 30% for conv1 and conv2 and near 7% for ip1 (its dense products are two GEMMs
# BLAS does well, and packing 400k masked weights costs about one more pass).
TRAIN_CONV_DENSITY_THRESHOLD = 0.2
TRAIN_IP_DENSITY_THRESHOLD = 0.05

_SPARSE_TYPES = ("InnerProduct", "Convolution", "CInnerProduct", "CConvolution")
_EMPTY = np.zeros(0, np.float32)


class PackedWeights:
    """A layer's effective weights and bias in CSR form, with the raw blobs they came from.

    Inner products also keep the weights by columns (`csc`) for the batch-1
    product when that is the faster kernel (see `_wants_columns`)."""

    def __init__(self, layer, verify=True):
        self.verify = verify
        self.sources = [b.flat_data.copy() for b in _source_blobs(layer)] if verify else []
        weight, bias = effective_params(layer)
        self.density = np.count_nonzero(weight) / max(weight.size, 1)
        matrix = weight.reshape(weight.shape[0], -1)
        self.indptr, self.indices, self.values = dense_to_csr(matrix)
        self.bias = _EMPTY if bias is None else np.array(bias, np.float32)  # a copy: no view kept alive
        self.inner_product = layer.type.endswith("InnerProduct")
        threshold = getattr(layer, "sparse_threshold", DENSITY_THRESHOLD)
        self.small_batch = self.density < min(SMALL_BATCH_DENSITY_THRESHOLD, threshold)
        self.csc = dense_to_csr(matrix.T) if self.inner_product and _wants_columns(matrix, self.values) else None
        self.scratch = {}  # the convolution kernels' work arrays, reused across forwards
        self.stamps = None  # the blobs' data stamps when last found unchanged

    def current(self, layer):
        """The blobs still hold the values packed (always true with verify=False)."""
        if not self.verify:
            return True
        blobs = layer.blobs
        stamps = self.stamps
        if stamps is not None and len(blobs) == len(stamps):
            for b, stamp in zip(blobs, stamps):
                if b.data_stamp() != stamp:
                    break
            else:
                return True
        same = len(blobs) == len(self.sources) and all(
            s.size == b.count and same_values_chunked(s, b.flat_data) for s, b in zip(self.sources, blobs))
        # Stamps taken after the comparison (which handed out views of its own).
        stamps = [b.data_stamp() for b in blobs] if same else [None]
        self.stamps = None if None in stamps else stamps
        return same


def _wants_columns(matrix, values):
    """Batch-1 inner products run on the columns when the weights average at least
    one per input (measured on LeNet's layers: then skipping the zero inputs saves
    more than the loop over all inputs costs; below, the row kernel wins, though both
    take about a microsecond there) and are all finite (a skipped term must be 0)."""
    return values.size >= matrix.shape[1] and bool(np.isfinite(values).all())


def _source_blobs(layer):
    # weight, bias and, for DNS layers, their masks: whatever the effective weights depend on.
    return list(layer.blobs)


def _eligible(net, i, layer):
    if layer.type not in _SPARSE_TYPES or not layer.blobs:
        return False
    if net.phase != TEST or net.layer_need_backward[i]:
        return False
    if layer.type.endswith("Convolution") and (layer.group != 1 or layer.nd):
        return False  # the kernels are 2-D, group 1
    return not getattr(layer, "transpose", False)


def sparsify(net, threshold=None, verify=True):
    """Pack the eligible layers of a TEST net whose weight density is below `threshold`.

    Returns {layer name: density} of the layers now computing sparsely.
    Layers above the threshold (or no longer eligible) go back to dense.
    verify=False skips the per-forward check that the weights are unchanged:
    only for callers that never write weights after this call.
    """
    threshold = DENSITY_THRESHOLD if threshold is None else threshold
    packed = {}
    for i, (name, layer) in enumerate(zip(net.layer_names, net.layers)):
        layer.packed = None
        layer.sparse_threshold = threshold
        if not _eligible(net, i, layer):
            continue
        weights = PackedWeights(layer, verify)
        if weights.density < threshold:
            layer.packed = weights
            packed[name] = weights.density
    net.chain_plan = ChainPlan(net) if packed else None
    return packed


def sparse_forward(layer, bottom, top):
    """Forward `layer` with its packed weights; False if it should run dense instead.

    Called by the layers' forward_cpu when `layer.packed` is set.  Weights
    changed since packing are packed again if still sparse enough.  Kept
    lean: at batch 1 this bookkeeping costs as much as the arithmetic.
    """
    packed = layer.packed
    if packed.inner_product:
        num = layer.M
        # Decided before the weights check: a layer that runs dense at this batch reads its weights anyway.
        if num < SMALL_BATCH and not packed.small_batch:
            return False
    else:
        num = layer.num
    if packed.verify and not packed.current(layer):
        packed = PackedWeights(layer, packed.verify)
        layer.packed = packed if packed.density < layer.sparse_threshold else None
        if layer.packed is None:
            return False
        return sparse_forward(layer, bottom, top)
    if packed.inner_product:
        x, y = bottom[0].flat_data, top[0].flat_data
        if num == 1 and packed.csc is not None:
            csc_vector_product(x, *packed.csc, packed.bias, y)
        elif num == 1:
            csr_vector_product(x, packed.indptr, packed.indices, packed.values, packed.bias, y)
        else:
            csr_inner_product(x.reshape(num, layer.K), packed.indptr, packed.indices, packed.values, packed.bias,
                              y.reshape(num, layer.num_output))
        return True
    if num < SMALL_BATCH and layer.stride == (1, 1):
        _small_batch_convolution(layer, packed, bottom, top)
        return True
    for b, t in zip(bottom, top):
        if num < SMALL_BATCH:
            # A few images, strided: unroll them (the column matrix is small) and
            # add one contiguous column row per kept weight.
            col = layer._columns(b.data)[0]
            csr_columns_product(packed.indptr, packed.indices, packed.values, packed.bias, col,
                                t.data.reshape(num, layer.num_output, layer.out_h * layer.out_w))
        else:
            csr_convolution(layer._image(b.data), packed.indptr, packed.indices, packed.values, packed.bias,
                            *layer.kernel, *layer.pad, *layer.stride, *layer.dilation,
                            t.data.reshape((num, layer.num_output, layer.out_h, layer.out_w)), packed.scratch)
    return True


def _small_batch_convolution(layer, packed, bottom, top):
    """A few images at stride 1: the direct kernel on the (padded) images, no im2col."""
    height, width = bottom[0]._shape[-2:]
    work = packed.scratch.get("stride1")
    if work is None or work[0] != (height, width):
        (pad_h, pad_w), (kernel_h, kernel_w), (dilation_h, dilation_w) = layer.pad, layer.kernel, layer.dilation
        plane_h, plane_w = height + 2 * pad_h, width + 2 * pad_w
        padded = np.zeros((layer.channels, plane_h, plane_w) if pad_h or pad_w else (0, 0, 0), np.float32)
        offsets = stride1_tap_offsets(packed.indices, kernel_h, kernel_w, dilation_h, dilation_w, plane_h, plane_w)
        wide = np.empty((layer.num_output, layer.out_h * plane_w), np.float32)
        work = packed.scratch["stride1"] = ((height, width), offsets, padded, wide)
    _, offsets, padded, wide = work
    for image, out in layer.blob_views(bottom, top, _image_views):
        csr_convolution_stride1(image, packed.indptr, offsets, packed.values, packed.bias, out, padded, wide)


def _image_views(layer, bottom, top):
    # [(bottom (N, C, H, W), top (N, O, OH, OW))] of a Convolution layer
    return [(b.flat_data.reshape((layer.num, layer.channels) + b._shape[-2:]),
             t.flat_data.reshape((layer.num, layer.num_output, layer.out_h, layer.out_w))) for b, t in zip(bottom, top)]


# -- fused chains ----------------------------------------------------------------
_CHAIN_FREE = ("Input", "Split")  # forward does nothing (Split's tops share the bottom's data)


def _chainable(layer):
    """The layer's TEST forward is one of sparse_chain_forward's steps (or nothing)."""
    if any(layer.loss_weights):
        return False
    if layer.type in _CHAIN_FREE or layer.type == "Softmax":
        return True
    if layer.type == "ReLU":
        return layer.negative_slope == 0
    return layer.type in _SPARSE_TYPES and layer.type.endswith("InnerProduct")


class ChainPlan:
    """Runs each run of consecutive chainable layers of a sparse TEST net as one kernel call.

    A chain is a run of Input, Split, ReLU (negative_slope 0), Softmax and
    packed inner-product layers with no loss weight, holding at least one
    inner product that runs sparsely at the current batch.  At batch 1 a
    pruned LeNet-300-100 then makes one Numba call instead of eight Python
    layer calls, which took most of its forward (README, section Speed).
    The results are the same bits: the chain calls the layers' own kernels
    on the same arrays (tests/test_sparse_chain.py compares every blob).

    The plan is a cache of what the layers' forward would do: it is rebuilt
    when any blob changes shape or storage (Blob.layout_version), and only
    from layers whose last forward found nothing to reshape at this layout;
    until then, and whenever a layer's packed weights are no longer current
    (written by the user: the layer repacks them in its own forward), the
    net runs layer by layer.  Net.forward_from_to uses a chain only when the
    range covers all of it.
    """

    def __init__(self, net):
        self.net = net
        self.version = None
        self.chains = {}  # first layer index -> _Chain, for self.version

    def current(self):
        """{first layer index: chain} valid now ({} until the layers have settled)."""
        if self.version != Blob.layout_version:
            chains = self._build()
            if chains is None:
                return {}
            self.chains, self.version = chains, Blob.layout_version
        return self.chains

    def invalidate(self):
        self.version = None

    def _build(self):
        net = self.net
        chains, run = {}, []
        for i, layer in enumerate(net.layers + [None]):
            step = None if layer is None else _settled_step(layer, net.bottom_vecs[i], net.top_vecs[i])
            if step is _NOT_SETTLED:
                return None
            if step is None:
                if len(run) > 1 and any(s[0] in (CHAIN_ROWS, CHAIN_COLUMNS) for _, _, s in run if s):
                    chains[run[0][0]] = _Chain(self, run)
                run = []
            else:
                run.append((i, layer, step))
        return chains


_NOT_SETTLED = object()


def _settled_step(layer, bottom, top):
    """None (not chainable now), _NOT_SETTLED, () for a layer with nothing to do, or
    (code, bottom blob, top blob, ...) for sparse_chain_forward."""
    if not _chainable(layer):
        return None
    if layer.type == "Input":
        return ()
    seen = layer._reshaped_for
    if seen is None or seen[0] != Blob.layout_version or seen[1] is not bottom or seen[2] is not top:
        return _NOT_SETTLED
    if layer.type == "Split":
        return ()
    if layer.type == "ReLU":
        return (CHAIN_RELU, bottom[0], top[0])
    if layer.type == "Softmax":
        return (CHAIN_SOFTMAX, bottom[0], top[0]) + tuple(layer.view_shape)
    packed = layer.packed
    if packed is None or (layer.M < SMALL_BATCH and not packed.small_batch):
        return None  # runs dense
    code = CHAIN_COLUMNS if layer.M == 1 and packed.csc is not None else CHAIN_ROWS
    return (code, bottom[0], top[0], layer.M, layer.num_output, layer.K, layer, packed)


class _Chain:
    def __init__(self, plan, run):
        self.plan = plan
        self.last = run[-1][0]
        self.packs = []  # (layer, PackedWeights) whose currency each call checks
        blobs, index = [], {}

        def blob_index(blob):
            if id(blob) not in index:
                index[id(blob)] = len(blobs)
                blobs.append(blob.flat_data)
            return index[id(blob)]

        steps, pointers, indices, values, biases = [], [], [], [], []
        sizes = [0, 0, 0]  # pointers, values, biases so far
        for _, layer, step in run:
            if not step:
                continue
            code, bottom, top = step[:3]
            row = [code, blob_index(bottom), blob_index(top)]
            if code in (CHAIN_ROWS, CHAIN_COLUMNS):
                num, outputs, inputs, layer, packed = step[3:]
                ptr, idx, val = packed.csc if code == CHAIN_COLUMNS else (packed.indptr, packed.indices, packed.values)
                row += [num, outputs, inputs, sizes[0], sizes[1], sizes[2] if packed.bias.size else -1, val.size]
                pointers.append(ptr)
                indices.append(idx)
                values.append(val)
                biases.append(packed.bias)
                sizes[0] += ptr.size
                sizes[1] += val.size
                sizes[2] += packed.bias.size
                self.packs.append((layer, packed))
            else:
                row += list(step[3:])
            steps.append(row + [0] * (CHAIN_STEP_WIDTH - len(row)))
        # Padded to a multiple of 8 blobs: one compiled kernel serves most nets.
        blobs += [_EMPTY] * (-len(blobs) % 8)
        self.args = (tuple(blobs), np.array(steps, np.int64), np.concatenate(pointers).astype(np.int32),
                     np.concatenate(indices).astype(np.int32), np.concatenate(values).astype(np.float32),
                     np.concatenate(biases).astype(np.float32))

    def run(self):
        """Forward every layer of the chain; False (nothing done) if a layer's weights changed."""
        if not self._unchanged():
            for layer, packed in self.packs:
                if layer.packed is not packed or not packed.current(layer):
                    self.plan.invalidate()
                    return False
            self._watch()
        sparse_chain_forward(*self.args)
        return True

    def _watch(self):
        # The parameter storages and stamps that PackedWeights.current found unchanged,
        # flattened over the chain: checking them in one loop is what the Python API's
        # batch-1 forward spends instead of a call per layer.
        watched = []
        for layer, packed in self.packs:
            if packed.verify:
                if packed.stamps is None:
                    self.watched = None
                    return
                watched += [(b._data, stamp) for b, stamp in zip(layer.blobs, packed.stamps)]
        self.watched = watched

    watched = None  # [(parameter storage, stamp)] while known unchanged

    def _unchanged(self):
        watched = self.watched
        if watched is None:
            return False
        for storage, stamp in watched:  # Blob.data_stamp, inlined
            if storage.stamp != stamp or not storage.unviewed():
                return False
        for layer, packed in self.packs:
            if layer.packed is not packed:
                return False
        return True


# -- storage ---------------------------------------------------------------------
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
        if layer.type in _SPARSE_TYPES or is_masked(layer):
            weight, bias = effective_params(layer)
            arrays = [weight] + ([] if bias is None else [bias])
        else:
            arrays = [b.data for b in layer.blobs]
        layers.append((name, layer.type, arrays))
    return layers


def layers_from_caffemodel(net_param, where):
    """The same from a caffemodel's NetParameter: DNS layers with 4 blobs are masked."""
    from .fileio.caffemodel import blob_to_array
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
