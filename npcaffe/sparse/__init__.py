"""Sparse computation for pruned nets.

- npcaffe.sparse.packing: which layers of a TEST net compute with packed
  CSR copies of their (effective) weights (`sparsify`, `PackedWeights`),
  and the measured densities below which the sparse kernels win, for
  inference and for DNS training.  Each layer runs its own sparse forward
  (Convolution through npcaffe.layerlib.conv_paths, InnerProduct in
  npcaffe.layerlib.common).
- npcaffe.sparse.chains: runs of packed inner products and the ReLU,
  Split, Softmax and Input layers around them as one kernel call (ChainPlan).

The kernels are in npcaffe.kernels.sparse and npcaffe.kernels.batch_inner;
the compressed weights file (`npcaffe compress`) in npcaffe.fileio.compressed.
"""
