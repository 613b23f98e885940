"""Dynamic Network Surgery layers: CConvolution and CInnerProduct (Guo, Yao & Chen, NIPS 2016).

A C-layer is a Convolution / InnerProduct whose weights W and biases b are
used through 0/1 masks T, T_b:

    top = layer(bottom; W * T, b * T_b)

and in every TRAIN forward, before computing, the masks may be updated
("surgery"): weights at or below 0.9 x threshold are pruned (T 1 -> 0),
weights above 1.1 x threshold spliced back (T 0 -> 1).  The threshold
max(mu + c_rate * std, 0) comes from statistics of the weights taken once,
at the first TRAIN forward of iteration 0.  Whether the masks are updated at
all is a random gate, open with probability (1 + gamma * iter)^-power and
closed from iteration iter_stop on.  Backward gives the gradient with
respect to the masked weights to the *unmasked* W, so pruned weights keep
learning and can come back.

Behaviour mirrored on purpose from the DNS fork (yiwenguo/Dynamic-Network-Surgery,
src/caffe/layers/compress_conv_layer.cpp, compress_inner_product_layer.cpp,
include/caffe/vision_layers.hpp, common_layers.hpp):
- blobs = [weight, bias, weight_mask, bias_mask]; the masks are filled at
  setup by cconvolution_param / cinner_product_param weight_mask_filler and
  bias_mask_filler, and are learnable params to the Net (the solver keeps
  history and weight decay for them) that Net.update skips
  (`mask_param_indices`).  A caffemodel with only weight and bias leaves the
  filler masks (`accepts_fewer_blobs`, Net::CopyTrainedLayersFrom).
- Statistics (npcaffe.kernels.dns): float32 sums in index order over the
  weights then the biases; CConvolution sums mask*w, CInnerProduct the raw w.
  They are recomputed whenever a TRAIN forward sees std == 0 and iter == 0,
  accumulating onto the old mu (never reset).  CInnerProduct logs them
  when it computes them, as the fork's "mu  std  ncount" line does, but
  labelled (layer, mu, std, ncount: a reader cannot tell the fork's bare
  numbers apart); CConvolution is silent (its LOG line is commented out
  upstream).
- The gate: one glibc rand() per C-layer per TRAIN forward, from the single
  process-wide sequence (npcaffe.kernels.glibc_rand) in layer order, drawn
  whether or not the gate can open; r = float(rand()) / float(RAND_MAX) in
  float32; open iff powf(1 + gamma*iter, -power) > r and iter < iter_stop.
  iter_stop is an int member assigned from a float field: truncated toward
  zero; a value beyond the int range (or NaN) gives INT_MIN, as x86's
  conversion does, so the gate never opens (we warn).
- TEST phase: no statistics, no draw, no update; the masked forward only.
- Backward: before a param's new gradient is accumulated, its existing diff
  is multiplied by its mask; the gradient itself (w.r.t. the masked weights)
  is not masked.  CInnerProduct does this when the param needs backward.
  CConvolution does it per top blob: the bias diff when the bias needs
  backward, the weight diff when the weight needs backward OR that bottom
  does, so with several bottoms the gradient of the first is masked again
  before the second's is added.  Bottom diffs use W * T.

Deliberate differences (errors where upstream misbehaves):
- bias_term: false is a NetError: upstream creates only [weight, mask] but
  its forward reads blobs_[2] and blobs_[3], past the end of the blob vector.
- A missing mask filler is Caffe's default FillerParameter, constant 0: all
  masks 0, so every weight starts pruned (and CConvolution's statistics are
  0/0 = NaN, which freezes its masks).  We do the same but warn loudly.
- CInnerProduct refuses `transpose: true`; the fork's InnerProductParameter
  has no such field (and the summation order of the statistics would change).

Teaching option (not upstream): a layer's `splicing` attribute (default
True, upstream's rule) switches the 0 -> 1 rule off when False: masks are
then only ever pruned, the "pruning only" ablation of the paper's argument
for splicing.  `set_splicing(net, False)` sets it on every C-layer; the gate
draws are unchanged, so a run without splicing stays in step with rand().

Speed (not upstream, same results to float rounding): in TRAIN, when W * T
is sparse enough (npcaffe.sparse.packing.TRAIN_CONV_DENSITY_THRESHOLD /
TRAIN_IP_DENSITY_THRESHOLD), the masked product and the bottom gradient run
on CSR kernels; the weight gradient, which DNS gives to every weight, stays
dense.  See `masked_params`.

Solver snapshots: `get_state`/`set_state` carry mu and std (bit exact);
the solver saves them with glibc_rand.get_state(), so a resumed run goes on
exactly as an uninterrupted one.  An upstream resume (a new process) instead
starts with mu = std = 0 and rand() from its default seed; since iter != 0
the statistics are not recomputed, so the threshold is 0 and the first open
gate splices every nonzero weight back.  `upstream_resume(net)` reproduces
exactly that.
"""
import math
from typing import NamedTuple

