"""Fused chains: runs of sparse inference layers as one kernel call each.

Runs of packed inner products (npcaffe.sparse.packing) with the ReLU,
Split, Softmax and Input layers around them run as one call of
npcaffe.kernels.sparse.sparse_chain_forward (ChainPlan, used by
Net.forward_from_to): at batch 1 a pruned MLP otherwise spends most of its
forward calling layers.  The same kernels on the same arrays, so the same
bits as layer by layer.
"""
import numpy as np

from ..kernels.sparse import (CHAIN_COLUMNS, CHAIN_RELU, CHAIN_ROWS, CHAIN_SOFTMAX, CHAIN_STEP_WIDTH,
                             sparse_chain_forward)

_EMPTY = np.zeros(0, np.float32)

_CHAIN_FREE = ("Input", "Split")  # forward does nothing (Split's tops share the bottom's data)


def _chainable(layer):
    """The layer's TEST forward is one of sparse_chain_forward's steps (or nothing)."""
    if any(layer.loss_weights):
        return False
    if layer.type in _CHAIN_FREE or layer.type == "Softmax":
        return True
    if layer.type == "ReLU":
        return layer.negative_slope == 0
    return layer.type in ("InnerProduct", "CInnerProduct")


class ChainPlan:
    """Runs each run of consecutive chainable layers of a sparse TEST net as one kernel call.

    A chain is a run of Input, Split, ReLU (negative_slope 0), Softmax and
    packed inner-product layers with no loss weight, holding at least one
    inner product that runs sparsely at the current batch.  At batch 1 a
    pruned LeNet-300-100 then makes one Numba call instead of eight Python
    layer calls, which took most of its forward (README, section Speed).
    The results are the same bits: the chain calls the layers' own kernels
    on the same arrays (tests/sparse/test_chains.py compares every blob).

    The plan is a cache of what the layers' forward would do: it is rebuilt
    when any blob of the net changes shape or storage (the net's LayoutClock),
    and only from layers the net's forward plan holds settled (npcaffe.plan);
    until then, and whenever a layer's packed weights are no longer current
    (written by the user: the layer repacks them in its own forward), the
    net runs layer by layer.  Net.forward_from_to uses a chain only when the
    range covers all of it.
    """

    def __init__(self, net):
        self.net = net
        self.version = None
        self.chains = {}  # first layer index -> _Chain, for self.version

    def current(self):
        """{first layer index: chain} valid now ({} until the layers have settled)."""
        clock = self.net.layout
        if self.version != clock.version:
            chains = self._build()
            if chains is None:
                return {}
            self.chains, self.version = chains, clock.version
        return self.chains

    def invalidate(self):
        self.version = None

    def _build(self):
        net = self.net
        chains, run = {}, []
        for i, layer in enumerate(net.layers + [None]):
            step = None if layer is None else _settled_step(net, i)
            if step is _NOT_SETTLED:
                return None
            if step is None:
                if len(run) > 1 and any(s[0] in (CHAIN_ROWS, CHAIN_COLUMNS) for _, _, s in run if s):
                    chains[run[0][0]] = _Chain(self, run)
                run = []
            else:
                run.append((i, layer, step))
        return chains


_NOT_SETTLED = object()


def _settled_step(net, i):
    """None (not chainable now), _NOT_SETTLED, () for a layer with nothing to do, or
    (code, bottom blob, top blob, ...) for sparse_chain_forward."""
    layer, bottom, top = net.layers[i], net.bottom_vecs[i], net.top_vecs[i]
    if not _chainable(layer):
        return None
    if layer.type == "Input":
        return ()
    if not net.plan.settled(i):
        return _NOT_SETTLED
    if layer.type == "Split":
        return ()
    if layer.type == "ReLU":
        return (CHAIN_RELU, bottom[0], top[0])
    if layer.type == "Softmax":
        return (CHAIN_SOFTMAX, bottom[0], top[0]) + tuple(layer.view_shape)
    packed = layer.packed
    if packed is None or layer.M < packed.min_batch:
        return None  # runs dense
    code = CHAIN_COLUMNS if layer.M == 1 and packed.csc is not None else CHAIN_ROWS
    return (code, bottom[0], top[0], layer.M, layer.num_output, layer.K, layer, packed)


class _Chain:
    def __init__(self, plan, run):
        self.plan = plan
        self.last = run[-1][0]
        self.packs = []  # (layer, PackedWeights) whose currency each call checks
        blobs, index = [], {}

        def blob_index(blob):
            if id(blob) not in index:
                index[id(blob)] = len(blobs)
                blobs.append(blob.flat_data)
            return index[id(blob)]

        steps, pointers, indices, values, biases = [], [], [], [], []
        sizes = [0, 0, 0]  # pointers, values, biases so far
        for _, layer, step in run:
            if not step:
                continue
            code, bottom, top = step[:3]
            row = [code, blob_index(bottom), blob_index(top)]
            if code in (CHAIN_ROWS, CHAIN_COLUMNS):
                num, outputs, inputs, layer, packed = step[3:]
                ptr, idx, val = packed.csc if code == CHAIN_COLUMNS else (packed.indptr, packed.indices, packed.values)
                row += [num, outputs, inputs, sizes[0], sizes[1], sizes[2] if packed.bias.size else -1, val.size]
                pointers.append(ptr)
                indices.append(idx)
                values.append(val)
                biases.append(packed.bias)
                sizes[0] += ptr.size
                sizes[1] += val.size
                sizes[2] += packed.bias.size
                self.packs.append((layer, packed))
            else:
                row += list(step[3:])
            steps.append(row + [0] * (CHAIN_STEP_WIDTH - len(row)))
        # Padded to a multiple of 8 blobs: one compiled kernel serves most nets.
        blobs += [_EMPTY] * (-len(blobs) % 8)
        self.args = (tuple(blobs), np.array(steps, np.int64), np.concatenate(pointers).astype(np.int32),
                     np.concatenate(indices).astype(np.int32), np.concatenate(values).astype(np.float32),
                     np.concatenate(biases).astype(np.float32))

    def run(self):
        """Forward every layer of the chain; False (nothing done) if a layer's weights changed."""
        if not self._unchanged():
            for layer, packed in self.packs:
                if layer.packed is not packed or not packed.current(layer):
                    self.plan.invalidate()
                    return False
            self._watch()
        sparse_chain_forward(*self.args)
        return True

    def _watch(self):
        # The parameter storages and stamps that PackedWeights.current found unchanged,
        # flattened over the chain: checking them in one loop is what the Python API's
        # batch-1 forward spends instead of a call per layer.
        watched = []
        for layer, packed in self.packs:
            if packed.verify:
                if packed.stamps is None:
                    self.watched = None
                    return
                watched += [(b._data, stamp) for b, stamp in zip(layer.blobs, packed.stamps)]
        self.watched = watched

    watched = None  # [(parameter storage, stamp)] while known unchanged

    def _unchanged(self):
        watched = self.watched
        if watched is None:
            return False
        for storage, stamp in watched:  # Blob.data_stamp, inlined
            if storage.stamp != stamp or not storage.unviewed():
                return False
        for layer, packed in self.packs:
            if layer.packed is not packed:
                return False
        return True
