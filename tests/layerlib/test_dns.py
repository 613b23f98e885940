"""DNS layers CConvolution / CInnerProduct: masked forward and backward, statistics,
the gate, snapshots, loading upstream models, and the iteration-0 surgery of the
upstream golden runs."""
import csv
import os

import numpy as np
import pytest
from google.protobuf import text_format

import npcaffe
from gradient_check import check_gradient
from helpers import layer_param, make_blob, shared_path
from npcaffe.blob import Blob
from npcaffe.errors import NetError
from npcaffe.fileio.prototxt import read_net
from npcaffe.kernels import glibc_rand
from npcaffe.layer import TEST, TRAIN, create_layer
from npcaffe.layerlib import dns
from npcaffe.proto import caffe_pb2

FIRST_RANDS = [1804289383, 846930886, 1681692777, 1714636915]

CONV = """name: "c" type: "{type}"
convolution_param {{ num_output: 3 kernel_size: 2 stride: 1 pad: 1
  weight_filler {{ type: "gaussian" std: 0.5 }} bias_filler {{ type: "uniform" min: -1 max: 1 }} }}
cconvolution_param {{ gamma: 0.0001 power: 1 c_rate: {c_rate} iter_stop: {iter_stop} {fillers} }}"""

IP = """name: "f" type: "{type}"
inner_product_param {{ num_output: 4
  weight_filler {{ type: "gaussian" std: 0.5 }} bias_filler {{ type: "uniform" min: -1 max: 1 }} }}
cinner_product_param {{ gamma: 0.0001 power: 1 c_rate: {c_rate} iter_stop: {iter_stop} {fillers} }}"""

ONES = 'weight_mask_filler { type: "constant" value: 1 } bias_mask_filler { type: "constant" value: 1 }'


@pytest.fixture(autouse=True)
def fresh_rand():
    glibc_rand.reset()
    yield
    glibc_rand.reset()


def make(kind, phase=TRAIN, c_rate=1.0, iter_stop=10000, fillers=ONES, type_name=None):
    text = CONV if kind == "conv" else IP
    default = "CConvolution" if kind == "conv" else "CInnerProduct"
    param = layer_param(text.format(type=type_name or default, c_rate=c_rate, iter_stop=iter_stop, fillers=fillers))
    return create_layer(param, phase)


def setup(layer, shapes=((2, 2, 4, 3),), seed=0):
    bottom = [make_blob(s, seed=seed + i) for i, s in enumerate(shapes)]
    top = [Blob(()) for _ in shapes]
    layer.setup(bottom, top)
    return bottom, top


def random_masks(layer, seed=5):
    rng = np.random.default_rng(seed)
    for j in (2, 3):
        layer.blobs[j].data[...] = rng.integers(0, 2, layer.blobs[j].shape)
    layer.blobs[2].flat_data[0] = 0
    layer.blobs[2].flat_data[1] = 1


def plain_twin(layer, bottom, tops_like):
    """A Convolution / InnerProduct with weights W*T, b*T_b: the reference computation."""
    param = caffe_pb2.LayerParameter()
    param.CopyFrom(layer.layer_param)
    param.type = "Convolution" if isinstance(layer, dns.CConvolution) else "InnerProduct"
    twin = create_layer(param, layer.phase)
    tops = [Blob(()) for _ in tops_like]
    twin.setup(bottom, tops)
    twin.blobs[0].data[...] = layer.blobs[0].data * layer.blobs[2].data
    twin.blobs[1].data[...] = layer.blobs[1].data * layer.blobs[3].data
    return twin, tops


# -- structure ---------------------------------------------------------------------

@pytest.mark.parametrize("kind,alias", [("conv", "CMaskedConvolution"), ("ip", "CMaskedInnerProduct")])
def test_blobs_and_aliases(kind, alias):
    for type_name in (None, alias):
        layer = make(kind, type_name=type_name)
        setup(layer)
        assert [b.shape for b in layer.blobs[2:]] == [b.shape for b in layer.blobs[:2]]
        assert all((b.data == 1).all() for b in layer.blobs[2:])
        assert layer.mask_param_indices == (2, 3) and layer.accepts_fewer_blobs
    assert type(make(kind, type_name=alias)) is type(make(kind))


