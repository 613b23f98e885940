"""Common layers: InnerProduct, Split, Flatten, Softmax, Embed, Parameter, BatchReindex.

Caffe declares these among its "common"/"vision" headers
(include/caffe/layers/{inner_product,split,flatten,softmax,embed,parameter,batch_reindex}_layer.hpp).
"""
import numpy as np

from ..blob import Blob
from ..errors import NetError
from ..filler import fill
from ..kernels.dns import masked_accumulate
from ..kernels.outer import outer_product
from ..kernels.softmax import softmax_backward, softmax_forward
from ..kernels.sparse import csc_vector_product, csr_inner_product, csr_inner_product_backward, csr_vector_product
from ..layer import Layer, register
from ..masks import computing_params, mask_gradients
from ..sparse.packing import repack

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
      bottom diff is overwritten.  A diff cleared with deferred zeros
      (Blob.clear_diff, a solver's step) is written instead: the same numbers.
      At batch 1 the weight gradient is an outer product (npcaffe.kernels.outer).
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

    packed = None  # npcaffe.sparse.packing.PackedWeights while a TEST net runs this layer sparsely

    def forward_cpu(self, bottom, top):
        if self.packed is not None and self.sparse_forward(bottom, top):
            return
        weight, bias = computing_params(self)
        self.ip_forward(bottom, top, weight, bias)

    def backward_cpu(self, top, propagate_down, bottom):
        if self.attached_masks is None:
            self.ip_backward(top, propagate_down, bottom, self.blobs[0].data)
        else:  # the gradient of W ⊙ T: none for a pruned weight
            self.ip_backward(top, propagate_down, bottom, computing_params(self)[0])
            mask_gradients(self)

    def sparse_forward(self, bottom, top):
        """Forward with the packed weights (a TEST net, npcaffe.sparse.packing); False if the layer
        should run dense instead.  Weights written since packing are packed again first.  Kept
        lean: at batch 1 this bookkeeping costs as much as the arithmetic."""
        packed = self.packed
        num = self.M
        # Decided before the weights check: a layer that runs dense at this batch reads its weights anyway.
        if num < packed.min_batch:
            return False
        if packed.verify and not packed.current(self):
            return repack(self) and self.sparse_forward(bottom, top)
        x, y = bottom[0].flat_data, top[0].flat_data
        if num == 1 and packed.csc is not None:
            csc_vector_product(x, *packed.csc, packed.bias, y)
        elif num == 1:
            csr_vector_product(x, packed.indptr, packed.indices, packed.values, packed.bias, y)
        else:
            csr_inner_product(x.reshape(num, self.K), packed.indptr, packed.indices, packed.values, packed.bias,
                              y.reshape(num, self.num_output))
        return True

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
            dw, fresh = self.blobs[0].diff_to_accumulate()
            # A diff cleared with deferred zeros (a solver's step) takes the product itself: adding
            # it to written zeros would cost two more passes over the weights (AlexNet's fc6, batch 1:
            # the product alone is one).
            grad = dw.reshape(self._weight_grad.shape) if fresh else self._weight_grad
            if self.M == 1:  # an outer product, which sgemm takes twice as long to write
                outer_product(*((x[0], dy[0]) if self.transpose else (dy[0], x[0])), grad)
            elif self.transpose:
                np.dot(x.T, dy, out=grad)
            else:
                np.dot(dy.T, x, out=grad)
            if not fresh:  # a fresh diff is the product already
                if weight_diff_mask is None:
                    dw += grad.reshape(-1)
                else:
                    masked_accumulate(dw, weight_diff_mask, grad.reshape(-1))
        if self.bias_term and self.param_needs_backward(1):
            db, fresh = self.blobs[1].diff_to_accumulate()
            np.dot(self._bias_multiplier, dy, out=db if fresh else self._bias_grad)
            if not fresh:
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
    reshape_from_shapes = True  # sharing moves the net's LayoutClock, so a lost share is seen

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


def _index_error(layer, blob, values, bad, rule):
    """NetError for the first of `values` (the blob's flat data) that `bad` marks, with its position."""
    first = int(np.argmax(bad))
    position = tuple(int(i) for i in np.unravel_index(first, blob.shape))
    value = float(values[first])
    return NetError(f"layer '{layer.name}' ({layer.type}): bottom '{blob.name}' holds {value!r} at position "
                    f"{position} (shape {blob.shape}); {rule}")


@register("Embed")
class EmbedLayer(Layer):
    """Learned lookup table (BVLC src/caffe/layers/embed_layer.cpp).

    Shapes: bottom of any shape, each value an index in [0, K) with
    K = input_dim; top is bottom.shape + (N,) with N = num_output.
    blobs[0] is the table (K, N), InnerProduct's weight transposed so that
    one index reads one row; blobs[1] the bias (N,) when bias_term.  It is an
    InnerProduct on one-hot inputs, without building them.

    Formula: top[i] = W[x_i] + b.  Backward: W_diff[x_i] += top_diff[i],
    added row by row in the bottom's order (a repeated index sums its rows
    in that order), b_diff += sum over i of top_diff[i].  The indices get
    no gradient.

    Mirrored from upstream on purpose:
    - Backpropagating to the bottom is an error (upstream's CHECK in
      Backward_cpu), force_backward included, where Caffe aborts too.
    - Existing `blobs` (shared or loaded) are kept, not refilled.
    - The bias is added after the row copy, one rounding (Caffe's rank-1
      gemm with beta 1); parameter diffs accumulate.
    Stricter than upstream: Caffe only DCHECKs (debug builds) that every
    value is an integer in [0, input_dim), and a release build reads outside
    the table.  We check every pass and name the bad value and its position.
    Not in place: the top has one more axis than the bottom.
    """
    exact_num_bottom = 1
    exact_num_top = 1
    reshape_from_shapes = True

    def layer_setup(self, bottom, top):
        p = self.layer_param.embed_param
        for field, value in (("num_output", p.num_output), ("input_dim", p.input_dim)):
            if value < 1:
                raise NetError(f"layer '{self.name}' (Embed): embed_param.{field} must be positive, got {value}")
        if top[0] is bottom[0]:
            raise NetError(f"layer '{self.name}' (Embed): top is the bottom blob; an Embed layer cannot run "
                           "in place, give the top its own name")
        self.num_output = p.num_output
        self.input_dim = p.input_dim
        self.bias_term = p.bias_term
        want = [(self.input_dim, self.num_output)] + [(self.num_output,)] * self.bias_term
        if self.blobs:
            have = [b.shape for b in self.blobs]
            if have != want:
                raise NetError(f"layer '{self.name}' (Embed): parameter blobs have shapes {have}, the layer "
                               f"needs {want} (input_dim {self.input_dim}, num_output {self.num_output}, "
                               f"bias_term {self.bias_term})")
        else:
            self.blobs = [Blob(want[0], name=f"{self.name}_w")]
            fill(self.blobs[0], p.weight_filler, where=f"layer '{self.name}' embed_param.weight_filler")
            if self.bias_term:
                self.blobs.append(Blob(want[1], name=f"{self.name}_b"))
                fill(self.blobs[1], p.bias_filler, where=f"layer '{self.name}' embed_param.bias_filler")
        self._bias_grad = np.zeros(self.num_output, np.float32)
        self._bias_multiplier = np.ones(0, np.float32)

    def reshape(self, bottom, top):
        self.M = bottom[0].count
        top[0].reshape(bottom[0].shape + (self.num_output,))
        if self.bias_term and self._bias_multiplier.size != self.M:
            self._bias_multiplier = np.ones(self.M, np.float32)

    def _indices(self, blob):
        x = blob.flat_data
        bad = ~((x >= 0) & (x < self.input_dim) & (np.trunc(x) == x))
        if bad.any():
            raise _index_error(self, blob, x, bad, f"Embed reads each value as a row of its table, an integer "
                                                   f"in [0, input_dim = {self.input_dim})")
        return x.astype(np.intp)

    def forward_cpu(self, bottom, top):
        y = top[0].flat_data.reshape(self.M, self.num_output)
        np.take(self.blobs[0].data, self._indices(bottom[0]), axis=0, out=y)
        if self.bias_term:
            y += self.blobs[1].data

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise NetError(f"layer '{self.name}' (Embed): cannot backpropagate to its bottom '{bottom[0].name}', "
                           "which holds indices (as in Caffe); set propagate_down: false for it or drop "
                           "force_backward")
        dy = top[0].flat_diff.reshape(self.M, self.num_output)
        if self.param_needs_backward(0):
            # Unbuffered, in index order: row i is added after row i - 1, as upstream's axpy loop.
            np.add.at(self.blobs[0].diff, self._indices(bottom[0]), dy)
        if self.bias_term and self.param_needs_backward(1):
            np.dot(self._bias_multiplier, dy, out=self._bias_grad)
            db = self.blobs[1].diff
            db += self._bias_grad


@register("Parameter")
class ParameterLayer(Layer):
    """A learnable blob as a layer's output (BVLC include/caffe/layers/parameter_layer.hpp).

    No bottom, one top.  blobs[0] has the shape parameter_param.shape (a
    scalar, shape (), when no dims are given) and starts at zero, as
    upstream: there is no filler, the values come from a .caffemodel, a
    shared param or training.  The top shares blobs[0]'s data and diff, so
    the layers above write the parameter's gradient straight into its diff
    and backward has nothing to do.

    Mirrored from upstream on purpose:
    - The top is shaped from parameter_param.shape at setup and never
      reshaped; the sharing happens in forward, every pass, so the top
      follows the blob when the net later gives it another storage (a param
      shared by name).  Before the first forward the top is its own zeros.
    - Existing `blobs` are kept; their count must equal the shape's (Caffe's
      ShareData check), their shape need not.
    """
    exact_num_bottom = 0
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        shape = tuple(self.layer_param.parameter_param.shape.dim)
        if any(d < 0 for d in shape):
            raise NetError(f"layer '{self.name}' (Parameter): parameter_param.shape {shape} has a negative dimension")
        if self.blobs:
            count = int(np.prod(shape, dtype=np.int64))
            if self.blobs[0].count != count:
                raise NetError(f"layer '{self.name}' (Parameter): parameter blob has shape {self.blobs[0].shape}, "
                               f"{self.blobs[0].count} values; parameter_param.shape {shape} needs {count}")
        else:
            self.blobs = [Blob(shape, name=f"{self.name}_param")]
        top[0].reshape(shape)

    def reshape(self, bottom, top):
        pass  # shaped once, in layer_setup

    def forward_cpu(self, bottom, top):
        top[0].share_data(self.blobs[0])
        top[0].share_diff(self.blobs[0])

    def backward_cpu(self, top, propagate_down, bottom):
        pass  # the top's diff is the parameter's


@register("BatchReindex")
class BatchReindexLayer(Layer):
    """Select, reorder or repeat items of a batch (BVLC src/caffe/layers/batch_reindex_layer.cpp).

    Shapes: bottom[0] (N, ...), bottom[1] the indices, 1-D (M,); top (M, ...).
    Formula: top[i] = bottom[0][idx_i].  Backward: bottom[0]'s diff is
    zeroed, then top_diff[i] is added into item idx_i for i = 0, 1, ..., so a
    repeated item sums its gradients in that order; items never picked get 0.

    Mirrored from upstream on purpose:
    - Each index is checked as a float, 0 <= idx < N (NaN fails), then
      truncated towards zero: 1.7 picks item 1, as Caffe's static_cast<int>.
    - Backpropagating to the indices is an error (upstream's CHECK), with
      force_backward too, where Caffe aborts.
    - The index blob must have exactly one axis, checked at reshape.
    Not in place: the top's first axis is M, not N.
    """
    exact_num_bottom = 2
    exact_num_top = 1
    reshape_from_shapes = True

    def reshape(self, bottom, top):
        if top[0] is bottom[0]:
            raise NetError(f"layer '{self.name}' (BatchReindex): top is bottom '{bottom[0].name}'; a BatchReindex "
                           "layer cannot run in place, give the top its own name")
        if bottom[1].num_axes != 1:
            raise NetError(f"layer '{self.name}' (BatchReindex): index bottom '{bottom[1].name}' must be 1-D, "
                           f"got shape {bottom[1].shape}")
        if bottom[0].num_axes < 1:
            raise NetError(f"layer '{self.name}' (BatchReindex): bottom '{bottom[0].name}' needs a first axis "
                           "to index, got a scalar")
        top[0].reshape(bottom[1].shape[:1] + bottom[0].shape[1:])

    def _indices(self, bottom):
        n = bottom[0].shape[0]
        idx = bottom[1].flat_data
        bad = ~((idx >= 0) & (idx < n))
        if bad.any():
            raise _index_error(self, bottom[1], idx, bad, f"indices into the first axis of bottom "
                                                          f"'{bottom[0].name}' must lie in [0, {n})")
        return idx.astype(np.intp)

    def forward_cpu(self, bottom, top):
        idx = self._indices(bottom)
        if top[0].count == 0:
            return
        inner = bottom[0].count_range(1)
        np.take(bottom[0].flat_data.reshape(-1, inner), idx, axis=0, out=top[0].flat_data.reshape(-1, inner))

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise NetError(f"layer '{self.name}' (BatchReindex): cannot backpropagate to the indices "
                           f"'{bottom[1].name}' (as in Caffe); set propagate_down: false for that bottom or drop "
                           "force_backward")
        if not propagate_down[0]:
            return
        dx = bottom[0].flat_diff
        dx[:] = 0
        if top[0].count == 0:
            return
        inner = bottom[0].count_range(1)
        # Unbuffered, in index order: as upstream's loop over the top.
        np.add.at(dx.reshape(-1, inner), self._indices(bottom), top[0].flat_diff.reshape(-1, inner))
