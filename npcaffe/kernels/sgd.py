"""Fused SGD-with-momentum update for one parameter blob, in one pass.

The solver's step for plain SGD with L2 weight decay (npcaffe.solvers.sgd,
after Caffe's sgd_solver.cpp) is, per learnable parameter:

    Regularize:          diff    <- saxpy(local_decay, data, diff)      (skipped when local_decay == 0)
    ComputeUpdateValue:  history <- sscal(momentum, history)            (1: unchanged, 0: zeros)
                         history <- saxpy(local_rate, diff, history)    (skipped when local_rate == 0)
                         diff    <- history

where saxpy(a, x, y) = y + a*x with one rounding (OpenBLAS's fused
multiply-add, emulated exactly in float64 as the solver does) and sscal
multiplies in float32.  Done with NumPy calls this reads and writes the
three arrays five times and allocates float64 temporaries; the kernel does
the same arithmetic element by element, with the same roundings, in one
pass, so the results are equal to the bit.  With `step` it also does the
Net's update of that blob (data -= diff, Net::Update) in the same pass; the
elements are split over threads (npcaffe.parallel).
"""
import numba
import numpy as np

from .. import parallel


def sgd_momentum_update(data, diff, history, local_decay, local_rate, momentum, step=False):
    """L2-regularize `diff`, then history = momentum*history + local_rate*diff and diff = history;
    with `step`, then also data -= diff.

    All arrays flat float32 of one size; the three scalars float32.
    """
    parallel.run(_sgd_momentum_update, diff.size, data, diff, history, np.float32(local_decay),
                 np.float32(local_rate), np.float32(momentum), bool(step), min_items=1 << 16)


@numba.njit(cache=True, nogil=True)
def _sgd_momentum_update(data, diff, history, local_decay, local_rate, momentum, step, start, stop):
    # The range is sliced first: indexing with start + k would add a wraparound
    # test to every access (Numba cannot know it is not negative).
    data, diff, history = data[start:stop], diff[start:stop], history[start:stop]
    decay = np.float64(local_decay)
    rate = np.float64(local_rate)
    for k in range(diff.size):
        g = diff[k]
        if decay != 0:
            g = np.float32(decay * np.float64(data[k]) + np.float64(g))
        h = history[k]
        if momentum == 0:
            h = np.float32(0)
        elif momentum != 1:
            h = h * momentum
        if rate != 0:
            h = np.float32(rate * np.float64(g) + np.float64(h))
        history[k] = h
        diff[k] = h
        if step:
            data[k] = data[k] - h


def sgd_momentum_update_ref(data, diff, history, local_decay, local_rate, momentum, step=False):
    """NumPy reference for `sgd_momentum_update`, written as the solver's BLAS-level steps."""
    local_decay, local_rate, momentum = np.float32(local_decay), np.float32(local_rate), np.float32(momentum)
    if local_decay != 0:
        diff[...] = np.float64(local_decay) * data + diff
    if momentum == 0:
        history[...] = 0
    elif momentum != 1:
        history *= momentum
    if local_rate != 0:
        history[...] = np.float64(local_rate) * diff + history
    diff[...] = history
    if step:
        data -= diff
