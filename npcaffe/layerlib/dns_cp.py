"""DNS-CP channel surgery layers: CPConvolution and CPInnerProduct (seed "Channel Pruning Algorithm DNS-CP").

Dynamic network surgery on whole input channels.  A CP-layer is a Convolution
/ InnerProduct whose weights are used through a 0/1 mask T that is constant
over each input channel's weights (one entry m_k per input channel k):

    top = layer(bottom; W ⊙ T, b)        T[.., k, ..] = m_k

and in every TRAIN forward, before computing, the channel mask may be updated
(seed eqs. 3 and 4, npcaffe.kernels.channel_surgery):

    mu_k = mean |w| over channel k's weights
    a = max(0, mu - c_rate * std),  b = max(0, mu + c_rate * std)
    m_k -> 0 if mu_k < a,  m_k -> 1 if mu_k > b,  unchanged if a <= mu_k <= b

with mu and std the mean and standard deviation of |w| over the layer's
weights.  Channel k's weights: every filter's input-channel-k slice of a
convolution (in its group), or the `channel_size` inputs k*S .. k*S + S - 1 of
an InnerProduct (S = H*W when it reads a C x H x W blob, directly or through a
Flatten: `channel_surgery_param.channel_size`, else from the bottom's shape).
The bias is not masked: removing an input channel leaves every output.

As DNS (npcaffe.layerlib.dns, the fork's compress_conv_layer.cpp), shared on
purpose:
- the gate: one glibc rand() per CP-layer per TRAIN forward, from the same
  process-wide sequence as the DNS layers (npcaffe.kernels.glibc_rand), drawn
  whether or not the gate can open; r = float(rand()) / float(RAND_MAX) in
  float32; the mask is updated iff powf(1 + gamma*iter, -power) > r and
  iter < iter_stop (iter_stop truncated to an int as the fork's member).
- backward gives the gradient with respect to W ⊙ T to the unmasked W, so the
  weights of a pruned channel keep learning and the channel can be spliced
  back; before the new weight gradient is accumulated the existing weight diff
  is multiplied by T (the fork's order); bottom diffs use W ⊙ T.
- TEST phase: no statistics, no draw, no update; the masked forward only.
- the mask is a learnable parameter blob to the Net that Net.update skips
  (`mask_param_indices`), so .caffemodel and .solverstate files hold it; a
  caffemodel with only weight and bias (a dense model) leaves all channels kept.
- the statistics are taken once, at the layer's first TRAIN forward (DNS: at
  iteration 0), and kept in solver snapshots (`get_state` / `set_state`).

Choices of ours where the seed is silent (stated, not upstream):
- mu and std are over the weights only, all of them, not the biases (DNS's
  statistics also count the biases and only the nonzero entries): then mu is
  the mean of the mu_k, so a layer of equal channels sits exactly at mu_k = mu.
  They are taken over the raw W, as the mu_k are (a loaded mask does not shift
  them).  float64 throughout.
- c_rate must be >= 0, so that a <= b (the seed's a_k < b_k); 0 makes a = b = mu.
- the published PyTorch implementation (TF2-Engine/TF2, TransForm_Kit/
  DnsChannelpruning/dnscp_core.py) compares mu_k with 0.95 and 1.05 x
  max(mu + c_rate*std, 0) (DNS's form) and then rounds the kept channel count
  to a multiple of 16 for its FPGA; we follow the seed's formulas (4), which
  the issue also states, and do not round.

Blobs: [weight, bias, channel mask (C,)], C the layer's input channels.  The
mask core (npcaffe.masks) sees the channel mask as the weight mask T spread
over the weights (`mask_blobs` gives T as a weight-shaped Blob made from the
channel mask, `stored_mask_arrays` does the same for stored blobs), so kept
counts, reports, bake and plain_model need nothing special; write the channel
mask (`channel_mask`), not T.  bias_term: false is an error, as in the DNS
layers (`npcaffe dnsify --channels` gives such a layer a constant zero bias
that never learns, and its plain model drops it again).
"""
from typing import NamedTuple

