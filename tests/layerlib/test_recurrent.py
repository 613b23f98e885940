"""RNN, LSTM and LSTMUnit (BVLC test_rnn_layer.cpp / test_lstm_layer.cpp): shapes and blob order,
forward against float64 NumPy recurrences, carried state and cont resets, static input,
expose_hidden, numerical gradients, training in a net, .caffemodel round trip, debug_info, errors."""
import numpy as np
import pytest
from google.protobuf import text_format

import npcaffe
from gradient_check import check_gradient, check_gradient_exhaustive
from helpers import layer_param, make_blob
from npcaffe import glog, rng
from npcaffe.blob import Blob
from npcaffe.errors import NetError
from npcaffe.fileio.caffemodel import read_caffemodel
from npcaffe.layer import create_layer
from npcaffe.proto import caffe_pb2

PARAM_NAMES = {
    ("RNN", False): ["W_xh", "b_h", "W_hh", "W_ho", "b_o"],
    ("RNN", True): ["W_xh", "b_h", "W_xh_static", "W_hh", "W_ho", "b_o"],
    ("LSTM", False): ["W_xc", "b_c", "W_hc"],
    ("LSTM", True): ["W_xc", "b_c", "W_xc_static", "W_hc"],
}


def recurrent_layer(kind, num_output=3, expose_hidden=False, debug_info=False, name="r", phase="TEST", seed=1701):
    rng.set_random_seed(seed)
    return create_layer(layer_param(f"""
        name: "{name}" type: "{kind}" phase: {phase}
        recurrent_param {{ num_output: {num_output} expose_hidden: {str(expose_hidden).lower()}
                           debug_info: {str(debug_info).lower()}
                           weight_filler {{ type: "gaussian" std: 0.5 }}
                           bias_filler {{ type: "gaussian" std: 0.5 }} }}"""))


def cont_blob(values):
    values = np.asarray(values, np.float32)
    blob = Blob(values.shape, name="cont")
    blob.data[...] = values
    return blob


def owner_names(layer):
    net = layer.unrolled_net
    return [name for name, owner in zip(net.param_display_names, net.param_owners) if owner == -1]


def weights(layer):
    return {name: b.data.astype(np.float64) for name, b in zip(owner_names(layer), layer.blobs)}


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def rnn_reference(w, x, cont, x_static=None, h0=None):
    """float64 RNN: h_t = tanh(W_hh cont_t h_{t-1} + W_xh x_t + b_h [+ W_xh_static s]); o_t = tanh(W_ho h_t + b_o)."""
    T, N = cont.shape
    xs = x.reshape(T, N, -1).astype(np.float64)
    h = np.zeros((N, w["b_h"].size)) if h0 is None else h0.reshape(N, -1).astype(np.float64)
    static = 0.0 if x_static is None else x_static.reshape(N, -1).astype(np.float64) @ w["W_xh_static"].T
    out = []
    for t in range(T):
        h = np.tanh((cont[t][:, None] * h) @ w["W_hh"].T + xs[t] @ w["W_xh"].T + w["b_h"] + static)
        out.append(np.tanh(h @ w["W_ho"].T + w["b_o"]))
    return np.stack(out), h


def lstm_reference(w, x, cont, x_static=None, h0=None, c0=None):
    """float64 LSTM: gates = W_hc cont_t h_{t-1} + W_xc x_t + b_c [+ W_xc_static s];
    c_t = cont_t f c_{t-1} + i g; h_t = o tanh(c_t)."""
    T, N = cont.shape
    H = w["W_hc"].shape[1]
    xs = x.reshape(T, N, -1).astype(np.float64)
    h = np.zeros((N, H)) if h0 is None else h0.reshape(N, H).astype(np.float64)
    c = np.zeros((N, H)) if c0 is None else c0.reshape(N, H).astype(np.float64)
    static = 0.0 if x_static is None else x_static.reshape(N, -1).astype(np.float64) @ w["W_xc_static"].T
    out = []
    for t in range(T):
        k = cont[t][:, None]
        gates = (k * h) @ w["W_hc"].T + xs[t] @ w["W_xc"].T + w["b_c"] + static
        i, f, o, g = sigmoid(gates[:, :H]), sigmoid(gates[:, H:2 * H]), sigmoid(gates[:, 2 * H:3 * H]), \
            np.tanh(gates[:, 3 * H:])
        c = k * f * c + i * g
        h = o * np.tanh(c)
        out.append(h)
    return np.stack(out), h, c


