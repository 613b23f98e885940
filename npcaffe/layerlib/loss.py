"""Loss layers and the Accuracy layer that usually sits beside them: SoftmaxWithLoss, Accuracy,
EuclideanLoss, SigmoidCrossEntropyLoss, HingeLoss, MultinomialLogisticLoss, InfogainLoss,
ContrastiveLoss."""
import numpy as np

from ..blob import Blob
from ..errors import NetError
from ..kernels.accuracy import accuracy_hits
from ..kernels.softmax import softmax_loss_backward, softmax_loss_forward
from ..layer import Layer, register
from ..proto import caffe_pb2
from .common import SoftmaxLayer

_Norm = caffe_pb2.LossParameter


def _label_error(layer, label_blob, position, classes):
    index = np.unravel_index(position, label_blob.shape) if label_blob.shape else ()
    value = label_blob.flat_data[position]
    return NetError(
        f"layer '{layer.name}' ({layer.type}): label {value:g} at position {tuple(int(i) for i in index)} "
        f"of label blob {label_blob.shape} is not a class index in [0, {classes}); "
        "fix the labels, or set ignore_label to skip this value")


def _check_label_count(layer, bottom, axis, outer, inner):
    if outer * inner != bottom[1].count:
        raise NetError(
            f"layer '{layer.name}' ({layer.type}): {bottom[1].count} labels (shape {bottom[1].shape}) for "
            f"predictions of shape {bottom[0].shape} with class axis {axis}; there must be one label per "
            f"prediction, {outer * inner} here (e.g. N*H*W for (N, C, H, W) and axis 1)")


class LossLayer(Layer):
    """Base of loss layers (BVLC src/caffe/layers/loss_layer.cpp).

    Two bottoms (predictions, labels), a scalar top 0.  As Caffe's
    LossLayer::LayerSetUp, a layer given no loss_weight gets loss_weight 1 on
    its (single) top; the layer keeps its own copy of the parameter, as
    Caffe's layer_param_ is a copy.  The label bottom cannot take a gradient.
    """
    exact_num_bottom = 2
    exact_num_top = 1
    auto_top_blobs = True

    def layer_setup(self, bottom, top):
        if self.layer_param.loss_weight:
            return
        if len(top) > 1:
            # Caffe would add one weight and then fail SetLossWeights' count check.
            raise NetError(
                f"layer '{self.name}' ({self.type}) has {len(top)} tops and no loss_weight; give one "
                f"loss_weight per top, e.g. 'loss_weight: 1 loss_weight: 0'")
        param = caffe_pb2.LayerParameter()
        param.CopyFrom(self.layer_param)
        param.loss_weight.append(1.0)
        self.layer_param = param

    def reshape(self, bottom, top):
        if bottom[0].shape[:1] != bottom[1].shape[:1]:
            raise NetError(
                f"layer '{self.name}' ({self.type}): predictions {bottom[0].shape} and labels {bottom[1].shape} "
                "must have the same first (batch) dimension")
        top[0].reshape(())

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1