import numpy as np

from .. import glog
from ..blob import Blob
from ..errors import NetError
from ..kernels import glibc_rand
from ..kernels.channel_surgery import (channel_means, channel_thresholds, channel_view_shape, expand_channel_mask,
                                       layer_statistics, update_channel_mask)
from ..kernels.dns import gate_probability
from ..layer import TRAIN, register
from .common import InnerProductLayer
from .convolution import Convolution
from .dns import _c_float_to_int

_MASK = 2


class ChannelUpdate(NamedTuple):
    """What one TRAIN forward of a CP-layer did (its `last_update`)."""
    iter: int
    rand: int            # the raw rand() value drawn
    r: float             # float32(rand) / float32(RAND_MAX)
    p: float             # powf(1 + gamma*iter, -power)
    gate_open: bool      # p > r
    mask_update: bool    # gate_open and iter < iter_stop: the channel mask was updated
    low: float           # a = max(0, mu - c_rate*std): channels with mu_k < a are pruned
    high: float          # b = max(0, mu + c_rate*std): channels with mu_k > b are spliced
    pruned: int          # channels 1 -> 0
    spliced: int         # channels 0 -> 1
    kept_channels: int   # channels with mask 1 after the update


class _ChannelSurgery:
    """The DNS-CP part shared by CPConvolution and CPInnerProduct (see the module docstring)."""
    surgery_outside = False  # True: another net's layer does this one's surgery (solvers.batch_split)
    mask_param_indices = (_MASK,)
    accepts_fewer_blobs = True
    kind = None          # "conv" / "ip": how the weight splits into channels (kernels.channel_surgery)

    def layer_setup(self, bottom, top):
        if not self.base_param().bias_term:
            raise NetError(
                f"layer '{self.name}' ({self.type}): bias_term: false is not supported (blobs are weight, bias, "
                "channel mask); give the layer bias_term: true with bias_filler { type: \"constant\" } and "
                "param { lr_mult: 0 decay_mult: 0 } for the bias, as `npcaffe dnsify --channels` does")
        cparam = self.layer_param.channel_surgery_param
        if not cparam.c_rate >= 0:
            raise NetError(f"layer '{self.name}' ({self.type}): channel_surgery_param.c_rate {cparam.c_rate} must "
                           "be >= 0 (a = max(0, mu - c_rate*std) must not exceed b = max(0, mu + c_rate*std))")
        given = list(self.blobs)
        if len(given) > 2:  # a mask set before setup (a test, a shared layer): keep it
            self.blobs = given[:2]
        super().layer_setup(bottom, top)
        channels = self.input_channels(bottom)
        try:
            self.view_shape = channel_view_shape(self.blobs[0].shape, channels, self.kind)
        except ValueError as e:
            raise NetError(f"layer '{self.name}' ({self.type}): weight {self.blobs[0].shape} and {channels} input "
                           f"channels (bottom '{bottom[0].name}' {bottom[0].shape}) do not fit: {e}") from None
        mask = Blob((channels,), name=f"{self.name}_channel_mask")
        if len(given) > 2:
            if given[2].shape != (channels,):
                raise NetError(f"layer '{self.name}' ({self.type}): channel mask blob has shape {given[2].shape}, "
                               f"the layer has {channels} input channels")
            mask = given[2]
        else:
            mask.data[...] = 1
        self.blobs.append(mask)
        self.gamma = np.float32(cparam.gamma)
        self.power = np.float32(cparam.power)
        self.c_rate = float(np.float32(cparam.c_rate))
        self.iter_stop = _c_float_to_int(cparam.iter_stop)
        if not -2.0 ** 31 <= cparam.iter_stop < 2.0 ** 31:
            glog.warning(f"layer '{self.name}' ({self.type}): channel_surgery_param.iter_stop {cparam.iter_stop} "
                         "does not fit an int; as for DNS layers it becomes INT_MIN, so the mask never changes")
        self.mu = None   # statistics: taken at the first TRAIN forward
        self.std = None
        self.last_update = None
        self._weight_mask = Blob(self.blobs[0].shape, name=f"{self.name}_weight_mask")
        self._spread_from = None   # the channel mask _weight_mask was last spread from
        self._masked_weight = np.zeros(self.blobs[0].shape, np.float32)

    @property
    def channel_mask(self):
        """The channel mask (C,), the layer's third blob's data: write this, not the weight mask."""
        return self.blobs[_MASK].data

    # -- the mask as the mask core sees it --------------------------------------------
    def weight_mask(self):
        """T (weight-shaped float32): the channel mask spread over the weights, made again when it changed."""
        mask = self.blobs[_MASK].data
        if self._spread_from is None or not np.array_equal(self._spread_from, mask):
            expand_channel_mask(mask, self.blobs[0].shape, self.view_shape, out=self._weight_mask.data)
            self._spread_from = mask.copy()
        return self._weight_mask.data

    def mask_blobs(self):
        self.weight_mask()
        return self._weight_mask, None

    @classmethod
    def stored_mask_arrays(cls, arrays):
        """(T, None) from stored [weight, bias, channel mask] arrays, or None without a mask blob."""
        if len(arrays) <= _MASK or arrays[_MASK] is None:
            return None
        weight, mask = np.asarray(arrays[0]), np.asarray(arrays[_MASK]).reshape(-1)
        view = channel_view_shape(weight.shape, mask.size, cls.kind)
        return expand_channel_mask(mask, weight.shape, view), None

    def plain_layer_param(self, layer_param):
        layer_param.type = self.plain_type
        layer_param.ClearField("channel_surgery_param")

    # -- forward -----------------------------------------------------------------------
    def forward_cpu(self, bottom, top):
        """TRAIN: channel surgery, then forward with W ⊙ T; TEST: forward with W ⊙ T."""
        if self.phase == TRAIN and not self.surgery_outside:
            self.surgery()
        np.multiply(self.blobs[0].data, self.weight_mask(), out=self._masked_weight)
        self.masked_forward(bottom, top, self._masked_weight, self.blobs[1].data)

    def surgery(self):
        """Statistics (once), the gate draw, and the channel mask update when the gate is open."""
        weight = self.blobs[0].data
        if self.mu is None:
            self.mu, self.std = layer_statistics(weight)
        raw = glibc_rand.rand()  # drawn on every TRAIN forward, as the DNS layers draw
        r = np.float32(raw) / np.float32(glibc_rand.RAND_MAX)
        p = np.float32(gate_probability(self.gamma, self.iter, self.power))
        gate_open = bool(p > r)
        mask_update = gate_open and self.iter < self.iter_stop
        low, high = channel_thresholds(self.mu, self.std, self.c_rate)
        pruned = spliced = 0
        mask = self.blobs[_MASK].data
        if mask_update:
            pruned, spliced = update_channel_mask(channel_means(weight, self.view_shape), mask, low, high)
        self.last_update = ChannelUpdate(self.iter, raw, float(r), float(p), gate_open, mask_update, low, high,
                                         pruned, spliced, int(np.count_nonzero(mask)))

    # -- snapshots ---------------------------------------------------------------------
    def get_state(self):
        """mu and std (bit exact, float64 as hex; None before the first TRAIN forward), for solver snapshots."""
        return {"mu": None if self.mu is None else float(self.mu).hex(),
                "std": None if self.std is None else float(self.std).hex()}

    def set_state(self, state):
        self.mu = None if state.get("mu") is None else float.fromhex(state["mu"])
        self.std = None if state.get("std") is None else float.fromhex(state["std"])


