"""DNS-CP layers CPConvolution / CPInnerProduct: which weights make a channel, the mask update
against the seed's thresholds and DNS's gate on hand-made weights, gradients w.r.t. W ⊙ T,
and the mask core's view of the channel mask (kept counts, stored layout, bake, plain model)."""
import numpy as np
import pytest

from gradient_check import check_gradient
from helpers import layer_param, make_blob
from npcaffe import masks
from npcaffe.blob import Blob
from npcaffe.errors import NetError
from npcaffe.kernels import glibc_rand
from npcaffe.kernels.channel_surgery import channel_means, channel_view_shape, expand_channel_mask
from npcaffe.layer import TEST, TRAIN, create_layer
from npcaffe.layerlib.dns_cp import CPConvolution, is_channel_surgery_layer
from npcaffe.proto import caffe_pb2

FIRST_RANDS = [1804289383, 846930886, 1681692777, 1714636915]  # glibc rand() from its default seed
RAND_MAX = 2147483647

CONV = """name: "c" type: "CPConvolution"
convolution_param {{ num_output: {out} kernel_size: 2 group: {group} pad: 1
  weight_filler {{ type: "gaussian" std: 0.5 }} bias_filler {{ type: "uniform" min: -1 max: 1 }} }}
channel_surgery_param {{ gamma: {gamma} power: 1 c_rate: {c_rate} iter_stop: {iter_stop} }}"""

IP = """name: "f" type: "CPInnerProduct"
inner_product_param {{ num_output: {out}
  weight_filler {{ type: "gaussian" std: 0.5 }} bias_filler {{ type: "uniform" min: -1 max: 1 }} }}
channel_surgery_param {{ gamma: {gamma} power: 1 c_rate: {c_rate} iter_stop: {iter_stop} {extra} }}"""


@pytest.fixture(autouse=True)
def fresh_rand():
    glibc_rand.reset()
    yield
    glibc_rand.reset()


def make(kind, phase=TRAIN, out=4, group=1, gamma=0.0001, c_rate=0.5, iter_stop=10000, extra=""):
    text = CONV if kind == "conv" else IP
    param = layer_param(text.format(out=out, group=group, gamma=gamma, c_rate=c_rate, iter_stop=iter_stop,
                                    extra=extra))
    return create_layer(param, phase)


def setup(layer, shapes=((2, 4, 3, 3),), seed=0):
    bottom = [make_blob(s, seed=seed + i) for i, s in enumerate(shapes)]
    top = [Blob(()) for _ in shapes]
    layer.setup(bottom, top)
    return bottom, top


def r_of(raw):
    return float(np.float32(raw) / np.float32(RAND_MAX))


# -- which weights make a channel -------------------------------------------------------

def test_conv_channel_k_is_every_filter_slice_of_its_group():
    layer = make("conv", out=4, group=2)
    setup(layer)                                   # 4 input channels, 2 groups: weight (4, 2, 2, 2)
    assert [b.shape for b in layer.blobs] == [(4, 2, 2, 2), (4,), (4,)]
    layer.channel_mask[...] = [1, 0, 0, 1]
    t = masks.mask_blobs(layer)[0].data
    expected = np.zeros((4, 2, 2, 2), np.float32)
    for k, kept in enumerate([1, 0, 0, 1]):        # channel k: group k // 2, column k % 2, filters of the group
        group, column = divmod(k, 2)
        expected[2 * group:2 * group + 2, column] = kept
    np.testing.assert_array_equal(t, expected)
    assert masks.mask_blobs(layer)[1] is None      # the bias is not masked
    w = np.abs(layer.blobs[0].data).astype(np.float64)
    means = channel_means(layer.blobs[0].data, layer.view_shape)
    for k in range(4):
        group, column = divmod(k, 2)
        assert means[k] == pytest.approx(w[2 * group:2 * group + 2, column].mean(), rel=1e-12)


