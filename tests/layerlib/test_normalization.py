"""BatchNorm, Scale, Bias, MVN, LRN: hand-computed forwards, statistics, gradients."""
import numpy as np
import pytest

from gradient_check import check_gradient, check_gradient_exhaustive
from helpers import layer_param, make_blob
from npcaffe.blob import Blob
from npcaffe.errors import NetError
from npcaffe.layer import TEST, TRAIN, create_layer


def make(text, phase=TRAIN):
    return create_layer(layer_param(f'name: "n" {text}'), phase)


def forward(layer, bottom, top=None):
    top = top or [Blob((), name="t")]
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    return top[0]


# -- BatchNorm --------------------------------------------------------------------------

def test_batchnorm_train_forward_and_running_stats():
    x = make_blob((3, 2, 2, 2), seed=1)
    layer = make('type: "BatchNorm" batch_norm_param { moving_average_fraction: 0.9 eps: 1e-5 }')
    top = forward(layer, [x])
    v = x.data.astype(np.float64)
    mean = v.mean(axis=(0, 2, 3))
    var = v.var(axis=(0, 2, 3))
    expected = (v - mean[None, :, None, None]) / np.sqrt(var + 1e-5)[None, :, None, None]
    np.testing.assert_allclose(top.data, expected, rtol=1e-5, atol=1e-6)
    m = 12
    np.testing.assert_allclose(layer.blobs[0].data, mean, rtol=1e-5)
    np.testing.assert_allclose(layer.blobs[1].data, var * m / (m - 1), rtol=1e-5)
    assert layer.blobs[2].data[0] == 1
    layer.forward([x], [top])
    assert layer.blobs[2].data[0] == pytest.approx(1.9)
    np.testing.assert_allclose(layer.blobs[0].data, 1.9 * mean, rtol=1e-5)
    # the setup gave the statistics lr_mult 0, as upstream
    assert [p.lr_mult for p in layer.layer_param.param] == [0, 0, 0]


def test_batchnorm_global_stats_forward():
    x = make_blob((2, 3, 2), seed=2)
    layer = make('type: "BatchNorm"', TEST)  # TEST phase: use_global_stats by default
    top = Blob(())
    layer.setup([x], [top])
    layer.blobs[0].data[...] = [2.0, 4.0, 6.0]
    layer.blobs[1].data[...] = [8.0, 2.0, 0.5]
    layer.blobs[2].data[...] = 2.0
    layer.forward([x], [top])
    mean = np.array([1.0, 2.0, 3.0])[None, :, None]
    var = np.array([4.0, 1.0, 0.25])[None, :, None]
    np.testing.assert_allclose(top.data, (x.data - mean) / np.sqrt(var + 1e-5), rtol=1e-5)
    layer.blobs[2].data[...] = 0  # scale factor 0 means stats 0
    layer.forward([x], [top])
    np.testing.assert_allclose(top.data, x.data / np.sqrt(1e-5), rtol=1e-5)


@pytest.mark.parametrize("phase, shape", [(TRAIN, (3, 2, 2, 3)), (TEST, (2, 3, 2)), (TRAIN, (4, 3))])
def test_batchnorm_gradient(phase, shape):
    layer = make('type: "BatchNorm"', phase)
    x = make_blob(shape, seed=3)
    if phase == TEST:
        layer.setup([x], [Blob(())])
        for b, v in zip(layer.blobs, (0.3, 0.8, 1.0)):
            b.data[...] = v
    check_gradient(layer, [x], [Blob(())], param_blobs=False, setup=(phase == TRAIN), threshold=5e-3)


def test_batchnorm_in_place_matches():
    dy = make_blob((2, 3, 4), seed=9).data.copy()
    out = []
    for in_place in (False, True):
        layer = make('type: "BatchNorm"')
        x = make_blob((2, 3, 4), seed=8)
        top = x if in_place else Blob(())
        layer.setup([x], [top])
        layer.forward([x], [top])
        y = top.data.copy()
        top.diff[...] = dy
        layer.backward([top], [True], [x])
        out.append((y, x.diff.copy()))
    for a, b in zip(*out):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_batchnorm_rejects_learned_statistics():
    with pytest.raises(NetError, match=r"layer 'n' \(BatchNorm\): param 1 has lr_mult 1"):
        forward(make('type: "BatchNorm" param { lr_mult: 0 } param { lr_mult: 1 }'), [make_blob((2, 3))])


# -- Scale / Bias ----------------------------------------------------------------------------

def test_scale_and_bias_hand_values():
    x = make_blob((2, 3, 2), seed=4)
    layer = make('type: "Scale" scale_param { bias_term: true }')
    top = Blob(())
    layer.setup([x], [top])
    assert [b.shape for b in layer.blobs] == [(3,), (3,)]
    np.testing.assert_array_equal(layer.blobs[0].data, 1)  # identity by default
    layer.blobs[0].data[...] = [1.0, -2.0, 0.5]
    layer.blobs[1].data[...] = [0.0, 1.0, 3.0]
    layer.forward([x], [top])
    np.testing.assert_allclose(top.data, x.data * [[[1.0], [-2.0], [0.5]]] + [[[0.0], [1.0], [3.0]]], rtol=1e-6)
    s = make_blob((3, 2), seed=5)
    top = forward(make('type: "Scale" scale_param { axis: 1 }'), [x, s])
    np.testing.assert_allclose(top.data, x.data * s.data[None], rtol=1e-6)
    top = forward(make('type: "Bias" bias_param { axis: 0 num_axes: -1 }'), [x, make_blob((2, 3, 2), seed=6)])
    np.testing.assert_allclose(top.data, x.data + make_blob((2, 3, 2), seed=6).data, rtol=1e-6)


