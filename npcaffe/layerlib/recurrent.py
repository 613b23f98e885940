"""Recurrent layers: RNN and LSTM, unrolled through time into an internal Net, and LSTMUnit.

BVLC Caffe 1.0: include/caffe/layers/recurrent_layer.hpp, rnn_layer.hpp,
lstm_layer.hpp and src/caffe/layers/recurrent_layer.cpp, rnn_layer.cpp,
lstm_layer.cpp, lstm_unit_layer.cpp.

An RNN or LSTM layer writes a NetParameter that spells out its computation
for each of the T timesteps of its input (InnerProduct, Eltwise, Scale,
Slice, Concat, TanH, LSTMUnit, ... layers whose weights are shared by name
across the timesteps), builds an ordinary npcaffe.Net from it and runs that
net's forward and backward as its own.  Its `blobs` are that net's learnable
parameters, in upstream's order, so .caffemodel files move between upstream
Caffe and npcaffe unchanged.
"""
import numpy as np

from .. import glog
from ..errors import NetError
from ..layer import TEST, Layer, register
from ..net import Net
from ..proto import caffe_pb2


def _where(layer):
    return f"layer '{layer.name}' ({layer.type})"


# -- LSTMUnit ------------------------------------------------------------------------

def _sigmoid(x):
    """1 / (1 + e^-x) in double, rounded to float32 (upstream's double constants)."""
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


def _tanh(x):
    """tanh as upstream's LSTMUnit writes it, 2 sigmoid(2x) - 1, in double, rounded to float32."""
    with np.errstate(over="ignore"):
        s = 1.0 / (1.0 + np.exp(-2.0 * x.astype(np.float64)))
    return (2.0 * s - 1.0).astype(np.float32)


def _lstm_gates(x, cont):
    """(i, f, o, g) for gate inputs x (N, 4, H) and indicators cont (N,); f carries cont."""
    i = _sigmoid(x[:, 0])
    f = _sigmoid(x[:, 1])
    c = cont.reshape(-1, 1)
    f = np.where(c == 0, np.float32(0), c * f)
    return i, f, _sigmoid(x[:, 2]), _tanh(x[:, 3])


