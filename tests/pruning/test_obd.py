"""OBD (npcaffe.pruning.criteria.obd): each second-derivative rule against the brute-force diagonal
of Jᵀ D J; the whole pass against finite-difference Hessian diagonals where LeCun's approximations
are exact, and against the exact terms they drop (the f'' term, softmax's off-diagonal) where not."""
import numpy as np
import pytest

import npcaffe
from helpers import layer_param
from npcaffe.blob import Blob
from npcaffe.errors import NetError
from npcaffe.layer import create_layer
from npcaffe.pruning.criteria import obd
from pruning_nets import (assert_close, conv, dns_net_and_baked_plain_twin, fd_hessian_diagonal, fd_jacobian,
                          inputs, ip, loss, make_net)

FILL = 'weight_filler { type: "gaussian" std: 0.7 } bias_filler { type: "gaussian" std: 0.5 }'

RULE_CASES = {
    "ip": (f'type: "InnerProduct" inner_product_param {{ num_output: 3 {FILL} }}', (2, 5)),
    "ip_axis_transposed": (f'type: "InnerProduct" inner_product_param {{ num_output: 3 transpose: true {FILL} }}',
                           (2, 2, 3)),
    "conv_grouped_strided": (f'type: "Convolution" convolution_param {{ num_output: 4 kernel_size: 3 pad: 1 '
                             f'stride: 2 group: 2 {FILL} }}', (2, 4, 5, 5)),
    "conv_dilated": (f'type: "Convolution" convolution_param {{ num_output: 2 kernel_size: 2 dilation: 2 {FILL} }}',
                     (1, 2, 5, 6)),
    "max_pool_overlapping": ('type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }',
                             (2, 2, 5, 5)),
    "ave_pool_padded": ('type: "Pooling" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }', (2, 2, 5, 5)),
    "relu": ('type: "ReLU"', (2, 7)),
    "leaky_relu": ('type: "ReLU" relu_param { negative_slope: 0.1 }', (2, 7)),
    "sigmoid": ('type: "Sigmoid"', (2, 7)),
    "tanh": ('type: "TanH"', (2, 7)),
    "flatten": ('type: "Flatten"', (2, 3, 2, 2)),
}
LINEAR = ("ip", "ip_axis_transposed", "conv_grouped_strided", "conv_dilated", "ave_pool_padded", "flatten")


def _layer(case):
    text, shape = RULE_CASES[case]
    npcaffe.set_random_seed(4)
    layer = create_layer(layer_param(f'name: "{case}" {text}'))
    rng = np.random.default_rng(7)
    bottom = [Blob(shape, name="x")]
    if case.startswith("max_pool"):  # distinct values 0.01 apart: a small step never moves an argmax
        bottom[0].data[...] = (rng.permutation(bottom[0].count) * 0.01).reshape(shape)
    else:  # away from ReLU's kink
        values = rng.uniform(0.05, 1.0, size=shape) * rng.choice([-1, 1], size=shape)
        bottom[0].data[...] = values
    top = [Blob(name="y")]
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    return layer, bottom, top


def _jacobian(layer, bottom, top, array, step):
    """∂ top / ∂ array (a view of the bottom data or of a parameter): (count(top), array.size)."""
    flat = array.reshape(-1)
    columns = []
    for q in range(flat.size):
        old = flat[q]
        flat[q] = old + step
        layer.forward(bottom, top)
        plus = top[0].data.astype(np.float64).ravel()
        flat[q] = old - step
        layer.forward(bottom, top)
        minus = top[0].data.astype(np.float64).ravel()
        flat[q] = old
        columns.append((plus - minus) / (2 * step))
    layer.forward(bottom, top)
    return np.stack(columns, axis=1)


