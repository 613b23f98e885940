import numpy as np
import pytest

from npcaffe import rng
from npcaffe.blob import Blob
from npcaffe.errors import NetError
from npcaffe.filler import fill
from npcaffe.proto import caffe_pb2


def filler(**kw):
    return caffe_pb2.FillerParameter(**kw)


def filled(shape, **kw):
    b = Blob(shape)
    fill(b, filler(**kw))
    return b.data


def test_constant():
    assert np.all(filled((2, 3, 4, 5), type="constant", value=0.25) == np.float32(0.25))


def test_uniform_range():
    d = filled((2, 3, 40, 5), type="uniform", min=-0.3, max=0.7)
    assert d.min() >= -0.3 and d.max() <= 0.7 and d.std() > 0.2


def test_gaussian_moments_and_sparse():
    d = filled((200, 100), type="gaussian", mean=1.0, std=2.0)
    assert d.mean() == pytest.approx(1.0, abs=0.05) and d.std() == pytest.approx(2.0, rel=0.03)
    # sparse: each weight kept with probability sparse / num_outputs
    s = filled((50, 1000), type="gaussian", std=1.0, sparse=5)
    assert (s != 0).mean() == pytest.approx(5 / 50, rel=0.1)


def test_positive_unitball_rows_sum_to_one():
    d = filled((4, 3, 2, 5), type="positive_unitball")
    assert np.all(d >= 0)
    np.testing.assert_allclose(d.reshape(4, -1).sum(axis=1), 1, rtol=1e-5)


@pytest.mark.parametrize("norm,n", [(caffe_pb2.FillerParameter.FAN_IN, 3 * 5 * 5),
                                    (caffe_pb2.FillerParameter.FAN_OUT, 64 * 5 * 5),
                                    (caffe_pb2.FillerParameter.AVERAGE, (3 * 25 + 64 * 25) / 2)])
def test_xavier_and_msra_scales(norm, n):
    x = filled((64, 3, 5, 5), type="xavier", variance_norm=norm)
    bound = np.sqrt(3.0 / n)
    assert np.abs(x).max() <= bound * (1 + 1e-6) and np.abs(x).max() > 0.95 * bound
    m = filled((64, 3, 5, 5), type="msra", variance_norm=norm)
    assert m.std() == pytest.approx(np.sqrt(2.0 / n), rel=0.05)


def test_bilinear_kernel():
    d = filled((1, 1, 4, 4), type="bilinear")
    # f = 2, c = 0.75: one axis is [0.25, 0.75, 0.75, 0.25]
    w1 = np.array([0.25, 0.75, 0.75, 0.25], dtype=np.float32)
    np.testing.assert_allclose(d[0, 0], np.outer(w1, w1))
    with pytest.raises(NetError, match="square"):
        filled((1, 1, 3, 4), type="bilinear")


def test_seeded_fills_repeat():
    rng.set_random_seed(7)
    a = filled((10, 10), type="gaussian")
    rng.set_random_seed(7)
    b = filled((10, 10), type="gaussian")
    assert np.array_equal(a, b)


def test_unknown_filler_and_unsupported_sparse():
    with pytest.raises(NetError, match="unknown filler type 'gausian'"):
        filled((2, 2), type="gausian")
    with pytest.raises(NetError, match="does not support 'sparse'"):
        filled((2, 2), type="xavier", sparse=3)