@register("CPConvolution")
class CPConvolution(_ChannelSurgery, Convolution):
    """Convolution with a DNS-CP mask on its input channels; see the module docstring.

    Shapes as Convolution; blobs = [weight (O, C/g, k...), bias (O,), channel
    mask (C,)]; channel k's weights are W[o, k mod C/g, ...] for the O/g
    filters o of k's group.  Parameters: convolution_param (bias_term true)
    and channel_surgery_param {gamma 1e-4, power 1, iter_stop 10000, c_rate 0.1}.
    """
    kind = "conv"
    plain_type = "Convolution"

    def base_param(self):
        return self.layer_param.convolution_param

    def input_channels(self, bottom):
        if self.layer_param.channel_surgery_param.channel_size:
            raise NetError(f"layer '{self.name}' (CPConvolution): channel_surgery_param.channel_size is for "
                           "CPInnerProduct; a convolution's channels are its bottom's channel axis")
        return self.channels

    def masked_forward(self, bottom, top, weight, bias):
        self.conv_forward(bottom, top, weight, bias)

    def backward_cpu(self, top, propagate_down, bottom):
        weight_mask = self.weight_mask()
        for i in range(len(top)):
            if self.param_needs_backward(0) or propagate_down[i]:
                np.multiply(self.blobs[0].diff, weight_mask, out=self.blobs[0].diff)
            self.conv_backward([top[i]], [propagate_down[i]], [bottom[i]], self._masked_weight)


