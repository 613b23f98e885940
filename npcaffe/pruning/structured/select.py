"""From per-channel scores to kept channels, and kept channels to masks on every layer they touch.

Scores come from a structured criterion ({layer: one score per channel},
npcaffe.pruning.structured); each scored layer stands for one channel group:
its output channels for FILTERS / NEURONS methods, the channels it reads for
INPUT_CHANNELS methods (channels.scored_groups, over npcaffe.pruning.groups).  A target
is, per layer, the share of its channels removed (round half up of share x
channels, npcaffe.pruning.select.pruned_count), or a number of channels kept
(`shares_from_counts`).  The lowest scores go; among equal scores the channel
with the lower index goes first; a channel removed at an earlier step of an
iterative schedule stays removed (it is ranked below every other).  At least
one channel of a group is kept.

`StructuredStep` is one method's step for npcaffe.pruning.schedule.run: it
scores the net, picks the kept channels for the step's shares and returns the
masks of every member (producers' rows and bias entries, consumers' columns).
"""
from collections import OrderedDict

import numpy as np

from ...errors import NpcaffeError
from ..select import pruned_count
from . import method as registered
from . import channels as simple_channels


def removed_count(share, channels, name):
    """How many of `channels` a share removes; an NpcaffeError naming the layer when none would stay."""
    count = pruned_count(share, channels)
    if count >= channels:
        raise NpcaffeError(f"layer '{name}': removing {share:g} of its {channels} channels leaves none; "
                           "keep at least one")
    return count


def kept_channels(scores, removed, earlier=()):
    """Sorted indices of the channels kept when the `removed` lowest scores go; `earlier`: indices
    removed before, which go first whatever their score."""
    scores = np.asarray(scores, np.float64)
    if not np.all(np.isfinite(scores)):
        raise NpcaffeError("channel scores hold NaN or infinite values; cannot rank them")
    earlier = np.asarray(sorted(earlier), int)
    ranked = scores.copy()
    if earlier.size:
        ranked[earlier] = -np.inf
    order = np.argsort(ranked, kind="stable")
    keep = np.ones(scores.size, bool)
    keep[order[:max(removed, earlier.size)]] = False
    return np.flatnonzero(keep)


def shares_from_counts(counts, channels):
    """{layer: share removed} from {layer: channels kept}, exact under removed_count's rounding."""
    out = OrderedDict()
    for name, kept in counts.items():
        total = channels[name]
        if not 1 <= kept <= total:
            raise NpcaffeError(f"layer '{name}': keep between 1 and its {total} channels, not {kept}")
        out[name] = (total - kept) / total
    return out


def channel_groups(net, names, ranks):
    """{scored layer: channels.ScoredGroup} (its `.channels` the group's units); a layer whose group
    cannot be pruned, or a group reached twice, is an error naming the layers."""
    return simple_channels.scored_groups(net, names, ranks)


class StructuredStep:
    """The masks of one step of a structured method (the `masks_fn` of schedule.run).

    method: a registered name; names: the scored layers; batches: forward passes (or data) the
    criterion scores over; options: the criterion's keyword options.  `kept` holds the kept channels
    per scored layer after the last step, `scores` the last scores."""

    def __init__(self, method, names, batches=None, options=None):
        self.method = registered(method)
        self.names = list(names)
        self.batches = self.method.default_batches if batches is None else batches
        if self.method.data and not self.batches:
            raise NpcaffeError(f"--score_batches must be at least 1 for {method} (it scores on data)")
        self.options = dict(options or {})
        unknown = sorted(set(self.options) - set(self.method.options))
        if unknown:
            known = ", ".join(sorted(self.method.options)) or "none"
            raise NpcaffeError(f"--criterion_option {unknown[0]}: {method} has no option '{unknown[0]}' (its options: "
                               f"{known})")
        self.kept = OrderedDict()
        self.scores = OrderedDict()

    def channels(self, net):
        """{scored layer: channels in its group}."""
        return OrderedDict((name, group.channels)
                           for name, group in channel_groups(net, self.names, self.method.ranks).items())

    def __call__(self, net, step_target):
        """{layer: (weight mask, bias mask or None)} for the step's {scored layer: share removed}."""
        groups = channel_groups(net, self.names, self.method.ranks)
        if self.method.prune is not None:  # ThiNet, LASSO: they choose and refit the kept weights themselves
            removed = {name: removed_count(step_target.get(name, 0.0), groups[name].channels, name)
                       for name in self.names}
            earlier = {name: np.setdiff1d(np.arange(groups[name].channels), self.kept[name])
                       for name in self.names if name in self.kept}
            chosen = self.method.prune(net, self.names, removed, earlier, batches=self.batches or None,
                                       **self.options)
            self.kept = OrderedDict((name, np.asarray(chosen[name], int)) for name in self.names)
            self.scores = OrderedDict()
            return simple_channels.channel_masks(net, self.kept, groups)
        scores = self.method.scores(net, layers=self.names, batches=self.batches or None, **self.options)
        keeps = OrderedDict()
        for name in self.names:
            group, score = groups[name], np.asarray(scores[name])
            if score.shape != (group.positions.size,):
                raise NpcaffeError(f"{self.method.name} gave {score.shape} scores for layer '{name}', which has "
                                   f"{group.positions.size} channels in group '{group.name}'")
            score = simple_channels.unit_scores(group, score)
            earlier = np.setdiff1d(np.arange(group.channels), self.kept[name]) if name in self.kept else ()
            keeps[name] = kept_channels(score, removed_count(step_target.get(name, 0.0), group.channels, name),
                                        earlier)
        self.kept, self.scores = keeps, scores
        return simple_channels.channel_masks(net, keeps, groups)