@register("SoftmaxWithLoss")
class SoftmaxWithLossLayer(LossLayer):
    """Softmax followed by multinomial logistic loss (BVLC src/caffe/layers/softmax_loss_layer.cpp).

    Shapes: bottom[0] scores, classes on softmax_param.axis (default 1),
    seen as (outer, C, inner); bottom[1] labels, outer * inner float values
    holding class indices; top[0] scalar loss; optional top[1] the softmax
    probabilities (shape of bottom[0]; shares the internal prob blob's data).

    Forward: prob = softmax(scores); loss = -sum over non-ignored positions of
    log(max(prob[label], FLT_MIN)), divided by the normalizer.
    Backward: bottom_diff = (prob - onehot(label)) * loss_weight / normalizer,
    and 0 at ignored positions.

    Normalizer (loss_param): VALID = number of non-ignored labels (default),
    BATCH_SIZE = outer, FULL = outer * inner, NONE = 1; never below 1 (so a
    batch with every label ignored gives loss 0, not NaN).  The legacy
    `normalize` bool applies only when `normalization` is unset: true means
    VALID, false BATCH_SIZE.  This is BVLC 1.0's rule, which we follow.  The
    DNS fork (mid-2015) has only `normalize`, default true: true divides by
    the valid count, false by outer, the same results except that the fork
    does not clamp at 1 and returns NaN when every label is ignored.

    Mirrored from upstream on purpose:
    - The sum of -log terms is a float32 running sum in Caffe's loop order;
      the division by the normalizer and the scale loss_weight / normalizer
      are float32, as Caffe's Dtype arithmetic.
    - Labels are truncated toward zero (static_cast<int>); an out-of-range
      label is a NetError here (Caffe only DCHECKs it and reads out of bounds
      in release builds).
    - The internal Softmax is built from a copy of this layer's parameter
      with type Softmax.  Unlike BVLC 1.0 and the fork, the copy drops the
      loss weights: upstream keeps them, which makes a two-top
      SoftmaxWithLoss fail its own setup (BVLC issue #2968, fixed so in
      later forks).  With two tops give one loss_weight per top.
    """
    min_top = 1
    max_top = 2
    exact_num_top = -1
    reshape_from_shapes = True

    def layer_setup(self, bottom, top):
        super().layer_setup(bottom, top)
        softmax_param = caffe_pb2.LayerParameter()
        softmax_param.CopyFrom(self.layer_param)
        softmax_param.type = "Softmax"
        del softmax_param.loss_weight[:]
        self.softmax = SoftmaxLayer(softmax_param, self.phase)
        self.prob = Blob((), name=f"{self.name}_prob")
        self.softmax.setup([bottom[0]], [self.prob])
        loss_param = self.layer_param.loss_param
        self.has_ignore_label = loss_param.HasField("ignore_label")
        self.ignore_label = loss_param.ignore_label
        if not loss_param.HasField("normalization") and loss_param.HasField("normalize"):
            self.normalization = _Norm.VALID if loss_param.normalize else _Norm.BATCH_SIZE
        else:
            self.normalization = loss_param.normalization

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        self.softmax.reshape([bottom[0]], [self.prob])
        self.view_shape = self.softmax.view_shape
        outer, _, inner = self.view_shape
        _check_label_count(self, bottom, self.softmax.axis, outer, inner)
        if len(top) > 1:
            top[1].reshape_like(bottom[0])
            top[1].share_data(self.prob)

    def normalizer(self, valid_count):
        outer, _, inner = self.view_shape
        mode = self.normalization
        if mode == _Norm.FULL:
            n = outer * inner
        elif mode == _Norm.VALID:
            n = valid_count
        elif mode == _Norm.BATCH_SIZE:
            n = outer
        else:
            n = 1
        return np.float32(max(1, n))

    def _views(self, bottom):
        outer, _, inner = self.view_shape
        return self.prob.flat_data.reshape(self.view_shape), bottom[1].flat_data.reshape(outer, inner)

    def forward_cpu(self, bottom, top):
        self.softmax.forward_cpu([bottom[0]], [self.prob])
        prob, label = self._views(bottom)
        loss, count, bad = softmax_loss_forward(prob, label, self.has_ignore_label, self.ignore_label)
        if bad >= 0:
            raise _label_error(self, bottom[1], bad, self.view_shape[1])
        top[0].data[...] = np.float32(loss) / self.normalizer(count)

    def backward_cpu(self, top, propagate_down, bottom):
        if len(propagate_down) > 1 and propagate_down[1]:
            raise NetError(f"layer '{self.name}' (SoftmaxWithLoss) cannot backpropagate to its label input "
                           f"(bottom 1); do not force backward into the labels")
        if not propagate_down[0]:
            return
        prob, label = self._views(bottom)
        diff = bottom[0].flat_diff.reshape(self.view_shape)
        count = softmax_loss_backward(prob, label, self.has_ignore_label, self.ignore_label, diff)
        diff *= np.float32(top[0].flat_diff[0]) / self.normalizer(count)


