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

Both are caches owned by the net: nothing in them is shared with another net.
"""
import numpy as np

_NO_LOSS = np.float32(0)


class ForwardPlan:
    def __init__(self, net):
        self.net = net
        self.clock = net.layout
        self.settled_at = [None] * len(net.layers)  # the clock's version after layer i's last reshape
        self.chains = None  # a ChainPlan once sparsify packs a layer of a TEST net

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
        while i <= end:
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