@pytest.mark.parametrize("bottom_shape,extra,channels", [((2, 3, 2, 2), "", 3), ((2, 12), "", 12),
                                                          ((2, 12), "channel_size: 4", 3)])
def test_inner_product_channels_are_runs_of_inputs(bottom_shape, extra, channels):
    layer = make("ip", out=2, extra=extra)
    setup(layer, (bottom_shape,))
    assert layer.channel_mask.shape == (channels,)
    size = 12 // channels
    layer.channel_mask[...] = np.arange(channels) % 2
    t = masks.mask_blobs(layer)[0].data
    np.testing.assert_array_equal(t, np.repeat(np.arange(channels) % 2, size)[None, :].repeat(2, 0))


def test_expand_and_view_are_inverse_of_the_layout():
    view = channel_view_shape((6, 2, 3), 4, "conv")    # a 1-D conv, 2 groups
    assert view == (2, 3, 2, 3)
    spread = expand_channel_mask(np.array([1, 0, 1, 1], np.float32), (6, 2, 3), view)
    assert spread[:3, 1].sum() == 0 and spread[:3, 0].min() == 1 and spread[3:].min() == 1
    with pytest.raises(ValueError):
        channel_view_shape((5, 7), 3, "ip")


# -- the mask update: the seed's thresholds and DNS's gate, by hand -----------------------

def hand_ip(c_rate=0.5, gamma=0.0001, iter_stop=10000):
    """One output, 4 channels of 2 inputs with |w| means 1, 2, 3, 10 (signs mixed):
    mu = 4, std = sqrt(mean w^2 - mu^2) = sqrt(28.5 - 16)."""
    layer = make("ip", out=1, c_rate=c_rate, gamma=gamma, iter_stop=iter_stop, extra="channel_size: 2")
    bottom, top = setup(layer, ((2, 8),))
    layer.blobs[0].data[...] = [[1, -1, -2, 2, 3, -3, 10, -10]]
    layer.channel_mask[...] = [1, 1, 0, 0]
    return layer, bottom, top


def test_mask_update_follows_the_thresholds():
    layer, bottom, top = hand_ip(c_rate=0.5)
    layer.forward(bottom, top)
    u = layer.last_update
    std = np.sqrt(12.5)
    assert (layer.mu, layer.std) == (pytest.approx(4.0, rel=1e-15), pytest.approx(std, rel=1e-15))
    assert u.low == pytest.approx(4 - 0.5 * std, rel=1e-15) and u.high == pytest.approx(4 + 0.5 * std, rel=1e-15)
    assert u.gate_open and u.mask_update and u.rand == FIRST_RANDS[0] and u.p == 1.0
    # 1 < a and 2 < a: pruned; a <= 3 <= b: unchanged (stays 0); 10 > b: spliced.
    np.testing.assert_array_equal(layer.channel_mask, [0, 0, 0, 1])
    assert (u.pruned, u.spliced, u.kept_channels) == (2, 1, 1)
    expected = bottom[0].data[:, 6] * 10 - bottom[0].data[:, 7] * 10 + layer.blobs[1].data[0]
    np.testing.assert_allclose(top[0].data[:, 0], expected, rtol=1e-6)


def test_a_and_b_are_clamped_at_zero():
    layer, bottom, top = hand_ip(c_rate=2.0)   # a = max(0, 4 - 2 std) = 0, b = 4 + 2 std = 11.07
    layer.forward(bottom, top)
    assert layer.last_update.low == 0.0 and layer.last_update.high == pytest.approx(4 + 2 * np.sqrt(12.5))
    np.testing.assert_array_equal(layer.channel_mask, [1, 1, 0, 0])  # nothing below 0, nothing above 11.07
    assert (layer.last_update.pruned, layer.last_update.spliced) == (0, 0)


