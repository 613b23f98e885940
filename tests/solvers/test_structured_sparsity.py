"""SSL's group lasso and network slimming's L1 on γ in the solver (npcaffe.solvers.structured_sparsity):
the groups against loops over the weights, the gradient against finite differences of the
regulariser, the solver step with the term (never fused), planted groups driven to zero by a few
hundred iterations on a tiny net, and bad settings named."""
import numpy as np
import pytest
from google.protobuf import text_format

from npcaffe import glog
from npcaffe.errors import SolverError
from npcaffe.kernels.im2col import im2col_reference
from npcaffe.proto import caffe_pb2
from npcaffe.solvers import get_solver
from npcaffe.solvers import structured_sparsity as ss


def _loop_norms(w, kind, group):
    """Group norms by explicit loops over a Convolution weight (N, C/G, kh, kw)."""
    n, c, kh, kw = w.shape
    rows = n // group
    if kind == "filter":
        return np.array([[np.sqrt(sum(w[g * rows + r, i, y, x] ** 2 for i in range(c) for y in range(kh)
                                      for x in range(kw))) for r in range(rows)] for g in range(group)])
    if kind == "channel":
        return np.array([[np.sqrt(sum(w[g * rows + r, i, y, x] ** 2 for r in range(rows) for y in range(kh)
                                      for x in range(kw))) for i in range(c)] for g in range(group)])
    if kind == "shape":
        return np.array([[[np.sqrt(sum(w[g * rows + r, i, y, x] ** 2 for r in range(rows)))
                           for y in range(kh) for x in range(kw)] for i in range(c)] for g in range(group)])
    return np.sqrt((w ** 2).sum())


@pytest.mark.parametrize("kind", ss.KINDS)
@pytest.mark.parametrize("group", [1, 2])
def test_convolution_groups_are_the_papers(kind, group):
    w = np.random.default_rng(0).normal(size=(4, 3, 2, 3))
    np.testing.assert_allclose(ss.group_norms(w, kind, "Convolution", group), _loop_norms(w, kind, group), rtol=1e-12)


def test_inner_product_groups_are_rows_and_columns_also_transposed():
    w = np.random.default_rng(1).normal(size=(5, 7))
    np.testing.assert_allclose(ss.group_norms(w, "filter", "InnerProduct")[0], np.linalg.norm(w, axis=1))
    for kind in ("channel", "shape"):
        np.testing.assert_allclose(ss.group_norms(w, kind, "InnerProduct")[0], np.linalg.norm(w, axis=0))
        np.testing.assert_allclose(ss.group_norms(w.T, kind, "InnerProduct", transpose=True)[0],
                                   np.linalg.norm(w, axis=0))


def _finite_difference(f, w, step=1e-6):
    grad = np.zeros_like(w)
    for index in np.ndindex(w.shape):
        plus, minus = w.copy(), w.copy()
        plus[index] += step
        minus[index] -= step
        grad[index] = (f(plus) - f(minus)) / (2 * step)
    return grad


@pytest.mark.parametrize("layer_type,shape,group,transpose", [
    ("Convolution", (4, 3, 2, 2), 1, False), ("Convolution", (4, 2, 3, 1), 2, False),
    ("InnerProduct", (3, 5), 1, False), ("InnerProduct", (5, 3), 1, True)])
def test_gradient_matches_finite_differences(layer_type, shape, group, transpose):
    w = np.random.default_rng(2).normal(size=shape)
    decays = {"filter": 0.3, "channel": 0.7, "shape": 0.2, "depth": 0.5}
    value = lambda v: ss.group_lasso_value(v, decays, layer_type, group, transpose)  # noqa: E731
    grad = ss.group_lasso_gradient(w, decays, layer_type, group, transpose)
    np.testing.assert_allclose(grad, _finite_difference(value, w), rtol=1e-6, atol=1e-8)


def test_a_group_at_zero_gets_no_gradient():
    w = np.random.default_rng(3).normal(size=(3, 2, 2, 2))
    w[1] = 0
    grad = ss.group_lasso_gradient(w, {"filter": 1.0}, "Convolution")
    assert not grad[1].any() and np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad[0], w[0] / np.linalg.norm(w[0]))


NET = '''
layer { name: "input" type: "Input" top: "data" top: "target"
  input_param { shape { dim: 16 dim: 4 dim: 5 dim: 5 } shape { dim: 16 dim: 3 dim: 3 dim: 3 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 3 kernel_size: 3 bias_term: false weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "conv" bottom: "target" top: "loss" }
'''


def _planted_solver(regularizers="", lr=0.05):
    """Conv (3 filters on 4 channels) fitting a target made by channels 0 and 1 only, and filters
    0 and 1 only (input channels 2, 3 and filter 2 carry nothing but noise)."""
    p = caffe_pb2.SolverParameter(base_lr=lr, lr_policy="fixed", display=0, max_iter=1000, random_seed=1,
                                  snapshot_after_train=False)
    text_format.Parse(NET, p.net_param)
    if regularizers:
        text_format.Parse(regularizers, p.structured_sparsity_param)
    with _quiet():
        solver = get_solver(p)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 4, 5, 5))
    true = rng.normal(size=(3, 4, 3, 3))
    true[:, 2:] = 0
    true[2] = 0
    col = np.empty((36, 16 * 9))
    im2col_reference(x, 3, 3, 0, 0, 1, 1, 1, 1, 3, 3, col)
    y = (true.reshape(3, -1) @ col).reshape(3, 16, 3, 3).transpose(1, 0, 2, 3) + 0.3 * rng.normal(size=(16, 3, 3, 3))
    solver.net.blobs["data"].data[...] = x
    solver.net.blobs["target"].data[...] = y
    return solver


