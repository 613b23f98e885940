"""ThiNet (Luo, Wu & Lin, ICCV 2017, "ThiNet: A Filter Level Pruning Method for Deep Neural Network
Compression"): prune the filters of layer i by what layer i + 1 can do without.

For the layer reading the channels (the consumer, layer i + 1), ThiNet samples output values:
an image, an output position and one output channel f at random, and splits each value into
the contributions x̂_c of its input channels (npcaffe.pruning.structured.sampling).  It removes
the channels whose contributions sum to the least change of the outputs, chosen greedily one
at a time (reconstruction.thinet_removal_order), then rescales the kept channels' weights in the
consumer by the least-squares fit of the unpruned outputs (reconstruction.thinet_scales: every
weight of channel c times ŵ_c), the paper's last step before fine-tuning.  Layers are pruned one
after the other in net order, each on the net the earlier ones left (the paper fine-tunes
between layers; here the schedule's retraining follows the whole step).

`--method thinet` ranks INPUT_CHANNELS: name the consumer (conv2 prunes conv1's filters).  Options:
per_image output positions sampled per image (default 10; an InnerProduct samples
per_image output units of its one position), seed (default 0).  The bias takes no part (the
paper's ŷ excludes it); a removed channel's filter goes with its bias.
"""
from collections import OrderedDict

import numpy as np

from . import INPUT_CHANNELS, register
from . import reconstruction as rc
from .sampling import Consumer, Replay, prune_in_order
from .select import channel_groups

PER_IMAGE = 10


def contributions(consumer, replay, per_image=PER_IMAGE, seed=0):
    """x̂ (samples, channels): each sample one image, position and random output unit f of the
    consumer, split into its input channels' contributions Σ_k W[f, c, k] x[c, k]."""
    w = consumer.weight()
    x = consumer.collect(replay, per_image, seed)
    rng = np.random.default_rng([seed, consumer.index, len(replay.records)])  # apart from the positions' streams
    units = rng.integers(0, w.shape[0], size=x.shape[0])
    return np.einsum("sck,sck->sc", w[units], x)


def scores(net, layers=None, batches=10, per_image=PER_IMAGE, seed=0):
    """{consumer layer: score per input channel}: the position in ThiNet's greedy removal order
    (the first removed scores 0, the one kept longest C - 1), on the net as it is."""
    from .common import rated_layers
    chosen = rated_layers(net, layers, ("Convolution", "InnerProduct"), "thinet")
    names = [name for name, _ in chosen]
    groups = channel_groups(net, names, INPUT_CHANNELS)
    replay = Replay(net, batches if batches else 10)
    out = OrderedDict()
    for name in names:
        x = contributions(Consumer(net, name, groups[name].channels), replay, per_image, seed)
        rank = np.empty(x.shape[1])
        rank[rc.thinet_removal_order(x)] = np.arange(x.shape[1])
        out[name] = rank
    return out


def choose(consumer, replay, keep, allowed, per_image=PER_IMAGE, seed=0):
    """ThiNet on one consumer: the greedy removal among `allowed` down to `keep` channels, then the
    kept channels' weights rescaled by least squares.  Returns the kept indices."""
    x = contributions(consumer, replay, per_image, seed)
    allowed = np.asarray(allowed, int)
    order = allowed[rc.thinet_removal_order(x[:, allowed])]
    kept = np.sort(order[allowed.size - keep:])
    scales = rc.thinet_scales(x[:, allowed], np.searchsorted(allowed, kept))
    # the target ŷ is the output of the channels still there (earlier steps' removals are gone)
    w = consumer.weight()
    w[:, kept] *= scales[None, :, None]
    consumer.set_weight(w)
    return kept


def prune(net, names, removed, earlier, batches=10, per_image=PER_IMAGE, seed=0):
    """ThiNet's step: every named consumer in net order (see sampling.prune_in_order)."""
    return prune_in_order(net, names, removed, earlier, batches if batches else 10,
                          lambda consumer, replay, keep, allowed: choose(consumer, replay, keep, allowed,
                                                                         per_image, seed))


register("thinet", scores, INPUT_CHANNELS, "Luo, Wu & Lin 2017, ThiNet", data=True, default_batches=10,
         options={"per_image": PER_IMAGE, "seed": 0}, prune=prune,
         summary="greedy channel selection minimising the next layer's reconstruction error, then "
                 "least-squares rescaling (name the reading layer)")