def test_the_gate_and_iter_stop():
    # gamma 1, power 1, iter 1: p = 0.5.  Draws: r = 0.840 (shut), then 0.394 (open).
    layer, bottom, top = hand_ip(c_rate=0.5, gamma=1.0, iter_stop=2)
    layer.iter = 1
    layer.forward(bottom, top)
    u = layer.last_update
    assert (u.rand, u.r, u.p) == (FIRST_RANDS[0], r_of(FIRST_RANDS[0]), 0.5)
    assert not u.gate_open and not u.mask_update
    np.testing.assert_array_equal(layer.channel_mask, [1, 1, 0, 0])
    layer.forward(bottom, top)
    assert layer.last_update.rand == FIRST_RANDS[1] and layer.last_update.mask_update
    np.testing.assert_array_equal(layer.channel_mask, [0, 0, 0, 1])
    # From iter_stop on the gate may open but the mask stays; the draw still happens.
    layer.channel_mask[...] = [1, 1, 1, 1]
    layer.iter = 2
    layer.blobs[0].data[...] = 0               # would prune everything
    glibc_rand.reset()
    layer.forward(bottom, top)
    glibc_rand.reset()
    layer.forward(bottom, top)
    u = layer.last_update
    assert u.rand == FIRST_RANDS[0] and not u.mask_update
    np.testing.assert_array_equal(layer.channel_mask, [1, 1, 1, 1])


def test_statistics_are_taken_once_and_test_phase_does_nothing():
    layer, bottom, top = hand_ip()
    layer.forward(bottom, top)
    mu, std = layer.mu, layer.std
    layer.blobs[0].data[...] *= 3
    layer.iter = 1
    layer.forward(bottom, top)
    assert (layer.mu, layer.std) == (mu, std)
    state = layer.get_state()
    twin, _, _ = hand_ip()
    twin.set_state(state)
    assert (twin.mu, twin.std) == (mu, std)

    test_layer = make("ip", phase=TEST, out=1, extra="channel_size: 2")
    b, t = setup(test_layer, ((2, 8),))
    glibc_rand.reset()
    test_layer.channel_mask[...] = [0, 1, 1, 1]
    test_layer.forward(b, t)
    assert test_layer.last_update is None and test_layer.mu is None
    assert glibc_rand.rand() == FIRST_RANDS[0]
    expected = b[0].data[:, 2:] @ test_layer.blobs[0].data[0, 2:] + test_layer.blobs[1].data[0]
    np.testing.assert_allclose(t[0].data[:, 0], expected, rtol=1e-5)


# -- gradients: with respect to W ⊙ T, given to W ----------------------------------------

def fixed(kind, shapes):
    """A TRAIN layer past iter_stop (its mask fixed), with channels 1 and 2 pruned."""
    layer = make(kind, iter_stop=0, group=2 if kind == "conv" else 1)
    bottom, top = setup(layer, shapes)
    layer.channel_mask[...] = 1
    layer.channel_mask[1:3] = 0
    return layer, bottom, top


SHAPES = {"conv": ((2, 4, 3, 3),), "ip": ((2, 4, 2, 2),)}


@pytest.mark.parametrize("kind", ["conv", "ip"])
def test_bottom_gradient_uses_the_masked_weights(kind):
    layer, bottom, top = fixed(kind, SHAPES[kind])
    check_gradient(layer, bottom, top, check_bottom=0, param_blobs=False, setup=False)


class _WeightAndBias:
    """The layer as check_gradient sees it: weight and bias only (not the channel mask)."""

    def __init__(self, layer):
        self.blobs = layer.blobs[:2]
        self.forward = layer.forward
        self.backward = layer.backward


@pytest.mark.parametrize("kind", ["conv", "ip"])
def test_param_gradient_with_every_channel_kept_is_the_true_gradient(kind):
    layer = make(kind, iter_stop=0, group=2 if kind == "conv" else 1)
    bottom, top = setup(layer, SHAPES[kind])
    check_gradient(_WeightAndBias(layer), bottom, top, setup=False)


