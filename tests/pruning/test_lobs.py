"""L-OBS (npcaffe.pruning.criteria.lobs): the Hessian against the input covariance from brute-force
patches, the compensating update against (damped) least-squares solves, the paper's one-weight
formulas and Woodbury recursion, and a rank-deficient layer."""
import numpy as np
import pytest

from npcaffe import masks
from npcaffe.errors import NetError
from npcaffe.pruning import select
from npcaffe.pruning.criteria import lobs
from pruning_nets import conv, dns_net_and_baked_plain_twin, inputs, ip, make_net

IP_NET = (inputs(("data", (40, 6))), ip("ip", "data", 3))
GROUPED_CONV_NET = (inputs(("data", (3, 4, 5, 5))), conv("conv", "data", 4, "kernel_size: 3 pad: 1 stride: 2 group: 2"))


def _vectors(net, name):
    """[Y per group]: the layer's input vectors as rows (one per sample / output position), with a
    constant 1 appended for the bias, gathered by explicit loops."""
    layer = net.layer_dict[name]
    x = net.blobs[net.bottom_names[name][0]].data.astype(np.float64)
    if layer.type in ("InnerProduct", "CInnerProduct"):
        y = x.reshape(x.shape[0], -1)
        return [np.hstack([y, np.ones((y.shape[0], 1))])]
    (kh, kw), (ph, pw), (sh, sw) = layer.kernel, layer.pad, layer.stride
    out_h, out_w = net.blobs[net.top_names[name][0]].shape[2:]
    per_group = x.shape[1] // layer.group
    groups = []
    for g in range(layer.group):
        rows = []
        for n in range(x.shape[0]):
            for oy in range(out_h):
                for ox in range(out_w):
                    v = [x[n, c, oy * sh - ph + i, ox * sw - pw + j]
                         if 0 <= oy * sh - ph + i < x.shape[2] and 0 <= ox * sw - pw + j < x.shape[3] else 0.0
                         for c in range(g * per_group, (g + 1) * per_group) for i in range(kh) for j in range(kw)]
                    rows.append(v + [1.0])
        groups.append(np.array(rows))
    return groups


def _theta(layer):
    """(rows θ = [weight row, bias], group of each row) of the weights the layer computes with."""
    weight, bias = masks.effective_params(layer)
    w = weight.reshape(weight.shape[0], -1).astype(np.float64)
    groups = np.arange(w.shape[0]) // (w.shape[0] // getattr(layer, "group", 1))
    return np.hstack([w, bias.astype(np.float64)[:, None]]), groups


