"""APoZ, the Average Percentage of Zeros (Hu, Peng, Tai & Tang 2016, "Network Trimming"): a channel
whose ReLU outputs are mostly zero over a data sample does little; its score is 1 - APoZ, the share
of its outputs (all images, all positions) that are positive.

The outputs are the layer's as the net passes them on (common.passed_on_blob: after its in-place or
directly following ReLU).  Zeros are counted as outputs <= 0, which for rectified outputs is the
paper's count of zeros; for a layer no ReLU follows (LeNet-5's convolutions) it is the share a ReLU
would zero, our extension, so that such layers are not all tied at APoZ 0.
"""
import numpy as np

from . import FILTERS, register
from .common import channel_outputs, pack, rated_layers


def scores(net, layers=None, batches=1):
    """{layer name: 1 - APoZ per output channel} (float64) over `batches` forward passes."""
    names = [name for name, _ in rated_layers(net, layers, ("Convolution", "InnerProduct"), "apoz")]
    positive = {name: 0.0 for name in names}
    total = {name: 0 for name in names}
    for outputs in channel_outputs(net, names, batches):
        for name, values in outputs.items():
            positive[name] = positive[name] + (values > 0).sum(axis=(0, 2))
            total[name] += values.shape[0] * values.shape[2]
    return pack(names, {name: np.asarray(positive[name], np.float64) / total[name] for name in names})


register("apoz", scores, FILTERS, "Hu et al. 2016, Network Trimming (APoZ)", data=True, default_batches=100,
         summary="1 - the share of zero (ReLU) outputs of each channel over a data sample")