def reference(kind, layer, x, cont, x_static=None):
    w = weights(layer)
    args = (x.data, cont.data, None if x_static is None else x_static.data)
    return rnn_reference(w, *args)[0] if kind == "RNN" else lstm_reference(w, *args)[0]


# -- shapes and blobs ---------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
@pytest.mark.parametrize("static", [False, True])
def test_shapes_and_blob_order(kind, static):
    T, N, H = 3, 2, 4
    layer = recurrent_layer(kind, H)
    bottom = [make_blob((T, N, 3, 2)), cont_blob(np.ones((T, N)))] + ([make_blob((N, 2, 5))] if static else [])
    top = [Blob(())]
    layer.setup(bottom, top)
    assert top[0].shape == (T, N, H)
    gates = H if kind == "RNN" else 4 * H
    expected = {"W_xh": (H, 6), "b_h": (H,), "W_xh_static": (H, 10), "W_hh": (H, H), "W_ho": (H, H), "b_o": (H,),
                "W_xc": (gates, 6), "b_c": (gates,), "W_xc_static": (gates, 10), "W_hc": (gates, H)}
    names = PARAM_NAMES[kind, static]
    assert owner_names(layer) == names
    assert [b.shape for b in layer.blobs] == [expected[n] for n in names]
    assert layer.param_propagate_down == [True] * len(names)
    # every timestep's copy of W_hh / W_hc is the owner's storage
    recurrent_weight = layer.blobs[names.index("W_hh" if kind == "RNN" else "W_hc")]
    copies = [b for b, owner in zip(layer.unrolled_net.params_list, layer.unrolled_net.param_owners) if owner >= 0]
    assert len(copies) == (T - 1) * (3 if kind == "RNN" else 1)
    assert any(b.shares_data_with(recurrent_weight) for b in copies)
    layer_names = layer.unrolled_net.layer_names
    assert layer_names[-1] == ("o_pseudoloss" if kind == "RNN" else "h_pseudoloss")
    assert layer.last_layer_index == len(layer_names) - 2
    assert f"r_{'o' if kind == 'RNN' else 'h'}_concat" in layer_names


def test_lstm_unit_registered_and_shapes():
    assert {"RNN", "LSTM", "LSTMUnit"} <= set(npcaffe.layer_type_list())
    layer = create_layer(layer_param('name: "u" type: "LSTMUnit"'))
    bottom = [make_blob((1, 3, 5)), make_blob((1, 3, 20), seed=1), cont_blob([[1, 0, 1]])]
    top = [Blob(()), Blob(())]
    layer.setup(bottom, top)
    assert top[0].shape == top[1].shape == (1, 3, 5)
    assert layer.blobs == []


# -- forward ------------------------------------------------------------------------------

