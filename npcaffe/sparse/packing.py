"""Packed sparse weights for inference in TEST nets, and the densities where sparse wins.

In a TEST-phase Net, every InnerProduct / Convolution layer (and the DNS
CInnerProduct / CConvolution, whose effective weights are W * T) that does
not need backward and whose weight density (nonzeros / size) is below
DENSITY_THRESHOLD computes with a packed CSR copy of its weights
(PackedWeights) through its own `sparse_forward` and the kernels in
npcaffe.kernels.sparse, instead of im2col + GEMM.  The Net calls
`sparsify(net)` after loading weights (Net(model, weights, TEST),
net.copy_from(...)).  Outputs equal the dense path's to float rounding (the
sums are taken in another order; tests/sparse/test_packing.py checks 1e-5
relative).  The packed form is a cache: each forward first makes sure that
the layer's weights (and masks) still hold the values it was packed from,
and repacks (or returns to the dense path) if not, so writing into
net.params[...] keeps working as in pycaffe.  When no view of those blobs
has been handed out since the last check and none is alive
(Blob.data_stamp), they cannot have been written and the check is free;
otherwise it compares every value with a copy (about as long as a dense
batch-1 InnerProduct).  `npcaffe test`, which never changes weights, packs
with verify=False and skips it.  Convolution with group > 1 stays dense.
Below SMALL_BATCH images a convolution unrolls its input (im2col, small
then) and adds one column row per kept weight, or at stride 1 runs a direct
kernel; from SMALL_BATCH on it uses the batch-innermost direct kernel
(npcaffe.layerlib.conv_paths, the Packed* paths).

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
"""
import numpy as np

from ..kernels.sparse import dense_to_csr, same_values_chunked
from ..masks import effective_params
from ..proto.caffe_pb2 import TEST
from .chains import ChainPlan

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
    product when that is the faster kernel (see `_wants_columns`), and run
    sparse only from `min_batch` rows on (SMALL_BATCH, or 0 when sparser
    than SMALL_BATCH_DENSITY_THRESHOLD)."""

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
        self.min_batch = 0 if self.density < min(SMALL_BATCH_DENSITY_THRESHOLD, threshold) else SMALL_BATCH
        self.csc = dense_to_csr(matrix.T) if self.inner_product and _wants_columns(matrix, self.values) else None
        self.scratch = {}  # the convolution paths' work arrays, reused across forwards
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
    net.plan.chains = ChainPlan(net) if packed else None
    return packed


def repack(layer):
    """Pack a layer's weights again after they changed (its `packed` is no longer current):
    True if still sparse enough, else the layer returns to the dense path (packed None)."""
    packed = PackedWeights(layer, layer.packed.verify)
    layer.packed = packed if packed.density < layer.sparse_threshold else None
    return layer.packed is not None