import numpy as np

from .. import glog
from ..blob import Blob
from ..errors import NetError
from ..filler import fill
from ..kernels import glibc_rand
from ..kernels.dns import dns_statistics, dns_threshold, dns_update_masks, gate_probability, masked_csr, masked_product
from ..layer import TRAIN, register
from ..sparse import packing
from .common import InnerProductLayer
from .convolution import Convolution

_INT_MIN = -2 ** 31


class MaskUpdate(NamedTuple):
    """What one TRAIN forward of a C-layer did (its `last_update`)."""
    iter: int
    rand: int            # the raw rand() value drawn
    r: float             # float32(rand) / float32(RAND_MAX)
    p: float             # powf(1 + gamma*iter, -power)
    gate_open: bool      # p > r
    mask_update: bool    # gate_open and iter < iter_stop: the masks were updated
    threshold: float     # T = max(mu + c_rate*std, 0); prune at |w| <= 0.9 T, splice at |w| > 1.1 T
    pruned: int          # weight mask 1 -> 0
    spliced: int         # weight mask 0 -> 1
    bias_pruned: int
    bias_spliced: int


def _c_float_to_int(value):
    """C++ `int x = float_value;` as compiled for x86-64: truncation, INT_MIN when out of range."""
    value = float(np.float32(value))
    if value != value or not -2.0 ** 31 <= value < 2.0 ** 31:
        return _INT_MIN
    return int(value)


def _float_hex(x):
    return float(np.float32(x)).hex()