@pytest.mark.parametrize("kind", ["conv", "ip"])
def test_missing_mask_filler_warns_and_zeroes(kind, glog_capture):
    layer = make(kind, fillers="")
    setup(layer)
    text = glog_capture.getvalue()
    assert "layer 'c'" in text or "layer 'f'" in text
    assert 'weight_mask_filler { type: "constant" value: 1 }' in text
    assert 'bias_mask_filler { type: "constant" value: 1 }' in text
    assert all((b.data == 0).all() for b in layer.blobs[2:])


def test_missing_mask_filler_gives_nan_statistics_in_conv(glog_capture):
    layer = make("conv", fillers="")
    bottom, top = setup(layer)
    layer.forward(bottom, top)
    assert np.isnan(layer.mu) and np.isnan(layer.std)
    assert not layer.last_update.pruned and not layer.last_update.spliced
    assert (top[0].data == 0).all()


@pytest.mark.parametrize("kind", ["conv", "ip"])
def test_bias_term_false_is_an_error(kind):
    text = (CONV if kind == "conv" else IP).format(type="CConvolution" if kind == "conv" else "CInnerProduct",
                                                   c_rate=1, iter_stop=10, fillers=ONES)
    text = text.replace("num_output", "bias_term: false num_output")
    layer = create_layer(layer_param(text))
    with pytest.raises(NetError, match="bias_term: false.*blobs 2 and 3"):
        setup(layer)


def test_transpose_is_an_error():
    layer = create_layer(layer_param(IP.format(type="CInnerProduct", c_rate=1, iter_stop=10, fillers=ONES)
                                     .replace("num_output", "transpose: true num_output")))
    with pytest.raises(NetError, match="transpose"):
        setup(layer)


@pytest.mark.parametrize("value,expected", [("10000", 10000), ("2.9", 2), ("-1.5", -1), ("1e10", -2 ** 31)])
def test_iter_stop_is_converted_like_cpp(value, expected, glog_capture):
    layer = make("ip", iter_stop=value)
    setup(layer)
    assert layer.iter_stop == expected


# -- forward -----------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["conv", "ip"])
def test_test_phase_is_a_masked_forward_without_surgery(kind):
    layer = make(kind, phase=TEST)
    bottom, top = setup(layer, ((2, 2, 4, 3), (2, 2, 4, 3)) if kind == "conv" else ((2, 2, 4, 3),))
    random_masks(layer)
    masks = [b.data.copy() for b in layer.blobs[2:]]
    layer.forward(bottom, top)
    assert [np.array_equal(m, b.data) for m, b in zip(masks, layer.blobs[2:])] == [True, True]
    assert layer.last_update is None and layer.mu == 0 and layer.std == 0
    assert glibc_rand.rand() == FIRST_RANDS[0]  # nothing drawn
    twin, twin_top = plain_twin(layer, bottom, top)
    twin.forward(bottom, twin_top)
    for t, u in zip(top, twin_top):
        np.testing.assert_array_equal(t.data, u.data)