@register("Accuracy")
class AccuracyLayer(Layer):
    """Top-k classification accuracy (DNS fork / BVLC src/caffe/layers/accuracy_layer.cpp).

    Shapes: bottom[0] scores, classes on accuracy_param.axis (default 1),
    seen as (outer, C, inner); bottom[1] outer * inner labels; top[0] scalar;
    optional top[1] per-class accuracy (C,), as BVLC 1.0 (the fork has only
    one top).

    accuracy = hits / (number of non-ignored labels), 0 when every label is
    ignored (BVLC 1.0 returns 0; the fork divides 0 by 0 and gives NaN).
    Per-class accuracy: hits / labels of that class, 0 for a class with no
    labels.

    Tie-breaking follows the DNS fork, which our cross-checks use.  The fork
    std::partial_sorts (score, class) pairs with std::greater, so among equal
    scores the larger class index ranks first: the label l is a hit iff fewer
    than top_k classes c have s_c > s_l, or s_c == s_l and c > l.  BVLC 1.0
    instead counts every other class with s_c >= s_l and hits iff that count
    is below top_k, so ties always count against the label.  The two agree
    when scores are distinct; e.g. scores (1, 1), top_k 1: label 1 is a hit
    in the fork and a miss in BVLC 1.0; label 0 misses in both.

    Labels are truncated toward zero (static_cast<int>); an out-of-range label
    is a NetError (upstream only DCHECKs).  top_k may not exceed the number of
    classes, as upstream's CHECK.  No backward.  Kernel:
    npcaffe.kernels.accuracy.
    """
    exact_num_bottom = 2
    min_top = 1
    max_top = 2
    reshape_from_shapes = True

    def layer_setup(self, bottom, top):
        p = self.layer_param.accuracy_param
        self.top_k = p.top_k
        self.has_ignore_label = p.HasField("ignore_label")
        self.ignore_label = p.ignore_label
        self._class_counts = np.zeros(0, np.float32)

    def reshape(self, bottom, top):
        axis = bottom[0].canonical_axis(self.layer_param.accuracy_param.axis)
        classes = bottom[0].shape[axis]
        if bottom[1].count == 0 or self.top_k > bottom[0].count // bottom[1].count:
            raise NetError(
                f"layer '{self.name}' (Accuracy): top_k {self.top_k} exceeds the number of classes "
                f"(predictions {bottom[0].shape}, labels {bottom[1].shape}); lower accuracy_param.top_k")
        outer, inner = bottom[0].count_range(0, axis), bottom[0].count_range(axis + 1)
        _check_label_count(self, bottom, axis, outer, inner)
        self.view_shape = (outer, classes, inner)
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape((classes,))
        if self._class_counts.size != classes:
            self._class_counts = np.zeros(classes, np.float32)
            self._class_hits = np.zeros(classes, np.float32)

    def forward_cpu(self, bottom, top):
        outer, classes, inner = self.view_shape
        self._class_counts[:] = 0
        self._class_hits[:] = 0
        hits, count, bad = accuracy_hits(
            bottom[0].flat_data.reshape(self.view_shape), bottom[1].flat_data.reshape(outer, inner),
            self.top_k, self.has_ignore_label, self.ignore_label, self._class_hits, self._class_counts)
        if bad >= 0:
            raise _label_error(self, bottom[1], bad, classes)
        top[0].data[...] = np.float32(hits) / np.float32(count) if count else np.float32(0)
        if len(top) > 1:
            per_class = top[1].data
            per_class[...] = 0
            np.divide(self._class_hits, self._class_counts, out=per_class, where=self._class_counts > 0)

    def backward_cpu(self, top, propagate_down, bottom):
        if any(propagate_down):
            raise NetError(f"layer '{self.name}' (Accuracy) has no backward pass; "
                           "do not force backward into its bottoms")


# -- the rest of Caffe's loss layers ---------------------------------------------------------

LOG_THRESHOLD = np.float32(1e-20)  # upstream's kLOG_THRESHOLD


def _no_label_backward(layer, propagate_down, index=1, what="label input"):
    if len(propagate_down) > index and propagate_down[index]:
        raise NetError(f"layer '{layer.name}' ({layer.type}) cannot backpropagate to its {what} "
                       f"(bottom {index}); do not force backward into it")


