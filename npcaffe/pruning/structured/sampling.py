"""Sampled reconstruction problems for ThiNet and He et al.'s LASSO: what a consumer layer reads, per
input channel, at sampled output positions, on data that can be replayed.

A *consumer* is the layer whose input channels are pruned (the layer after the filters that
go): a 2-D Convolution with group 1 (channel c = its weight's W[:, c], kh·kw taps) or an
InnerProduct with axis 1 reading a C × H × W blob (channel c = the H·W consecutive columns
c·H·W … (c+1)·H·W − 1).  Both are seen as

    W  (outputs n, channels C, taps k)     and, per sample s,  x_s  (C, k),

the consumer's effective weight (W ⊙ T, npcaffe.masks) and the inputs of one output position
(an im2col column of one image; an InnerProduct has one position per image), so that output f
at sample s is Σ_c Σ_k W[f, c, k] x_s[c, k] + b_f, and channel c's contribution is the inner sum.

`Replay` records the data of a number of forward passes once (the tops of the net's source
layers: Data, Input, …, or the {input blob: array} batches given) and runs the net on exactly
those again, so that a criterion compares the unpruned and the pruned net on the same images.
Sample positions are drawn per batch from a generator seeded with (seed, consumer layer index,
batch index), so every replay samples the same positions.
"""
import numpy as np

from ...errors import NetError, NpcaffeError
from ...kernels.im2col import im2col_reference
from ...masks import effective_params
from ..criteria.common import conv_geometry, feed


class Replay:
    """The data of `batches` forward passes (a count over the net's own data layers, or an iterable of
    {input blob: array} dicts), recorded once and replayed: `run(end)` yields the batch index after
    forwarding each recorded batch through layers first..end."""

    def __init__(self, net, batches):
        self.net = net
        self.first = next((i for i, name in enumerate(net.layer_names) if net.bottom_names[name]),
                          len(net.layer_names))
        sources = [top for name in net.layer_names[:self.first] for top in net.top_names[name]]
        self.sources = list(dict.fromkeys(list(net.inputs) + sources))
        self.records = []
        if isinstance(batches, (int, np.integer)) and not isinstance(batches, bool):
            if batches < 1:
                raise NpcaffeError(f"batches must be at least 1 forward pass, got {batches}")
            for _ in range(int(batches)):
                if self.first:
                    net.forward_from_to(0, self.first - 1)
                self.records.append(self._current())
        else:
            for batch in [batches] if isinstance(batches, dict) else batches:
                feed(net, batch)
                if self.first:
                    net.forward_from_to(0, self.first - 1)
                self.records.append(self._current())
        if not self.records:
            raise NpcaffeError("batches is empty: a reconstruction criterion needs at least one batch")

    def _current(self):
        return {name: self.net.blobs[name].data.copy() for name in self.sources}

    def run(self, end):
        net = self.net
        for index, record in enumerate(self.records):
            reshaped = False
            for name, value in record.items():
                blob = net.blobs[name]
                if blob.shape != value.shape:
                    blob.reshape(*value.shape)
                    reshaped = True
                blob.data[...] = value
            if reshaped:
                net.reshape()
            net.forward_from_to(self.first, end)
            yield index