def plain_twin(layer, bottom):
    param = caffe_pb2.LayerParameter()
    param.CopyFrom(layer.layer_param)
    param.type = "Convolution" if isinstance(layer, CPConvolution) else "InnerProduct"
    param.ClearField("channel_surgery_param")
    twin = create_layer(param, TEST)
    tops = [Blob(())]
    twin.setup(bottom, tops)
    twin.blobs[0].data[...] = layer.blobs[0].data * masks.mask_blobs(layer)[0].data
    twin.blobs[1].data[...] = layer.blobs[1].data
    return twin, tops


@pytest.mark.parametrize("kind", ["conv", "ip"])
def test_param_gradient_is_the_gradient_wrt_the_masked_weights(kind):
    layer, bottom, top = fixed(kind, SHAPES[kind])
    twin, twin_top = plain_twin(layer, bottom)
    layer.forward(bottom, top)
    twin.forward(bottom, twin_top)
    np.testing.assert_array_equal(top[0].data, twin_top[0].data)
    rng = np.random.default_rng(2)
    top[0].diff[...] = twin_top[0].diff[...] = rng.standard_normal(top[0].shape)
    old = rng.standard_normal(layer.blobs[0].shape).astype(np.float32)
    layer.blobs[0].diff[...] = old             # an accumulated diff is masked first, as DNS
    layer.backward(top, [True], bottom)
    dx = bottom[0].diff.copy()
    twin.backward(twin_top, [True], bottom)
    t = masks.mask_blobs(layer)[0].data
    assert np.count_nonzero(twin.blobs[0].diff * (1 - t)) > 0   # pruned channels do get a gradient
    np.testing.assert_allclose(layer.blobs[0].diff, old * t + twin.blobs[0].diff, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(layer.blobs[1].diff, twin.blobs[1].diff)
    np.testing.assert_array_equal(dx, bottom[0].diff)


# -- the mask core ---------------------------------------------------------------------

def test_mask_core_counts_bakes_and_writes_the_plain_layer():
    layer, bottom, top = fixed("conv", SHAPES["conv"])
    assert masks.is_masked(layer) and is_channel_surgery_layer(layer)
    t = masks.mask_blobs(layer)[0].data
    kept = masks.layer_kept(layer)
    assert kept.params == layer.blobs[0].count + 4
    assert kept.kept == np.count_nonzero(layer.blobs[0].data * t) + np.count_nonzero(layer.blobs[1].data)
    arrays = [b.data.copy() for b in layer.blobs]
    weight, bias, weight_mask, bias_mask = masks.stored_layout("CPConvolution", arrays)
    np.testing.assert_array_equal(weight_mask, t)
    assert bias_mask is None
    assert masks.stored_kept("CPConvolution", arrays) == kept
    assert masks.stored_layout("CPConvolution", arrays[:2])[2] is None    # a plain 2-blob model: no mask
    stored = masks.stored_effective("CPConvolution", arrays)
    np.testing.assert_array_equal(stored[0], arrays[0] * t)
    np.testing.assert_array_equal(stored[1], arrays[1])
    effective = masks.effective_params(layer)
    masks.bake(layer)
    np.testing.assert_array_equal(layer.blobs[0].data, effective[0])
    # Channel 1 is group 0's column 1 (filters 0, 1), channel 2 group 1's column 0 (filters 2, 3).
    np.testing.assert_array_equal(layer.blobs[0].data[:2, 1], 0)
    np.testing.assert_array_equal(layer.blobs[0].data[2:, 0], 0)
    assert np.count_nonzero(layer.blobs[0].data[:2, 0]) == 8 and np.count_nonzero(layer.blobs[0].data[2:, 1]) == 8


def test_plain_model_and_a_dense_model_load(tmp_path):
    from npcaffe.net import Net
    net_text = """name: "n"
layer { name: "d" type: "Input" top: "x" input_param { shape { dim: 2 dim: 4 dim: 3 dim: 3 } } }
layer { name: "c" type: "CPConvolution" bottom: "x" top: "y"
  convolution_param { num_output: 3 kernel_size: 2 weight_filler { type: "gaussian" std: 0.5 } }
  channel_surgery_param { c_rate: 0.1 } }
layer { name: "f" type: "CPInnerProduct" bottom: "y" top: "z"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
"""
    path = tmp_path / "n.prototxt"
    path.write_text(net_text)
    net = Net(str(path), TRAIN)
    f = net.layer_dict["f"]
    assert f.channel_mask.shape == (3,) and f.blobs[0].shape == (2, 12)
    f.channel_mask[...] = [1, 0, 1]
    plain = masks.plain_model(net)
    layers = {lp.name: lp for lp in plain.layer}
    assert layers["f"].type == "InnerProduct" and not layers["f"].HasField("channel_surgery_param")
    assert len(layers["f"].blobs) == 2
    w = np.array(layers["f"].blobs[0].data).reshape(2, 12)
    np.testing.assert_array_equal(w[:, 4:8], 0)
    assert np.count_nonzero(w[:, :4]) == 8
    # A 2-blob model (dense or plain) loads into the CP net with every channel kept.
    net.save(str(tmp_path / "full.caffemodel"))
    from npcaffe.fileio.caffemodel import write_caffemodel
    write_caffemodel(plain, str(tmp_path / "plain.caffemodel"))
    other = Net(str(path), TRAIN)
    other.copy_from(str(tmp_path / "plain.caffemodel"))
    np.testing.assert_array_equal(other.layer_dict["f"].channel_mask, [1, 1, 1])
    other.copy_from(str(tmp_path / "full.caffemodel"))
    np.testing.assert_array_equal(other.layer_dict["f"].channel_mask, [1, 0, 1])


# -- bad input -------------------------------------------------------------------------

@pytest.mark.parametrize("text,message", [
    (CONV.format(out=2, group=1, gamma=1e-4, c_rate=-0.1, iter_stop=1), "c_rate -0.1"),
    (IP.format(out=2, gamma=1e-4, c_rate=0.1, iter_stop=1, extra="channel_size: 5"), "channel_size 5"),
    (CONV.format(out=2, group=1, gamma=1e-4, c_rate=0.1, iter_stop=1, extra="").replace("pad: 1", "pad: 1 bias_term: false"),
     "bias_term: false"),
    (IP.format(out=2, gamma=1e-4, c_rate=0.1, iter_stop=1, extra="").replace("num_output: 2", "num_output: 2 transpose: true"),
     "transpose"),
])
def test_bad_settings_name_the_layer_and_field(text, message):
    layer = create_layer(layer_param(text), TRAIN)
    with pytest.raises(NetError, match=message) as e:
        layer.setup([make_blob((2, 4, 3, 3))], [Blob(())])
    assert "layer '" in str(e.value)


def test_gate_trace_has_rows_for_cp_layers(tmp_path):
    from npcaffe.dnstrace import GateTrace
    from npcaffe.net import Net
    net_text = """name: "n"
layer { name: "d" type: "Input" top: "x" input_param { shape { dim: 2 dim: 4 dim: 3 dim: 3 } } }
layer { name: "c" type: "CPConvolution" bottom: "x" top: "y"
  convolution_param { num_output: 3 kernel_size: 2 weight_filler { type: "gaussian" std: 0.5 } }
  channel_surgery_param { c_rate: 0.1 } }
"""
    path = tmp_path / "n.prototxt"
    path.write_text(net_text)
    net = Net(str(path), TRAIN)
    trace = GateTrace(net, str(tmp_path / "trace.csv"))
    net.forward()
    trace.close()
    (row,) = trace.rows
    u = net.layer_dict["c"].last_update
    assert row[2:8] == ["c", FIRST_RANDS[0], f"{r_of(FIRST_RANDS[0]):.9g}", "1", 1, 1]
    assert (row[10], row[11]) == (repr(u.low), repr(u.high))
    assert row[12] == u.pruned * 3 * 4 and row[13] == 0          # 3 filters x 2 x 2 weights a channel
    assert row[14] == 3 * 4 * u.kept_channels and row[15] == 0
    assert (tmp_path / "trace.csv").read_text().count("\n") == 2
