"""Data sources: Datum records, the LMDB reader, Caffe's DataTransformer and MNIST tooling.

Nothing here knows about layers; `npcaffe.layerlib.data` builds the Data
layers on top of it.
"""
