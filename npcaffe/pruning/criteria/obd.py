"""Optimal Brain Damage (LeCun, Denker & Solla, NIPS 1989): saliency s = ½ h_ii w_i².

h_ii is the diagonal of the Hessian of the loss with respect to the weight,
computed as the paper does: by backpropagating second derivatives, one
number per blob element, through the layer graph (`second_derivatives`, a
small backward pass of its own, float64, run after each forward).  The
approximations, all LeCun's:

1. Diagonal.  At every blob only the diagonal ∂²E/∂y_k² is carried; the
   off-diagonal terms ∂²E/∂y_k∂y_l are dropped.  Each rule below computes
   exactly diag(Jᵀ D J) for its Jacobian J and D = diag(carried values), so
   the only error is what the dropped terms would have added.
2. Levenberg-Marquardt / Gauss-Newton.  For an elementwise y = f(x),
   ∂²E/∂x² = f'(x)² ∂²E/∂y² + f''(x) ∂E/∂y; the second term is dropped, so
   the values never go negative.  ReLU has f'' = 0 away from its kink, so
   nothing is lost there; Sigmoid and TanH lose f''·∂E/∂y.
3. Losses.  EuclideanLoss: exact, λ/N for every element (λ the loss weight).
   SoftmaxWithLoss: the Hessian in the scores is exactly λ/n (diag(p) - ppᵀ)
   (n the layer's normalizer), which is also its own Gauss-Newton matrix
   (cross-entropy on a softmax is the canonical pairing); its diagonal
   λ/n p(1-p) is carried, its off-diagonal -λ/n p_i p_j dropped (1.).
   Ignored labels give 0.

Both losses are sums over samples (and positions), so cross-sample terms are
zero and need no approximation; several batches are averaged.  Where is the
result exact?  A rule's bottom diagonal is exact when the Hessian at its top
is diagonal, which EuclideanLoss gives and ReLU, max pooling, Flatten,
Reshape and Dropout preserve (Split too while only one of its tops reaches
a loss: the cross terms between branches are dropped); average pooling and
weight layers do not.  An
InnerProduct weight reaches one output per sample, so its diagonal needs
only the (exactly carried) diagonal at its output; a convolution weight
reaches every position of its channel, so it needs the Hessian there to be
diagonal.  Hence exact: both layers of InnerProduct -> ReLU -> InnerProduct
-> EuclideanLoss; Convolution -> ReLU -> max Pooling -> EuclideanLoss; a
single InnerProduct into SoftmaxWithLoss.  The tests check these against
finite differences, and elsewhere check the dropped terms themselves.

Rules (`RULES`; d2 = the carried diagonal, f' the activation's derivative):
  InnerProduct / CInnerProduct  y = Wx + b:  h(W_ik) = Σ d2y_i x_k²,  h(b_i) = Σ d2y_i,
                                 d2x_k = Σ_i W_ik² d2y_i  (W the computed W ⊙ T)
  Convolution / CConvolution    the same on im2col columns (per group), col2im back
  ReLU, Sigmoid, TanH           d2x = f'(x)² d2y   (f' from the top's values: in-place safe)
  Pooling MAX                   d2x = d2y routed to each window's argmax (Caffe's first-max rule)
  Pooling AVE                   d2x = Σ over windows of d2y / pool_size²
  Dropout                       TRAIN: d2x = (mask · scale)² d2y;  TEST: d2x = d2y
  PReLU, ELU, AbsVal, BNLL      d2x = f'(x)² d2y  (f' from the top's values)
  BatchNorm                     d2x = d2y / std²: exact with use_global_stats (TEST); in TRAIN the batch
                                statistics' own dependence on x is dropped (they are taken as constants)
  Scale, Bias                   d2x = s² d2y (d2y); a scale / bias given as bottom[1]: Σ x² d2y (Σ d2y)
                                over the positions it is broadcast to
  Eltwise                       SUM d2x_k = c_k² d2y; PROD d2x_k = (Π_{j≠k} x_j)² d2y; MAX: d2y to the
                                bottom holding the maximum (Caffe's first on ties)
  Concat, Slice                 d2 cut into / joined from the pieces along the axis
  Split                         d2x = Σ of the tops' d2;  Flatten, Reshape: d2 reshaped
  SoftmaxWithLoss, EuclideanLoss  as in 3.
Any other layer the pass has to go through is refused with a NetError naming
it.  Layers sharing one weight blob are scored separately.
"""
import numpy as np