@register("CPInnerProduct")
class CPInnerProduct(_ChannelSurgery, InnerProductLayer):
    """InnerProduct with a DNS-CP mask on its inputs grouped per producer channel; see the module docstring.

    Shapes as InnerProduct (M x K bottom, N outputs); blobs = [weight (N, K),
    bias (N,), channel mask (C,)] with K = C * channel_size; channel k's
    weights are the columns k*S .. k*S + S - 1.  Parameters:
    inner_product_param (bias_term true, no transpose) and
    channel_surgery_param {gamma 1e-4, power 1, iter_stop 10000, c_rate 0.1,
    channel_size: 0 = the bottom's count after its channel axis}.
    """
    kind = "ip"
    plain_type = "InnerProduct"

    def base_param(self):
        return self.layer_param.inner_product_param

    def layer_setup(self, bottom, top):
        if self.base_param().transpose:
            raise NetError(f"layer '{self.name}' (CPInnerProduct): inner_product_param.transpose is not "
                           "supported (channel k's weights are the columns of an N x K weight)")
        super().layer_setup(bottom, top)

    def input_channels(self, bottom):
        size = self.layer_param.channel_surgery_param.channel_size
        if size:
            if self.K % size:
                raise NetError(f"layer '{self.name}' (CPInnerProduct): channel_surgery_param.channel_size {size} "
                               f"does not divide the {self.K} inputs (bottom '{bottom[0].name}' {bottom[0].shape})")
            return self.K // size
        axis = bottom[0].canonical_axis(self.base_param().axis)
        return bottom[0].shape[axis]

    def masked_forward(self, bottom, top, weight, bias):
        self.ip_forward(bottom, top, weight, bias)

    def backward_cpu(self, top, propagate_down, bottom):
        # The weight diff is masked in the pass that adds the new gradient (ip_backward), as CInnerProduct.
        self.ip_backward(top, propagate_down, bottom, self._masked_weight,
                         weight_diff_mask=self.weight_mask().reshape(-1))


def is_channel_surgery_layer(layer):
    """The layer is a DNS-CP layer (CPConvolution / CPInnerProduct)."""
    return isinstance(layer, _ChannelSurgery)


def channel_surgery_layers(net):
    """[(name, layer)] of the net's DNS-CP layers, in net order."""
    return [(name, layer) for name, layer in zip(net.layer_names, net.layers) if isinstance(layer, _ChannelSurgery)]