def test_statistics_and_surgery_by_hand_inner_product():
    layer = make("ip", c_rate=0.5)
    bottom, top = setup(layer, ((1, 3),))
    layer.blobs[0].data[...] = np.array([[1.5, -0.2, 0.3], [0.4, -0.5, 0.0], [0.7, 0.8, -0.9], [1.0, 0.05, 0.6]])
    layer.blobs[1].data[...] = [0.0, -0.25, 2.0, 0.15]
    layer.blobs[2].data.flat[0] = 0  # IP statistics ignore the mask
    x = np.concatenate([layer.blobs[0].flat_data, layer.blobs[1].flat_data])
    n = np.float32(np.count_nonzero(x))
    mu = np.float32(np.cumsum(np.abs(x), dtype=np.float32)[-1] / n)
    var = np.float32(np.float32(np.cumsum(x * x, dtype=np.float32)[-1] - n * mu * mu) / n)
    std = np.sqrt(var)
    layer.forward(bottom, top)
    assert (layer.mu, layer.std) == (mu, std)
    t = np.float32(mu + np.float32(0.5) * std)
    u = layer.last_update
    assert (u.iter, u.rand, u.gate_open, u.threshold) == (0, FIRST_RANDS[0], True, t)
    assert u.r == np.float32(FIRST_RANDS[0]) / np.float32(2 ** 31) and u.p == 1.0
    w, b = layer.blobs[0].flat_data, layer.blobs[1].flat_data
    old = np.ones(12, np.float32)
    old[0] = 0
    expected_w = np.where(old == 1, np.abs(w).astype(np.float64) > 0.9 * np.float64(t),
                          np.abs(w).astype(np.float64) > 1.1 * np.float64(t)).astype(np.float32)
    np.testing.assert_array_equal(layer.blobs[2].flat_data, expected_w)
    np.testing.assert_array_equal(layer.blobs[3].flat_data, (np.abs(b) > 0.9 * np.float64(t)).astype(np.float32))
    assert u.spliced == 1 and u.pruned == int((expected_w[1:] == 0).sum()) > 0
    assert u.bias_pruned == 3 and u.bias_spliced == 0
    np.testing.assert_allclose(top[0].data, bottom[0].data @ (w * layer.blobs[2].flat_data).reshape(4, 3).T
                               + b * layer.blobs[3].flat_data, rtol=1e-6)


def test_conv_statistics_use_the_masked_weights():
    layer = make("conv")
    bottom, top = setup(layer)
    random_masks(layer)
    w, b = layer.blobs[0].flat_data, layer.blobs[1].flat_data
    wm, bm = layer.blobs[2].flat_data.copy(), layer.blobs[3].flat_data.copy()
    layer.forward(bottom, top)
    x = np.concatenate([w * wm, b * bm])
    assert layer.mu == np.float32(np.cumsum(np.abs(x), dtype=np.float32)[-1] / np.float32(np.count_nonzero(x)))


def test_statistics_once_at_iteration_zero():
    layer = make("ip")
    bottom, top = setup(layer, ((2, 5),))
    layer.forward(bottom, top)
    mu, std = layer.mu, layer.std
    layer.blobs[0].data[...] *= 3
    layer.forward(bottom, top)      # iteration 0 again, but std != 0
    assert (layer.mu, layer.std) == (mu, std)
    layer.iter = 1
    layer.std = np.float32(0)
    layer.forward(bottom, top)      # std == 0, but iteration 1
    assert (layer.mu, layer.std) == (mu, 0)
    layer.iter = 0
    layer.forward(bottom, top)      # both: recomputed, adding onto the old mu (upstream never resets it)
    w = np.concatenate([layer.blobs[0].flat_data, layer.blobs[1].flat_data])
    total = np.cumsum(np.concatenate([[mu], np.abs(w)]), dtype=np.float32)[-1]
    assert layer.mu == np.float32(total / np.float32(np.count_nonzero(w)))


def test_one_draw_per_train_forward_and_the_gate():
    layers = [make("conv"), make("ip", c_rate=0.0, iter_stop=3)]
    blobs = [setup(layers[0]), setup(layers[1], ((2, 5),))]
    for (layer, (bottom, top)), want in zip(zip(layers, blobs), FIRST_RANDS[:2]):
        layer.forward(bottom, top)
        assert layer.last_update.rand == want
    ip, (bottom, top) = layers[1], blobs[1]
    # iter_stop: the draw happens, the masks stay.
    ip.iter = 3
    masks = ip.blobs[2].data.copy()
    ip.blobs[0].data[...] *= 1e-3  # everything below the threshold now
    ip.forward(bottom, top)
    u = ip.last_update
    assert u.rand == FIRST_RANDS[2] and u.gate_open and not u.mask_update and u.pruned == 0
    np.testing.assert_array_equal(ip.blobs[2].data, masks)
    # p <= r: closed; p > r: open.
    ip.iter = 2
    ip.gamma = np.float32(1e6)
    ip.forward(bottom, top)
    assert ip.last_update.rand == FIRST_RANDS[3] and not ip.last_update.gate_open
    ip.gamma = np.float32(1e-4)
    ip.forward(bottom, top)
    u = ip.last_update
    assert u.gate_open and u.p == np.float32(np.float32(1) + np.float32(1e-4) * 2) ** np.float32(-1)
    assert u.pruned == int(masks.sum())