CONT = [[0, 0, 0], [1, 1, 0], [1, 0, 1], [1, 1, 1]]  # streams restart at different timesteps


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
@pytest.mark.parametrize("static", [False, True])
def test_forward_matches_float64_recurrence(kind, static):
    layer = recurrent_layer(kind, 5)
    x, cont = make_blob((4, 3, 2, 3), seed=3), cont_blob(CONT)
    bottom = [x, cont] + ([make_blob((3, 4), seed=4)] if static else [])
    top = [Blob(())]
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    expected = reference(kind, layer, *bottom)
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-5, atol=2e-6)

    # N may change after setup (T may not): two streams now
    x.reshape(4, 2, 2, 3)
    x.data[...] = np.random.default_rng(5).uniform(-1, 1, x.shape)
    cont.reshape(4, 2)
    cont.data[...] = np.array(CONT, np.float32)[:, :2]
    if static:
        bottom[2].reshape(2, 4)
    layer.forward(bottom, top)
    assert top[0].shape == (4, 2, 5)
    np.testing.assert_allclose(top[0].data, reference(kind, layer, *bottom), rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_state_carries_between_forwards(kind):
    """Upstream's TestForward: the whole sequence at once equals one timestep per forward call,
    the state carried from call to call; with cont = 0 at every call only the first step agrees."""
    T, N = 3, 2
    full = recurrent_layer(kind, 4)
    x, cont = make_blob((T, N, 3), seed=7), cont_blob([[0, 0]] + [[1, 1]] * (T - 1))
    top = [Blob(())]
    full.setup([x, cont], top)
    full.forward([x, cont], top)
    whole = top[0].data.copy()

    def stepwise(cont_value):
        step = recurrent_layer(kind, 4, seed=99)
        xt, ct, out = Blob((1, N, 3)), cont_blob(np.zeros((1, N))), Blob(())
        step.setup([xt, ct], [out])
        for dst, src in zip(step.blobs, full.blobs):
            dst.data[...] = src.data
        rows = []
        for t in range(T):
            xt.data[...] = x.data[t:t + 1]
            ct.data[...] = 0 if t == 0 else cont_value
            step.forward([xt, ct], [out])
            rows.append(out.data[0].copy())
        return np.stack(rows), step, (xt, ct, out)

    carried, step, (xt, ct, out) = stepwise(1)
    np.testing.assert_allclose(carried, whole, rtol=1e-5, atol=1e-6)
    reset, _, _ = stepwise(0)
    np.testing.assert_allclose(reset[0], whole[0], rtol=1e-5, atol=1e-6)
    assert np.all(reset[1:] != whole[1:])

    # reset() zeroes the carried state: cont = 1 then sees a zero state, as cont = 0 does
    xt.data[...] = x.data[:1]
    ct.data[...] = 1
    step.reset()
    step.forward([xt, ct], [out])
    np.testing.assert_allclose(out.data[0], whole[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_expose_hidden(kind):
    T, N, H = 3, 2, 4
    layer = recurrent_layer(kind, H, expose_hidden=True)
    n_states = 1 if kind == "RNN" else 2
    x, cont, x_static = make_blob((T, N, 3), seed=11), cont_blob([[1, 1], [1, 0], [1, 1]]), make_blob((N, 2), seed=12)
    states = [make_blob((1, N, H), seed=13 + i) for i in range(n_states)]
    bottom = [x, cont, x_static] + states
    top = [Blob(()) for _ in range(1 + n_states)]
    layer.setup(bottom, top)
    assert [t.shape for t in top] == [(T, N, H)] + [(1, N, H)] * n_states
    for _ in range(2):  # nothing carries over: the given initial state is used every time
        layer.forward(bottom, top)
        w = weights(layer)
        if kind == "RNN":
            out, h = rnn_reference(w, x.data, cont.data, x_static.data, h0=states[0].data)
            finals = [h]
        else:
            out, h, c = lstm_reference(w, x.data, cont.data, x_static.data, h0=states[0].data, c0=states[1].data)
            finals = [h, c]
        np.testing.assert_allclose(top[0].data, out, rtol=1e-5, atol=2e-6)
        for got, want in zip(top[1:], finals):
            np.testing.assert_allclose(got.data.reshape(N, H), want, rtol=1e-5, atol=2e-6)
    # the given initial state matters: a fresh start (cont 0 at t = 0) gives other outputs
    fresh_start = reference(kind, layer, x, cont_blob([[0, 0], [1, 0], [1, 1]]), x_static)
    assert np.abs(top[0].data[0] - fresh_start[0]).max() > 1e-3
    # as upstream, no gradient reaches the exposed initial states
    for state in states:
        state.diff[...] = 7
    top[0].diff[...] = 1
    layer.backward(top, [True, False, True] + [True] * n_states, bottom)
    assert np.abs(x.diff).max() > 0 and np.abs(x_static.diff).max() > 0
    assert all(np.all(state.diff == 7) for state in states)

    wrong = [x, cont, x_static] + [make_blob((1, N + 1, H))] + states[1:]
    with pytest.raises(NetError, match=r"layer 'r'.*bottom 3.*\(1, 3, 4\).*expected \(1, 2, 4\)"):
        recurrent_layer(kind, H, expose_hidden=True).setup(wrong, [Blob(()) for _ in range(1 + n_states)])
    with pytest.raises(NetError, match="top"):
        recurrent_layer(kind, H, expose_hidden=True).setup(bottom, [Blob(())])


def test_lstm_unit_forward_hand_formulas():
    N, H = 4, 3
    c_prev, x = make_blob((1, N, H), seed=21), make_blob((1, N, 4 * H), low=-3, high=3, seed=22)
    cont = cont_blob([[1, 0, 1, 0.5]])  # 0.5: upstream scales the forget gate by cont
    layer = create_layer(layer_param('name: "u" type: "LSTMUnit"'))
    top = [Blob(()), Blob(())]
    layer.setup([c_prev, x, cont], top)
    layer.forward([c_prev, x, cont], top)
    a = x.data.reshape(N, 4, H).astype(np.float64)
    k = cont.data.reshape(N, 1).astype(np.float64)
    i, f, o, g = sigmoid(a[:, 0]), k * sigmoid(a[:, 1]), sigmoid(a[:, 2]), np.tanh(a[:, 3])
    c = f * c_prev.data.reshape(N, H) + i * g
    np.testing.assert_allclose(top[0].data.reshape(N, H), c, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(top[1].data.reshape(N, H), o * np.tanh(c), rtol=1e-6, atol=1e-6)


# -- gradients ------------------------------------------------------------------------------

@pytest.mark.parametrize("cont", [[[0, 0, 0]], [[1, 0, 1]]])
def test_lstm_unit_gradient(cont):
    bottom = [make_blob((1, 3, 4), seed=31), make_blob((1, 3, 16), seed=32), cont_blob(cont)]
    for check_bottom in (0, 1):
        layer = create_layer(layer_param('name: "u" type: "LSTMUnit"'))
        check_gradient_exhaustive(layer, bottom, [Blob(()), Blob(())], check_bottom=check_bottom)


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_recurrent_gradient_x_and_params(kind):
    layer = recurrent_layer(kind, 2)
    bottom = [make_blob((2, 2, 3), seed=41), cont_blob([[0, 0], [1, 0]])]
    check_gradient_exhaustive(layer, bottom, [Blob(())], check_bottom=0)


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_recurrent_gradient_with_static_input(kind):
    layer = recurrent_layer(kind, 2)
    bottom = [make_blob((3, 2, 2), seed=51), cont_blob([[0, 0], [1, 0], [1, 1]]), make_blob((2, 3), seed=52)]
    check_gradient(layer, bottom, [Blob(())], check_bottom=0)
    check_gradient(layer, bottom, [Blob(())], check_bottom=2, setup=False)


def test_param_diffs_accumulate_and_cont_gets_no_gradient():
    layer = recurrent_layer("LSTM", 3)
    bottom = [make_blob((3, 2, 4), seed=61), cont_blob([[0, 0], [1, 1], [1, 0]])]
    top = [Blob(())]
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    top[0].diff[...] = np.random.default_rng(0).uniform(-1, 1, top[0].shape)
    layer.backward(top, [True, False], bottom)
    first = [b.diff.copy() for b in layer.blobs]
    dx = bottom[0].diff.copy()
    assert all(np.abs(d).max() > 0 for d in first)
    layer.backward(top, [True, False], bottom)
    for blob, d in zip(layer.blobs, first):
        np.testing.assert_allclose(blob.diff, 2 * d, rtol=1e-6)
    np.testing.assert_array_equal(bottom[0].diff, dx)  # bottom diffs are written, not summed
    with pytest.raises(NetError, match=r"layer 'r' \(LSTM\).*sequence continuation.*bottom 1"):
        layer.backward(top, [True, True], bottom)
    assert not layer.allow_force_backward(1) and layer.allow_force_backward(0)
    unit = create_layer(layer_param('name: "u" type: "LSTMUnit"'))
    assert not unit.allow_force_backward(2) and unit.allow_force_backward(1)


# -- in a net ---------------------------------------------------------------------------------

T, N, D = 5, 3, 2


def net_param(extra=""):
    """Input -> LSTM -> InnerProduct over time -> EuclideanLoss."""
    text = f"""
name: "sequence_sum"
{extra}
layer {{ name: "input" type: "Input" top: "x" top: "cont" top: "target"
  input_param {{ shape {{ dim: {T} dim: {N} dim: {D} }} shape {{ dim: {T} dim: {N} }}
                 shape {{ dim: {T} dim: {N} dim: 1 }} }} }}
layer {{ name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "h"
  recurrent_param {{ num_output: 6 weight_filler {{ type: "uniform" min: -0.3 max: 0.3 }}
                     bias_filler {{ type: "constant" value: 0 }} }} }}
layer {{ name: "pred" type: "InnerProduct" bottom: "h" top: "pred"
  inner_product_param {{ num_output: 1 axis: 2 weight_filler {{ type: "gaussian" std: 0.3 }} }} }}
layer {{ name: "loss" type: "EuclideanLoss" bottom: "pred" bottom: "target" top: "loss" }}
"""
    return text_format.Parse(text, caffe_pb2.NetParameter())


def sequence_data(seed=0):
    """x random; target = half the running sum of x[..., 0] since the stream's sequence start."""
    gen = np.random.default_rng(seed)
    x = gen.uniform(-1, 1, (T, N, D)).astype(np.float32)
    cont = np.ones((T, N), np.float32)
    cont[0] = 0
    cont[2, 1] = 0
    target = np.zeros((T, N, 1), np.float32)
    total = np.zeros(N)
    for t in range(T):
        total = cont[t] * total + x[t, :, 0]
        target[t, :, 0] = 0.5 * total
    return {"x": x, "cont": cont, "target": target}


def feed(net, data):
    for name, value in data.items():
        net.blobs[name].data[...] = value


def test_lstm_net_trains_with_sgd_and_test_net_shares_weights():
    p = caffe_pb2.SolverParameter(type="SGD", base_lr=0.2, momentum=0.9, lr_policy="fixed", display=0,
                                  max_iter=100, snapshot_after_train=False, random_seed=5)
    p.net_param.CopyFrom(net_param())
    solver = npcaffe.get_solver(p)
    data = sequence_data()
    feed(solver.net, data)
    before = float(solver.net.forward()["loss"])
    owner = solver.net.params["lstm"][2]  # W_hc
    start = owner.data.copy()
    solver.step(60)
    after = float(solver.net.forward()["loss"])
    assert after < 0.1 * before, (before, after)
    assert np.abs(owner.data - start).max() > 1e-3
    h_train = solver.net.blobs["h"].data.copy()

    # A TEST net takes the weights by sharing storage (Solver::Test); its unrolled copies follow.
    test_net = npcaffe.Net(net_param(), npcaffe.TEST)
    test_net.share_with(solver.net)
    feed(test_net, data)
    test_net.forward()
    np.testing.assert_array_equal(test_net.blobs["h"].data, h_train)


def test_caffemodel_round_trip(tmp_path):
    rng.set_random_seed(3)
    net = npcaffe.Net(net_param(), npcaffe.TRAIN)
    data = sequence_data(1)
    feed(net, data)
    out = net.forward()
    h = net.blobs["h"].data.copy()
    path = tmp_path / "lstm.caffemodel"
    net.save(str(path))
    saved = {layer.name: layer for layer in read_caffemodel(str(path)).layer}
    assert [tuple(b.shape.dim) for b in saved["lstm"].blobs] == [(24, 2), (24,), (24, 6)]

    rng.set_random_seed(4)
    loaded = npcaffe.Net(net_param(), str(path), npcaffe.TEST)
    feed(loaded, data)
    out2 = loaded.forward()
    np.testing.assert_array_equal(loaded.blobs["h"].data, h)
    assert out2["loss"] == out["loss"]
    fresh = npcaffe.Net(net_param(), npcaffe.TEST)  # other random weights: other outputs
    feed(fresh, data)
    fresh.forward()
    assert np.abs(fresh.blobs["h"].data - h).max() > 1e-3


def test_force_backward_skips_cont():
    rng.set_random_seed(6)
    net = npcaffe.Net(net_param("force_backward: true"), npcaffe.TRAIN)
    lstm = net.layer_names.index("lstm")
    assert net.bottom_need_backward[lstm] == [True, False]
    feed(net, sequence_data(2))
    net.forward()
    net.backward()
    assert np.abs(net.blobs["x"].diff).max() > 0


def test_debug_info_logs_unrolled_layers(glog_capture):
    layer = recurrent_layer("LSTM", 2, debug_info=True, name="lstm")
    bottom = [make_blob((2, 1, 3), seed=71), cont_blob([[0], [1]])]
    top = [Blob(())]
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    top[0].diff[...] = 1
    layer.backward(top, [True, False], bottom)
    log = glog_capture.getvalue()
    mean = np.abs(layer.unrolled_net.blobs["c_2"].data).mean()
    assert f"[Forward] Layer lstm_unit_2, top blob c_2 data: {glog.fmt(mean)}" in log
    assert "[Forward] Layer lstm_x_transform, param blob W_xc data: " in log
    assert "[Backward] Layer lstm_x_transform, bottom blob x diff: " in log
    assert "[Backward] Layer lstm_transform_2, param blob 0 diff: " in log
    assert "pseudoloss" not in log


# -- errors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("shapes, pattern", [
    ([(4,), (4, 2)], r"layer 'r' \(LSTM\): bottom 0 \(x\).*at least 2 axes"),
    ([(4, 2, 3), (4, 3)], r"layer 'r' \(LSTM\): bottom 1 \(cont\).*\(4, 2\).*got \(4, 3\)"),
    ([(4, 2, 3), (4, 2, 1)], r"bottom 1 \(cont\)"),
    ([(4, 2, 3), (4, 2), (3, 5)], r"bottom 2 \(x_static\).*N = 2.*got \(3, 5\)"),
])
def test_bad_bottom_shapes(shapes, pattern):
    with pytest.raises(NetError, match=pattern):
        recurrent_layer("LSTM").setup([make_blob(s) for s in shapes], [Blob(())])


def test_bad_fields_and_changed_timesteps():
    with pytest.raises(NetError, match=r"layer 'r' \(RNN\): recurrent_param.num_output must be positive"):
        recurrent_layer("RNN", 0).setup([make_blob((2, 1, 3)), make_blob((2, 1))], [Blob(())])
    layer = recurrent_layer("RNN")
    x, cont = make_blob((2, 1, 3)), cont_blob([[0], [1]])
    layer.setup([x, cont], [Blob(())])
    x.reshape(3, 1, 3)
    cont.reshape(3, 1)
    with pytest.raises(NetError, match=r"layer 'r' \(RNN\).*timesteps.*was 2 at setup"):
        layer.forward([x, cont], [Blob(())])
    with pytest.raises(NetError, match="at most 3 bottom"):
        recurrent_layer("RNN").setup([make_blob((2, 1, 3)), make_blob((2, 1)), make_blob((1, 2)),
                                      make_blob((1, 1, 3))], [Blob(())])


@pytest.mark.parametrize("shapes, pattern", [
    ([(1, 3, 4), (1, 3, 12), (1, 3)], r"layer 'u' \(LSTMUnit\): gate inputs.*4 x H = 16"),
    ([(1, 3, 4), (1, 2, 16), (1, 3)], r"layer 'u' \(LSTMUnit\): bottom 1.*\(1, 2, 16\)"),
    ([(2, 3, 4), (2, 3, 16), (2, 3)], r"bottom 0.*\(2, 3, 4\)"),
    ([(1, 3, 4), (1, 3, 16), (1, 3, 1)], r"bottom 2.*\(1, 3, 1\)"),
])
def test_lstm_unit_bad_shapes(shapes, pattern):
    layer = create_layer(layer_param('name: "u" type: "LSTMUnit"'))
    with pytest.raises(NetError, match=pattern):
        layer.setup([make_blob(s) for s in shapes], [Blob(()), Blob(())])


def test_lstm_unit_refuses_gradient_to_cont():
    layer = create_layer(layer_param('name: "u" type: "LSTMUnit"'))
    bottom = [make_blob((1, 2, 3)), make_blob((1, 2, 12)), cont_blob([[1, 1]])]
    top = [Blob(()), Blob(())]
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    with pytest.raises(NetError, match=r"layer 'u' \(LSTMUnit\).*sequence continuation"):
        layer.backward(top, [True, True, True], bottom)