@register("LSTMUnit")
class LSTMUnitLayer(Layer):
    """One timestep of the LSTM non-linearity (BVLC src/caffe/layers/lstm_unit_layer.cpp,
    declared in include/caffe/layers/lstm_layer.hpp).

    Bottoms: c_prev (1, N, H), the gate inputs x (1, N, 4H) laid out as
    [i', f', o', g'] blocks of H, and cont (1, N).  Tops: c (1, N, H) and
    h (1, N, H).  No parameters.

        i = sigmoid(i'),  f = cont * sigmoid(f') (0 where cont == 0),
        o = sigmoid(o'),  g = tanh(g')
        c = f * c_prev + i * g
        h = o * tanh(c)

    Backward, with dc_total = dc + dh * o * (1 - tanh(c)^2):
        dc_prev = dc_total * f
        di' = dc_total * g * i (1 - i)     df' = dc_total * c_prev * f (1 - f)
        do' = dh * tanh(c) * o (1 - o)     dg' = dc_total * i * (1 - g^2)

    Mirrored from upstream on purpose:
    - sigmoid and tanh (written as 2 sigmoid(2x) - 1) are computed in double
      and rounded to float32; the rest is float32, operation by operation in
      upstream's order.
    - The forget gate includes cont, and backward uses f (1 - f) for it as
      if f were a plain sigmoid: for a cont other than 0 or 1 that is not
      the derivative of cont * sigmoid(f').
    - Backward recomputes the gates from the bottom data and tanh(c) from
      top c; it writes both the c_prev and the gate-input diffs whenever
      either is asked for.  No gradient to cont: asking for one is an error,
      and force_backward leaves cont alone.
    """
    exact_num_bottom = 3
    exact_num_top = 2
    reshape_from_shapes = True

    def reshape(self, bottom, top):
        c_prev, x, cont = bottom
        n = c_prev.shape[1] if c_prev.num_axes >= 2 else None
        for index, (blob, axes) in enumerate(((c_prev, 3), (x, 3), (cont, 2))):
            if blob.num_axes != axes or blob.shape[0] != 1 or blob.shape[1] != n:
                raise NetError(
                    f"{_where(self)}: bottom {index} '{blob.name}' has shape {blob.shape}; the bottoms must be "
                    f"c_prev (1, N, H), gate inputs (1, N, 4H) and cont (1, N) with one N "
                    f"(got {c_prev.shape}, {x.shape}, {cont.shape})")
        self.hidden_dim = c_prev.shape[2]
        if x.shape[2] != 4 * self.hidden_dim:
            raise NetError(f"{_where(self)}: gate inputs '{x.name}' {x.shape} must have 4 x H = "
                           f"{4 * self.hidden_dim} channels for c_prev '{c_prev.name}' {c_prev.shape}")
        top[0].reshape_like(c_prev)
        top[1].reshape_like(c_prev)

    def _views(self, bottom):
        n, hidden = bottom[0].shape[1], self.hidden_dim
        return (bottom[0].data.reshape(n, hidden), bottom[1].data.reshape(n, 4, hidden),
                bottom[2].flat_data)

    def forward_cpu(self, bottom, top):
        c_prev, x, cont = self._views(bottom)
        i, f, o, g = _lstm_gates(x, cont)
        c = f * c_prev + i * g
        top[0].data[...] = c.reshape(top[0].shape)
        top[1].data[...] = (o * _tanh(c)).reshape(top[1].shape)

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[2]:
            raise NetError(f"{_where(self)}: cannot backpropagate to the sequence continuation "
                           f"indicators (bottom 2, '{bottom[2].name}'); set propagate_down: false for it")
        if not (propagate_down[0] or propagate_down[1]):
            return
        c_prev, x, cont = self._views(bottom)
        i, f, o, g = _lstm_gates(x, cont)
        shape = c_prev.shape
        tanh_c = _tanh(top[0].data.reshape(shape))
        dc = top[0].diff.reshape(shape)
        dh = top[1].diff.reshape(shape)
        one = np.float32(1)
        dc_total = dc + dh * o * (one - tanh_c * tanh_c)
        bottom[0].diff[...] = (dc_total * f).reshape(bottom[0].shape)
        dx = bottom[1].diff.reshape(x.shape)
        dx[:, 0] = dc_total * g * i * (one - i)
        dx[:, 1] = dc_total * c_prev * f * (one - f)
        dx[:, 2] = dh * tanh_c * o * (one - o)
        dx[:, 3] = dc_total * i * (one - g * g)

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2


# -- building the unrolled net ---------------------------------------------------------

def _add(net_param, layer_type, name, bottom=(), top=(), params=(), propagate_down=()):
    layer = net_param.layer.add(name=name, type=layer_type)
    layer.bottom.extend(bottom)
    layer.top.extend(top)
    for param_name in params:
        layer.param.add(name=param_name)
    layer.propagate_down.extend(propagate_down)
    return layer


def _add_inner_product(net_param, name, bottom, top, num_output, axis, params, weight_filler,
                       bias_filler=None, propagate_down=()):
    layer = _add(net_param, "InnerProduct", name, [bottom], [top], params, propagate_down)
    p = layer.inner_product_param
    p.num_output = num_output
    p.axis = axis
    p.bias_term = bias_filler is not None
    p.weight_filler.CopyFrom(weight_filler)
    if bias_filler is not None:
        p.bias_filler.CopyFrom(bias_filler)
    return layer