@pytest.mark.parametrize("layers, name", [(IP_NET, "ip"), (GROUPED_CONV_NET, "conv")])
def test_hessian_is_the_damped_input_covariance_with_a_bias_column(layers, name):
    net = make_net(*layers)
    hessian = lobs.layer_hessians(net, damping=1e-3)[name]
    vectors = _vectors(net, name)
    assert len(hessian.hessians) == len(vectors) and hessian.bias and hessian.samples == len(vectors[0])
    for h, h_inv, y in zip(hessian.hessians, hessian.inverses, vectors):
        expected = y.T @ y / len(y) + 1e-3 * np.eye(y.shape[1])
        np.testing.assert_allclose(h, expected, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(h_inv @ h, np.eye(len(h)), atol=1e-9)


def test_damping_is_the_papers_woodbury_recursion_from_identity_over_damping():
    net = make_net(*IP_NET)
    damping = 1e-2
    y = _vectors(net, "ip")[0]
    inverse = np.eye(y.shape[1]) / damping
    for v in y:  # H⁻¹_{j+1} = H⁻¹_j - H⁻¹_j y yᵀ H⁻¹_j / (n + yᵀ H⁻¹_j y)
        hv = inverse @ v
        inverse = inverse - np.outer(hv, hv) / (len(y) + v @ hv)
    np.testing.assert_allclose(lobs.layer_hessians(net, damping=damping)["ip"].inverses[0], inverse, rtol=1e-9)


def test_one_weight_its_sensitivity_is_the_error_of_its_optimal_removal():
    """L_q = w_q² / (2 [H⁻¹]_qq) is the layer-wise error left by pruning q alone with the paper's update
    δθ = -w_q / [H⁻¹]_qq · H⁻¹ e_q."""
    net = make_net(*IP_NET)
    hessians = lobs.layer_hessians(net)
    scores = lobs.scores(net, hessians=hessians, bias=True)
    h_inv = hessians["ip"].inverses[0]
    theta, _ = _theta(net.layer_dict["ip"])
    for row, column in [(0, 0), (1, 4), (2, 5)]:
        mask = np.ones((3, 6), np.float32)
        mask[row, column] = 0
        update = lobs.compensation(net, {"ip": mask}, hessians=hessians)["ip"]
        paper = -theta[row, column] / h_inv[column, column] * h_inv[:, column]
        np.testing.assert_allclose(np.append(update.weight[row], update.bias[row]), paper, rtol=1e-9, atol=1e-12)
        assert np.all(update.weight[np.arange(3) != row] == 0)
        assert update.error == pytest.approx(scores["ip"][0][row, column], rel=1e-9)
    np.testing.assert_allclose(scores["ip"][1], theta[:, -1] ** 2 / (2 * h_inv[-1, -1]), rtol=1e-12)


def _check_least_squares(net, name, layer_masks, damping):
    """The compensated layer's [weights, bias] are, row by row, the damped least-squares fit of its old
    outputs by the kept inputs:  min (1/n)||Y_R θ'_R - Y θ||² + damping ||θ'_R - θ_R||²."""
    layer = net.layer_dict[name]
    theta, groups = _theta(layer)
    update = lobs.compensation(net, {name: layer_masks}, damping=damping)[name]
    vectors = _vectors(net, name)  # after the forward pass compensation ran
    new = theta + np.hstack([update.weight.reshape(theta.shape[0], -1), update.bias[:, None]])
    keep = np.hstack([layer_masks.reshape(theta.shape[0], -1), np.ones((theta.shape[0], 1))]) != 0
    error = 0.0
    for r in range(theta.shape[0]):
        y = vectors[groups[r]]
        n, kept = len(y), keep[r]
        a = np.vstack([y[:, kept] / np.sqrt(n), np.sqrt(damping) * np.eye(kept.sum())])
        b = np.concatenate([y @ theta[r] / np.sqrt(n), np.sqrt(damping) * theta[r, kept]])
        np.testing.assert_allclose(new[r, kept], np.linalg.lstsq(a, b, rcond=None)[0], rtol=1e-7, atol=1e-9)
        assert np.all(new[r, ~kept] == 0)
        change = y @ (new[r] - theta[r])
        error += 0.5 * (change @ change / n + damping * np.sum((new[r] - theta[r]) ** 2))
    assert update.error == pytest.approx(error, rel=1e-7)
    return update


@pytest.mark.parametrize("layers, name", [(IP_NET, "ip"), (GROUPED_CONV_NET, "conv")])
def test_compensation_is_the_least_squares_fit_of_the_old_outputs(layers, name):
    net = make_net(*layers)
    shape = net.layer_dict[name].blobs[0].shape
    layer_masks = (np.random.default_rng(4).random(shape) < 0.5).astype(np.float32)
    flat = layer_masks.reshape(shape[0], -1)
    flat[0, :] = 0            # a row losing every weight (only the bias compensates)
    flat[1, :] = 1            # a row losing nothing
    flat[2, :-1] = 0          # more pruned than kept: the H_RR form
    _check_least_squares(net, name, layer_masks, damping=0.0 if name == "ip" else 1e-6)


def test_apply_then_mask_gives_the_fitted_outputs():
    net = make_net(*IP_NET)
    layer = net.layer_dict["ip"]
    hessians = lobs.layer_hessians(net, damping=0.0)
    layer_masks = select.layer_masks(lobs.scores(net, hessians=hessians), 0.5)
    before = net.forward()["ip"].astype(np.float64).copy()
    updates = lobs.compensation(net, layer_masks, hessians=hessians)
    lobs.apply_compensation(net, updates)
    select.set_masks(net, layer_masks)
    after = net.forward()["ip"].astype(np.float64)
    assert np.count_nonzero(layer.blobs[0].data) == np.count_nonzero(layer_masks["ip"])
    # E = 1/(2n) Σ ||ŷ - y||², summed over output units, up to float32 rounding of the weights
    assert 0.5 * np.sum((after - before) ** 2) / len(before) == pytest.approx(updates["ip"].error, rel=1e-4)


def test_rank_deficient_input_covariance_needs_and_takes_damping():
    """Fewer samples than inputs, a duplicated input and a dead one: H is singular.  With the paper's
    damping the duplicate costs (almost) nothing to prune, because its twin takes its weight over."""
    net = make_net(inputs(("data", (5, 6))), ip("ip", "data", 3))
    x = net.blobs["data"].data
    x[:, 1] = x[:, 0]
    x[:, 5] = 0
    net.forward_from_to()
    with pytest.raises(NetError, match="singular.*damping"):
        lobs.layer_hessians(net, damping=0.0)
    damping = 1e-6
    scores = lobs.scores(net, damping=damping)["ip"]
    weight = net.layer_dict["ip"].blobs[0].data.astype(np.float64)
    assert np.all(np.isfinite(scores))
    # duplicate: [H⁻¹]_qq ≈ 1 / (2 damping); dead: 1 / damping.  So L_q ≈ damping w² or half that.
    assert np.all(scores[:, [0, 5]] <= 1.01 * damping * weight[:, [0, 5]] ** 2)
    assert scores[:, [2, 3, 4]].min() > 100 * scores[:, [0, 5]].max()
    layer_masks = np.ones((3, 6), np.float32)
    layer_masks[:, 0] = 0
    update = _check_least_squares(net, "ip", layer_masks, damping)
    np.testing.assert_allclose(weight[:, 1] + update.weight[:, 1], weight[:, 0] + weight[:, 1], atol=1e-4)
    assert update.error < 1e-5


def test_dns_layer_compensates_from_the_weights_it_computes_with():
    dns, plain = dns_net_and_baked_plain_twin()
    weight_mask, _ = masks.mask_blobs(dns.layer_dict["ip"])
    new_mask = weight_mask.data * (np.random.default_rng(1).random(weight_mask.shape) < 0.7)
    on_dns = lobs.compensation(dns, {"ip": new_mask})["ip"]
    on_plain = _check_least_squares(plain, "ip", new_mask, lobs.DAMPING)
    np.testing.assert_allclose(on_dns.weight, on_plain.weight, rtol=1e-10, atol=1e-12)
    lobs.apply_compensation(dns, {"ip": on_dns})
    select.set_masks(dns, {"ip": new_mask})
    lobs.apply_compensation(plain, {"ip": on_plain})
    select.set_masks(plain, {"ip": new_mask})
    np.testing.assert_array_equal(dns.forward()["loss"], plain.forward()["loss"])
