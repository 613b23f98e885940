"""First-order Taylor criterion (Molchanov, Tyree, Karras, Aila & Kautz, ICLR 2017, "Pruning
Convolutional Neural Networks for Resource Efficient Inference"): removing channel k changes the
loss C by about its activation times the gradient there, so its score is

    Θ(k) = 1/N Σ_n | 1/M Σ_m z_nkm ∂C/∂z_nkm |       (per_example=True, the paper's)
    Θ(k) = | 1/(N M) Σ_n Σ_m z_nkm ∂C/∂z_nkm |        (per_example=False)

z the channel's output at its M positions in image n of a batch of N, C the net's loss as the engine
computes it (a batch mean, as Caffe's losses are; the factor 1/N this puts in ∂C/∂z is the same for
every channel).  The paper computes the criterion per example and averages it over the batch; over
several batches we average the batches' values.  `normalize=True` divides each layer's scores by their
L2 norm, Θ / sqrt(Σ_k Θ(k)²), the paper's layer-wise normalisation that makes layers comparable.

z and ∂C/∂z are read from the layer's top blob after a forward and a backward pass of the engine.  A
ReLU after the layer changes nothing: z ∂C/∂z is the same before and after it (where the ReLU zeroes
z, it zeroes the gradient), so an in-place ReLU's rectified data with the gradient it passed back
gives the same product.  The net's parameter diffs are restored afterwards.
"""
import numpy as np

from ...errors import NetError
from ..criteria.common import forward_batches
from . import FILTERS, register
from .common import channel_values, output_blob, pack, rated_layers


def scores(net, layers=None, batches=1, per_example=True, normalize=False):
    """{layer name: Θ per output channel} (float64) over `batches` forward / backward passes."""
    names = [name for name, _ in rated_layers(net, layers, ("Convolution", "InnerProduct"), "taylor")]
    for name in names:
        if not net.layer_need_backward[net.layer_names.index(name)]:
            raise NetError(f"layer '{name}': the net computes no gradient for its output (it feeds no loss, or "
                           "nothing before it learns); the Taylor criterion needs that gradient")
    blobs = {name: output_blob(net, name) for name in names}
    saved = [blob.flat_diff.copy() for blob in net.learnable_params]
    sums = {name: 0.0 for name in names}
    count = 0
    try:
        for _ in forward_batches(net, batches):
            net.clear_param_diffs()
            net.backward_from_to()
            for name, blob in blobs.items():
                z = channel_values(net.blobs[blob].data)       # (C, N, M)
                g = channel_values(net.blobs[blob].diff)
                product = (z * g).mean(axis=2)                  # (C, N): 1/M Σ_m z g per image
                sums[name] = sums[name] + (np.abs(product).mean(axis=1) if per_example
                                           else np.abs(product.mean(axis=1)))
            count += 1
    finally:
        for blob, diff in zip(net.learnable_params, saved):
            blob.flat_diff[:] = diff
    out = {}
    for name in names:
        theta = np.asarray(sums[name], np.float64) / count
        if normalize:
            norm = np.sqrt((theta ** 2).sum())
            theta = theta / norm if norm > 0 else theta
        out[name] = theta
    return pack(names, out)


register("taylor", scores, FILTERS, "Molchanov et al. 2017, Pruning CNNs for Resource Efficient Inference",
         data=True, default_batches=100, options={"per_example": True, "normalize": False},
         summary="|activation x gradient| of each channel, first-order Taylor (per example, averaged)")