class _Surgery:
    """The DNS part shared by CConvolution and CInnerProduct (see the module docstring)."""
    mask_param_indices = (2, 3)
    accepts_fewer_blobs = True
    surgery_field = None        # "cconvolution_param" / "cinner_product_param"
    masked_statistics = None    # CConvolution: mask*w; CInnerProduct: w
    logs_statistics = None
    splicing = True             # False: the 0 -> 1 rule is off (set_splicing; a teaching ablation)
    surgery_outside = False     # True: another net's layer does this one's surgery (solvers.batch_split)
    masked_from = None          # that layer, whose W * T this one computes with (solvers.batch_split)

    def layer_setup(self, bottom, top):
        if not self.base_param().bias_term:
            raise NetError(
                f"layer '{self.name}' ({self.type}): bias_term: false is not supported. The DNS fork's "
                "layer then has only [weight, weight_mask] but its forward reads blobs 2 and 3 (weight "
                "and bias masks), past the end of its blobs, so upstream cannot run it either. For a "
                "layer without bias use bias_term: true with bias_filler { type: \"constant\" }, "
                "bias_mask_filler { type: \"constant\" } and param { lr_mult: 0 } for the bias "
                "(a zero bias never counts in the statistics and is never spliced).")
        super().layer_setup(bottom, top)
        cparam = getattr(self.layer_param, self.surgery_field)
        for param_blob, field in zip(list(self.blobs), ("weight_mask_filler", "bias_mask_filler")):
            if not cparam.HasField(field):
                glog.warning(
                    f"layer '{self.name}' ({self.type}): {self.surgery_field}.{field} is not set, so "
                    "Caffe's default filler (constant 0) makes every mask entry 0: "
                    f"every {field.split('_')[0]} starts pruned. Upstream behaves the same; "
                    f"you almost certainly want {field} {{ type: \"constant\" value: 1 }}.")
            mask = Blob(param_blob.shape, name=f"{param_blob.name}_mask")
            fill(mask, getattr(cparam, field), where=f"layer '{self.name}' {field}")
            self.blobs.append(mask)
        self._weight_tmp = np.zeros(self.blobs[0].count, np.float32)
        self._bias_tmp = np.zeros(self.blobs[1].count, np.float32)
        self._csr_arrays = None
        self.train_csr = None
        self.gamma = np.float32(cparam.gamma)
        self.power = np.float32(cparam.power)
        self.c_rate = np.float32(cparam.c_rate)
        self.iter_stop = _c_float_to_int(cparam.iter_stop)
        if not -2.0 ** 31 <= cparam.iter_stop < 2.0 ** 31:
            glog.warning(f"layer '{self.name}' ({self.type}): {self.surgery_field}.iter_stop {cparam.iter_stop} "
                         "does not fit an int; upstream's conversion gives INT_MIN, so the masks never change")
        self.mu = np.float32(0)
        self.std = np.float32(0)
        self.last_update = None

    # -- forward ---------------------------------------------------------------
    def masked_params(self):
        """(W * T or None, b * T_b): the weights and bias the layer computes with.

        In TRAIN, when W * T has a density below `train_density_threshold()`
        (npcaffe.sparse.packing.TRAIN_*), it is returned as CSR rows in `train_csr`
        and the weight is None: forward and the bottom gradient then use the
        sparse kernels (the masks of a DNS run keep a few percent of the
        weights) and nothing reads the dense product; the weight gradient
        is dense either way.  Otherwise `train_csr` is None and the weight
        is W * T shaped like blobs[0] (a view of a preallocated buffer)."""
        weight, weight_mask = self.blobs[0], self.blobs[2]
        self.train_csr = None
        max_nnz = math.ceil(self.train_density_threshold() * weight.count) - 1  # sparse: below the threshold
        masked_product(self.blobs[1].flat_data, self.blobs[3].flat_data, self._bias_tmp)
        if self.phase == TRAIN and max_nnz >= 0:
            if self._csr_arrays is None:
                self._csr_arrays = (np.zeros(weight.shape[0] + 1, np.int32), np.zeros(weight.count, np.int32),
                                    np.zeros(weight.count, np.float32))
            indptr, indices, values = self._csr_arrays
            nnz = masked_csr(weight.flat_data, weight_mask.flat_data, weight.shape[0], max_nnz, indptr, indices,
                             values)
            if nnz >= 0:
                self.train_csr = (indptr, indices[:nnz], values[:nnz])
                return None, self._bias_tmp
        masked_product(weight.flat_data, weight_mask.flat_data, self._weight_tmp)
        return self._weight_tmp.reshape(weight.shape), self._bias_tmp

    def forward_cpu(self, bottom, top):
        """TRAIN: surgery, then forward with W * T; TEST: packed sparse weights if any, else W * T."""
        if self.phase == TRAIN:
            if not self.surgery_outside:
                self.surgery()
        elif self.packed is not None and self.sparse_forward(bottom, top):
            return
        if self.masked_from is not None:
            # solvers.batch_split: the train net's layer made W * T (or its CSR) once this iteration; every
            # part computes with it (read only), forward and backward
            source = self.masked_from
            self.train_csr, self._weight_tmp, self._bias_tmp = source.train_csr, source._weight_tmp, source._bias_tmp
            weight = None if self.train_csr is not None else self._weight_tmp.reshape(self.blobs[0].shape)
            bias = self._bias_tmp
        else:
            weight, bias = self.masked_params()
        self.masked_forward(bottom, top, weight, bias, self.train_csr)

    def surgery(self):
        """The TRAIN-phase prologue of the fork's Forward_cpu: statistics, gate, mask update."""
        weight, bias = self.blobs[0].flat_data, self.blobs[1].flat_data
        weight_mask, bias_mask = self.blobs[2].flat_data, self.blobs[3].flat_data
        if self.std == 0 and self.iter == 0:
            mu, std, ncount = dns_statistics(weight, bias, weight_mask, bias_mask, self.masked_statistics,
                                             self.mu, self.std)
            self.mu, self.std = np.float32(mu), np.float32(std)
            if self.logs_statistics:
                glog.info(f"{self.name}: DNS statistics of |w| over its nonzero weights and biases: "
                          f"mu {glog.fmt(self.mu)}, std {glog.fmt(self.std)}, ncount {ncount}")
        # Drawn on every TRAIN forward, even past iter_stop, to stay in step with upstream's sequence.
        raw = glibc_rand.rand()
        r = np.float32(raw) / np.float32(glibc_rand.RAND_MAX)
        p = np.float32(gate_probability(self.gamma, self.iter, self.power))
        gate_open = bool(p > r)
        mask_update = gate_open and self.iter < self.iter_stop
        threshold = dns_threshold(self.mu, self.std, self.c_rate)
        counts = (0, 0, 0, 0)
        if mask_update:
            counts = self._update(weight, weight_mask, threshold) + self._update(bias, bias_mask, threshold)
        self.last_update = MaskUpdate(self.iter, raw, float(r), float(p), gate_open, mask_update, float(threshold),
                                      *counts)

    def mask_blobs(self):
        return self.blobs[2], self.blobs[3]

    def plain_layer_param(self, layer_param):
        layer_param.type = self.plain_type
        layer_param.ClearField(self.surgery_field)

    def _update(self, values, mask, threshold):
        if self.splicing:
            return dns_update_masks(values, mask, threshold)
        was_pruned = mask == 0
        pruned, _ = dns_update_masks(values, mask, threshold)
        mask[was_pruned] = 0
        return pruned, 0

    # -- snapshots ---------------------------------------------------------------
    def get_state(self):
        """mu and std, bit exact (float32 as hex), for solver snapshots."""
        return {"mu": _float_hex(self.mu), "std": _float_hex(self.std)}

    def set_state(self, state):
        self.mu = np.float32(float.fromhex(state["mu"]))
        self.std = np.float32(float.fromhex(state["std"]))


