"""Fused SGD-with-momentum update for one parameter blob, in one pass.

The solver's step for plain SGD with L2 weight decay (npcaffe.solvers.sgd,
after Caffe's sgd_solver.cpp) is, per learnable parameter:

    Regularize:          diff    <- saxpy(local_decay, data, diff)      (skipped when local_decay == 0)
    ComputeUpdateValue:  history <- sscal(momentum, history)            (1: unchanged, 0: zeros)
                         history <- saxpy(local_rate, diff, history)    (skipped when local_rate == 0)
                         diff    <- history

where saxpy(a, x, y) = y + a*x as the DNS fork's OpenBLAS (0.3.21, Haswell
kernel) computes it: one fused multiply-add (emulated exactly in float64)
for the first n - n % 32 elements, the vector loop's; a float32 product then
a float32 sum for the last n % 32, its C tail loop (measured on the fork's
libopenblas: every tail element rounds as a*x then + y) - see
SAXPY_FMA_BLOCK.  sscal multiplies in float32.  Done with NumPy calls this
reads and writes the three arrays five times and allocates float64
temporaries; the kernel does the same arithmetic element by element, with
the same roundings, in one pass, so the results are equal to the bit.  With
`step` it also does the Net's update of that blob (data -= diff,
Net::Update) in the same pass; the elements are split over threads
(npcaffe.parallel).

`powx` is caffe_powx: glibc's powf per element, which differs from x*x and
sqrt in the last bit for about one input in 1,500.
"""
import math

import numba
import numpy as np

from .. import parallel

# OpenBLAS's Haswell saxpy: the vector loop (fused multiply-adds) takes 32 elements
# at a time; the remaining n % 32 go through a scalar C loop, y[i] += a * x[i],
# built without contraction, so rounded twice.
SAXPY_FMA_BLOCK = 32


def saxpy_fma_end(n):
    """Elements [0, end) of an n-element saxpy are fused multiply-adds, [end, n) multiply then add."""
    return n - n % SAXPY_FMA_BLOCK


def sgd_momentum_update(data, diff, history, local_decay, local_rate, momentum, step=False, diff_is_zero=False):
    """L2-regularize `diff`, then history = momentum*history + local_rate*diff and diff = history;
    with `step`, then also data -= diff.  `diff_is_zero`: take the diff as +0.0 without reading it
    (a deferred clear's promised zeros, Blob.clear_diff: a DNS mask's diff, which no backward writes).

    All arrays flat float32 of one size; the three scalars float32.
    """
    parallel.run(_sgd_momentum_update, diff.size, data, diff, history, np.float32(local_decay),
                 np.float32(local_rate), np.float32(momentum), bool(step), bool(diff_is_zero),
                 saxpy_fma_end(diff.size), min_items=1 << 16)


@numba.njit(cache=True, nogil=True, inline="always")
def _saxpy1(a, x, y, fused):
    """One element of saxpy: y + a*x, one rounding when fused, else a*x rounded first."""
    if fused:
        return np.float32(np.float64(a) * np.float64(x) + np.float64(y))
    return y + a * x


@numba.njit(cache=True, nogil=True, inline="always")
def _update_one(data, diff, history, k, local_decay, local_rate, momentum, step, diff_is_zero, fused):
    g = np.float32(0) if diff_is_zero else diff[k]
    if local_decay != 0:
        g = _saxpy1(local_decay, data[k], g, fused)
    h = history[k]
    if momentum == 0:
        h = np.float32(0)
    elif momentum != 1:
        h = h * momentum
    if local_rate != 0:
        h = _saxpy1(local_rate, g, h, fused)
    history[k] = h
    diff[k] = h
    if step:
        data[k] = data[k] - h


@numba.njit(cache=True, nogil=True)
def _sgd_momentum_update(data, diff, history, local_decay, local_rate, momentum, step, diff_is_zero, fma_end,
                         start, stop):
    # The range is sliced first: indexing with start + k would add a wraparound
    # test to every access (Numba cannot know it is not negative).  Two loops, the fused
    # multiply-adds' and the tail's, rather than a test per element: 1.5x faster.
    data, diff, history = data[start:stop], diff[start:stop], history[start:stop]
    fused_end = min(max(fma_end - start, 0), diff.size)
    for k in range(fused_end):
        _update_one(data, diff, history, k, local_decay, local_rate, momentum, step, diff_is_zero, True)
    for k in range(fused_end, diff.size):
        _update_one(data, diff, history, k, local_decay, local_rate, momentum, step, diff_is_zero, False)


def sgd_momentum_update_ref(data, diff, history, local_decay, local_rate, momentum, step=False):
    """NumPy reference for `sgd_momentum_update`, written as the solver's BLAS-level steps."""
    local_decay, local_rate, momentum = np.float32(local_decay), np.float32(local_rate), np.float32(momentum)
    end = saxpy_fma_end(diff.size)

    def saxpy(a, x, y):
        y[:end] = np.float64(a) * x[:end] + y[:end]
        y[end:] = y[end:] + a * x[end:]
    if local_decay != 0:
        saxpy(local_decay, data, diff)
    if momentum == 0:
        history[...] = 0
    elif momentum != 1:
        history *= momentum
    if local_rate != 0:
        saxpy(local_rate, diff, history)
    diff[...] = history
    if step:
        data -= diff


@numba.njit(cache=True, nogil=True)
def powx(x, p, out):
    """out = x ** p elementwise with glibc's powf (caffe_powx's loop); `out` may alias `x`.

    p is a runtime float32, so the compiler cannot turn powf(x, 2) into x*x or
    powf(x, 0.5) into sqrt: the fork calls powf for both.  Checked against
    libm's powf through ctypes (tests/solvers/test_fork_arithmetic.py).
    """
    for i in range(x.size):
        out[i] = math.pow(x[i], p)


@numba.njit(cache=True, nogil=True)
def add_mean_of_two(first, second, scale, out):
    """out += (first + second) * scale, each operation rounded to float32 as the NumPy passes
    `t = first + second; t *= scale; out += t` round it (the batch split's gradient sum), in one pass."""
    for i in range(out.size):
        out[i] += (first[i] + second[i]) * scale