from ... import masks
from ...errors import NetError
from ...kernels.im2col import col2im_reference, im2col_reference
from ...layer import TRAIN
from ...proto import caffe_pb2
from .common import conv_geometry, forward_batches, pack, stored_params, weight_layers

_Pool = caffe_pb2.PoolingParameter


# -- the rules: (layer, bottom blobs, top blobs, top d2 list, need list) -> (bottom d2 list, (h_W, h_b) or None)
def _inner_product(layer, bottom, top, d2_top, need, want):
    axis = bottom[0].canonical_axis(layer.layer_param.inner_product_param.axis)
    rows = bottom[0].count_range(0, axis)
    x = bottom[0].data.reshape(rows, -1).astype(np.float64)
    d2y = d2_top[0].reshape(rows, -1)
    weight = masks.effective_params(layer)[0].astype(np.float64)
    w = weight.T if layer.transpose else weight        # (N, K)
    params = None
    if want:
        h_w = d2y.T @ (x * x)
        params = (h_w.T if layer.transpose else h_w, d2y.sum(axis=0) if layer.bias_term else None)
    d2x = (d2y @ (w * w)).reshape(bottom[0].shape) if need[0] else None
    return [d2x], params


def _convolution(layer, bottom, top, d2_top, need, want):
    kh, kw, ph, pw, sh, sw, dh, dw, group = conv_geometry(layer, "OBD's second-derivative pass")
    weight = masks.effective_params(layer)[0].astype(np.float64)
    out_channels = weight.shape[0]
    w = weight.reshape(out_channels, -1)
    rows, outs = w.shape[1], out_channels // group
    h_w = np.zeros_like(w) if want else None
    h_b = np.zeros(out_channels) if want and layer.bias_term else None
    d2_bottom = []
    for b, t, d2, needed in zip(bottom, top, d2_top, need):
        if d2 is None:
            d2_bottom.append(None)
            continue
        num = b.shape[0]
        out_h, out_w = t.shape[2], t.shape[3]
        geometry = (kh, kw, ph, pw, sh, sw, dh, dw, out_h, out_w)
        d2y = d2.reshape(num, out_channels, -1).transpose(1, 0, 2).reshape(out_channels, -1)
        if want:
            col = np.empty((b.shape[1] * kh * kw, num * out_h * out_w))
            im2col_reference(b.data.astype(np.float64), *geometry, col)
            col *= col
            for g in range(group):
                r, o = slice(g * rows, (g + 1) * rows), slice(g * outs, (g + 1) * outs)
                h_w[o] += d2y[o] @ col[r].T
            if h_b is not None:
                h_b += d2y.sum(axis=1)
        if needed:
            d2col = np.empty((b.shape[1] * kh * kw, d2y.shape[1]))
            for g in range(group):
                r, o = slice(g * rows, (g + 1) * rows), slice(g * outs, (g + 1) * outs)
                d2col[r] = (w[o] * w[o]).T @ d2y[o]
            d2x = np.empty(b.shape)
            col2im_reference(d2col, *geometry, d2x)
            d2_bottom.append(d2x)
        else:
            d2_bottom.append(None)
    return d2_bottom, (h_w.reshape(weight.shape), h_b) if want else None


def _elementwise(slope):
    def rule(layer, bottom, top, d2_top, need, want):
        return [slope(layer, bottom[0], top[0]) ** 2 * d2_top[0] if need[0] else None], None
    return rule


def _relu_slope(layer, bottom, top):
    # In place the bottom holds the top's values; with negative_slope >= 0 their signs agree.
    return np.where(top.data > 0, 1.0, float(layer.negative_slope))


def _sigmoid_slope(layer, bottom, top):
    y = top.data.astype(np.float64)
    return y * (1 - y)


def _tanh_slope(layer, bottom, top):
    y = top.data.astype(np.float64)
    return 1 - y * y