class RecurrentLayer(Layer):
    """Base of RNN and LSTM (BVLC include/caffe/layers/recurrent_layer.hpp,
    src/caffe/layers/recurrent_layer.cpp); not a layer type of its own.

    Bottoms: x (T, N, ...), T timesteps of N interleaved streams; cont
    (T, N), the sequence continuation indicators (0 where a stream starts a
    new sequence, 1 where it continues); optionally x_static (N, ...), an
    input seen at every timestep.  With recurrent_param.expose_hidden the
    initial states follow as further bottoms (RNN: h_0; LSTM: h_0, c_0, each
    (1, N, num_output)) and the final states as further tops (h_T, then
    c_T).  Top 0: (T, N, num_output).  T is fixed at setup; N may change.

    Subclasses give `recurrent_input_names`, `recurrent_output_names`,
    `output_names` and `fill_unrolled_net`, which adds the recurrent
    architecture to a NetParameter that already has an Input layer with
    tops "x", "cont" and (with a static input) "x_static".  Setup then:
    prefixes every layer name with "<layer name>_", appends one
    "<output>_pseudoloss" Reduction layer (loss_weight 1) per output so that
    the net plans a backward pass without force_backward, and builds the
    Net (phase TEST, the default NetState upstream's unrolled net gets).
    The pseudo-losses never run: forward stops and backward starts at the
    layer before them.  `blobs` are the unrolled net's parameter owners in
    net order; the other timesteps' copies share their data and diff, so the
    gradients of all timesteps accumulate into them.  recurrent_param's
    weight_filler and bias_filler fill the unrolled InnerProduct layers;
    debug_info logs, as Caffe's Net debug_info does, the mean absolute
    value of every top and parameter after each unrolled layer's forward and
    of every bottom and parameter diff after its backward.

    The internal blobs x, cont and x_static share the bottoms' storage (x
    and x_static their diffs too, so backward writes the bottom diffs
    directly), and top 0 shares the unrolled output's data and diff.

    Mirrored from upstream on purpose:
    - Without expose_hidden, each forward starts from the final state of the
      previous forward (copied into h_0 / c_0, zero at first): only cont = 0
      resets a stream.  `reset()` zeroes that carried state.
    - No gradient crosses a forward call: the final states' diffs are zero,
      the diffs of exposed final-state tops are ignored and exposed
      initial-state bottoms get no diff.
    - Backward always computes the diffs of x, x_static and every
      parameter, whatever propagate_down and lr_mult say (upstream's TODO).
      cont gets no gradient: propagate_down to it is an error and
      force_backward leaves it alone.
    - In phase TEST every forward re-shares the unrolled net's parameter
      copies with their owners, because a solver's test net takes the train
      net's weights by replacing the owners' storage (Net.share_with).
      Only in TEST: in a TRAIN net that shares this layer's parameters by
      name with another layer, the copies keep the storage they had, as
      upstream's do.
    """
    reshape_from_shapes = True
    state_tag = None  # "h" (RNN) or "c" (LSTM): names the input transform W_x<tag>, b_<tag>

    def __init__(self, param, phase=None):
        super().__init__(param, phase)
        exposed = len(self.recurrent_input_names()) if param.recurrent_param.expose_hidden else 0
        self.min_bottom = 2 + exposed
        self.max_bottom = 3 + exposed
        self.exact_num_top = 1 + exposed

    # -- the subclass interface (names as upstream's, they appear in debug_info logs) --
    def recurrent_input_names(self):
        raise NotImplementedError

    def recurrent_output_names(self):
        raise NotImplementedError

    def output_names(self):
        raise NotImplementedError

    def fill_unrolled_net(self, net_param):
        raise NotImplementedError

    def recurrent_input_shapes(self):
        return [(1, self.N, self.num_output)] * len(self.recurrent_input_names())

    # -- setup -------------------------------------------------------------------------
    def _check_bottoms(self, bottom):
        x, cont = bottom[0], bottom[1]
        if x.num_axes < 2:
            raise NetError(f"{_where(self)}: bottom 0 (x) '{x.name}' must have at least 2 axes "
                           f"(timesteps T, streams N, ...), got shape {x.shape}")
        if cont.shape != x.shape[:2]:
            raise NetError(f"{_where(self)}: bottom 1 (cont) '{cont.name}' must have shape (T, N) = "
                           f"{x.shape[:2]} to match x '{x.name}' {x.shape}, got {cont.shape}")
        if self.static_input:
            s = bottom[2]
            if s.num_axes < 1 or s.shape[0] != x.shape[1]:
                raise NetError(f"{_where(self)}: bottom 2 (x_static) '{s.name}' must have shape (N, ...) "
                               f"with N = {x.shape[1]} streams as x '{x.name}' {x.shape}, got {s.shape}")

    def layer_setup(self, bottom, top):
        p = self.layer_param.recurrent_param
        if p.num_output <= 0:
            raise NetError(f"{_where(self)}: recurrent_param.num_output must be positive, got {p.num_output}")
        self.num_output = p.num_output
        self.expose_hidden = p.expose_hidden
        num_recurrent = len(self.recurrent_input_names())
        self.static_input = len(bottom) > 2 + (num_recurrent if self.expose_hidden else 0)
        self._check_bottoms(bottom)
        self.T, self.N = bottom[0].shape[:2]

        net_param = caffe_pb2.NetParameter(name=f"{self.name} (unrolled {self.type})")
        inputs = _add(net_param, "Input", "", top=["x", "cont"])
        for blob in bottom[:2 + self.static_input]:
            inputs.input_param.shape.add(dim=blob.shape)
        if self.static_input:
            inputs.top.append("x_static")
        self.fill_unrolled_net(net_param)
        if self.name:
            for layer in net_param.layer:
                layer.name = f"{self.name}_{layer.name}"
        for name in self.output_names():
            _add(net_param, "Reduction", f"{name}_pseudoloss", [name], [f"{name}_pseudoloss"]).loss_weight.append(1)
        try:
            net = self.unrolled_net = Net(net_param, TEST)
        except NetError as e:
            raise NetError(f"{_where(self)}: cannot build the unrolled net: {e}") from None
        blobs = net.blobs
        self.x_blob, self.cont_blob = blobs["x"], blobs["cont"]
        self.x_static_blob = blobs["x_static"] if self.static_input else None
        self.recur_input_blobs = [blobs[n] for n in self.recurrent_input_names()]
        self.recur_output_blobs = [blobs[n] for n in self.recurrent_output_names()]
        self.output_blobs = [blobs[n] for n in self.output_names()]
        self.blobs = list(net.learnable_params)
        self.param_propagate_down = [True] * len(self.blobs)
        for blob in self.recur_output_blobs:
            blob.flat_diff[:] = 0
        self.last_layer_index = len(net.layers) - 1 - len(self.output_names())
        self.debug_info = p.debug_info
        self._param_display = {where: name for where, name in zip(net.param_layer_indices, net.param_display_names)}

    def reshape(self, bottom, top):
        x = bottom[0]
        if x.num_axes < 2 or x.shape[0] != self.T:
            raise NetError(f"{_where(self)}: bottom 0 (x) '{x.name}' has shape {x.shape}; the number of "
                           f"timesteps (axis 0) was {self.T} at setup and cannot change")
        self._check_bottoms(bottom)
        self.N = x.shape[1]
        self.x_blob.reshape_like(x)
        self.cont_blob.reshape_like(bottom[1])
        if self.static_input:
            self.x_static_blob.reshape_like(bottom[2])
        for blob, shape in zip(self.recur_input_blobs, self.recurrent_input_shapes()):
            blob.reshape(shape)
        self.unrolled_net.reshape()
        self.x_blob.share_data(x)
        self.x_blob.share_diff(x)
        self.cont_blob.share_data(bottom[1])
        if self.static_input:
            self.x_static_blob.share_data(bottom[2])
            self.x_static_blob.share_diff(bottom[2])
        if self.expose_hidden:
            first = 2 + self.static_input
            for j, (state, given) in enumerate(zip(self.recur_input_blobs, bottom[first:])):
                if given.shape != state.shape:
                    raise NetError(f"{_where(self)}: bottom {first + j} '{given.name}' (initial "
                                   f"{self.recurrent_input_names()[j]}) has shape {given.shape}, "
                                   f"expected {state.shape} (1, N, num_output)")
                state.share_data(given)
        for t, out in zip(top, self.output_blobs):
            t.reshape_like(out)
            t.share_data(out)
            t.share_diff(out)
        # Upstream shares these in Forward; their storage is fixed from here on, so sharing now is the same.
        for t, state in zip(top[len(self.output_blobs):], self.recur_output_blobs):
            t.reshape_like(state)
            t.share_data(state)

    def reset(self):
        """Zero the state carried from one forward to the next (upstream's Reset)."""
        for blob in self.recur_output_blobs:
            blob.flat_data[:] = 0

    # -- forward / backward ------------------------------------------------------------
    def forward_cpu(self, bottom, top):
        net = self.unrolled_net
        if self.phase == TEST:
            net._share_weights()
        if not self.expose_hidden:
            for first, last in zip(self.recur_input_blobs, self.recur_output_blobs):
                first.flat_data[:] = last.flat_data
        if not self.debug_info:
            net.forward_from_to(0, self.last_layer_index)
            return
        for i in range(self.last_layer_index + 1):
            net.forward_from_to(i, i)
            self._log_forward(i)

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise NetError(f"{_where(self)}: cannot backpropagate to the sequence continuation indicators "
                           f"(bottom 1, '{bottom[1].name}'); set propagate_down: false for it")
        net = self.unrolled_net
        if not self.debug_info:
            net.backward_from_to(self.last_layer_index, 0)
            return
        for i in range(self.last_layer_index, -1, -1):
            net.backward_from_to(i, i)
            if net.layer_need_backward[i]:
                self._log_backward(i)

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    # -- debug_info (Caffe's Net::ForwardDebugInfo / BackwardDebugInfo) --------------------
    @staticmethod
    def _mean_abs(values):
        return np.float32(np.abs(values).sum(dtype=np.float32)) / np.float32(values.size)

    def _log_forward(self, i):
        net = self.unrolled_net
        name = net.layer_names[i]
        for blob, blob_id in zip(net.top_vecs[i], net.top_id_vecs[i]):
            glog.info(f"    [Forward] Layer {name}, top blob {net._blob_names[blob_id]} "
                      f"data: {glog.fmt(self._mean_abs(blob.flat_data))}")
        for j, blob in enumerate(net.layers[i].blobs):
            glog.info(f"    [Forward] Layer {name}, param blob {self._param_display[(i, j)]} "
                      f"data: {glog.fmt(self._mean_abs(blob.flat_data))}")

    def _log_backward(self, i):
        net = self.unrolled_net
        name = net.layer_names[i]
        for blob, blob_id, need in zip(net.bottom_vecs[i], net.bottom_id_vecs[i], net.bottom_need_backward[i]):
            if need:
                glog.info(f"    [Backward] Layer {name}, bottom blob {net._blob_names[blob_id]} "
                          f"diff: {glog.fmt(self._mean_abs(blob.flat_diff))}")
        layer = net.layers[i]
        for j, blob in enumerate(layer.blobs):
            if layer.param_needs_backward(j):
                glog.info(f"    [Backward] Layer {name}, param blob {j} "
                          f"diff: {glog.fmt(self._mean_abs(blob.flat_diff))}")

    # -- the part RNN and LSTM share ------------------------------------------------------
    def _fill_inputs(self, net_param, width):
        """The recurrent-state Input layer, the cont slice and the input transform.

        Adds: Input (tops: recurrent inputs, each (1, N, num_output));
        Slice "cont_slice" of cont along time into cont_1..cont_T;
        InnerProduct "x_transform" W_x<s> x + b_<s> over all timesteps at once
        (axis 2, `width` outputs) into W_x<s>_x; with a static input,
        InnerProduct "W_x<s>_x_static" (axis 1, no bias, parameter
        W_x<s>_static) and Reshape "W_x<s>_x_static_reshape" to (1, N, width);
        Slice "W_x<s>_x_slice" of W_x<s>_x along time into W_x<s>_x_1..T.
        """
        p = self.layer_param.recurrent_param
        s = self.state_tag
        states = _add(net_param, "Input", "", top=self._state_input_order())
        for shape in self.recurrent_input_shapes():
            states.input_param.shape.add(dim=shape)
        cont_slice = _add(net_param, "Slice", "cont_slice", ["cont"], [f"cont_{t}" for t in range(1, self.T + 1)])
        cont_slice.slice_param.axis = 0
        _add_inner_product(net_param, "x_transform", "x", f"W_x{s}_x", width, 2, [f"W_x{s}", f"b_{s}"],
                           p.weight_filler, p.bias_filler, propagate_down=[True])
        if self.static_input:
            _add_inner_product(net_param, f"W_x{s}_x_static", "x_static", f"W_x{s}_x_static_preshape", width, 1,
                               [f"W_x{s}_static"], p.weight_filler, propagate_down=[True])
            reshape = _add(net_param, "Reshape", f"W_x{s}_x_static_reshape", [f"W_x{s}_x_static_preshape"],
                           [f"W_x{s}_x_static"])
            reshape.reshape_param.shape.dim.extend([1, -1, width])
        _add(net_param, "Slice", f"W_x{s}_x_slice", [f"W_x{s}_x"],
             [f"W_x{s}_x_{t}" for t in range(1, self.T + 1)]).slice_param.axis = 0

    def _state_input_order(self):
        return self.recurrent_input_names()

    def _add_recurrent_sum(self, net_param, t, layer_name, weight_layer_name, weight_name, sum_name, width):
        """h_conted_{t-1} = cont_t * h_{t-1} (Scale), its transform by `weight_name` (InnerProduct,
        no bias) and the Eltwise SUM with this timestep's (and the static) input transform."""
        s, prev = self.state_tag, t - 1
        _add(net_param, "Scale", f"h_conted_{prev}", [f"h_{prev}", f"cont_{t}"],
             [f"h_conted_{prev}"]).scale_param.axis = 0
        _add_inner_product(net_param, weight_layer_name, f"h_conted_{prev}", f"{weight_name}_h_{prev}", width, 2,
                           [weight_name], self.layer_param.recurrent_param.weight_filler)
        addends = [f"{weight_name}_h_{prev}", f"W_x{s}_x_{t}"] + ([f"W_x{s}_x_static"] if self.static_input else [])
        _add(net_param, "Eltwise", layer_name, addends, [sum_name]).eltwise_param.operation = \
            caffe_pb2.EltwiseParameter.SUM


