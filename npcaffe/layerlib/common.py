"""Common layers: InnerProduct, Split, Flatten, Softmax.

Caffe declares these among its "common"/"vision" headers
(include/caffe/layers/{inner_product,split,flatten,softmax}_layer.hpp).
"""
import numpy as np

from ..blob import Blob
from ..errors import NetError
from ..filler import fill
from ..kernels.dns import masked_accumulate
from ..kernels.softmax import softmax_backward, softmax_forward
from ..kernels.sparse import csr_inner_product, csr_inner_product_backward
from ..layer import Layer, register
from ..sparse import sparse_forward

_EMPTY = np.zeros(0, np.float32)


def _matrix_views(layer, bottom, top):
    # bottom (M, K) and top (M, N) of an InnerProduct layer
    return bottom[0].flat_data.reshape(layer.M, layer.K), top[0].flat_data.reshape(layer.M, layer.num_output)


@register("InnerProduct")
class InnerProductLayer(Layer):
    """Fully connected layer (BVLC src/caffe/layers/inner_product_layer.cpp).

    Shapes: bottom (d0, ..., d_{axis-1}, d_axis, ...) is read as an M x K
    matrix with M = count(0, axis) and K = count(axis); top is
    (d0, ..., d_{axis-1}, N) with N = num_output.  blobs[0] is the weight,
    N x K (K x N when transpose is true), blobs[1] the bias (N,) when
    bias_term.

    Formula: top = bottom . W^T + b (bottom . W when transpose).  Backward:
    dW += top_diff^T . bottom (bottom^T . top_diff when transpose),
    db += sum over M of top_diff, bottom_diff = top_diff . W (top_diff . W^T).

    Mirrored from upstream on purpose:
    - Parameter diffs accumulate (Caffe's gemm/gemv with beta = 1); the
      bottom diff is overwritten.
    - K is fixed at setup; a later bottom with a different count(axis) is an
      error, while M may change freely.
    - Existing `blobs` (set before setup, e.g. shared or loaded) are kept,
      not refilled ("Skipping parameter initialization").
    - The bias is added after the product, one rounding, as Caffe's rank-1
      gemm with the bias multiplier does.
    - `transpose` is BVLC 1.0's; the DNS fork has no such field.

    Hook for subclasses (the DNS fork's CInnerProduct): `forward_cpu` calls
    `ip_forward(bottom, top, weight, bias)` and `backward_cpu` calls
    `ip_backward(top, propagate_down, bottom, weight)`, with the float32
    weight and bias arrays to compute with (here the blobs' own data).  A
    subclass passes masked arrays instead; `ip_backward` still accumulates the gradients into
    `self.blobs[0].diff` / `self.blobs[1].diff` (when param_needs_backward)
    and uses the given `weight` for the bottom diff.  Both take an optional
    `csr`, the same weight (N x K, not transposed) as (indptr, indices,
    values) rows: the product and the bottom diff then run on the sparse
    kernels (npcaffe.kernels.sparse); the weight gradient stays dense.
    """
    exact_num_bottom = 1
    exact_num_top = 1
    reshape_from_shapes = True

    def layer_setup(self, bottom, top):
        p = self.layer_param.inner_product_param
        if p.num_output < 1:
            raise NetError(f"layer '{self.name}' (InnerProduct): inner_product_param.num_output must be "
                           f"a positive number of outputs, got {p.num_output}")
        self.num_output = p.num_output
        self.bias_term = p.bias_term
        self.transpose = p.transpose
        axis = bottom[0].canonical_axis(p.axis)
        self.K = bottom[0].count_range(axis)
        if self.blobs:
            self._check_blob_shapes()
        else:
            shape = (self.K, self.num_output) if self.transpose else (self.num_output, self.K)
            self.blobs = [Blob(shape, name=f"{self.name}_w")]
            fill(self.blobs[0], p.weight_filler, where=f"layer '{self.name}' weight_filler")
            if self.bias_term:
                self.blobs.append(Blob((self.num_output,), name=f"{self.name}_b"))
                fill(self.blobs[1], p.bias_filler, where=f"layer '{self.name}' bias_filler")
        self._weight_grad = np.zeros(self.blobs[0].shape, np.float32)
        self._bias_grad = np.zeros(self.num_output, np.float32)
        self._bias_multiplier = np.ones(0, np.float32)
        self._backward_scratch = None  # the sparse bottom gradient's transposed copies

    def _check_blob_shapes(self):
        want = [(self.K, self.num_output) if self.transpose else (self.num_output, self.K)]
        if self.bias_term:
            want.append((self.num_output,))
        have = [b.shape for b in self.blobs]
        if have != want:
            raise NetError(f"layer '{self.name}' (InnerProduct): parameter blobs have shapes {have}, "
                           f"the layer needs {want} (num_output {self.num_output}, K {self.K}, "
                           f"bias_term {self.bias_term}, transpose {self.transpose})")

    def reshape(self, bottom, top):
        axis = bottom[0].canonical_axis(self.layer_param.inner_product_param.axis)
        k = bottom[0].count_range(axis)
        if k != self.K:
            raise NetError(f"layer '{self.name}' (InnerProduct): bottom shape {bottom[0].shape} gives "
                           f"{k} inputs from axis {axis} on, but the layer was set up for {self.K}; "
                           "an InnerProduct layer cannot change its input size")
        self.M = bottom[0].count_range(0, axis)
        top[0].reshape(bottom[0].shape[:axis] + (self.num_output,))
        if self.bias_term and self._bias_multiplier.size != self.M:
            self._bias_multiplier = np.ones(self.M, np.float32)

    packed = None  # npcaffe.sparse.PackedWeights while a TEST net runs this layer sparsely

    def forward_cpu(self, bottom, top):
        if self.packed is not None and sparse_forward(self, bottom, top):
            return
        bias = self.blobs[1].data if self.bias_term else None
        self.ip_forward(bottom, top, self.blobs[0].data, bias)

    def backward_cpu(self, top, propagate_down, bottom):
        self.ip_backward(top, propagate_down, bottom, self.blobs[0].data)

    # np.dot, not np.matmul: with out= and a transposed operand NumPy 2's matmul
    # can leave BLAS for a loop ten times slower; np.dot always calls sgemm/sgemv.
    def ip_forward(self, bottom, top, weight, bias, csr=None):
        x, y = self.blob_views(bottom, top, _matrix_views)
        if csr is not None:
            csr_inner_product(x, *csr, _EMPTY if bias is None else bias, y)
            return
        np.dot(x, weight if self.transpose else weight.T, out=y)
        if bias is not None:
            y += bias

    def ip_backward(self, top, propagate_down, bottom, weight, csr=None, weight_diff_mask=None):
        """Gradients through `weight` (and `csr`, the same weights in CSR, if given).  With
        `weight_diff_mask` (the DNS layer's T) the accumulated weight diff is multiplied by it
        before the new gradient is added, in the same pass."""
        dy = top[0].flat_diff.reshape(self.M, self.num_output)
        if self.param_needs_backward(0):
            x = bottom[0].flat_data.reshape(self.M, self.K)
            if self.transpose:
                np.dot(x.T, dy, out=self._weight_grad)
            else:
                np.dot(dy.T, x, out=self._weight_grad)
            if weight_diff_mask is None:
                dw = self.blobs[0].diff
                dw += self._weight_grad
            else:
                masked_accumulate(self.blobs[0].flat_diff, weight_diff_mask, self._weight_grad.reshape(-1))
        if self.bias_term and self.param_needs_backward(1):
            np.dot(self._bias_multiplier, dy, out=self._bias_grad)
            db = self.blobs[1].diff
            db += self._bias_grad
        if propagate_down[0]:
            dx = bottom[0].flat_diff.reshape(self.M, self.K)
            if csr is not None:
                if self._backward_scratch is None or self._backward_scratch[0].shape[1] != self.M:
                    self._backward_scratch = (np.empty((self.num_output, self.M), np.float32),
                                              np.empty((self.K, self.M), np.float32))
                csr_inner_product_backward(dy, *csr, dx, *self._backward_scratch)
            else:
                np.dot(dy, weight.T if self.transpose else weight, out=dx)