def _normalizer(mode, outer, inner, valid_count):
    """LossLayer normalizer (BVLC 1.0): never below 1."""
    if mode == _Norm.FULL:
        n = outer * inner
    elif mode == _Norm.VALID:
        n = outer * inner if valid_count < 0 else valid_count
    elif mode == _Norm.BATCH_SIZE:
        n = outer
    else:
        n = 1
    return np.float32(max(1, n))


@register("EuclideanLoss")
class EuclideanLossLayer(LossLayer):
    """Half the mean squared distance (BVLC src/caffe/layers/euclidean_loss_layer.cpp).

    Bottoms: two blobs of the same count(1) per item, (N, ...).  Both take
    gradients (it compares two predictions as readily as a prediction and a
    target).  loss = sum (a - b)^2 / N / 2;  da = lw (a - b) / N, db = -da.
    """

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        if bottom[0].count_range(1) != bottom[1].count_range(1):
            raise NetError(f"layer '{self.name}' (EuclideanLoss): inputs must have the same dimension per item; "
                           f"got {bottom[0].shape} and {bottom[1].shape}")

    def forward_cpu(self, bottom, top):
        self.difference = bottom[0].flat_data - bottom[1].flat_data
        top[0].data[...] = np.dot(self.difference, self.difference) / np.float32(bottom[0].shape[0]) / np.float32(2)

    def backward_cpu(self, top, propagate_down, bottom):
        for i in range(2):
            if propagate_down[i]:
                sign = np.float32(1 if i == 0 else -1)
                alpha = sign * top[0].flat_diff[0] / np.float32(bottom[i].shape[0])
                np.multiply(self.difference, alpha, out=bottom[i].flat_diff)

    def allow_force_backward(self, bottom_index):
        return True