def test_gate_trace_of_the_golden_runs():
    """Every upstream draw of both 300-iteration runs: value, r, p and gate."""
    for bundle, cparams in (("lenet5-dns", ["conv1", "conv2", "ip1", "ip2"]),
                            ("lenet300100-dns", ["ip1", "ip2", "ip3"])):
        path = shared_path("crosscheck", bundle, "upstream", "gate_trace.csv")
        glibc_rand.reset()
        layers = {name: make("ip") for name in cparams}
        io_blobs = {name: setup(layer, ((1, 2),)) for name, layer in layers.items()}
        with open(path) as f:
            for row in csv.DictReader(f):
                layer = layers[row["layer"]]
                layer.iter = int(row["iteration"])
                layer.forward(*io_blobs[row["layer"]])
                u = layer.last_update
                assert u.rand == int(row["rand"]), row
                assert np.float32(u.r) == np.float32(row["r_float32"]), row
                assert u.p == pytest.approx(float(row["p_float32"]), rel=2e-7), row
                assert int(u.gate_open) == int(row["gate_open"]), row
                assert int(u.mask_update) == int(row["mask_update"]), row


# -- backward ----------------------------------------------------------------------

@pytest.mark.parametrize("phase", [TEST, TRAIN])
@pytest.mark.parametrize("kind", ["conv", "ip"])
def test_bottom_gradient_uses_masked_weights(kind, phase):
    layer = make(kind, phase=phase, iter_stop=1)
    layer.iter = 1  # TRAIN with a fixed mask: the gate is shut from iter_stop on
    bottom, top = setup(layer)
    random_masks(layer)
    check_gradient(layer, bottom, top, check_bottom=0, param_blobs=False, setup=False)


@pytest.mark.parametrize("kind", ["conv", "ip"])
def test_param_gradient_is_the_gradient_wrt_the_masked_weights(kind):
    layer = make(kind, phase=TEST)
    bottom, top = setup(layer)
    random_masks(layer)
    twin, twin_top = plain_twin(layer, bottom, top)
    layer.forward(bottom, top)
    twin.forward(bottom, twin_top)
    top[0].diff[...] = np.random.default_rng(2).standard_normal(top[0].shape)
    twin_top[0].diff[...] = top[0].diff
    layer.backward(top, [True], bottom)
    dx = bottom[0].diff.copy()
    twin.backward(twin_top, [True], bottom)
    np.testing.assert_array_equal(layer.blobs[0].diff, twin.blobs[0].diff)
    np.testing.assert_array_equal(layer.blobs[1].diff, twin.blobs[1].diff)
    np.testing.assert_array_equal(dx, bottom[0].diff)


@pytest.mark.parametrize("kind", ["conv", "ip"])
def test_param_gradient_with_all_ones_masks_is_the_true_gradient(kind):
    layer = make(kind, phase=TEST)
    bottom, top = setup(layer)
    check_gradient(_WeightAndBias(layer), bottom, top, setup=False)


class _WeightAndBias:
    """A C-layer seen by check_gradient as having only its weight and bias (not the masks)."""

    def __init__(self, layer):
        self.blobs = layer.blobs[:2]
        self.forward = layer.forward
        self.backward = layer.backward


