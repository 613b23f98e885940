"""DNS-CP kernels: per-channel means, the layer's statistics, the channel mask update, and the
channel mask spread over a layer's weights.

NumPy only (the arrays are one entry per input channel; the one pass over the weights is a
reduction NumPy does in C).  No protobuf here; the layer (npcaffe.layerlib.dns_cp) says which
weights belong to which channel through a *channel view* of its weight:

    Convolution, weight (O, C/g, k...):   view (g, O/g, C/g, prod(k))
                                          input channel c = group c // (C/g), column c % (C/g)
    InnerProduct, weight (N, K), K = C*S: view (1, N, C, S)
                                          input channel c = inputs c*S ... c*S + S - 1

so in both, `view[:, :, j, :]` of group i holds channel i * (C/g) + j: one layout, one code
path.  An InnerProduct reading a Flatten of C channels of H x W has S = H*W.

The rule (seed "Channel Pruning Algorithm DNS-CP", eqs. 3 and 4):

    mu_k = mean |w| over channel k's weights
    mu, std = mean and standard deviation of |w| over all the layer's weights
    a = max(0, mu - c_rate * std)        b = max(0, mu + c_rate * std)
    channel mask -> 0 if mu_k < a,  -> 1 if mu_k > b,  unchanged if a <= mu_k <= b

in float64 (the sums over a channel are long; the comparison then does not depend on the
order of a float32 sum).
"""
import numpy as np


def channel_view_shape(weight_shape, channels, kind):
    """The 4-axis (groups, outputs per group, channels per group, weights per channel-output pair)
    view of a weight of `weight_shape` whose input has `channels` channels; kind "conv" or "ip".

    Raises ValueError when the shapes do not fit (the layer turns it into a NetError)."""
    weight_shape = tuple(int(d) for d in weight_shape)
    if kind == "conv":
        outputs, per_group = weight_shape[0], weight_shape[1]
        if per_group < 1 or channels % per_group:
            raise ValueError(f"{channels} input channels do not split into groups of {per_group}")
        groups = channels // per_group
        if outputs % groups:
            raise ValueError(f"{outputs} outputs do not split into {groups} groups")
        return groups, outputs // groups, per_group, int(np.prod(weight_shape[2:], dtype=np.int64))
    if kind == "ip":
        outputs, inputs = weight_shape
        if channels < 1 or inputs % channels:
            raise ValueError(f"{inputs} inputs do not split into {channels} channels")
        return 1, outputs, channels, inputs // channels
    raise ValueError(f"unknown layer kind {kind!r}")


def channel_means(weight, view_shape):
    """mu_k, float64 (C,): mean |w| over each input channel's weights."""
    a = np.abs(np.asarray(weight, np.float64).reshape(view_shape))
    return a.mean(axis=(1, 3)).reshape(-1)


def layer_statistics(weight):
    """(mu, std): mean and (population) standard deviation of |w| over all the layer's weights, float64."""
    a = np.abs(np.asarray(weight, np.float64)).reshape(-1)
    return float(a.mean()), float(a.std())


def channel_thresholds(mu, std, c_rate):
    """(a, b) = (max(0, mu - c_rate*std), max(0, mu + c_rate*std)) in float64."""
    return max(0.0, mu - c_rate * std), max(0.0, mu + c_rate * std)


def update_channel_mask(means, mask, low, high):
    """Channel mask -> 0 where mu_k < low (a), -> 1 where mu_k > high (b), in place; returns
    (pruned, spliced): channels that went 1 -> 0 and 0 -> 1.  NaN means compare false and keep
    their mask.  Needs low <= high (c_rate >= 0; the layer checks it)."""
    means = np.asarray(means, np.float64)
    before = mask.copy()
    mask[means > high] = 1
    mask[means < low] = 0
    pruned = int(np.count_nonzero((before != 0) & (mask == 0)))
    spliced = int(np.count_nonzero((before == 0) & (mask != 0)))
    return pruned, spliced


def expand_channel_mask(mask, weight_shape, view_shape, out=None):
    """The channel mask (C,) spread over a weight of `weight_shape` (float32): each weight gets its
    input channel's mask entry.  Written into `out` if given."""
    groups, per_output, per_group, width = view_shape
    m = np.asarray(mask, np.float32).reshape(groups, 1, per_group, 1)
    spread = np.broadcast_to(m, view_shape)
    if out is None:
        return np.ascontiguousarray(spread).reshape(weight_shape)
    out.reshape(view_shape)[...] = spread
    return out