class Consumer:
    """One consumer layer seen as W (n, C, k) and per-sample inputs x (S, C, k) (module docstring)."""

    def __init__(self, net, name, channels):
        layer = net.layer_dict.get(name)
        if layer is None:
            raise NetError(f"net '{net.name}' has no layer '{name}'")
        self.net, self.name, self.layer, self.channels = net, name, layer, int(channels)
        self.index = net.layer_names.index(name)
        self.bottom = net.bottom_names[name][0]
        if layer.type == "Convolution":
            self.geometry = conv_geometry(layer, "a reconstruction criterion (ThiNet, LASSO)")
            if self.geometry[-1] != 1:
                raise NetError(f"layer '{name}' (Convolution): a reconstruction criterion handles group 1 only, "
                               f"not group {self.geometry[-1]}")
            if layer.blobs[0].shape[1] != self.channels:
                raise NetError(f"layer '{name}' reads {layer.blobs[0].shape[1]} channels, not {self.channels}")
        elif layer.type == "InnerProduct":
            inputs = layer.blobs[0].shape[0 if getattr(layer, "transpose", False) else 1]
            if inputs % self.channels:
                raise NetError(f"layer '{name}' (InnerProduct) has {inputs} inputs, not a multiple of the "
                               f"{self.channels} channels it reads")
        else:
            raise NetError(f"layer '{name}' ({layer.type}): a reconstruction criterion refits Convolution / "
                           "InnerProduct layers only")

    def weight(self):
        """The effective weight W ⊙ T as (n, C, k), float64."""
        w = effective_params(self.layer)[0].astype(np.float64)
        if self.layer.type == "InnerProduct" and getattr(self.layer, "transpose", False):
            w = w.T
        return w.reshape(w.shape[0], self.channels, -1)

    def set_weight(self, w):
        """Store an (n, C, k) weight back into the layer's blob 0 (float32, the layer's own layout)."""
        w = np.asarray(w, np.float64).reshape(w.shape[0], -1)
        if self.layer.type == "InnerProduct" and getattr(self.layer, "transpose", False):
            w = w.T
        blob = self.layer.blobs[0]
        blob.data[...] = w.reshape(blob.shape).astype(np.float32)

    def rng(self, seed, batch):
        """The generator of this layer's sample positions in batch `batch` (the same on every replay)."""
        return np.random.default_rng([seed, self.index, batch])

    def inputs(self, rng, per_image):
        """(x (S, C, k) float64, images (S,)): per image `per_image` output positions drawn from `rng`
        (a Convolution; without replacement while there are enough), or the image's one input vector
        (an InnerProduct)."""
        data = self.net.blobs[self.bottom].data.astype(np.float64)
        num = data.shape[0]
        if self.layer.type == "InnerProduct":
            return data.reshape(num, self.channels, -1), np.arange(num)
        kh, kw, ph, pw, sh, sw, dh, dw, _ = self.geometry
        out_h, out_w = self.net.blobs[self.net.top_names[self.name][0]].shape[2:]
        positions = out_h * out_w
        col = np.empty((self.channels * kh * kw, num * positions))
        im2col_reference(data, kh, kw, ph, pw, sh, sw, dh, dw, out_h, out_w, col)
        count = min(per_image, positions)
        picks = np.concatenate([n * positions + rng.choice(positions, count, replace=False) for n in range(num)])
        x = col[:, picks].reshape(self.channels, kh * kw, -1).transpose(2, 0, 1)
        return x, np.repeat(np.arange(num), count)

    def collect(self, replay, per_image, seed):
        """x (S, C, k) over every replayed batch: the net run from its sources to this layer."""
        out = []
        for index in replay.run(self.index - 1):
            out.append(self.inputs(self.rng(seed, index), per_image)[0])
        return np.concatenate(out)


def prune_in_order(net, names, removed, earlier, batches, choose):
    """The loop of the reconstruction methods: the scored (reading) layers one at a time in net
    order, each choosing its kept channels on the net as the earlier ones left it (their channels
    masked, their weights refitted), as ThiNet and He et al. prune layer after layer.

    names: the reading layers; batches: the data (or a Replay of it); removed {name: channels to
    remove in all}; earlier {name: indices removed at an earlier step, which stay removed};
    choose(consumer, replay, keep, allowed) -> sorted kept indices (at most `keep`, among
    `allowed`), free to change the consumer's kept weights.  After each layer the masks of every
    group are written into the net (npcaffe.pruning.structured.channels.channel_masks, through
    npcaffe.pruning.groups), so the next layer's inputs are the pruned net's.  The channel index of
    a reading layer is its group's unit (input-channel methods read one group one for one).
    Returns {name: kept indices}."""
    from . import INPUT_CHANNELS
    from .channels import channel_masks
    from .select import channel_groups

    order = {name: i for i, name in enumerate(net.layer_names)}
    names = sorted(names, key=order.__getitem__)
    groups = channel_groups(net, names, INPUT_CHANNELS)
    replay = batches if isinstance(batches, Replay) else Replay(net, batches)
    keeps = {}
    for name in names:
        channels = groups[name].channels
        gone = np.asarray(sorted(earlier.get(name, ())), int)
        keeps[name] = np.setdiff1d(np.arange(channels), gone)
    for name in names:
        group = groups[name]
        allowed = keeps[name]
        keep = group.channels - max(int(removed.get(name, 0)), group.channels - allowed.size)
        if keep < 1:
            raise NpcaffeError(f"layer '{name}': removing {removed.get(name, 0)} of its {group.channels} input "
                               "channels leaves none; keep at least one")
        kept = np.asarray(choose(Consumer(net, name, group.channels), replay, keep, allowed), int)
        if kept.size > keep or not np.isin(kept, allowed).all():
            raise NpcaffeError(f"layer '{name}': the criterion kept channels {kept.tolist()}, not at most {keep} of "
                               f"{allowed.tolist()}")
        keeps[name] = kept
        channel_masks(net, keeps, groups)
    return keeps
