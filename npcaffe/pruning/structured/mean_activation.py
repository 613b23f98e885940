"""Mean activation: a channel's score is the mean of its output over a data sample, all images and
positions (the activation baseline Molchanov, Tyree, Karras, Aila & Kautz 2017 compare with; after a
ReLU it is the mean of the rectified output).

The outputs are the layer's as the net passes them on (common.passed_on_blob).  We average |a|: the
same number for rectified outputs, and for a layer no ReLU follows (LeNet-5's convolutions) the mean
magnitude, so that a channel of large negative outputs is not ranked below a silent one.
"""
import numpy as np

from . import FILTERS, register
from .common import channel_outputs, pack, rated_layers


def scores(net, layers=None, batches=1):
    """{layer name: mean |output| per output channel} (float64) over `batches` forward passes."""
    names = [name for name, _ in rated_layers(net, layers, ("Convolution", "InnerProduct"), "mean-activation")]
    sums = {name: 0.0 for name in names}
    total = {name: 0 for name in names}
    for outputs in channel_outputs(net, names, batches):
        for name, values in outputs.items():
            sums[name] = sums[name] + np.abs(values).sum(axis=(0, 2))
            total[name] += values.shape[0] * values.shape[2]
    return pack(names, {name: np.asarray(sums[name], np.float64) / total[name] for name in names})


register("mean-activation", scores, FILTERS, "mean activation (Molchanov et al. 2017's baseline)", data=True,
         default_batches=100, summary="mean |output| of each channel over a data sample")
