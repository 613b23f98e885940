"""The Net's forward plan: what a forward pass may skip or fuse, and when that stops holding.

Caffe reshapes every layer on every forward.  At batch 1 that bookkeeping
costs as much as the arithmetic, so the plan skips what would change nothing:

- Reshape skips.  A layer whose reshape reads only the bottom and top shapes
  and storages (`Layer.reshape_from_shapes`) is not reshaped again while no
  blob of the net has changed shape or storage since its last reshape: the
  net's LayoutClock (npcaffe.blob), which every blob of the net holds and
  every reshape / share_data / share_diff of one of them moves, still reads
  what it read then.
- Chains.  In a pruned TEST net, runs of packed inner products with the
  layers around them run as one kernel call (npcaffe.sparse.chains.ChainPlan,
  set by npcaffe.sparse.packing.sparsify); a chain is used only when the
  forward's range covers all of it, and only from layers that have settled.

- Affine runs.  BatchNorm with stored statistics, then Scale, then
  optionally ReLU (negative_slope 0), the last two in place - the block that
  follows nearly every convolution of ResNet and MobileNet - run as one pass
  over the blob (npcaffe.kernels.channelwise.normalize_scale_relu) instead of
  three, with the same float32 operations in the same order, so the same
  bits.  Their backward passes run as usual, layer by layer: BatchNorm's
  needs only the std the pass leaves, ReLU's the blob, and an in-place Scale
  that learns its scale the copy of its input, which the pass writes then
  (what Scale's forward would have copied).  Used once all its layers have
  settled and when the range covers the whole run.

All are caches owned by the net: nothing in them is shared with another net.
"""
import numpy as np

from .kernels.channelwise import normalize_scale_relu

_NO_LOSS = np.float32(0)


class ForwardPlan:
    def __init__(self, net):
        self.net = net
        self.clock = net.layout
        self.settled_at = [None] * len(net.layers)  # the clock's version after layer i's last reshape
        self.chains = None  # a ChainPlan once sparsify packs a layer of a TEST net
        self.affine_runs = affine_runs(net)  # first layer index -> AffineRun

    def settled(self, i):
        """Layer i need not be reshaped: nothing moved since its last reshape (and it says so suffices)."""
        return self.settled_at[i] == self.clock.version

    def forward(self, start, end):
        """Forward layers start..end; the sum of their weighted losses."""
        net = self.net
        layers, bottoms, tops, settled_at, clock = net.layers, net.bottom_vecs, net.top_vecs, self.settled_at, self.clock
        chains = self.chains.current() if self.chains is not None else None
        loss = _NO_LOSS
        i = start
        affine = self.affine_runs
        while i <= end:
            if affine:
                run = affine.get(i)
                if run is not None and run.last <= end and run.ready(settled_at, clock.version):
                    run.forward()
                    i = run.last + 1
                    continue
            if chains:
                chain = chains.get(i)
                if chain is not None and chain.last <= end and chain.run():
                    i = chain.last + 1
                    continue
            layer = layers[i]
            if settled_at[i] == clock.version:
                layer_loss = layer.forward_reshaped(bottoms[i], tops[i])
            else:
                layer_loss = layer.forward(bottoms[i], tops[i])
                if layer.reshape_from_shapes:
                    settled_at[i] = clock.version
            if layer_loss:  # most layers have no loss weight; adding their 0 would change nothing
                loss = loss + layer_loss
            i += 1
        return loss


class AffineRun:
    """BatchNorm (stored statistics) -> Scale -> [ReLU] at layers first..last, as one pass."""

    def __init__(self, net, first, relu):
        self.first, self.last = first, first + (2 if relu else 1)
        self.batch_norm, self.scale = net.layers[first], net.layers[first + 1]
        self.bottom, self.top = net.bottom_vecs[first][0], net.top_vecs[first][0]
        self.relu = relu
        # Scale's backward will read its input (in place: the copy its forward keeps).
        self.keep_scale_input = net.layer_need_backward[first + 1] and self.scale.param_needs_backward(0)

    def ready(self, settled_at, version):
        """All layers settled (reshaped for the current layout) and the Scale per channel, as BatchNorm."""
        if any(settled_at[i] != version for i in range(self.first, self.last + 1)):
            return False
        scale = self.scale
        return scale.geometry == self.batch_norm.view and (not scale.bias_term or scale.bias_geometry == scale.geometry)

    def forward(self):
        batch_norm, scale = self.batch_norm, self.scale
        view = batch_norm.view
        mean, batch_norm.std = batch_norm.stored_statistics()  # std: what BatchNorm's forward leaves
        batch_norm.x_norm = None
        gamma = scale.blobs[0].flat_data
        beta = scale.blobs[-1].flat_data if scale.bias_term else gamma
        kept = scale.kept_input.reserve(self.top.count).reshape(view) if self.keep_scale_input else None
        normalize_scale_relu(self.bottom.flat_data.reshape(view), mean, batch_norm.std, gamma, beta,
                             scale.bias_term, self.relu, self.top.flat_data.reshape(view), self.top is self.bottom,
                             kept)


def affine_runs(net):
    """{first layer index: AffineRun} of the net's fusable BatchNorm -> Scale -> [ReLU] blocks: BatchNorm
    with use_global_stats (in place or not), a one-bottom Scale in place on its top, then perhaps a ReLU
    with negative_slope 0 in place on the same blob; none with a loss weight."""
    layers, runs = net.layers, {}

    def plain(i):
        return not any(layers[i].loss(t) for t in range(len(net.top_vecs[i])))

    def in_place_on(i, blob):
        return (len(net.bottom_vecs[i]) == 1 and net.bottom_vecs[i][0] is blob
                and len(net.top_vecs[i]) == 1 and net.top_vecs[i][0] is blob and plain(i))

    for i in range(len(layers) - 1):
        batch_norm = layers[i]
        if (batch_norm.type != "BatchNorm" or not batch_norm.use_global_stats or not plain(i)
                or len(net.top_vecs[i]) != 1 or layers[i + 1].type != "Scale"):
            continue
        top = net.top_vecs[i][0]
        if not in_place_on(i + 1, top):
            continue
        relu = (i + 2 < len(layers) and layers[i + 2].type == "ReLU" and layers[i + 2].negative_slope == 0
                and in_place_on(i + 2, top))
        runs[i] = AffineRun(net, i, relu)
    return runs