@register("CConvolution", "CMaskedConvolution")
class CConvolution(_Surgery, Convolution):
    """Convolution with DNS masks (compress_conv_layer.cpp); see the module docstring.

    Shapes as Convolution; blobs = [weight (O, C/g, kh, kw), bias (O,),
    weight_mask (like weight), bias_mask (like bias)].  Statistics over
    mask*w.  Parameters: convolution_param as Convolution, plus
    cconvolution_param {gamma 0.001, power 1, iter_stop 10000, c_rate 3,
    weight_mask_filler, bias_mask_filler} (upstream defaults).
    """
    surgery_field = "cconvolution_param"
    plain_type = "Convolution"
    masked_statistics = True
    logs_statistics = False

    def base_param(self):
        return self.layer_param.convolution_param

    def masked_forward(self, bottom, top, weight, bias, csr):
        self.conv_forward(bottom, top, weight, bias, csr)

    def train_density_threshold(self):
        # The sparse training kernels are 2-D, group 1; otherwise W * T goes through the dense path.
        return packing.TRAIN_CONV_DENSITY_THRESHOLD if self.group == 1 and not self.nd else 0.0

    def backward_cpu(self, top, propagate_down, bottom):
        weight = None if self.train_csr is not None else self._weight_tmp.reshape(self.blobs[0].shape)
        for i in range(len(top)):
            if self.param_needs_backward(1):
                np.multiply(self.blobs[1].flat_diff, self.blobs[3].flat_data, out=self.blobs[1].flat_diff)
            if self.param_needs_backward(0) or propagate_down[i]:
                np.multiply(self.blobs[0].flat_diff, self.blobs[2].flat_data, out=self.blobs[0].flat_diff)
            self.conv_backward([top[i]], [propagate_down[i]], [bottom[i]], weight, self.train_csr)


