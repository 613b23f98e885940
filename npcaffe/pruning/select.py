"""From scores to 0/1 masks, and masks onto a net's layers.

Scores are a criterion's output (npcaffe.pruning.criteria): {layer name:
array}, or {layer name: (weight scores, bias scores or None)}; masks come
back in the same form, float32, 1 = kept.  A higher score is kept first.

- `layer_masks(scores, sparsity)`: each layer loses round(sparsity x its
  entries) of its lowest-scored entries (sparsity one number, or one per
  layer name).
- `global_masks(scores, sparsity)`: round(sparsity x all entries) of the
  lowest scores across every layer go (SNIP's top-κ; only meaningful where
  scores are comparable across layers).
- `threshold_masks(scores, thresholds)`: an entry is kept iff its score is
  above its layer's threshold; `quality_masks` is Han et al.'s rule, the
  threshold quality x the standard deviation of the layer's stored weights,
  for magnitude scores.

Ties are broken by position: among equal scores the entry that comes first
(layer order, then weight before bias, then row-major) is pruned first, so
a target count is met exactly.  A weight entry and a bias entry of a layer
count alike.

`set_masks(net, masks)` puts masks on the layers through the mask core:
attached (fixed) masks on plain layers, the mask blobs of DNS layers.
"""
import math
from collections import OrderedDict

import numpy as np

from .. import masks as mask_core
from ..errors import NetError, NpcaffeError
from ..layerlib.dns import is_dns_layer


def _parts(value):
    """(weight array, bias array or None), and whether the value was a pair."""
    if isinstance(value, tuple):
        weight, bias = value
        return np.asarray(weight), None if bias is None else np.asarray(bias), True
    return np.asarray(value), None, False


def _flat(value):
    weight, bias, _ = _parts(value)
    flat = weight.ravel() if bias is None else np.concatenate([weight.ravel(), bias.ravel()])
    if not np.all(np.isfinite(flat)):
        raise NpcaffeError("scores hold NaN or infinite values; cannot rank them")
    return flat


def _unflat(value, keep):
    weight, bias, pair = _parts(value)
    weight_mask = keep[:weight.size].reshape(weight.shape).astype(np.float32)
    if not pair:
        return weight_mask
    return weight_mask, None if bias is None else keep[weight.size:].reshape(bias.shape).astype(np.float32)


def pruned_count(sparsity, size):
    """How many of `size` entries a sparsity prunes: round half up of sparsity x size."""
    if not 0 <= sparsity <= 1:
        raise NpcaffeError(f"sparsity must be in [0, 1] (the share of entries pruned), got {sparsity}")
    return min(size, math.floor(sparsity * size + 0.5))


def _lowest(flat, count):
    """A 0/1 keep vector pruning the `count` lowest entries (stable: earlier first among ties)."""
    keep = np.ones(flat.size, np.float32)
    keep[np.argsort(flat, kind="stable")[:count]] = 0
    return keep


def layer_masks(scores, sparsity):
    """Prune round(sparsity x entries) lowest-scored entries in each layer; `sparsity` a number or
    {layer name: number} (layers it leaves out keep everything)."""
    out = OrderedDict()
    for name, value in scores.items():
        s = sparsity.get(name, 0.0) if isinstance(sparsity, dict) else sparsity
        flat = _flat(value)
        out[name] = _unflat(value, _lowest(flat, pruned_count(s, flat.size)))
    return out


def global_masks(scores, sparsity):
    """Prune round(sparsity x all entries) lowest scores across every layer together."""
    flats = [_flat(value) for value in scores.values()]
    every = np.concatenate(flats) if flats else np.zeros(0)
    keep = _lowest(every, pruned_count(sparsity, every.size))
    out, start = OrderedDict(), 0
    for (name, value), flat in zip(scores.items(), flats):
        out[name] = _unflat(value, keep[start:start + flat.size])
        start += flat.size
    return out


def threshold_masks(scores, thresholds):
    """Keep an entry iff its score is above its layer's threshold (a number, or {name: number})."""
    out = OrderedDict()
    for name, value in scores.items():
        t = thresholds[name] if isinstance(thresholds, dict) else thresholds
        out[name] = _unflat(value, (_flat(value) > t).astype(np.float32))
    return out


def quality_thresholds(net, quality, layers):
    """{layer name: quality x std of the layer's stored weights} (Han et al. 2015's threshold)."""
    by_name = net.layer_dict
    return OrderedDict((name, float(quality) * float(np.std(by_name[name].blobs[0].data.astype(np.float64))))
                       for name in layers)


def quality_masks(net, scores, quality):
    """Han et al.'s rule: keep an entry iff its score is above quality x σ(the layer's weights).
    Meant for magnitude scores, which are in the weights' units."""
    return threshold_masks(scores, quality_thresholds(net, quality, list(scores)))


def pruned_share(masks):
    """{layer name: share of the masks' entries that are 0}."""
    out = OrderedDict()
    for name, value in masks.items():
        flat = _flat(value)
        out[name] = float(np.count_nonzero(flat == 0)) / flat.size if flat.size else 0.0
    return out


def set_masks(net, masks):
    """Put masks on the named layers: a DNS layer's mask blobs are overwritten; a plain Convolution /
    InnerProduct gets fixed masks attached (npcaffe.masks.attach_masks: pruned weights zeroed and kept
    at zero).  A missing or None bias mask leaves a plain layer's bias unmasked and a DNS layer's
    bias mask as it is."""
    by_name = net.layer_dict
    for name, value in masks.items():
        layer = by_name.get(name)
        if layer is None:
            raise NetError(f"net '{net.name}' has no layer '{name}'")
        weight_mask, bias_mask, _ = _parts(value)
        if is_dns_layer(layer):
            weight_blob, bias_blob = mask_core.mask_blobs(layer)
            for blob, mask, what in ((weight_blob, weight_mask, "weight"), (bias_blob, bias_mask, "bias")):
                if mask is None:
                    continue
                if mask.shape != blob.shape:
                    raise NetError(f"layer '{name}' ({layer.type}): {what} mask of shape {mask.shape} does not "
                                   f"fit the {what} {blob.shape}")
                blob.data[...] = mask
        else:
            mask_core.attach_masks(layer, weight_mask, bias_mask)