class _quiet:
    def __enter__(self):
        self.was = glog.is_quiet()
        glog.set_quiet(True)

    def __exit__(self, *exc):
        glog.set_quiet(self.was)


def _trained_weight(regularizers, lr=0.05, iterations=300):
    solver = _planted_solver(regularizers, lr)
    with _quiet():
        solver.step(iterations)
    return solver.net.layer_dict["conv"].blobs[0].data.astype(np.float64)


def test_group_lasso_drives_the_planted_channels_and_filter_to_zero():
    plain = _trained_weight("")
    channels = _trained_weight("channel_decay: 0.5")
    # a subgradient step keeps a zero group within about lr x lambda of zero: a smaller rate here
    filters = _trained_weight("filter_decay: 1", lr=0.02, iterations=600)
    plain_channels = ss.group_norms(plain, "channel", "Convolution")[0]
    got = ss.group_norms(channels, "channel", "Convolution")[0]
    assert np.all(got[2:] < 0.35 * plain_channels[2:]) and np.all(got[2:] < 0.03)
    assert np.all(got[:2] > 0.95 * plain_channels[:2])
    plain_filters = ss.group_norms(_trained_weight("", lr=0.02, iterations=600), "filter", "Convolution")[0]
    got = ss.group_norms(filters, "filter", "Convolution")[0]
    assert got[2] < 0.35 * plain_filters[2] and got[2] < 0.03
    assert np.all(got[:2] > 0.95 * plain_filters[:2])


def test_the_step_adds_lr_times_the_gradient_and_is_not_fused():
    plain, ssl = _planted_solver(lr=0.1), _planted_solver("shape_decay: 0.2 depth_decay: 0.1", lr=0.1)
    assert plain.fuses_update() and not ssl.fuses_update()
    before = ssl.net.layer_dict["conv"].blobs[0].data.astype(np.float64).copy()
    np.testing.assert_array_equal(before, plain.net.layer_dict["conv"].blobs[0].data)
    with _quiet():
        plain.step(1)
        ssl.step(1)
    expected = 0.1 * ss.group_lasso_gradient(before, {"shape": 0.2, "depth": 0.1}, "Convolution")
    moved = plain.net.layer_dict["conv"].blobs[0].data.astype(np.float64) - ssl.net.layer_dict["conv"].blobs[0].data
    np.testing.assert_allclose(moved, expected, atol=2e-6)
    value = ssl.structured_sparsity.value()
    assert value == pytest.approx(ss.group_lasso_value(ssl.net.layer_dict["conv"].blobs[0].data,
                                                       {"shape": 0.2, "depth": 0.1}, "Convolution"))


BN_NET = '''
layer { name: "input" type: "Input" top: "data" top: "target"
  input_param { shape { dim: 8 dim: 2 dim: 4 dim: 4 } shape { dim: 8 dim: 3 dim: 4 dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 3 kernel_size: 1 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "scale" type: "Scale" bottom: "conv" top: "conv"
  scale_param { bias_term: true filler { type: "uniform" min: -1 max: 1 } } }
layer { name: "scale2" type: "Scale" bottom: "data" top: "scaled" scale_param { axis: 1 } }
layer { name: "loss" type: "EuclideanLoss" bottom: "conv" bottom: "target" top: "loss" }
layer { name: "silence" type: "Silence" bottom: "scaled" }
'''


def _bn_solver(regularizers=""):
    p = caffe_pb2.SolverParameter(base_lr=0.1, lr_policy="fixed", display=0, max_iter=10, random_seed=1,
                                  snapshot_after_train=False)
    text_format.Parse(BN_NET, p.net_param)
    if regularizers:
        text_format.Parse(regularizers, p.structured_sparsity_param)
    with _quiet():
        solver = get_solver(p)
    rng = np.random.default_rng(4)
    solver.net.blobs["data"].data[...] = rng.normal(size=(8, 2, 4, 4))
    solver.net.blobs["target"].data[...] = rng.normal(size=(8, 3, 4, 4))
    return solver


def test_slimming_puts_l1_on_the_scale_after_batchnorm_only():
    plain, slim = _bn_solver(), _bn_solver("scale_l1_decay: 0.01")
    assert ss.bn_scale_layers(slim.net) == ["scale"]
    assert [t.layer_name for t in slim.structured_sparsity.terms.values()] == ["scale"]
    gamma = slim.net.layer_dict["scale"].blobs[0].data.astype(np.float64).copy()
    with _quiet():
        plain.step(1)
        slim.step(1)
    moved = plain.net.layer_dict["scale"].blobs[0].data.astype(np.float64) - slim.net.layer_dict["scale"].blobs[0].data
    np.testing.assert_allclose(moved, 0.1 * 0.01 * np.sign(gamma), atol=1e-7)
    np.testing.assert_array_equal(plain.net.layer_dict["conv"].blobs[0].data, slim.net.layer_dict["conv"].blobs[0].data)


@pytest.mark.parametrize("settings,message", [
    ('filter_decay: 0.1 layer: "nope"', "no layer 'nope'"),
    ('filter_decay: 0.1 layer: "loss"', "layer 'loss' \\(EuclideanLoss\\) is neither"),
    ("filter_decay: -1", "filter_decay' must be >= 0"),
])
def test_bad_settings_are_named(settings, message):
    with pytest.raises(SolverError, match=message):
        _planted_solver(settings)


def test_scale_l1_without_a_batchnorm_scale_is_an_error():
    with pytest.raises(SolverError, match="no Scale layer after a BatchNorm"):
        _planted_solver("scale_l1_decay: 0.1")


def test_an_empty_message_changes_nothing():
    solver = _planted_solver("layer: \"conv\"")
    assert solver.structured_sparsity is None and solver.fuses_update()
