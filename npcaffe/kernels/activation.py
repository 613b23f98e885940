"""Element-wise transcendental kernels behind the neuron layers.

Caffe's CPU neuron layers call expf / logf / tanhf (or their double versions
where a double literal promotes the expression); Numba's float32 and float64
np.exp / np.log / np.tanh are those same libm functions, NumPy's float32
versions are SIMD approximations that can differ in the last bit.  So the
layers call these Numba kernels, and the `*_reference` NumPy versions beside
them are for tests, equal within a rounding.

`relu_forward` is here for speed, not libm: on a few hundred values (a
batch-1 inference) NumPy's np.maximum costs ~3 microseconds of call
overhead, the kernel ~1.

Every kernel reads x[i] before writing y[i], so y may alias x (in place).
"""
import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def relu_forward(x, y):
    """y = std::max(x, 0) as Caffe's ReLU: NaN and -0.0 pass through unchanged."""
    zero = np.float32(0)
    for i in range(x.size):
        v = x[i]
        y[i] = zero if v < zero else v


@numba.njit(cache=True, nogil=True, inline="always")
def _relu_factor(v, negative_slope):
    # Two selects, no branch: (x > 0) + negative_slope * (x <= 0), exactly 1, negative_slope or 0 (NaN).
    zero = np.float32(0)
    return (np.float32(1) if v > zero else zero) + (negative_slope if v <= zero else zero)


@numba.njit(cache=True, nogil=True)
def relu_backward(x, dy, negative_slope, dx):
    """dx = dy * ((x > 0) + negative_slope * (x <= 0)), Caffe's ReLU backward: the factor is exactly 1,
    negative_slope or 0 (a NaN x is neither), so one product per element gives NumPy's two-pass bits
    (dy * 0 stays -0.0 or NaN as there).  dx must not alias dy: relu_backward_in_place is that case
    (LLVM vectorises a loop over two arrays that may overlap only behind a runtime test, which an
    in-place ReLU fails, leaving it 4x slower)."""
    for i in range(x.size):
        dx[i] = dy[i] * _relu_factor(x[i], negative_slope)


@numba.njit(cache=True, nogil=True)
def relu_backward_in_place(x, diff, negative_slope):
    """relu_backward with dx = dy = diff: diff *= the factor."""
    for i in range(x.size):
        diff[i] = diff[i] * _relu_factor(x[i], negative_slope)


def relu_backward_reference(x, dy, negative_slope, dx):
    factor = (x > 0).astype(np.float32) + np.float32(negative_slope) * (x <= 0).astype(np.float32)
    with np.errstate(invalid="ignore"):  # inf * 0 is NaN, as in Caffe
        np.multiply(dy, factor, out=dx)


def relu_forward_reference(x, y):
    # std::max(x, 0) returns x unless x < 0: -0.0 stays -0.0 (np.maximum would give +0.0).
    y[...] = np.where(x < 0, np.float32(0), x)


@numba.njit(cache=True, nogil=True)
def sigmoid_forward(x, y):
    """y = 0.5 tanh(0.5 x) + 0.5, in double as upstream's `0.5 * tanh(0.5 * x) + 0.5`."""
    for i in range(x.size):
        y[i] = np.float32(0.5 * np.tanh(0.5 * np.float64(x[i])) + 0.5)


def sigmoid_forward_reference(x, y):
    y[...] = (0.5 * np.tanh(0.5 * x.astype(np.float64)) + 0.5).astype(np.float32)


@numba.njit(cache=True, nogil=True)
def tanh_forward(x, y):
    """y = tanhf(x)."""
    for i in range(x.size):
        y[i] = np.tanh(x[i])


def tanh_forward_reference(x, y):
    y[...] = np.tanh(x)