@register("RNN")
class RNNLayer(RecurrentLayer):
    """Plain recurrent net, unrolled (BVLC include/caffe/layers/rnn_layer.hpp, src/caffe/layers/rnn_layer.cpp).

        h_t = tanh(W_hh (cont_t h_{t-1}) + W_xh x_t [+ W_xh_static x_static] + b_h)
        o_t = tanh(W_ho h_t + b_o)

    Top 0 is o (T, N, num_output); the state is h (h_0, and h_T exposed).
    blobs, in order: W_xh (num_output, count(x)/(T N)), b_h (num_output,),
    [W_xh_static (num_output, count(x_static)/N)], W_hh (num_output,
    num_output), W_ho (num_output, num_output), b_o (num_output,).

    Unrolled net, after the shared part (RecurrentLayer._fill_inputs with
    width num_output): per timestep t = 1..T, Scale "h_conted_{t-1}",
    InnerProduct "W_hh_h_{t-1}" (W_hh), Eltwise SUM "h_input_sum_t" into
    h_neuron_input_t, TanH "h_neuron_t" into h_t, InnerProduct "W_ho_h_t"
    (W_ho, b_o), TanH "o_neuron_t" into o_t; then Concat "o_concat" of
    o_1..o_T along time into o.
    """
    state_tag = "h"

    def recurrent_input_names(self):
        return ["h_0"]

    def recurrent_output_names(self):
        return [f"h_{self.T}"]

    def output_names(self):
        return ["o"]

    def fill_unrolled_net(self, net_param):
        p = self.layer_param.recurrent_param
        width = self.num_output
        self._fill_inputs(net_param, width)
        concat = caffe_pb2.LayerParameter(name="o_concat", type="Concat", top=["o"])
        concat.concat_param.axis = 0
        for t in range(1, self.T + 1):
            prev = t - 1
            self._add_recurrent_sum(net_param, t, f"h_input_sum_{t}", f"W_hh_h_{prev}", "W_hh",
                                    f"h_neuron_input_{t}", width)
            _add(net_param, "TanH", f"h_neuron_{t}", [f"h_neuron_input_{t}"], [f"h_{t}"])
            _add_inner_product(net_param, f"W_ho_h_{t}", f"h_{t}", f"W_ho_h_{t}", width, 2, ["W_ho", "b_o"],
                               p.weight_filler, p.bias_filler)
            _add(net_param, "TanH", f"o_neuron_{t}", [f"W_ho_h_{t}"], [f"o_{t}"])
            concat.bottom.append(f"o_{t}")
        net_param.layer.add().CopyFrom(concat)