@register("Split")
class SplitLayer(Layer):
    """Copy one blob to several consumers (BVLC src/caffe/layers/split_layer.cpp).

    Shapes: every top has the bottom's shape and shares its data storage, so
    forward copies nothing.  Backward: bottom_diff = top0_diff + top1_diff +
    ..., summed in top order as Caffe (caffe_add of the first two, then axpy).
    Each top keeps its own diff; as in Caffe, in-place use is an error.
    """
    exact_num_bottom = 1
    min_top = 1
    reshape_from_shapes = True  # sharing changes Blob.layout_version, so a lost share is seen

    def reshape(self, bottom, top):
        for i, t in enumerate(top):
            if t is bottom[0]:
                raise NetError(f"layer '{self.name}' (Split): top {i} is the bottom blob; "
                               "a Split layer cannot run in place, give the top its own name")
            t.reshape_like(bottom[0])
            t.share_data(bottom[0])

    def forward_cpu(self, bottom, top):
        pass  # the tops share the bottom's data (set in reshape)

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dx = bottom[0].flat_diff
        if len(top) == 1:
            dx[:] = top[0].flat_diff
            return
        np.add(top[0].flat_diff, top[1].flat_diff, out=dx)
        for t in top[2:]:
            dx += t.flat_diff


@register("Flatten")
class FlattenLayer(Layer):
    """Merge axes [axis, end_axis] into one (BVLC src/caffe/layers/flatten_layer.cpp).

    Shapes: (d0, ..., d_{a-1}, d_a * ... * d_e, d_{e+1}, ...) with a = axis
    (default 1) and e = end_axis (default -1).  The top shares the bottom's
    data and diff, so neither pass copies; Caffe shares data in Forward and
    diff in Backward, which has the same effect.  In-place use is an error, as
    in BVLC 1.0 (the DNS fork omits the check, but an in-place Flatten would
    reshape its own input).
    """
    exact_num_bottom = 1
    exact_num_top = 1
    reshape_from_shapes = True  # as Split's

    def reshape(self, bottom, top):
        if top[0] is bottom[0]:
            raise NetError(f"layer '{self.name}' (Flatten): top is the bottom blob; "
                           "a Flatten layer cannot run in place, give the top its own name")
        p = self.layer_param.flatten_param
        shape = bottom[0].shape
        start = bottom[0].canonical_axis(p.axis)
        end = bottom[0].canonical_axis(p.end_axis)
        if end < start:
            raise NetError(f"layer '{self.name}' (Flatten): end_axis {p.end_axis} comes before axis {p.axis} "
                           f"for bottom shape {shape}")
        top[0].reshape(shape[:start] + (bottom[0].count_range(start, end + 1),) + shape[end + 1:])
        top[0].share_data(bottom[0])
        top[0].share_diff(bottom[0])

    def forward_cpu(self, bottom, top):
        pass  # data shared in reshape

    def backward_cpu(self, top, propagate_down, bottom):
        pass  # diff shared in reshape


