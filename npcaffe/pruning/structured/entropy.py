"""Entropy of channel activations (Luo & Wu 2017, "An Entropy-based Pruning Method for CNN
Compression"): a filter whose output hardly varies from image to image carries little information.

For each image, the channel's output (as the net passes it on, common.passed_on_blob: after a ReLU
if one follows) is averaged over its positions (global average pooling), giving one value per image;
over the data sample these values are sorted into `bins` equal-width bins spanning their own range
[min, max] for that channel, and the score is the entropy H = -Σ p_k ln p_k of the bins' shares
p_k (natural log; empty bins add nothing).  A channel whose pooled value is the same for every image
scores 0.  The paper leaves the number of bins m as a setting; we use 100 by default (`bins`).
"""
import numpy as np

from ...errors import NpcaffeError
from . import FILTERS, register
from .common import channel_outputs, pack, rated_layers

BINS = 100


def histogram_entropy(values, bins):
    """-Σ p ln p of `values` sorted into `bins` equal-width bins over [min, max] (0 for constant values)."""
    values = np.asarray(values, np.float64)
    low, high = values.min(), values.max()
    if high <= low:
        return 0.0
    counts, _ = np.histogram(values, bins=bins, range=(low, high))
    p = counts[counts > 0] / values.size
    return float(-(p * np.log(p)).sum())


def scores(net, layers=None, batches=1, bins=BINS):
    """{layer name: entropy of each channel's global-pooled outputs} (float64) over `batches` forward
    passes (the sample should hold many more images than `bins`)."""
    if int(bins) < 2:
        raise NpcaffeError(f"entropy: bins must be at least 2, got {bins}")
    names = [name for name, _ in rated_layers(net, layers, ("Convolution", "InnerProduct"), "entropy")]
    pooled = {name: [] for name in names}
    for outputs in channel_outputs(net, names, batches):
        for name, values in outputs.items():
            pooled[name].append(values.mean(axis=2))  # (N, C): one value per image and channel
    out = {}
    for name in names:
        per_image = np.concatenate(pooled[name], axis=0)
        out[name] = np.array([histogram_entropy(per_image[:, c], int(bins)) for c in range(per_image.shape[1])])
    return pack(names, out)


register("entropy", scores, FILTERS, "Luo & Wu 2017, An Entropy-based Pruning Method for CNN Compression",
         data=True, default_batches=100, options={"bins": BINS},
         summary="entropy of each channel's global-pooled outputs over a data sample (100 bins)")