@register("LSTM")
class LSTMLayer(RecurrentLayer):
    """Long short-term memory, unrolled (BVLC include/caffe/layers/lstm_layer.hpp,
    src/caffe/layers/lstm_layer.cpp), the "Learning to Execute" variant
    without peephole connections:

        [i', f', o', g'] = W_hc (cont_t h_{t-1}) + W_xc x_t [+ W_xc_static x_static] + b_c
        c_t, h_t = LSTMUnit(c_{t-1}, [i', f', o', g'], cont_t)     (see LSTMUnitLayer)

    Top 0 is h (T, N, num_output); the state is (h, c): bottoms h_0, c_0
    and tops h_T, c_T when exposed.  blobs, in order: W_xc (4 num_output,
    count(x)/(T N)), b_c (4 num_output,), [W_xc_static (4 num_output,
    count(x_static)/N)], W_hc (4 num_output, num_output).

    Unrolled net, after the shared part (RecurrentLayer._fill_inputs with
    width 4 num_output): per timestep t = 1..T, Scale "h_conted_{t-1}",
    InnerProduct "transform_t" (W_hc) into W_hc_h_{t-1}, Eltwise SUM
    "gate_input_t", LSTMUnit "unit_t" (bottoms c_{t-1}, gate_input_t,
    cont_t; tops c_t, h_t); then an unnamed Split copying c_T into "c_T" and
    Concat "h_concat" of h_1..h_T along time into h.  As upstream, the
    state Input layer lists c_0 before h_0, while the exposed bottoms and
    tops come h first.
    """
    state_tag = "c"

    def recurrent_input_names(self):
        return ["h_0", "c_0"]

    def recurrent_output_names(self):
        return [f"h_{self.T}", "c_T"]

    def output_names(self):
        return ["h"]

    def _state_input_order(self):
        return ["c_0", "h_0"]

    def fill_unrolled_net(self, net_param):
        width = 4 * self.num_output
        self._fill_inputs(net_param, width)
        concat = caffe_pb2.LayerParameter(name="h_concat", type="Concat", top=["h"])
        concat.concat_param.axis = 0
        for t in range(1, self.T + 1):
            prev = t - 1
            self._add_recurrent_sum(net_param, t, f"gate_input_{t}", f"transform_{t}", "W_hc",
                                    f"gate_input_{t}", width)
            _add(net_param, "LSTMUnit", f"unit_{t}", [f"c_{prev}", f"gate_input_{t}", f"cont_{t}"],
                 [f"c_{t}", f"h_{t}"])
            concat.bottom.append(f"h_{t}")
        _add(net_param, "Split", "", [f"c_{self.T}"], ["c_T"])
        net_param.layer.add().CopyFrom(concat)