def _softmax_views(layer, bottom, top):
    return bottom[0].flat_data.reshape(layer.view_shape), top[0].flat_data.reshape(layer.view_shape)


@register("Softmax")
class SoftmaxLayer(Layer):
    """Softmax over one axis (BVLC src/caffe/layers/softmax_layer.cpp).

    Shapes: top has the bottom's shape; softmax_param.axis (default 1) is the
    class axis.  Forward, per position: subtract the max over the axis, exp,
    divide by the sum (float32 throughout, glibc expf as Caffe's CPU path).
    Backward: bottom_diff = (top_diff - dot(top_diff, top_data)) * top_data,
    the dot taken over the axis.  Safe in place.  Kernels:
    npcaffe.kernels.softmax.
    """
    exact_num_bottom = 1
    exact_num_top = 1
    reshape_from_shapes = True

    def reshape(self, bottom, top):
        axis = self.axis = bottom[0].canonical_axis(self.layer_param.softmax_param.axis)
        top[0].reshape_like(bottom[0])
        self.view_shape = (bottom[0].count_range(0, axis), bottom[0].shape[axis], bottom[0].count_range(axis + 1))

    def forward_cpu(self, bottom, top):
        softmax_forward(*self.blob_views(bottom, top, _softmax_views))

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            v = self.view_shape
            softmax_backward(top[0].flat_data.reshape(v), top[0].flat_diff.reshape(v),
                             bottom[0].flat_diff.reshape(v))