@pytest.mark.parametrize("kind", ["conv", "ip"])
def test_existing_diff_is_masked_before_accumulating(kind):
    shapes = ((2, 2, 4, 3), (2, 2, 4, 3)) if kind == "conv" else ((2, 2, 4, 3),)
    layer = make(kind, phase=TEST)
    bottom, top = setup(layer, shapes)
    random_masks(layer)
    twin, twin_top = plain_twin(layer, bottom, top)
    rng = np.random.default_rng(4)
    layer.forward(bottom, top)
    twin.forward(bottom, twin_top)
    for t, u in zip(top, twin_top):
        t.diff[...] = rng.standard_normal(t.shape).astype(np.float32)
        u.diff[...] = t.diff
    old = [rng.standard_normal(b.shape).astype(np.float32) for b in layer.blobs[:2]]
    for b, o in zip(layer.blobs, old):
        b.diff[...] = o
    layer.backward(top, [False] * len(top), bottom)
    # Gradients per top, from the plain layer with W*T.
    grads = []
    for i in range(len(top)):
        for b in twin.blobs:
            b.diff[...] = 0
        twin.backward([twin_top[i]], [False], [bottom[i]])
        grads.append([b.diff.copy() for b in twin.blobs])
    for j, mask in ((0, layer.blobs[2].data), (1, layer.blobs[3].data)):
        expected = old[j] * mask + grads[0][j]
        for g in grads[1:]:  # CConvolution masks again before each further top
            expected = expected * mask + g[j]
        np.testing.assert_allclose(layer.blobs[j].diff, expected, rtol=1e-6, atol=1e-6)


def test_conv_masks_the_weight_diff_when_only_the_bottom_needs_backward():
    layer = make("conv", phase=TEST)
    bottom, top = setup(layer)
    random_masks(layer)
    layer.set_param_propagate_down(0, False)
    layer.set_param_propagate_down(1, False)
    layer.forward(bottom, top)
    for b in layer.blobs:
        b.diff[...] = 1
    layer.backward(top, [False], bottom)
    assert (layer.blobs[0].diff == 1).all()
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(layer.blobs[0].diff, layer.blobs[2].data)
    assert (layer.blobs[1].diff == 1).all()


# -- snapshots ---------------------------------------------------------------------

def _tiny_net():
    text = f"""name: "tiny" layer {{ name: "in" type: "Input" top: "x" input_param {{ shape {{ dim: 2 dim: 5 }} }} }}
    layer {{ name: "f" type: "CInnerProduct" bottom: "x" top: "y"
      inner_product_param {{ num_output: 4 weight_filler {{ type: "gaussian" std: 0.5 }} }}
      cinner_product_param {{ c_rate: 0.5 {ONES} }} }}"""
    net = npcaffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), npcaffe.TRAIN)
    net.blobs["x"].data[...] = np.random.default_rng(0).standard_normal((2, 5))
    return net


def test_state_round_trip_is_bit_exact_and_resumes_the_draws(quiet_log):
    import json
    net = _tiny_net()
    net.forward()
    layer = net.layer_dict["f"]
    saved = json.loads(json.dumps({"layer": layer.get_state(), "rand": glibc_rand.get_state()}))
    mu, std = layer.mu, layer.std
    net.set_iter(1)
    net.forward()
    next_draw = layer.last_update.rand
    other = _tiny_net()
    resumed = other.layer_dict["f"]
    resumed.set_state(saved["layer"])
    glibc_rand.set_state(saved["rand"])
    assert (resumed.mu.view(np.uint32), resumed.std.view(np.uint32)) == (mu.view(np.uint32), std.view(np.uint32))
    other.set_iter(1)
    other.forward()
    assert resumed.last_update.rand == next_draw


def test_upstream_resume_splices_everything_back(quiet_log):
    net = _tiny_net()
    net.forward()
    layer = net.layer_dict["f"]
    assert layer.last_update.pruned > 0
    dns.upstream_resume(net)
    assert layer.mu == 0 and layer.std == 0
    net.set_iter(5)
    net.forward()
    u = layer.last_update
    assert u.rand == FIRST_RANDS[0] and u.threshold == 0
    np.testing.assert_array_equal(layer.blobs[2].data, (layer.blobs[0].data != 0).astype(np.float32))


# -- upstream models and golden runs -------------------------------------------------

def _deploy_dns_lenet5(weight_mask=1):
    """Upstream's LeNet-5 deploy net with its layers turned into C-layers."""
    param = read_net(shared_path("upstream-dns", "lenet5.prototxt"))
    for layer in param.layer:
        if layer.type in ("Convolution", "InnerProduct"):
            c = layer.cconvolution_param if layer.type == "Convolution" else layer.cinner_product_param
            layer.type = "C" + layer.type
            c.weight_mask_filler.type = "constant"
            c.weight_mask_filler.value = weight_mask
            c.bias_mask_filler.type = "constant"
            c.bias_mask_filler.value = 1
    return param