@register("CInnerProduct", "CMaskedInnerProduct")
class CInnerProduct(_Surgery, InnerProductLayer):
    """InnerProduct with DNS masks (compress_inner_product_layer.cpp); see the module docstring.

    Shapes as InnerProduct (M x K bottom, N outputs); blobs = [weight (N, K),
    bias (N,), weight_mask (N, K), bias_mask (N,)].  Statistics over the raw
    w (the masks are ignored there, unlike CConvolution).  Parameters:
    inner_product_param (without transpose), plus cinner_product_param
    {gamma 0.001, power 1, iter_stop 8000, c_rate 3, weight_mask_filler,
    bias_mask_filler} (upstream defaults).
    """
    surgery_field = "cinner_product_param"
    plain_type = "InnerProduct"
    masked_statistics = False
    logs_statistics = True

    def base_param(self):
        return self.layer_param.inner_product_param

    def layer_setup(self, bottom, top):
        if self.base_param().transpose:
            raise NetError(f"layer '{self.name}' (CInnerProduct): inner_product_param.transpose is not "
                           "supported; the DNS fork's CInnerProduct has no transposed weights")
        super().layer_setup(bottom, top)

    def masked_forward(self, bottom, top, weight, bias, csr):
        self.ip_forward(bottom, top, weight, bias, csr)

    def train_density_threshold(self):
        return packing.TRAIN_IP_DENSITY_THRESHOLD

    def backward_cpu(self, top, propagate_down, bottom):
        if self.param_needs_backward(1):
            np.multiply(self.blobs[1].flat_diff, self.blobs[3].flat_data, out=self.blobs[1].flat_diff)
        weight = None if self.train_csr is not None else self._weight_tmp.reshape(self.blobs[0].shape)
        # The weight diff is masked in the pass that adds the new gradient (ip_backward).
        self.ip_backward(top, propagate_down, bottom, weight, self.train_csr,
                         weight_diff_mask=self.blobs[2].flat_data)


def is_dns_layer(layer):
    """The layer is a DNS surgery layer (CConvolution / CInnerProduct, any registered name)."""
    return isinstance(layer, _Surgery)


def dns_layers(net):
    """[(name, layer)] of the net's DNS surgery layers, in net order."""
    return [(name, layer) for name, layer in zip(net.layer_names, net.layers) if isinstance(layer, _Surgery)]


def set_splicing(net, enabled):
    """Switch the splice rule (mask 0 -> 1 at |w| > 1.1 T) on or off in every C-layer of `net`.

    Off is not an upstream behaviour: it is the "prune only" ablation, to see
    what splicing contributes.  Pruning, the statistics and the gate draws are
    unchanged.
    """
    for _, layer in dns_layers(net):
        layer.splicing = bool(enabled)


def upstream_resume(net):
    """Put a resumed net's DNS state where restarting the upstream binary puts it.

    A new upstream process starts every C-layer with mu = std = 0 and glibc's
    rand() at its default seed; as the resumed iteration is not 0 the
    statistics are never recomputed, so the threshold is 0 and the first open
    gate splices every nonzero weight back.  Call this after restoring a
    snapshot instead of restoring the saved mu/std and rand() position (the
    solver's `upstream_resume` option).
    """
    glibc_rand.reset()
    for _, layer in dns_layers(net):
        layer.mu, layer.std = np.float32(0), np.float32(0)