@numba.njit(cache=True, nogil=True)
def bnll_forward(x, y):
    """y = log(1 + exp(x)), computed as upstream: x + log(1 + expf(-x)) for x > 0,
    log(1 + expf(x)) otherwise, the log and sum in double."""
    for i in range(x.size):
        v = x[i]
        if v > 0:
            y[i] = np.float32(np.float64(v) + np.log(1.0 + np.float64(np.exp(-v))))
        else:
            y[i] = np.float32(np.log(1.0 + np.float64(np.exp(v))))


def bnll_forward_reference(x, y):
    y[...] = np.logaddexp(0.0, x.astype(np.float64)).astype(np.float32)


BNLL_THRESHOLD = np.float32(50)


@numba.njit(cache=True, nogil=True)
def bnll_backward(x, dy, dx):
    """dx = dy * e / (e + 1) with e = expf(min(x, 50)), the ratio in double."""
    for i in range(x.size):
        v = x[i]
        if v > BNLL_THRESHOLD:
            v = BNLL_THRESHOLD
        e = np.float64(np.exp(v))
        dx[i] = np.float32(dy[i] * (e / (e + 1.0)))


def bnll_backward_reference(x, dy, dx):
    e = np.exp(np.minimum(x, BNLL_THRESHOLD).astype(np.float64))
    dx[...] = (dy * (e / (e + 1.0))).astype(np.float32)


@numba.njit(cache=True, nogil=True)
def elu_forward(x, alpha, y):
    """y = max(x, 0) + alpha (expf(min(x, 0)) - 1)."""
    zero = np.float32(0)
    one = np.float32(1)
    for i in range(x.size):
        v = x[i]
        y[i] = max(v, zero) + alpha * (np.exp(min(v, zero)) - one)


def elu_forward_reference(x, alpha, y):
    y[...] = np.maximum(x, 0) + alpha * (np.exp(np.minimum(x, 0)) - 1)


@numba.njit(cache=True, nogil=True)
def exp_forward(x, inner_scale, outer_scale, y):
    """y = outer_scale * expf(inner_scale * x), skipping the unit factors as upstream."""
    for i in range(x.size):
        v = x[i]
        if inner_scale != 1:
            v = inner_scale * v
        v = np.exp(v)
        if outer_scale != 1:
            v = outer_scale * v
        y[i] = v


def exp_forward_reference(x, inner_scale, outer_scale, y):
    y[...] = outer_scale * np.exp(inner_scale * x)


@numba.njit(cache=True, nogil=True)
def log_forward(x, scale, shift, base_scale, y):
    """y = base_scale * logf(scale * x + shift), skipping the unit terms as upstream."""
    for i in range(x.size):
        v = x[i]
        if scale != 1:
            v = scale * v
        if shift != 0:
            v = v + shift
        v = np.log(v)
        if base_scale != 1:
            v = base_scale * v
        y[i] = v


def log_forward_reference(x, scale, shift, base_scale, y):
    y[...] = base_scale * np.log(scale * x + shift)


@numba.njit(cache=True, nogil=True)
def sigmoid_cross_entropy_sum(x, target, has_ignore_label, ignore_label):
    """(loss, valid_count): -sum of x (t - [x >= 0]) - logf(1 + expf(x - 2 x [x >= 0]))
    over targets not equal to ignore_label (compared after truncation to int),
    a float32 running sum in index order, as upstream's stable formulation."""
    loss = np.float32(0)
    count = 0
    one = np.float32(1)
    two = np.float32(2)
    for i in range(x.size):
        if has_ignore_label and int(target[i]) == ignore_label:
            continue
        v = x[i]
        positive = one if v >= 0 else np.float32(0)
        loss -= v * (target[i] - positive) - np.log(one + np.exp(v - two * v * positive))
        count += 1
    return loss, count


def sigmoid_cross_entropy_sum_reference(x, target, has_ignore_label, ignore_label):
    keep = np.ones(x.shape, bool) if not has_ignore_label else target.astype(np.int64) != ignore_label
    v, t = x[keep].astype(np.float64), target[keep].astype(np.float64)
    return float(np.sum(np.logaddexp(0, v) - v * t)), int(keep.sum())