@register("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLossLayer(LossLayer):
    """Cross-entropy of sigmoid(x) against targets in [0, 1]
    (BVLC src/caffe/layers/sigmoid_cross_entropy_loss_layer.cpp).

    Bottoms: scores x (N, ...) and targets of the same count.
    loss = -sum [t log p + (1 - t) log(1 - p)] / normalizer, p = sigmoid(x),
    computed in upstream's overflow-free form; targets equal to
    loss_param.ignore_label (after truncation to int) are skipped.
    Normalizer: loss_param.normalization, else legacy `normalize`
    (true VALID, false BATCH_SIZE), else BATCH_SIZE (this layer's own
    default, unlike SoftmaxWithLoss).  Backward: dx = lw (p - t) / normalizer,
    0 for ignored targets.
    """

    def layer_setup(self, bottom, top):
        super().layer_setup(bottom, top)
        p = self.layer_param.loss_param
        self.has_ignore_label, self.ignore_label = p.HasField("ignore_label"), p.ignore_label
        if p.HasField("normalization"):
            self.normalization = p.normalization
        elif p.HasField("normalize"):
            self.normalization = _Norm.VALID if p.normalize else _Norm.BATCH_SIZE
        else:
            self.normalization = _Norm.BATCH_SIZE
        self.prob = Blob((), name=f"{self.name}_sigmoid")

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        if bottom[0].count != bottom[1].count:
            raise NetError(f"layer '{self.name}' (SigmoidCrossEntropyLoss): scores {bottom[0].shape} and targets "
                           f"{bottom[1].shape} must have the same count")
        self.prob.reshape_like(bottom[0])

    def forward_cpu(self, bottom, top):
        from ..kernels.activation import sigmoid_cross_entropy_sum, sigmoid_forward
        sigmoid_forward(bottom[0].flat_data, self.prob.flat_data)
        loss, count = sigmoid_cross_entropy_sum(bottom[0].flat_data, bottom[1].flat_data,
                                                self.has_ignore_label, self.ignore_label)
        self.norm = _normalizer(self.normalization, bottom[0].shape[0], bottom[0].count_range(1), count)
        top[0].data[...] = np.float32(loss) / self.norm

    def backward_cpu(self, top, propagate_down, bottom):
        _no_label_backward(self, propagate_down)
        if not propagate_down[0]:
            return
        dx = bottom[0].flat_diff
        target = bottom[1].flat_data
        np.subtract(self.prob.flat_data, target, out=dx)
        if self.has_ignore_label:
            dx[target.astype(np.int64) == self.ignore_label] = 0
        dx *= top[0].flat_diff[0] / self.norm


@register("HingeLoss")
class HingeLossLayer(LossLayer):
    """One-versus-all hinge loss (BVLC src/caffe/layers/hinge_loss_layer.cpp).

    Bottoms: scores (N, K, ...) read as N x K', labels (N,) in [0, K').
    With s = -1 at the label and +1 elsewhere, t = max(0, 1 + s x):
    L1 (default) loss = sum t / N, L2 loss = sum t^2 / N.
    Backward: dx = lw s [t > 0] / N (L1), dx = 2 lw s t / N (L2).
    """

    def forward_cpu(self, bottom, top):
        num = bottom[0].shape[0]
        x = bottom[0].flat_data.reshape(num, -1)
        labels = bottom[1].flat_data.astype(np.int64)
        bad = np.flatnonzero((labels < 0) | (labels >= x.shape[1]))
        if bad.size:
            raise _label_error(self, bottom[1], int(bad[0]), x.shape[1])
        sign = np.ones_like(x)
        sign[np.arange(num), labels] = -1
        self.sign = sign
        self.margin = np.maximum(np.float32(0), np.float32(1) + sign * x)
        if self.layer_param.hinge_loss_param.norm == caffe_pb2.HingeLossParameter.L2:
            total = np.dot(self.margin.ravel(), self.margin.ravel())
        else:
            total = self.margin.sum(dtype=np.float32)
        top[0].data[...] = np.float32(total) / np.float32(num)

    def backward_cpu(self, top, propagate_down, bottom):
        _no_label_backward(self, propagate_down)
        if not propagate_down[0]:
            return
        num = np.float32(bottom[0].shape[0])
        dx = bottom[0].flat_diff.reshape(self.margin.shape)
        lw = top[0].flat_diff[0]
        if self.layer_param.hinge_loss_param.norm == caffe_pb2.HingeLossParameter.L2:
            np.multiply(self.margin * self.sign, lw * np.float32(2) / num, out=dx)
        else:
            np.multiply(np.sign(self.margin) * self.sign, lw / num, out=dx)


@register("MultinomialLogisticLoss")
class MultinomialLogisticLossLayer(LossLayer):
    """-log of the probability given to the label (BVLC src/caffe/layers/multinomial_logistic_loss_layer.cpp).

    Bottoms: probabilities (N, K, 1, 1) read as N x K, labels (N,).
    loss = -sum_n log(max(p[n, label_n], 1e-20)) / N.
    Backward: dp[n, label_n] = -lw / N / max(p, 1e-20), 0 elsewhere.
    """

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        if bottom[1].count_range(1) != 1:
            raise NetError(f"layer '{self.name}' (MultinomialLogisticLoss): labels must be one per item, "
                           f"got shape {bottom[1].shape}")

    def _picked(self, bottom):
        num = bottom[0].shape[0]
        p = bottom[0].flat_data.reshape(num, -1)
        labels = bottom[1].flat_data.astype(np.int64)
        bad = np.flatnonzero((labels < 0) | (labels >= p.shape[1]))
        if bad.size:
            raise _label_error(self, bottom[1], int(bad[0]), p.shape[1])
        return np.maximum(p[np.arange(num), labels], LOG_THRESHOLD), labels

    def forward_cpu(self, bottom, top):
        picked, _ = self._picked(bottom)
        loss = np.float32(0)
        for v in np.log(picked.astype(np.float64)).astype(np.float32):
            loss -= v
        top[0].data[...] = loss / np.float32(bottom[0].shape[0])

    def backward_cpu(self, top, propagate_down, bottom):
        _no_label_backward(self, propagate_down)
        if not propagate_down[0]:
            return
        num = bottom[0].shape[0]
        picked, labels = self._picked(bottom)
        dx = bottom[0].flat_diff.reshape(num, -1)
        dx[...] = 0
        dx[np.arange(num), labels] = -(top[0].flat_diff[0] / np.float32(num)) / picked


@register("InfogainLoss")
class InfogainLossLayer(LossLayer):
    """Softmax, then a loss weighted by an infogain matrix H
    (BVLC src/caffe/layers/infogain_loss_layer.cpp).

    Bottoms: scores (classes on infogain_loss_param.axis, default 1),
    labels (outer * inner), and H (K x K) as a third bottom or read from
    infogain_loss_param.source (a binary BlobProto).  Tops: loss, optionally
    the softmax probabilities.  Upstream applies the softmax itself: the
    input is scores, not probabilities.
        loss = -sum_{valid (n, j)} sum_l H[label, l] log(max(p_l, 1e-20)) / normalizer
        dx_l = lw (p_l * sum_k H[label, k] - H[label, l]) / normalizer
    ignore_label positions are skipped; normalizer from loss_param.normalization
    (default VALID).  The legacy `normalize` is rejected, as upstream.
    """
    exact_num_bottom = -1
    min_bottom = 2
    max_bottom = 3
    min_top = 1
    max_top = 2
    exact_num_top = -1

    def layer_setup(self, bottom, top):
        super().layer_setup(bottom, top)
        p = self.layer_param.loss_param
        if p.HasField("normalize"):
            raise NetError(f"layer '{self.name}' (InfogainLoss): loss_param.normalize is deprecated here; "
                           "use loss_param.normalization")
        self.normalization = p.normalization
        self.has_ignore_label, self.ignore_label = p.HasField("ignore_label"), p.ignore_label
        softmax_param = caffe_pb2.LayerParameter(name=self.name, type="Softmax")
        softmax_param.softmax_param.axis = self.layer_param.infogain_loss_param.axis
        self.softmax = SoftmaxLayer(softmax_param, self.phase)
        self.prob = Blob((), name=f"{self.name}_prob")
        self.softmax.setup([bottom[0]], [self.prob])
        self.infogain = None
        if len(bottom) < 3:
            source = self.layer_param.infogain_loss_param.source
            if not source:
                raise NetError(f"layer '{self.name}' (InfogainLoss): give the infogain matrix as a third bottom "
                               "or as infogain_loss_param.source (a binary BlobProto file)")
            from ..fileio.caffemodel import blob_to_array
            proto = caffe_pb2.BlobProto()
            try:
                with open(source, "rb") as f:
                    proto.ParseFromString(f.read())
            except OSError as e:
                raise NetError(f"layer '{self.name}' (InfogainLoss): cannot read infogain_loss_param.source "
                               f"'{source}': {e}") from None
            self.infogain = blob_to_array(proto, f"layer '{self.name}' infogain source '{source}'").astype(np.float32)

    def _matrix(self, bottom):
        return bottom[2].flat_data if len(bottom) > 2 else self.infogain.ravel()

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        self.softmax.reshape([bottom[0]], [self.prob])
        outer, classes, inner = self.view_shape = self.softmax.view_shape
        _check_label_count(self, bottom, self.softmax.axis, outer, inner)
        if self._matrix(bottom).size != classes * classes:
            raise NetError(f"layer '{self.name}' (InfogainLoss): the infogain matrix has {self._matrix(bottom).size} "
                           f"entries; it must be {classes} x {classes} for scores {bottom[0].shape}")
        if len(top) > 1:
            top[1].reshape_like(bottom[0])
            top[1].share_data(self.prob)

    def _valid(self, bottom):
        outer, classes, inner = self.view_shape
        labels = bottom[1].flat_data.astype(np.int64).reshape(outer, inner)
        valid = np.ones_like(labels, bool) if not self.has_ignore_label else labels != self.ignore_label
        bad = np.flatnonzero(valid.ravel() & ((labels.ravel() < 0) | (labels.ravel() >= classes)))
        if bad.size:
            raise _label_error(self, bottom[1], int(bad[0]), classes)
        return labels, valid

    def forward_cpu(self, bottom, top):
        self.softmax.forward_cpu([bottom[0]], [self.prob])
        outer, classes, inner = self.view_shape
        labels, valid = self._valid(bottom)
        h = self._matrix(bottom).reshape(classes, classes)
        logp = np.log(np.maximum(self.prob.flat_data.reshape(self.view_shape), LOG_THRESHOLD))
        rows = h[np.where(valid, labels, 0)]  # (outer, inner, classes)
        terms = (rows * logp.transpose(0, 2, 1)).sum(axis=2, dtype=np.float32)
        loss = -terms[valid].sum(dtype=np.float32)
        top[0].data[...] = loss / _normalizer(self.normalization, outer, inner, int(valid.sum()))

    def backward_cpu(self, top, propagate_down, bottom):
        _no_label_backward(self, propagate_down)
        _no_label_backward(self, propagate_down, 2, "infogain matrix input")
        if not propagate_down[0]:
            return
        outer, classes, inner = self.view_shape
        labels, valid = self._valid(bottom)
        h = self._matrix(bottom).reshape(classes, classes)
        safe = np.where(valid, labels, 0)
        rows = h[safe].transpose(0, 2, 1)  # (outer, classes, inner)
        row_sums = h.sum(axis=1, dtype=np.float32)[safe][:, None, :]
        prob = self.prob.flat_data.reshape(self.view_shape)
        dx = bottom[0].flat_diff.reshape(self.view_shape)
        np.subtract(prob * row_sums, rows, out=dx)
        dx *= valid[:, None, :]
        dx *= top[0].flat_diff[0] / _normalizer(self.normalization, outer, inner, int(valid.sum()))

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0


@register("ContrastiveLoss")
class ContrastiveLossLayer(LossLayer):
    """Contrastive loss for siamese nets (BVLC src/caffe/layers/contrastive_loss_layer.cpp).

    Bottoms: features a, b (N, C, 1, 1) and a similarity label y (N, 1, 1, 1),
    nonzero (after truncation to int) for similar pairs.  With d^2 = |a - b|^2
    and m = contrastive_loss_param.margin (default 1):
        loss = sum_n [y d^2 + (1 - y) max(m - d, 0)^2] / 2N
    or, with legacy_version, (1 - y) max(m - d^2, 0) for dissimilar pairs.
    Backward: da = lw / N * (a - b) for similar pairs; for dissimilar ones
    -lw / N * (a - b) (legacy) or -lw / N * (m - d) / (d + 1e-4) * (a - b),
    when the hinge is active, else 0; db = -da.  The label takes no gradient.
    """
    exact_num_bottom = 3

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        a, b, y = bottom
        if a.channels != b.channels or a.count_range(2) != 1 or b.count_range(2) != 1 or y.count_range(1) != 1:
            raise NetError(f"layer '{self.name}' (ContrastiveLoss): needs features (N, C, 1, 1) twice and labels "
                           f"(N, 1, 1, 1); got {a.shape}, {b.shape}, {y.shape}")

    def forward_cpu(self, bottom, top):
        p = self.layer_param.contrastive_loss_param
        num = bottom[0].shape[0]
        self.difference = (bottom[0].flat_data - bottom[1].flat_data).reshape(num, -1)
        self.dist_sq = np.einsum("ij,ij->i", self.difference, self.difference).astype(np.float32)
        self.similar = bottom[2].flat_data.astype(np.int64) != 0
        margin = np.float32(p.margin)
        if p.legacy_version:
            dissimilar = np.maximum(margin - self.dist_sq, np.float32(0))
        else:
            dissimilar = np.maximum(margin - np.sqrt(self.dist_sq), np.float32(0)) ** 2
        loss = np.where(self.similar, self.dist_sq, dissimilar).sum(dtype=np.float32)
        top[0].data[...] = loss / np.float32(num) / np.float32(2)

    def backward_cpu(self, top, propagate_down, bottom):
        p = self.layer_param.contrastive_loss_param
        margin = np.float32(p.margin)
        num = bottom[0].shape[0]
        for i in range(2):
            if not propagate_down[i]:
                continue
            alpha = np.float32(1 if i == 0 else -1) * top[0].flat_diff[0] / np.float32(num)
            if p.legacy_version:
                mdist = margin - self.dist_sq
                beta = np.full(num, -alpha, np.float32)
            else:
                dist = np.sqrt(self.dist_sq)
                mdist = margin - dist
                beta = -alpha * mdist / (dist + np.float32(1e-4))
            factor = np.where(self.similar, alpha, np.where(mdist > 0, beta, np.float32(0))).astype(np.float32)
            np.multiply(self.difference, factor[:, None], out=bottom[i].flat_diff.reshape(num, -1))

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2