def _dropout_slope(layer, bottom, top):
    if layer.phase != TRAIN:
        return np.ones(top.shape)
    return layer.mask[:top.count].reshape(top.shape).astype(np.float64) * float(layer.scale)


def _pool_windows(size, pooled, kernel, stride, pad):
    """Per output position: (index, start, end) clipped to the image, and Caffe's AVE pool size."""
    for p in range(pooled):
        start = p * stride - pad
        end = min(start + kernel, size + pad)
        yield p, max(start, 0), min(end, size), end - start


def _pooling(layer, bottom, top, d2_top, need, want):
    if not need[0]:
        return [None], None
    method = layer.method
    if method not in (_Pool.MAX, _Pool.AVE):
        raise NetError(f"layer '{layer.name}' (Pooling): OBD's second-derivative pass handles MAX and AVE "
                       "pooling only")
    x = bottom[0].data
    d2y = d2_top[0]
    d2x = np.zeros(x.shape)
    (kh, kw), (ph, pw), (sh, sw) = layer.kernel, layer.pad, layer.stride
    num, channels, _, width = x.shape
    n_index, c_index = np.meshgrid(np.arange(num), np.arange(channels), indexing="ij")
    for y, h0, h1, size_h in _pool_windows(x.shape[2], d2y.shape[2], kh, sh, ph):
        for z, w0, w1, size_w in _pool_windows(width, d2y.shape[3], kw, sw, pw):
            if h1 <= h0 or w1 <= w0:
                continue
            if method == _Pool.MAX:
                # The first maximum in row-major order, as Caffe's strict '>' (on the float32 values).
                first = x[:, :, h0:h1, w0:w1].reshape(num, channels, -1).argmax(axis=2)
                dy, dz = np.divmod(first, w1 - w0)
                np.add.at(d2x, (n_index, c_index, h0 + dy, w0 + dz), d2y[:, :, y, z])
            else:
                d2x[:, :, h0:h1, w0:w1] += (d2y[:, :, y, z] / float(size_h * size_w) ** 2)[:, :, None, None]
    return [d2x], None


def _split(layer, bottom, top, d2_top, need, want):
    present = [d2 for d2 in d2_top if d2 is not None]
    return [sum(present) if need[0] else None], None


def _reshape(layer, bottom, top, d2_top, need, want):
    return [d2_top[0].reshape(bottom[0].shape) if need[0] else None], None


def _batch_norm(layer, bottom, top, d2_top, need, want):
    # y = (x - mean) / std per channel.  With use_global_stats (TEST) that is exact; in TRAIN the batch's
    # mean and variance also depend on x, and their share of the Hessian is dropped (statistics as constants).
    if not need[0]:
        return [None], None
    std = layer.std.astype(np.float64).reshape(1, -1, 1)
    d2y = d2_top[0].reshape(layer.view)
    return [(d2y / (std * std)).reshape(bottom[0].shape)], None


def _scale(layer, bottom, top, d2_top, need, want):
    # y = s x (+ b) broadcast from the layer's axis: d2x = s² d2y; a scale given as bottom[1] gets Σ x² d2y
    # over the positions it is broadcast to (exact diagonal, one s per output).
    d2y = d2_top[0].reshape(layer.geometry)
    s = layer._scale(bottom).data.astype(np.float64).reshape(1, -1, 1)
    out = [(s * s * d2y).reshape(bottom[0].shape) if need[0] else None]
    if len(bottom) > 1:
        if need[1]:
            x = layer.forward_input(bottom, top).astype(np.float64)
            out.append((x * x * d2y).sum(axis=(0, 2)).reshape(bottom[1].shape))
        else:
            out.append(None)
    return out, None


def _bias(layer, bottom, top, d2_top, need, want):
    out = [d2_top[0] if need[0] else None]
    if len(bottom) > 1:
        out.append(d2_top[0].reshape(layer.geometry).sum(axis=(0, 2)).reshape(bottom[1].shape) if need[1] else None)
    return out, None