@pytest.mark.parametrize("case", sorted(RULE_CASES))
def test_each_rule_is_the_exact_diagonal_of_jt_d_j(case):
    """Given a diagonal second derivative D at the top, a rule must give diag(Jᵀ D J) at the bottom and
    for the parameters, J the layer's Jacobian found by brute force (unit steps for linear layers)."""
    layer, bottom, top = _layer(case)
    d2_top = np.random.default_rng(1).uniform(0.1, 2.0, size=top[0].shape)
    d2_bottom, params = obd.RULES[layer.type](layer, bottom, top, [d2_top], [True], True)
    step = 1.0 if case in LINEAR else 1e-3
    rtol = 1e-5 if case in LINEAR else 2e-3
    jac = _jacobian(layer, bottom, top, bottom[0].data, step)
    assert_close(d2_bottom[0].ravel(), (jac ** 2).T @ d2_top.ravel(), rtol)
    if layer.blobs:
        weight, bias = layer.blobs[0].data, layer.blobs[1].data
        jac_w = _jacobian(layer, bottom, top, weight, 1.0)
        jac_b = _jacobian(layer, bottom, top, bias, 1.0)
        assert_close(params[0].ravel(), (jac_w ** 2).T @ d2_top.ravel(), 1e-5)
        assert_close(params[1], (jac_b ** 2).T @ d2_top.ravel(), 1e-5)


MLP_EUCLIDEAN = (inputs(("data", (6, 4)), ("target", (6, 3))), ip("ip1", "data", 5),
                 'layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }', ip("ip2", "ip1", 3),
                 'layer { name: "loss" type: "EuclideanLoss" bottom: "ip2" bottom: "target" top: "loss" }')


def _preactivation_margin(net, name):
    """The smallest |pre-activation| of an InnerProduct's outputs, over the largest |input|: a
    central difference with a weight step below half of it crosses no ReLU kink."""
    layer = net.layer_dict[name]
    x = net.blobs[net.bottom_names[name][0]].data.astype(np.float64)
    a = x @ layer.blobs[0].data.T + layer.blobs[1].data
    return np.abs(a).min() / np.abs(x).max()


@pytest.mark.parametrize("layers, seed, step", [
    (MLP_EUCLIDEAN, 2, 1e-2),
    # conv -> ReLU -> max pool -> Euclidean: max pooling only routes, so the conv output's Hessian is diagonal.
    ((inputs(("data", (2, 2, 5, 5)), ("target", (2, 3, 3, 3))), conv("conv", "data", 3, "kernel_size: 2 pad: 1"),
      'layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }',
      'layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" '
      'pooling_param { pool: MAX kernel_size: 3 stride: 2 } }',
      'layer { name: "loss" type: "EuclideanLoss" bottom: "pool" bottom: "target" top: "loss" loss_weight: 2 }'),
     0, 3e-3),
    # one InnerProduct into softmax loss: a weight row reaches one score only.
    ((inputs(("data", (6, 4)), ("label", (6,))), ip("ip", "data", 3),
      'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }'), 0, 3e-3),
], ids=["mlp_relu_euclidean", "conv_relu_maxpool_euclidean", "ip_softmax"])
def test_diagonal_equals_finite_differences_where_the_approximations_are_exact(layers, seed, step):
    net = make_net(*layers, classes=3, seed=seed)
    if "ip1" in net.layer_dict:
        assert _preactivation_margin(net, "ip1") > 2 * step
    h = obd.hessian_diagonal(net, bias=True)
    for name, (h_w, h_b) in h.items():
        assert_close(h_w, fd_hessian_diagonal(net, name, 0, step), 1e-4)
        assert_close(h_b, fd_hessian_diagonal(net, name, 1, step), 1e-4)


