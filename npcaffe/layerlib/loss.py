"""Loss layers (SoftmaxWithLoss) and the Accuracy layer that usually sits beside them."""
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
