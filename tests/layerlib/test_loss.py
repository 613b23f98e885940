"""SoftmaxWithLoss, Accuracy, EuclideanLoss, SigmoidCrossEntropyLoss, HingeLoss, MultinomialLogisticLoss,
InfogainLoss, ContrastiveLoss: hand values, normalizations, gradients, tie-breaking, errors."""
import numpy as np
import pytest

from gradient_check import check_gradient, check_gradient_exhaustive
from helpers import layer_param, make_blob
from npcaffe.blob import Blob
from npcaffe.errors import NetError
from npcaffe.kernels import accuracy as A
from npcaffe.kernels import softmax as K
from npcaffe.layer import create_layer
from npcaffe.proto import caffe_pb2


def loss_layer(extra=""):
    return create_layer(layer_param(f'name: "loss" type: "SoftmaxWithLoss" {extra}'))


def acc_layer(extra=""):
    return create_layer(layer_param(f'name: "acc" type: "Accuracy" {extra}'))


def labels(values, shape=None):
    values = np.asarray(values, np.float32)
    b = Blob(values.shape if shape is None else shape)
    b.flat_data[:] = values.ravel()
    return b


def scores(values):
    values = np.asarray(values, np.float32)
    b = Blob(values.shape)
    b.data[...] = values
    return b


def run(layer, bottom, ntop=1):
    top = [Blob(()) for _ in range(ntop)]
    layer.setup(bottom, top)
    loss = layer.forward(bottom, top)
    return top, loss


def reference_loss(x, lab, axis=1, ignore=None):
    """-log softmax at the labels, float64, per position; NaN where ignored."""
    x = np.moveaxis(x.astype(np.float64), axis, -1)
    logp = x - x.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    lab = lab.reshape(x.shape[:-1]).astype(int)
    keep = lab != ignore
    picked = np.take_along_axis(logp, np.where(keep, lab, 0)[..., None], -1)[..., 0]
    return np.where(keep, -picked, np.nan)


# -- SoftmaxWithLoss -------------------------------------------------------------

def test_softmax_loss_hand_value():
    # Row 0: softmax(0, ln 3) = (1/4, 3/4), label 1 -> -ln(3/4); row 1: uniform, label 0 -> ln 2.
    x = scores([[0, np.log(3)], [5, 5]])
    (top,), loss = run(loss_layer(), [x, labels([1, 0])])
    expected = (-np.log(0.75) + np.log(2)) / 2
    assert top.shape == ()
    np.testing.assert_allclose(top.data, expected, rtol=1e-6)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)  # default loss_weight 1


def test_softmax_loss_spatial_and_axis():
    x = make_blob((2, 4, 3, 2), low=-3, high=3)
    lab = np.random.default_rng(1).integers(0, 4, 12)
    (top,), _ = run(loss_layer(), [x, labels(lab, (2, 1, 3, 2))])
    np.testing.assert_allclose(top.data, reference_loss(x.data, lab).mean(), rtol=1e-5)
    lab = np.random.default_rng(2).integers(0, 2, 24)
    (top,), _ = run(loss_layer("softmax_param { axis: -1 }"), [x, labels(lab, (2, 4, 3))])
    np.testing.assert_allclose(top.data, reference_loss(x.data, lab, axis=-1).mean(), rtol=1e-5)


NORMS = {"": "VALID", "normalization: FULL": "FULL", "normalization: BATCH_SIZE": "BATCH_SIZE",
         "normalization: NONE": "NONE", "normalize: false": "BATCH_SIZE", "normalize: true": "VALID",
         "normalization: VALID normalize: false": "VALID"}


@pytest.mark.parametrize("extra, mode", NORMS.items())
def test_softmax_loss_normalization(extra, mode):
    x = make_blob((3, 5, 2), low=-2, high=2)
    lab = np.array([0, 4, 2, 1, 3, 3], np.float32)
    (top,), _ = run(loss_layer(f"loss_param {{ {extra} ignore_label: 3 }}"), [x, labels(lab, (3, 2))])
    per = reference_loss(x.data, lab, ignore=3)
    norm = {"VALID": 4, "FULL": 6, "BATCH_SIZE": 3, "NONE": 1}[mode]
    np.testing.assert_allclose(top.data, np.nansum(per) / norm, rtol=1e-5)


@pytest.mark.parametrize("extra", [""] + list(NORMS)[1:4])
@pytest.mark.parametrize("ignore", ["", "ignore_label: 2"])
def test_softmax_loss_gradient(extra, ignore):
    x = make_blob((3, 4, 2), low=-2, high=2)
    lab = labels([0, 2, 3, 1, 2, 3], (3, 2))
    check_gradient_exhaustive(loss_layer(f"loss_param {{ {extra} {ignore} }}"), [x, lab], [Blob(())], check_bottom=0)