def test_softmax_mlp_gives_the_gauss_newton_diagonal_without_the_softmax_cross_terms():
    """IP -> ReLU -> IP -> SoftmaxWithLoss.  The exact Hessian (ReLU has no f'') is the Gauss-Newton
    Σ_n J_nᵀ (diag p - p pᵀ) J_n / N with J the Jacobian of the scores; OBD keeps diag(p) - diag(p)²
    only, so it equals Σ_n J_nᵀ diag(p(1-p)) J_n / N: check both, with J by finite differences."""
    net = make_net(inputs(("data", (5, 4)), ("label", (5,))), ip("ip1", "data", 6),
                   'layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }', ip("ip2", "ip1", 3),
                   'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }',
                   classes=3, seed=3)
    assert _preactivation_margin(net, "ip1") > 2e-2
    h = obd.hessian_diagonal(net)
    scores = net.blobs["ip2"].data.astype(np.float64)
    p = np.exp(scores - scores.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    num, classes = p.shape
    for name in ("ip1", "ip2"):
        jac = fd_jacobian(net, name, "ip2").reshape(num, classes, -1)
        diagonal_gn = np.einsum("nkq,nk->q", jac ** 2, p * (1 - p)) / num
        full_gn = diagonal_gn - np.einsum("nkq,nlq,nk,nl->q", jac, jac, p, p) / num \
            + np.einsum("nkq,nk->q", jac ** 2, p ** 2) / num
        shape = net.layer_dict[name].blobs[0].shape
        assert_close(h[name], diagonal_gn.reshape(shape), 2e-3)
        assert_close(fd_hessian_diagonal(net, name), full_gn.reshape(shape), 2e-3)
    # The last layer's weights reach one score each: there the dropped terms vanish.
    assert_close(h["ip2"], fd_hessian_diagonal(net, "ip2"), 1e-4)


def test_tanh_drops_exactly_the_second_derivative_of_the_activation():
    """IP -> TanH -> IP -> Euclidean: the true diagonal for ip1's weights is OBD's plus
    Σ_n x_nk² f''(a_nj) ∂L/∂y_nj (the Levenberg-Marquardt drop), with ∂L/∂y from the engine's backward."""
    net = make_net(inputs(("data", (6, 4)), ("target", (6, 3))), ip("ip1", "data", 5),
                   'layer { name: "tanh" type: "TanH" bottom: "ip1" top: "h" }', ip("ip2", "h", 3),
                   'layer { name: "loss" type: "EuclideanLoss" bottom: "ip2" bottom: "target" top: "loss" }')
    h = obd.hessian_diagonal(net)
    net.forward_from_to()
    net.backward_from_to()
    x = net.blobs["data"].data.astype(np.float64)
    y = net.blobs["h"].data.astype(np.float64)
    f2 = -2 * y * (1 - y * y)  # tanh''
    dropped = (f2 * net.blobs["h"].diff).T @ (x * x)
    assert np.abs(dropped).max() > 1e-2 * np.abs(h["ip1"]).max()  # the test means something
    assert_close(fd_hessian_diagonal(net, "ip1", step=2e-3), h["ip1"] + dropped, 1e-4)
    assert_close(fd_hessian_diagonal(net, "ip2", step=2e-3), h["ip2"], 1e-4)


def test_saliency_is_half_h_w_squared_and_batches_are_averaged():
    net = make_net(*MLP_EUCLIDEAN)
    rng = np.random.default_rng(5)
    batches = [{"data": rng.normal(size=(6, 4)), "target": rng.normal(size=(6, 3))} for _ in range(2)]
    each = [obd.hessian_diagonal(net, batches=[b]) for b in batches]
    both = obd.hessian_diagonal(net, batches=batches)
    scores = obd.scores(net, batches=batches, bias=True)
    for name in ("ip1", "ip2"):
        np.testing.assert_allclose(both[name], (each[0][name] + each[1][name]) / 2, rtol=1e-12)
        weight, bias = (b.data.astype(np.float64) for b in net.layer_dict[name].blobs)
        np.testing.assert_allclose(scores[name][0], 0.5 * both[name] * weight ** 2, rtol=1e-12)
        assert scores[name][1].shape == bias.shape
    # a batch of another size reshapes the inputs
    small = obd.hessian_diagonal(net, batches={"data": batches[0]["data"][:2], "target": batches[0]["target"][:2]})
    assert net.blobs["data"].shape == (2, 4) and small["ip1"].shape == (5, 4)


def test_dns_layers_get_the_hessian_of_the_weights_they_compute_with():
    dns, plain = dns_net_and_baked_plain_twin()
    assert loss(dns) == loss(plain)
    h_dns, h_plain = obd.hessian_diagonal(dns, bias=True), obd.hessian_diagonal(plain, bias=True)
    scores = obd.scores(dns)
    for name in ("conv", "ip"):
        np.testing.assert_allclose(h_dns[name][0], h_plain[name][0], rtol=1e-10)
        np.testing.assert_allclose(h_dns[name][1], h_plain[name][1], rtol=1e-10)
        stored = dns.layer_dict[name].blobs[0].data.astype(np.float64)
        np.testing.assert_allclose(scores[name], 0.5 * h_dns[name][0] * stored ** 2, rtol=1e-12)
    # and on the plain twin, away from the kinks, they are its true diagonal up to the dropped terms:
    # at the last layer (one InnerProduct into the loss) exactly.
    assert_close(h_plain["ip"][0], fd_hessian_diagonal(plain, "ip"), 1e-4)


def test_layers_without_a_rule_are_refused_by_name():
    net = make_net(inputs(("data", (2, 4)), ("target", (2, 3))), ip("ip1", "data", 3),
                   'layer { name: "softmax" type: "Softmax" bottom: "ip1" top: "a" }',
                   'layer { name: "loss" type: "EuclideanLoss" bottom: "a" bottom: "target" top: "loss" }')
    with pytest.raises(NetError, match="'softmax' \\(Softmax\\).*no rule for this layer"):
        obd.scores(net)
    net = make_net(inputs(("data", (2, 4)), ("target", (2, 3))), ip("ip1", "data", 3),
                   'layer { name: "xent" type: "SigmoidCrossEntropyLoss" bottom: "ip1" bottom: "target" top: "loss" }')
    with pytest.raises(NetError, match="'xent' \\(SigmoidCrossEntropyLoss\\).*no rule for this loss"):
        obd.scores(net)
    net = make_net(inputs(("data", (2, 4))), ip("ip1", "data", 3))
    with pytest.raises(NetError, match="'ip1'.*feed no"):
        obd.scores(net)
    # a layer above every scored layer needs no rule when nothing below it is wanted
    net = make_net(*MLP_EUCLIDEAN)
    assert list(obd.scores(net, layers="ip2")) == ["ip2"]


# -- rules for layers with several bottoms or tops, or parameters that are not scored -------------------------
MULTI_CASES = {
    "prelu": ('type: "PReLU" prelu_param { filler { type: "uniform" min: 0.1 max: 0.5 } }', [(2, 3, 2, 2)]),
    "prelu_shared": ('type: "PReLU" prelu_param { channel_shared: true filler { type: "constant" value: 0.3 } }',
                     [(2, 3, 4)]),
    "elu": ('type: "ELU" elu_param { alpha: 0.7 }', [(2, 7)]),
    "absval": ('type: "AbsVal"', [(2, 7)]),
    "bnll": ('type: "BNLL"', [(2, 7)]),
    "batch_norm_global": ('type: "BatchNorm" batch_norm_param { use_global_stats: true eps: 0.01 }', [(3, 4, 2, 2)]),
    "scale_bias": ('type: "Scale" scale_param { bias_term: true filler { type: "uniform" min: -2 max: 2 } '
                   'bias_filler { type: "constant" value: 0.5 } }', [(2, 3, 2, 2)]),
    "scale_two_bottoms": ('type: "Scale" scale_param { axis: 0 }', [(2, 3, 2), (2, 3)]),
    "bias_two_bottoms": ('type: "Bias"', [(2, 3, 2), (3,)]),
    "eltwise_sum": ('type: "Eltwise" eltwise_param { operation: SUM coeff: 2 coeff: -0.5 coeff: 1 }',
                    [(2, 5), (2, 5), (2, 5)]),
    "eltwise_prod": ('type: "Eltwise" eltwise_param { operation: PROD }', [(2, 5), (2, 5), (2, 5)]),
    "eltwise_max": ('type: "Eltwise" eltwise_param { operation: MAX }', [(2, 5), (2, 5), (2, 5)]),
    "concat": ('type: "Concat" concat_param { axis: 1 }', [(2, 2, 3), (2, 1, 3), (2, 3, 3)]),
    "slice": ('type: "Slice" slice_param { axis: 1 slice_point: 1 slice_point: 4 }', [(2, 6, 2)]),
}
MULTI_TOPS = {"slice": 3}
MULTI_LINEAR = ("batch_norm_global", "scale_bias", "bias_two_bottoms", "eltwise_sum", "concat", "slice")


def test_the_new_rules_are_exact_diagonals_of_jt_d_j_for_every_bottom():
    for case, (text, shapes) in MULTI_CASES.items():
        npcaffe.set_random_seed(4)
        layer = create_layer(layer_param(f'name: "{case}" {text}'))
        rng = np.random.default_rng(7)
        bottom = [Blob(shape, name=f"x{k}") for k, shape in enumerate(shapes)]
        for b in bottom:  # away from kinks; distinct values so MAX's argmax never moves with a small step
            b.data[...] = (rng.permutation(b.count) * 0.013 + 0.05).reshape(b.shape) * \
                rng.choice([-1, 1], size=b.shape) if case == "eltwise_max" else \
                rng.uniform(0.2, 1.0, size=b.shape) * rng.choice([-1, 1], size=b.shape)
        top = [Blob(name=f"y{t}") for t in range(MULTI_TOPS.get(case, 1))]
        layer.setup(bottom, top)
        if case == "batch_norm_global":
            layer.blobs[0].data[...] = rng.normal(size=layer.blobs[0].shape)
            layer.blobs[1].data[...] = rng.uniform(0.5, 2.0, size=layer.blobs[1].shape)
            layer.blobs[2].data[...] = 2.0
        layer.forward(bottom, top)
        d2_top = [np.random.default_rng(1 + t).uniform(0.1, 2.0, size=t_.shape) for t, t_ in enumerate(top)]
        d2_bottom, params = obd.RULES[layer.type](layer, bottom, top, d2_top, [True] * len(bottom), False)
        assert params is None
        step = 1.0 if case in MULTI_LINEAR else 1e-3
        rtol = 1e-5 if case in MULTI_LINEAR else 2e-3
        for k, b in enumerate(bottom):
            flat = b.data.reshape(-1)
            expected = np.zeros(flat.size)
            for q in range(flat.size):
                old = flat[q]
                outs = []
                for sign in (1, -1):
                    flat[q] = old + sign * step
                    layer.forward(bottom, top)
                    outs.append([t.data.astype(np.float64).ravel() for t in top])
                flat[q] = old
                for t in range(len(top)):
                    column = (outs[0][t] - outs[1][t]) / (2 * step)
                    expected[q] += (column ** 2) @ d2_top[t].ravel()
            layer.forward(bottom, top)
            assert_close(d2_bottom[k].ravel(), expected, rtol), (case, k)


def test_obd_scores_a_net_with_batch_norm_scale_eltwise_and_concat_against_finite_differences():
    """ip1 through BatchNorm (global statistics) + Scale, summed with ip2 by an Eltwise, concatenated with
    ip4, ReLU, ip3, EuclideanLoss: every layer between ip1 / ip2 / ip4 and ip3 is elementwise (or routes),
    and no output is used twice (a Split's cross terms are dropped), so their h_ii are exact."""
    layers = (inputs(("data", (5, 4)), ("target", (5, 3))), ip("ip1", "data", 4), ip("ip2", "data", 4),
              ip("ip4", "data", 2),
              'layer { name: "bn1" type: "BatchNorm" bottom: "ip1" top: "ip1" '
              'batch_norm_param { use_global_stats: true } }',
              'layer { name: "sc1" type: "Scale" bottom: "ip1" top: "ip1" scale_param { bias_term: true '
              'filler { type: "uniform" min: 0.5 max: 1.5 } } }',
              'layer { name: "sum" type: "Eltwise" bottom: "ip1" bottom: "ip2" top: "sum" '
              'eltwise_param { coeff: 1.5 coeff: -1 } }',
              'layer { name: "cat" type: "Concat" bottom: "sum" bottom: "ip4" top: "cat" }',
              'layer { name: "relu" type: "ReLU" bottom: "cat" top: "cat" }', ip("ip3", "cat", 3),
              'layer { name: "loss" type: "EuclideanLoss" bottom: "ip3" bottom: "target" top: "loss" }')
    net = make_net(*layers, classes=3, seed=3)
    bn = net.layer_dict["bn1"]
    bn.blobs[0].data[...] = np.array([0.1, -0.2, 0.3, 0.0])
    bn.blobs[1].data[...] = np.array([1.5, 0.8, 2.0, 1.1])
    bn.blobs[2].data[...] = 1.0
    net.forward()
    h = obd.second_derivatives(net, ["ip1", "ip2", "ip4"])
    for name in ("ip1", "ip2", "ip4"):
        fd = fd_hessian_diagonal(net, name, step=3e-3)
        assert_close(h[name][0], fd, 2e-2)
