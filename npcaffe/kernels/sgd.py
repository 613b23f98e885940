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
pass, so the results are equal to the bit.
"""
import numba
import numpy as np


@numba.njit(cache=True)
def sgd_momentum_update(data, diff, history, local_decay, local_rate, momentum):
    """L2-regularize `diff`, then history = momentum*history + local_rate*diff and diff = history.

    All arrays flat float32 of one size; the three scalars float32.
    """
    decay = np.float64(local_decay)
    rate = np.float64(local_rate)
    momentum = np.float32(momentum)
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


def sgd_momentum_update_ref(data, diff, history, local_decay, local_rate, momentum):
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