def test_softmax_loss_backward_formula_and_weight():
    x = make_blob((4, 3))
    lab = labels([0, 2, 1, 2])
    layer = loss_layer("loss_weight: 3 loss_param { ignore_label: 1 }")
    (top,), loss = run(layer, [x, lab])
    np.testing.assert_allclose(loss, 3 * top.data, rtol=1e-6)
    layer.backward([top], [True, False], [x, lab])
    p = np.exp(x.data.astype(np.float64))
    p /= p.sum(1, keepdims=True)
    p[np.arange(4), [0, 2, 1, 2]] -= 1
    p[2] = 0
    # loss_weight 3 over the normalizer, 3 non-ignored labels
    np.testing.assert_allclose(x.diff, p * 3 / 3, rtol=1e-5, atol=1e-7)


def test_softmax_loss_all_ignored_is_zero():
    layer = loss_layer("loss_param { ignore_label: 1 }")
    x, lab = make_blob((2, 3)), labels([1, 1])
    (top,), _ = run(layer, [x, lab])
    assert top.data == 0
    layer.backward([top], [True, False], [x, lab])
    assert not x.diff.any()


def test_softmax_loss_tiny_probability_is_clamped():
    (top,), _ = run(loss_layer("loss_param { normalization: NONE }"), [scores([[0, 200]]), labels([0])])
    np.testing.assert_allclose(top.data, -np.log(np.finfo(np.float32).tiny), rtol=1e-6)


def test_softmax_loss_labels_truncate_toward_zero():
    x = make_blob((2, 3))
    (a,), _ = run(loss_layer(), [x, labels([1.9, 2.5])])
    (b,), _ = run(loss_layer(), [x, labels([1, 2])])
    assert a.data == b.data


def test_softmax_loss_prob_top():
    x = make_blob((2, 3, 2))
    top, _ = run(loss_layer("loss_weight: 1 loss_weight: 0"), [x, labels([0, 1, 2, 0], (2, 2))], ntop=2)
    p = np.exp(x.data.astype(np.float64))
    np.testing.assert_allclose(top[1].data, p / p.sum(1, keepdims=True), rtol=1e-6)
    with pytest.raises(NetError, match="one loss_weight per top"):
        run(loss_layer(), [x, labels([0, 1, 2, 0], (2, 2))], ntop=2)


def test_softmax_loss_errors():
    x = make_blob((2, 3))
    with pytest.raises(NetError, match=r"label 3 at position \(1,\).*\[0, 3\)"):
        run(loss_layer(), [x, labels([0, 3])])
    with pytest.raises(NetError, match=r"label -1 "):
        run(loss_layer("loss_param { ignore_label: 5 }"), [x, labels([-1, 0])])
    with pytest.raises(NetError, match="one label per prediction"):
        run(loss_layer(), [make_blob((2, 3, 2)), labels([0, 1])])
    with pytest.raises(NetError, match="first"):
        run(loss_layer(), [x, labels([0, 1, 1])])
    with pytest.raises(NetError, match="loss_weight"):
        run(loss_layer("loss_weight: 1 loss_weight: 1"), [x, labels([0, 1])])
    layer = loss_layer()
    (top,), _ = run(layer, [x, labels([0, 1])])
    assert not layer.allow_force_backward(1) and layer.allow_force_backward(0)
    with pytest.raises(NetError, match="label input"):
        layer.backward([top], [True, True], [x, labels([0, 1])])


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 7, 5), (6, 10, 1)])
def test_softmax_loss_kernels_match_reference(shape):
    rng = np.random.default_rng(4)
    prob = rng.uniform(0, 1, shape).astype(np.float32)
    prob[0, 0, 0] = 0  # hits the FLT_MIN clamp when labelled 0
    lab = rng.integers(0, shape[1], (shape[0], shape[2])).astype(np.float32)
    lab[0, 0] = 0
    lab.flat[-1] = 99
    for has_ignore in (False, True):
        fast = K.softmax_loss_forward(prob, lab, has_ignore, 99)
        ref = K.softmax_loss_forward_ref(prob, lab, has_ignore, 99)
        assert fast[2] == ref[2]
        if has_ignore:
            assert fast[1] == ref[1]
            np.testing.assert_allclose(fast[0], ref[0], rtol=1e-5)
            d1, d2 = np.empty_like(prob), np.empty_like(prob)
            assert K.softmax_loss_backward(prob, lab, True, 99, d1) == K.softmax_loss_backward_ref(prob, lab, True, 99, d2)
            np.testing.assert_array_equal(d1, d2)
        else:
            assert fast[2] == lab.size - 1


# -- Accuracy -------------------------------------------------------------------

S = [[0.1, 0.5, 0.3, 0.2],
     [0.9, 0.05, 0.03, 0.02],
     [0.2, 0.2, 0.5, 0.1],
     [0.3, 0.1, 0.4, 0.2]]