def _eltwise(layer, bottom, top, d2_top, need, want):
    # SUM: y = Σ c_k x_k, d2x_k = c_k² d2y.  PROD: ∂y/∂x_k = Π_{j≠k} x_j.  MAX: d2y goes to the bottom
    # that holds the maximum (the first one on ties, as Caffe's strict '>' in bottom order).
    _Elt = caffe_pb2.EltwiseParameter
    d2y = d2_top[0]
    if layer.op == _Elt.SUM:
        return [float(c) ** 2 * d2y if n else None for c, n in zip(layer.coeffs, need)], None
    if layer.op == _Elt.PROD:
        out = []
        for k, n in enumerate(need):
            if not n:
                out.append(None)
                continue
            others = np.ones(bottom[k].shape)
            for j, b in enumerate(bottom):
                if j != k:
                    others = others * b.data.astype(np.float64)
            out.append(others * others * d2y)
        return out, None
    first = np.stack([b.data for b in bottom]).argmax(axis=0)
    return [np.where(first == k, d2y, 0.0) if n else None for k, n in enumerate(need)], None


def _concat(layer, bottom, top, d2_top, need, want):
    sizes = [b.shape[layer.axis] for b in bottom]
    pieces = np.split(d2_top[0], np.cumsum(sizes)[:-1], axis=layer.axis)
    return [piece if n else None for piece, n in zip(pieces, need)], None


def _slice(layer, bottom, top, d2_top, need, want):
    if not need[0]:
        return [None], None
    pieces = [np.zeros(t.shape) if d2 is None else d2 for t, d2 in zip(top, d2_top)]
    return [np.concatenate(pieces, axis=layer.axis)], None


def _prelu_slope(layer, bottom, top):
    # The slope a_c where the output is negative (same sign as the input for a >= 0: in-place safe).
    a = layer.blobs[0].data.astype(np.float64)
    shape = (1, -1) + (1,) * (top.num_axes - 2) if a.ndim else ()
    return np.where(top.data > 0, 1.0, a.reshape(shape) if a.ndim else float(a))


def _elu_slope(layer, bottom, top):
    y = top.data.astype(np.float64)
    return np.where(y > 0, 1.0, y + float(layer.alpha))


def _absval_slope(layer, bottom, top):
    return np.where(top.data != 0, 1.0, 0.0)  # |sign(x)|, read from |x| (in-place safe)


def _bnll_slope(layer, bottom, top):
    # y = log(1 + e^x): f'(x) = sigmoid(x) = 1 - e^(-y).
    return 1.0 - np.exp(-top.data.astype(np.float64))


