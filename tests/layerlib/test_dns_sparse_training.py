"""TRAIN-phase DNS layers on the sparse kernels (W * T sparse): the same forward, bottom
gradient and parameter gradients as the dense path, to float rounding."""
import numpy as np
import pytest

from helpers import layer_param, make_blob
from npcaffe.blob import Blob
from npcaffe.kernels import glibc_rand
from npcaffe.layer import TRAIN, create_layer
from npcaffe.layerlib import conv_paths
from npcaffe.sparse import packing

CONV = """name: "c" type: "CConvolution"
convolution_param {{ num_output: 7 kernel_size: {kernel} stride: {stride} pad: {pad} dilation: {dilation}
  weight_filler {{ type: "gaussian" std: 0.5 }} bias_filler {{ type: "uniform" min: -1 max: 1 }} }}
cconvolution_param {{ gamma: 0.0001 power: 1 c_rate: 10 iter_stop: 0
  weight_mask_filler {{ type: "constant" value: 1 }} bias_mask_filler {{ type: "constant" value: 1 }} }}"""

IP = """name: "f" type: "CInnerProduct"
inner_product_param { num_output: 9
  weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "uniform" min: -1 max: 1 } }
cinner_product_param { gamma: 0.0001 power: 1 c_rate: 10 iter_stop: 0
  weight_mask_filler { type: "constant" value: 1 } bias_mask_filler { type: "constant" value: 1 } }"""


def _run(text, shape, density, sparse, seed=0):
    """forward + backward of a TRAIN layer with masks keeping `density` of the weights."""
    glibc_rand.reset()
    layer = create_layer(layer_param(text), TRAIN)
    bottom, top = [make_blob(shape, seed=seed)], [Blob(())]
    layer.setup(bottom, top)
    rng = np.random.default_rng(seed + 1)
    for j in (0, 1):
        layer.blobs[j].data[...] = rng.standard_normal(layer.blobs[j].shape)
    layer.blobs[2].data[...] = rng.random(layer.blobs[2].shape) < density
    for j in (0, 1):
        layer.blobs[j].diff[...] = rng.standard_normal(layer.blobs[j].shape)  # accumulated onto
    thresholds = packing.TRAIN_CONV_DENSITY_THRESHOLD, packing.TRAIN_IP_DENSITY_THRESHOLD
    packing.TRAIN_CONV_DENSITY_THRESHOLD = packing.TRAIN_IP_DENSITY_THRESHOLD = 1.01 if sparse else 0.0
    try:
        layer.forward(bottom, top)
        assert (layer.train_csr is not None) == sparse
        top[0].diff[...] = rng.standard_normal(top[0].shape)
        layer.backward(top, [True], bottom)
    finally:
        packing.TRAIN_CONV_DENSITY_THRESHOLD, packing.TRAIN_IP_DENSITY_THRESHOLD = thresholds
    return [top[0].data.copy(), bottom[0].diff.copy(), layer.blobs[0].diff.copy(), layer.blobs[1].diff.copy()]


def _close(got, want):
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * max(float(np.abs(w).max()), 1e-30))


@pytest.mark.parametrize("kernel, stride, pad, dilation, shape, batch_inner", [
    (5, 1, 0, 1, (3, 4, 12, 12), True),    # LeNet conv2-like: batch-innermost kernels
    (5, 1, 0, 1, (1, 4, 12, 12), True),    # a batch of one image
    (3, 2, 1, 1, (2, 2, 9, 7), False),     # padding and stride, column path
    (3, 2, 1, 1, (5, 8, 9, 9), True),      # padding and stride, batch-innermost
    (3, 1, 2, 2, (2, 6, 8, 7), True),      # dilation and padding, batch-innermost
    (2, 1, 0, 1, (70, 1, 6, 6), False),    # one channel, many images: the stride-1 direct kernel, per-image GEMMs
    (3, 1, 1, 2, (4, 1, 9, 8), False),     # stride 1 with padding and dilation, one channel
])
@pytest.mark.parametrize("density", [0.0, 0.05, 0.4])
@pytest.mark.parametrize("band_floats", [1 << 18, 1])  # 1: the weight gradient one output row at a time
def test_conv_sparse_path_matches_dense(kernel, stride, pad, dilation, shape, batch_inner, density, band_floats,
                                        monkeypatch):
    monkeypatch.setattr(conv_paths, "WEIGHT_GRAD_BAND_FLOATS", band_floats)
    text = CONV.format(kernel=kernel, stride=stride, pad=pad, dilation=dilation)
    layer = create_layer(layer_param(text), TRAIN)
    layer.setup([make_blob(shape)], [Blob(())])
    assert conv_paths.SparseBatchInner.suits(layer.shape) == batch_inner
    _close(_run(text, shape, density, sparse=True), _run(text, shape, density, sparse=False))


@pytest.mark.parametrize("shape", [(1, 3, 2, 5), (16, 30)])
@pytest.mark.parametrize("density", [0.0, 0.05, 0.4])
def test_inner_product_sparse_path_matches_dense(shape, density):
    _close(_run(IP, shape, density, sparse=True), _run(IP, shape, density, sparse=False))


def test_dense_masks_stay_on_the_dense_path():
    got = _run(IP, (4, 30), 1.0, sparse=False)
    glibc_rand.reset()
    layer = create_layer(layer_param(IP), TRAIN)
    bottom, top = [make_blob((4, 30))], [Blob(())]
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    assert layer.train_csr is None and got[0].shape == (4, 9)


@pytest.mark.parametrize("bottoms", [1, 2])
@pytest.mark.parametrize("write_between", [False, True])
def test_batch_inner_backward_reuses_forward_copy_only_when_the_bottom_is_unchanged(bottoms, write_between):
    """Backward reuses forward's batch-innermost copy of the bottom unless it was written since
    (a second bottom, or a write between the passes): the weight gradient is always that of the
    bottom's values at backward, as Caffe computes it."""
    text = CONV.format(kernel=5, stride=1, pad=0, dilation=1)
    shape = (3, 4, 12, 12)
    glibc_rand.reset()
    layer = create_layer(layer_param(text), TRAIN)
    bottom = [make_blob(shape, seed=k) for k in range(bottoms)]
    top = [Blob(()) for _ in range(bottoms)]
    layer.setup(bottom, top)
    rng = np.random.default_rng(5)
    layer.blobs[2].data[...] = rng.random(layer.blobs[2].shape) < 0.1
    thresholds = packing.TRAIN_CONV_DENSITY_THRESHOLD
    packing.TRAIN_CONV_DENSITY_THRESHOLD = 1.01
    try:
        layer.forward(bottom, top)
        path = layer.compute_path(layer.train_csr)
        assert isinstance(path, conv_paths.SparseBatchInner)
        if write_between:
            bottom[-1].data[...] = rng.standard_normal(shape)
        for t in top:
            t.diff[...] = rng.standard_normal(t.shape)
        layer.blobs[0].diff[...] = 0
        layer.backward(top, [True] * bottoms, bottom)
        got = layer.blobs[0].diff.copy()
        # the same backward with every copy made afresh
        path.images_source = (None, None)
        layer.blobs[0].diff[...] = 0
        layer.backward(top, [True] * bottoms, bottom)
        np.testing.assert_array_equal(got, layer.blobs[0].diff)
    finally:
        packing.TRAIN_CONV_DENSITY_THRESHOLD = thresholds