@pytest.mark.parametrize("top_k, expected", [(1, 2 / 4), (2, 3 / 4), (3, 1.0)])
def test_accuracy_top_k(top_k, expected):
    # Labels 1, 0, 0, 0: the true class is beaten by 0, 0, 2 (class 2 and the tied class 1), 1 classes.
    top, loss = run(acc_layer(f"accuracy_param {{ top_k: {top_k} }}"), [scores(S), labels([1, 0, 0, 0])])
    np.testing.assert_allclose(top[0].data, expected)
    assert loss == 0


def test_accuracy_ignore_and_per_class():
    top, _ = run(acc_layer("accuracy_param { ignore_label: 2 }"), [scores(S), labels([1, 2, 2, 0])], ntop=2)
    np.testing.assert_allclose(top[0].data, 1 / 2)  # rows 0 (hit) and 3 (miss) count
    np.testing.assert_allclose(top[1].data, [0, 1, 0, 0])
    top, _ = run(acc_layer("accuracy_param { ignore_label: 2 }"), [scores(S), labels([2, 2, 2, 2])], ntop=2)
    assert top[0].data == 0 and not top[1].data.any()


def test_accuracy_spatial_axis():
    x = make_blob((2, 3, 4))
    lab = np.random.default_rng(0).integers(0, 3, 8)
    top, _ = run(acc_layer(), [x, labels(lab, (2, 4))])
    np.testing.assert_allclose(top[0].data, np.mean(x.data.argmax(1).ravel() == lab))
    lab = np.random.default_rng(0).integers(0, 4, 6)
    top, _ = run(acc_layer("accuracy_param { axis: 2 }"), [x, labels(lab, (2, 3))])
    np.testing.assert_allclose(top[0].data, np.mean(x.data.argmax(2).ravel() == lab))


def bvlc_hit(row, label, top_k):
    """BVLC 1.0's rule: the other classes scoring >= the true class must number fewer than top_k."""
    row = np.asarray(row, np.float32)
    return np.sum(row >= row[label]) - 1 < top_k


@pytest.mark.parametrize("label, fork, bvlc", [(1, 1.0, False), (0, 0.0, False)])
def test_accuracy_ties_follow_the_fork(label, fork, bvlc):
    # Equal scores: the fork's sort puts the higher class index first; BVLC 1.0 counts ties against the label.
    top, _ = run(acc_layer(), [scores([[1.0, 1.0]]), labels([label])])
    assert top[0].data == fork
    assert bvlc_hit([1.0, 1.0], label, 1) == bvlc
    top, _ = run(acc_layer("accuracy_param { top_k: 2 }"), [scores([[1.0, 1.0, 1.0]]), labels([label])])
    assert top[0].data == (1.0 if label == 1 else 0.0)  # class 2 and 1 beat class 0


def test_accuracy_errors():
    x = scores(S)
    with pytest.raises(NetError, match="top_k 5"):
        run(acc_layer("accuracy_param { top_k: 5 }"), [x, labels([0, 0, 0, 0])])
    with pytest.raises(NetError, match=r"label 4 at position \(2,\)"):
        run(acc_layer(), [x, labels([0, 0, 4, 0])])
    with pytest.raises(NetError, match="one label per prediction"):
        run(acc_layer(), [make_blob((4, 4, 2)), labels([0, 0, 0, 0])])
    layer = acc_layer()
    top, _ = run(layer, [x, labels([0, 0, 0, 0])])
    with pytest.raises(NetError, match="no backward"):
        layer.backward(top, [True, False], [x, labels([0, 0, 0, 0])])


@pytest.mark.parametrize("shape, top_k", [((7, 5, 3), 1), ((9, 10, 1), 3), ((1, 1, 1), 1)])
def test_accuracy_kernel_matches_reference(shape, top_k):
    rng = np.random.default_rng(6)
    s = rng.integers(0, 3, shape).astype(np.float32)  # many ties
    lab = rng.integers(0, shape[1], (shape[0], shape[2])).astype(np.float32)
    lab.flat[0] = -1
    out = [np.zeros(shape[1], np.float32) for _ in range(4)]
    fast = A.accuracy_hits(s, lab, top_k, True, -1, out[0], out[1])
    ref = A.accuracy_hits_ref(s, lab, top_k, True, -1, out[2], out[3])
    assert fast == ref
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_array_equal(out[1], out[3])


# -- EuclideanLoss, SigmoidCrossEntropyLoss, HingeLoss, MultinomialLogisticLoss, InfogainLoss, ContrastiveLoss

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


def random_labels(n, k, seed=0):
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
    y = random_labels(5, 4, seed=6)
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
    y = random_labels(4, 5, seed=8)
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
    y = random_labels(4, 3, seed=10)
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
    x, y, h = make_blob((4, 3), seed=9), random_labels(4, 3, seed=10), blob_of(np.eye(3, dtype=np.float32))
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
