"""EuclideanLoss, SigmoidCrossEntropyLoss, HingeLoss, MultinomialLogisticLoss, InfogainLoss, ContrastiveLoss."""
import numpy as np
import pytest

from gradient_check import check_gradient, check_gradient_exhaustive
from helpers import layer_param, make_blob
from npcaffe.blob import Blob
from npcaffe.errors import NetError
from npcaffe.layer import create_layer
from npcaffe.proto import caffe_pb2


def make(text):
    return create_layer(layer_param(f'name: "l" {text}'))


def blob_of(values):
    b = Blob(np.shape(values), name="b")
    b.data[...] = values
    return b


def loss_of(layer, bottom, ntop=1):
    top = [Blob(()) for _ in range(ntop)]
    layer.setup(bottom, top)
    return float(layer.forward(bottom, top)), top


def labels(n, k, seed=0):
    return blob_of(np.random.default_rng(seed).integers(0, k, n).astype(np.float32))


def test_euclidean():
    a, b = make_blob((3, 2, 2), seed=1), make_blob((3, 2, 2), seed=2)
    loss, _ = loss_of(make('type: "EuclideanLoss"'), [a, b])
    assert loss == pytest.approx(((a.data - b.data) ** 2).sum() / 3 / 2, rel=1e-6)
    check_gradient(make('type: "EuclideanLoss" loss_weight: 3'), [a, b], [Blob(())])
    with pytest.raises(NetError, match="same dimension per item"):
        loss_of(make('type: "EuclideanLoss"'), [a, make_blob((3, 5))])


@pytest.mark.parametrize("norm", ["", "loss_param { normalization: VALID ignore_label: -1 }",
                                  "loss_param { normalize: true }"])
def test_sigmoid_cross_entropy(norm):
    x = make_blob((4, 3), low=-5, high=5, seed=3)
    t = blob_of((np.random.default_rng(4).random((4, 3)) > 0.5).astype(np.float32))
    if "ignore" in norm:
        t.data[0, :2] = -1
    loss, _ = loss_of(make(f'type: "SigmoidCrossEntropyLoss" {norm}'), [x, t])
    v, tv = x.data.astype(np.float64), t.data.astype(np.float64)
    keep = tv != -1
    p = 1 / (1 + np.exp(-v))
    terms = -(tv * np.log(p) + (1 - tv) * np.log(1 - p))
    denominator = keep.sum() if norm else 4
    assert loss == pytest.approx(terms[keep].sum() / denominator, rel=1e-5)
    check_gradient_exhaustive(make(f'type: "SigmoidCrossEntropyLoss" loss_weight: 2 {norm}'), [x, t], [Blob(())],
                              check_bottom=0)


@pytest.mark.parametrize("norm", ["L1", "L2"])
def test_hinge(norm):
    x = make_blob((5, 4), low=-2, high=2, seed=5)
    y = labels(5, 4, seed=6)
    loss, _ = loss_of(make(f'type: "HingeLoss" hinge_loss_param {{ norm: {norm} }}'), [x, y])
    s = np.ones((5, 4))
    s[np.arange(5), y.data.astype(int)] = -1
    t = np.maximum(0, 1 + s * x.data)
    expected = (t.sum() if norm == "L1" else (t ** 2).sum()) / 5
    assert loss == pytest.approx(expected, rel=1e-5)
    check_gradient(make(f'type: "HingeLoss" hinge_loss_param {{ norm: {norm} }}'), [x, y], [Blob(())],
                   check_bottom=0, kink=1.0, kink_range=0.02, threshold=2e-3)


def test_multinomial_logistic():
    p = make_blob((4, 5), low=0.1, high=1.0, seed=7)
    y = labels(4, 5, seed=8)
    loss, _ = loss_of(make('type: "MultinomialLogisticLoss"'), [p, y])
    assert loss == pytest.approx(-np.log(p.data[np.arange(4), y.data.astype(int)]).sum() / 4, rel=1e-5)
    check_gradient(make('type: "MultinomialLogisticLoss"'), [p, y], [Blob(())], check_bottom=0,
                   stepsize=1e-3, threshold=1e-2)
    y.data[2] = 9
    with pytest.raises(NetError, match=r"label 9 at position \(2,\).*\[0, 5\)"):
        loss_of(make('type: "MultinomialLogisticLoss"'), [p, y])


def softmax(x, axis=1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_infogain_with_matrix_bottom_and_source(tmp_path):
    x = make_blob((4, 3), seed=9)
    y = labels(4, 3, seed=10)
    h = make_blob((3, 3), low=0, high=1, seed=11)
    loss, tops = loss_of(make('type: "InfogainLoss" loss_weight: 1 loss_weight: 0'), [x, y, h], ntop=2)
    p = softmax(x.data.astype(np.float64))
    expected = -(h.data[y.data.astype(int)] * np.log(p)).sum() / 4
    assert loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(tops[1].data, p, rtol=1e-5)
    check_gradient_exhaustive(make('type: "InfogainLoss"'), [x, y, h], [Blob(())], check_bottom=0)
    proto = caffe_pb2.BlobProto()
    proto.shape.dim.extend([1, 1, 3, 3])
    proto.data.extend(h.data.ravel().tolist())
    path = tmp_path / "h.binaryproto"
    path.write_bytes(proto.SerializeToString())
    loss2, _ = loss_of(make(f'type: "InfogainLoss" infogain_loss_param {{ source: "{path}" }}'), [x, y])
    assert loss2 == pytest.approx(loss, rel=1e-6)


def test_infogain_ignore_label_and_errors():
    x, y, h = make_blob((4, 3), seed=9), labels(4, 3, seed=10), blob_of(np.eye(3, dtype=np.float32))
    y.data[1] = 7
    loss, _ = loss_of(make('type: "InfogainLoss" loss_param { ignore_label: 7 }'), [x, y, h])
    p = softmax(x.data.astype(np.float64))
    keep = [0, 2, 3]
    assert loss == pytest.approx(-np.log(p[keep, y.data[keep].astype(int)]).sum() / 3, rel=1e-5)
    with pytest.raises(NetError, match="must be 3 x 3"):
        loss_of(make('type: "InfogainLoss"'), [x, y, make_blob((2, 2))])
    with pytest.raises(NetError, match="infogain_loss_param.source"):
        loss_of(make('type: "InfogainLoss"'), [x, y])


@pytest.mark.parametrize("legacy", [False, True])
def test_contrastive(legacy):
    a, b = make_blob((6, 3, 1, 1), seed=12), make_blob((6, 3, 1, 1), seed=13)
    sim = blob_of(np.array([1, 0, 1, 0, 0, 1], np.float32).reshape(6, 1, 1, 1))
    text = f'type: "ContrastiveLoss" contrastive_loss_param {{ margin: 1.5 legacy_version: {str(legacy).lower()} }}'
    loss, _ = loss_of(make(text), [a, b, sim])
    d2 = ((a.data - b.data) ** 2).reshape(6, -1).sum(1).astype(np.float64)
    s = sim.data.ravel() != 0
    dis = np.maximum(1.5 - d2, 0) if legacy else np.maximum(1.5 - np.sqrt(d2), 0) ** 2
    assert loss == pytest.approx(np.where(s, d2, dis).sum() / 12, rel=1e-5)
    for i in (0, 1):
        check_gradient(make(text), [a, b, sim], [Blob(())], check_bottom=i, threshold=1e-2 if not legacy else 1e-3)