@pytest.mark.parametrize("text, two", [
    ('type: "Scale" scale_param { filler { type: "uniform" } }', False),
    ('type: "Scale" scale_param { axis: 0 num_axes: 2 bias_term: true filler { type: "uniform" } '
     'bias_filler { type: "uniform" } }', False),
    ('type: "Scale" scale_param { num_axes: 0 filler { type: "uniform" } }', False),
    ('type: "Scale" scale_param { num_axes: -1 filler { type: "uniform" } }', False),
    ('type: "Scale" scale_param { axis: 1 bias_term: true }', True),
    ('type: "Bias" bias_param { filler { type: "uniform" } }', False),
    ('type: "Bias" bias_param { axis: 1 }', True),
])
def test_affine_gradients(text, two):
    x = make_blob((2, 3, 2), seed=7)
    bottoms = [x] + ([make_blob((3, 2), seed=8)] if two else [])
    check_gradient_exhaustive(make(text), bottoms, [Blob(())])


def test_scale_in_place_gradient():
    layer = make('type: "Scale" scale_param { bias_term: true filler { type: "uniform" } }')
    x = make_blob((2, 3, 2), seed=11)
    layer.setup([x], [x])
    layer.forward([x], [x])
    y = x.data.copy()
    x.diff[...] = 1
    layer.backward([x], [True], [x])
    ref = make('type: "Scale" scale_param { bias_term: true }')
    x2, t2 = make_blob((2, 3, 2), seed=11), Blob(())
    ref.setup([x2], [t2])
    ref.blobs[0].data[...] = layer.blobs[0].data
    ref.forward([x2], [t2])
    t2.diff[...] = 1
    ref.backward([t2], [True], [x2])
    np.testing.assert_allclose(y, t2.data, rtol=1e-6)
    np.testing.assert_allclose(layer.blobs[0].diff, ref.blobs[0].diff, rtol=1e-5)
    np.testing.assert_allclose(layer.blobs[1].diff, ref.blobs[1].diff, rtol=1e-5)


def test_scale_shape_mismatch():
    with pytest.raises(NetError, match=r"layer 'n' \(Scale\): parameter shape \(4,\) does not match bottom"):
        forward(make('type: "Scale"'), [make_blob((2, 3, 2)), make_blob((4,))])


# -- MVN ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("param", ["", "normalize_variance: false", "across_channels: true"])
def test_mvn(param):
    x = make_blob((2, 3, 2, 3), seed=12)
    top = forward(make(f'type: "MVN" mvn_param {{ {param} }}'), [x])
    v = x.data.astype(np.float64)
    axes = (1, 2, 3) if "across" in param else (2, 3)
    expected = v - v.mean(axis=axes, keepdims=True)
    if "false" not in param:
        expected /= np.sqrt((expected ** 2).mean(axis=axes, keepdims=True)) + 1e-9
    np.testing.assert_allclose(top.data, expected, rtol=1e-5, atol=1e-6)
    check_gradient(make(f'type: "MVN" mvn_param {{ {param} }}'), [x], [Blob(())], threshold=5e-3)


# -- LRN ----------------------------------------------------------------------------------------

def test_lrn_across_hand_values():
    # One pixel, 3 channels, local_size 3: scale_c = k + alpha/3 * (sum of squares of c-1..c+1).
    x = Blob((1, 3, 1, 1))
    x.data[...] = np.array([1.0, 2.0, 3.0]).reshape(1, 3, 1, 1)
    top = forward(make('type: "LRN" lrn_param { local_size: 3 alpha: 3 beta: 0.5 k: 2 }'), [x])
    scale = 2 + np.array([1 + 4, 1 + 4 + 9, 4 + 9])
    np.testing.assert_allclose(top.data.ravel(), [1, 2, 3] / np.sqrt(scale), rtol=1e-6)


def test_lrn_within_hand_values():
    # 3x3 image, local_size 3: centre window is the whole image, corner windows hold 4 pixels.
    x = Blob((1, 1, 3, 3))
    x.data[...] = np.arange(1, 10, dtype=np.float32).reshape(1, 1, 3, 3)
    top = forward(make('type: "LRN" lrn_param { local_size: 3 alpha: 9 beta: 1 k: 100 norm_region: WITHIN_CHANNEL }'), [x])
    v = x.data[0, 0].astype(np.float64)
    centre = 5 / (1 + (v ** 2).sum())  # alpha / size^2 = 1, k ignored
    corner = 1 / (1 + (1 + 4 + 16 + 25))
    assert top.data[0, 0, 1, 1] == pytest.approx(centre, rel=1e-6)
    assert top.data[0, 0, 0, 0] == pytest.approx(corner, rel=1e-6)


@pytest.mark.parametrize("param", ["local_size: 3 alpha: 1.5 beta: 0.75 k: 1.2",
                                   "local_size: 5",
                                   "local_size: 3 alpha: 1.5 beta: 0.75 norm_region: WITHIN_CHANNEL"])
def test_lrn_gradient(param):
    x = make_blob((2, 7, 3, 3), seed=3)
    check_gradient_exhaustive(make(f'type: "LRN" lrn_param {{ {param} }}'), [x], [Blob(())], threshold=2e-3)


def test_lrn_even_local_size_is_an_error():
    with pytest.raises(NetError, match=r"layer 'n' \(LRN\): lrn_param.local_size must be odd.*got 4"):
        forward(make('type: "LRN" lrn_param { local_size: 4 }'), [make_blob((1, 3, 2, 2))])
    with pytest.raises(NetError, match=r"must have 4 axes.*\(2, 3\)"):
        forward(make('type: "LRN"'), [make_blob((2, 3))])