def _softmax_loss(layer, bottom, top, d2_top, need, want):
    if not need[0]:
        return [None, None], None
    outer, classes, inner = layer.view_shape
    scores = bottom[0].data.reshape(outer, classes, inner).astype(np.float64)
    p = np.exp(scores - scores.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    labels = bottom[1].data.reshape(outer, inner)
    valid = np.ones(labels.shape, bool)
    if layer.has_ignore_label:
        valid = labels.astype(np.int64) != layer.ignore_label
    scale = layer.loss(0) / float(layer.normalizer(int(valid.sum())))
    d2 = scale * p * (1 - p) * valid[:, None, :]
    return [d2.reshape(bottom[0].shape), None], None


def _euclidean_loss(layer, bottom, top, d2_top, need, want):
    # Exact for each bottom alone; with both bottoms computed by the net the cross term is dropped (1.).
    scale = layer.loss(0) / bottom[0].shape[0]
    return [np.full(b.shape, scale) if n else None for b, n in zip(bottom, need)], None


RULES = {
    "InnerProduct": _inner_product, "CInnerProduct": _inner_product,
    "Convolution": _convolution, "CConvolution": _convolution,
    "ReLU": _elementwise(_relu_slope), "Sigmoid": _elementwise(_sigmoid_slope),
    "TanH": _elementwise(_tanh_slope), "Dropout": _elementwise(_dropout_slope),
    "PReLU": _elementwise(_prelu_slope), "ELU": _elementwise(_elu_slope), "AbsVal": _elementwise(_absval_slope),
    "BNLL": _elementwise(_bnll_slope),
    "BatchNorm": _batch_norm, "Scale": _scale, "Bias": _bias, "Eltwise": _eltwise, "Concat": _concat,
    "Slice": _slice,
    "Pooling": _pooling, "Split": _split, "Flatten": _reshape, "Reshape": _reshape,
    "SoftmaxWithLoss": _softmax_loss, "EuclideanLoss": _euclidean_loss,
}
LOSS_TYPES = ("SoftmaxWithLoss", "EuclideanLoss")


def second_derivatives(net, layers=None):
    """The second-derivative backward pass over the net's last forward.

    Returns {layer name: (h_W, h_b or None)}: the OBD diagonal of the loss
    Hessian for the weight and bias of each scored layer (all of them, or the
    named ones), float64, shaped like the blobs.  Second derivatives are taken
    only into blobs that lead to a wanted layer."""
    wanted = {name for name, _ in weight_layers(net, layers)}
    # Blobs whose second derivative is needed: the tops of wanted layers and of anything above them.
    needed_blobs = set()
    for i, name in enumerate(net.layer_names):
        if name in wanted or any(b in needed_blobs for b in net.bottom_id_vecs[i]):
            needed_blobs.update(net.top_id_vecs[i])
    d2 = {}
    result = {}
    for i in range(len(net.layers) - 1, -1, -1):
        layer, name = net.layers[i], net.layer_names[i]
        d2_top = [d2.pop(blob_id, None) for blob_id in net.top_id_vecs[i]]
        is_loss = any(layer.loss(k) for k in range(len(d2_top)))
        if not is_loss and all(value is None for value in d2_top):
            continue
        need = [blob_id in needed_blobs for blob_id in net.bottom_id_vecs[i]]
        want = name in wanted
        if not any(need) and not want:
            continue
        rule = RULES.get(layer.type)
        if rule is None or is_loss != (layer.type in LOSS_TYPES):
            what = "loss" if is_loss else "layer"
            raise NetError(
                f"layer '{name}' ({layer.type}): OBD's second-derivative pass has no rule for this {what}; "
                f"it handles {', '.join(sorted(RULES))}. Score the layers below it with another "
                "criterion, or cut the net before it")
        d2_bottom, params = rule(layer, net.bottom_vecs[i], net.top_vecs[i], d2_top, need, want)
        for blob_id, value in zip(net.bottom_id_vecs[i], d2_bottom):
            if value is not None:
                d2[blob_id] = d2[blob_id] + value if blob_id in d2 else value
        if want:
            result[name] = params
    missing = [name for name in net.layer_names if name in wanted and name not in result]
    if missing:
        raise NetError(f"layers {', '.join(repr(n) for n in missing)} of net '{net.name}' feed no "
                       f"{' or '.join(LOSS_TYPES)} layer with a nonzero loss weight: OBD has no Hessian for them")
    return result


def hessian_diagonal(net, layers=None, batches=1, bias=False):
    """{layer name: h_W} (or (h_W, h_b or None) with bias=True), averaged over the batches."""
    chosen = [name for name, _ in weight_layers(net, layers)]
    total = None
    count = 0
    for _ in forward_batches(net, batches):
        h = second_derivatives(net, chosen)
        if total is None:
            total = h
        else:
            total = {name: tuple(None if a is None else a + b for a, b in zip(total[name], h[name]))
                     for name in chosen}
        count += 1
    weight_h = {name: total[name][0] / count for name in chosen}
    bias_h = {name: None if total[name][1] is None else total[name][1] / count for name in chosen} if bias else None
    return pack(chosen, weight_h, bias_h)


def scores(net, layers=None, batches=1, bias=False):
    """OBD saliencies ½ h_ii w² of the stored weights: {name: array}, or (weight, bias or None)
    pairs with bias=True."""
    h = hessian_diagonal(net, layers, batches, bias=True)
    weight_scores, bias_scores = {}, {}
    for name, (h_w, h_b) in h.items():
        weight, bias_values = stored_params(net.layer_dict[name])
        weight_scores[name] = 0.5 * h_w * weight ** 2
        bias_scores[name] = None if h_b is None else 0.5 * h_b * bias_values ** 2
    return pack(list(h), weight_scores, bias_scores if bias else None)
