"""The solvers' float32 steps as the DNS fork's build computes them: OpenBLAS 0.3.21's saxpy
(fused multiply-adds in blocks of 32, the tail rounded twice) and glibc's powf for caffe_powx."""
import ctypes
import ctypes.util

import numpy as np
import pytest

from npcaffe.kernels.sgd import powx, saxpy_fma_end, sgd_momentum_update
from npcaffe.solvers.sgd import axpy

A = np.float32(1 + 2 ** -12)
Y = np.float32(-(1 + 2 ** -11))  # A*A + Y is 2^-24 with one rounding, 0 with two


@pytest.mark.parametrize("n, fused", [(1, 0), (31, 0), (32, 32), (40, 32), (70, 64), (300, 288)])
def test_saxpy_fuses_blocks_of_32_and_rounds_the_tail_twice(n, fused):
    """As measured on the fork's libopenblas (Debian 0.3.21, OPENBLAS_CORETYPE=Haswell) with these
    inputs: 2^-24 in the first n - n % 32 elements, 0 in the rest."""
    assert saxpy_fma_end(n) == fused
    y = np.full(n, Y)
    axpy(A, np.full(n, A), y)
    np.testing.assert_array_equal(y[:fused], np.float32(2 ** -24))
    np.testing.assert_array_equal(y[fused:], 0)


@pytest.mark.parametrize("threads", [1, 2])
def test_fused_sgd_kernel_rounds_the_tail_as_saxpy(threads):
    """The one-pass SGD kernel does Regularize's saxpy the same way, also when split over threads."""
    from npcaffe import parallel
    before = parallel.num_threads()
    parallel.set_num_threads(threads)
    n = 2 * 65_536 + 17  # two parts on two threads (at least 65,536 each), and a tail of 17
    data, diff, history = np.full(n, A), np.full(n, Y), np.zeros(n, np.float32)
    try:
        sgd_momentum_update(data, diff, history, A, np.float32(1), np.float32(0))
    finally:
        parallel.set_num_threads(before)
    end = saxpy_fma_end(n)
    np.testing.assert_array_equal(diff[:end], np.float32(2 ** -24))
    np.testing.assert_array_equal(diff[end:], 0)


@pytest.mark.parametrize("p", [2.0, 0.5, 3.0])
def test_powx_is_the_c_librarys_powf(p):
    """caffe_powx calls powf even for squares and square roots; ours is that same function."""
    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    powf = libm.powf
    powf.restype, powf.argtypes = ctypes.c_float, [ctypes.c_float, ctypes.c_float]
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(20_000) * 10.0 ** rng.integers(-20, 4, 20_000)).astype(np.float32)
    if p == 0.5:
        x = np.abs(x)
    out = np.empty_like(x)
    powx(x, np.float32(p), out)
    expected = np.array([powf(float(v), p) for v in x], np.float32)
    np.testing.assert_array_equal(out.view(np.uint32), expected.view(np.uint32))
    powx(x, np.float32(p), x)  # in place, as AdaDelta's powx(update, 0.5, update)
    np.testing.assert_array_equal(x, out)