def test_two_blob_sparse_model_keeps_the_filler_masks(tmp_path):
    weights = shared_path("upstream-dns", "caffe_lenet5_sparse.caffemodel")
    net = npcaffe.Net(_deploy_dns_lenet5(), npcaffe.TEST, weights=weights)
    plain = npcaffe.Net(shared_path("upstream-dns", "lenet5.prototxt"), npcaffe.TEST, weights=weights)
    for name in ("conv1", "conv2", "ip1", "ip2"):
        blobs = net.params[name]
        assert len(blobs) == 4 and all((b.data == 1).all() for b in blobs[2:])
        np.testing.assert_array_equal(blobs[0].data, plain.params[name][0].data)
    x = np.random.default_rng(0).random(net.blobs["data"].shape).astype(np.float32)
    np.testing.assert_array_equal(net.forward(data=x)["prob"], plain.forward(data=x)["prob"])
    # A 4-blob model (ours, saved) brings its masks back.
    net.params["ip2"][2].data[0, :3] = 0
    net.save(tmp_path / "four.caffemodel")
    again = npcaffe.Net(_deploy_dns_lenet5(), npcaffe.TEST, weights=str(tmp_path / "four.caffemodel"))
    np.testing.assert_array_equal(again.params["ip2"][2].data, net.params["ip2"][2].data)


@pytest.mark.parametrize("bundle,layers", [("lenet5-dns", ["conv1", "conv2", "ip1", "ip2"]),
                                           ("lenet300100-dns", ["ip1", "ip2", "ip3"])])
def test_iteration_zero_surgery_matches_upstream(bundle, layers, monkeypatch, quiet_log):
    root = shared_path("crosscheck", bundle)
    packed = np.load(shared_path("crosscheck", bundle, "upstream", "extra", "masks_after_iter0_forward.npz"))
    with open(os.path.join(root, "upstream", "loss.csv")) as f:
        loss0 = float(next(csv.DictReader(f))["loss"])
    with open(os.path.join(root, "upstream", "gate_trace.csv")) as f:
        trace = [row for row in csv.DictReader(f) if row["forward"] == "0"]
    monkeypatch.chdir(root)  # the Data layer's source is relative to the bundle
    net = npcaffe.Net("net.prototxt", npcaffe.TRAIN, weights="init.caffemodel")
    net.set_iter(0)
    loss = net.forward_from_to()
    for name in layers:
        for j, kind in ((2, "weight_mask"), (3, "bias_mask")):
            size = int(packed[f"{name}.{kind}.size"])
            expected = np.unpackbits(packed[f"{name}.{kind}.packbits"])[:size]
            np.testing.assert_array_equal(net.params[name][j].flat_data, expected, err_msg=f"{name} {kind}")
    assert [row["layer"] for row in trace] == layers
    for row in trace:
        u = net.layer_dict[row["layer"]].last_update
        assert (u.rand, u.gate_open) == (int(row["rand"]), bool(int(row["gate_open"])))
    assert float(loss) == pytest.approx(loss0, rel=1e-5)


@pytest.mark.parametrize("num", [1, 2])
def test_deferred_cleared_diff_gets_the_bits_of_masking_zeros(num):
    """CInnerProduct masks the diff it finds before adding its gradient; from a clear with deferred
    zeros (a solver's step) it writes the gradient instead: the same bits."""
    results = []
    for deferred in (False, True):
        npcaffe.rng.set_random_seed(3)
        layer = make("ip", phase=TEST)
        bottom, top = setup(layer, ((num, 2, 4, 3),))
        random_masks(layer)
        layer.forward(bottom, top)
        top[0].diff[...] = np.random.default_rng(6).standard_normal(top[0].shape).astype(np.float32)
        for blob in layer.blobs[:2]:
            blob.diff[...] = 3
            blob.clear_diff(deferred)
        layer.backward(top, [True], bottom)
        results.append([b.diff.copy() for b in layer.blobs[:2]] + [bottom[0].diff.copy()])
    for eager, deferred in zip(*results):
        np.testing.assert_array_equal(deferred, eager)
        assert np.array_equal(np.signbit(deferred), np.signbit(eager))
