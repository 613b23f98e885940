"""LASSO channel selection with least-squares reconstruction (He, Zhang & Sun, ICCV 2017, "Channel
Pruning for Accelerating Very Deep Neural Networks").

For the layer reading the channels (the consumer), sample output positions (per_image per image;
an InnerProduct has one per image) and take, at each, the consumer's outputs Y (all n units,
bias excluded) and each input channel's contribution Z_c = W_c x_c to all of them
(npcaffe.pruning.structured.sampling).  Channels are picked by the LASSO on one coefficient per
channel, min_β (1/2M)||Y - Σ_c β_c Z_c||² + λ||β||₁, λ raised until at most the wanted number of
β_c are nonzero (reconstruction.lasso_select, coordinate descent on the Gram matrix); then the
consumer's weights on the kept channels are refitted by least squares, W' = argmin ||Y - X'W'ᵀ||²,
X' the kept channels' inputs (reconstruction.least_squares).

Z_c is the contribution as the current weights give it: the paper states its alternating
problem with ||W_c||_F = 1 (β_c then carries each channel's weight norm), which changes the L1
penalty's weight per channel; we run its practical procedure, one LASSO pass with λ raised to the
channel count and then least squares once, on the weights as they are.

As the paper does when it prunes a whole net, the targets Y are the *unpruned* net's outputs (of
the step's start) and the inputs X the net pruned so far, so each layer also makes up for the
error of those before it; layers are pruned one after the other in net order.

`--method lasso` ranks INPUT_CHANNELS: name the consumer.  Options: per_image (default 10), seed
(default 0).  Its plain scores (`scores`, used only where a ranking is asked for) are the largest
λ of a geometric path from λ_max down at which each channel's β is nonzero.
"""
from collections import OrderedDict

import numpy as np

from . import INPUT_CHANNELS, register
from . import reconstruction as rc
from .sampling import Consumer, Replay, prune_in_order
from .select import channel_groups

PER_IMAGE = 10


def outputs(consumer, replay, per_image=PER_IMAGE, seed=0):
    """(x (S, C, k), Y (S, n)): the consumer's sampled inputs and its outputs without bias there."""
    x = consumer.collect(replay, per_image, seed)
    return x, np.einsum("fck,sck->sf", consumer.weight(), x)


def normal_equations(w, x, target, channels):
    """(G, q) of the LASSO over `channels`: G = ZᵀZ / M, q = Zᵀy / M with Z_c the contributions
    W_c x_c to every output at every sample (M = samples × outputs), y the targets."""
    z = np.einsum("fck,sck->sfc", w[:, channels], x[:, channels])
    m = z.shape[0] * z.shape[1]
    return np.einsum("sfc,sfd->cd", z, z) / m, np.einsum("sfc,sf->c", z, target) / m


def refit(consumer, x, target, kept):
    """Least-squares weights of the kept channels reproducing `target`; written into the consumer."""
    w = consumer.weight()
    inputs = x[:, kept].reshape(x.shape[0], -1)
    fitted = rc.least_squares(inputs.T @ inputs, inputs.T @ target)  # (kept · k, n)
    w[:, kept] = fitted.T.reshape(w.shape[0], len(kept), -1)
    consumer.set_weight(w)


def scores(net, layers=None, batches=10, per_image=PER_IMAGE, seed=0, path=40):
    """{consumer layer: per input channel, the largest λ (of `path` geometric steps from λ_max to
    λ_max·1e-4) at which its coefficient is nonzero; 0 if never}."""
    from .common import rated_layers
    chosen = rated_layers(net, layers, ("Convolution", "InnerProduct"), "lasso")
    names = [name for name, _ in chosen]
    groups = channel_groups(net, names, INPUT_CHANNELS)
    replay = Replay(net, batches if batches else 10)
    out = OrderedDict()
    for name in names:
        consumer = Consumer(net, name, groups[name].channels)
        x, target = outputs(consumer, replay, per_image, seed)
        gram, corr = normal_equations(consumer.weight(), x, target, np.arange(consumer.channels))
        entered = np.zeros(consumer.channels)
        beta = None
        for lam in np.geomspace(rc.lasso_lambda_max(corr), rc.lasso_lambda_max(corr) * 1e-4, path):
            beta = rc.lasso(gram, corr, lam, beta)
            entered = np.where((entered == 0) & (beta != 0), lam, entered)
        out[name] = entered
    return out


def prune(net, names, removed, earlier, batches=10, per_image=PER_IMAGE, seed=0):
    """He et al.'s step: every named consumer in net order, targets from the net at the start."""
    replay = Replay(net, batches if batches else 10)
    groups = channel_groups(net, names, INPUT_CHANNELS)
    targets = {name: outputs(Consumer(net, name, groups[name].channels), replay, per_image, seed)[1]
               for name in names}

    def choose(consumer, replay, keep, allowed):
        x = consumer.collect(replay, per_image, seed)
        gram, corr = normal_equations(consumer.weight(), x, targets[consumer.name], allowed)
        picked, _, _ = rc.lasso_select(gram, corr, keep)
        kept = np.asarray(allowed)[picked]
        refit(consumer, x, targets[consumer.name], kept)
        return kept

    return prune_in_order(net, names, removed, earlier, replay, choose)


register("lasso", scores, INPUT_CHANNELS, "He, Zhang & Sun 2017, Channel Pruning for Accelerating Very Deep "
         "Neural Networks", data=True, default_batches=10, options={"per_image": PER_IMAGE, "seed": 0},
         prune=prune, summary="LASSO on per-channel coefficients of the next layer's reconstruction, then "
                              "least squares (name the reading layer)")
