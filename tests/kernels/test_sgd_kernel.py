"""The fused SGD momentum kernel against its NumPy reference (the solver's steps), to the bit."""
import numpy as np
import pytest

from npcaffe.kernels.sgd import sgd_momentum_update, sgd_momentum_update_ref


@pytest.mark.parametrize("decay, rate, momentum", [
    (0.0005, 0.01, 0.9), (0.0, 0.01, 0.9), (0.0005, 0.0, 0.9), (0.0005, 0.02, 0.0), (0.001, 0.1, 1.0)])
@pytest.mark.parametrize("step", [False, True])
@pytest.mark.parametrize("n", [1013, 300_001])  # the larger is split over threads
def test_matches_reference_to_the_bit(decay, rate, momentum, step, n):
    rng = np.random.default_rng(7)
    data = rng.standard_normal(n).astype(np.float32)
    data_ref = data.copy()
    diff = (rng.standard_normal(n) * 1e-3).astype(np.float32)
    history = (rng.standard_normal(n) * 1e-2).astype(np.float32)
    args = (np.float32(decay), np.float32(rate), np.float32(momentum))
    d1, h1 = diff.copy(), history.copy()
    d2, h2 = diff.copy(), history.copy()
    for _ in range(3):  # a few steps, so history feeds back
        sgd_momentum_update(data, d1, h1, *args, step)
        sgd_momentum_update_ref(data_ref, d2, h2, *args, step)
        np.testing.assert_array_equal(d1, d2)
        np.testing.assert_array_equal(h1, h2)
        np.testing.assert_array_equal(data, data_ref)
        d1[...] = d2[...] = (rng.standard_normal(n) * 1e-3).astype(np.float32)


@pytest.mark.parametrize("step", [False, True])
def test_a_diff_known_zero_is_not_read_and_gives_the_bits_of_written_zeros(step):
    rng = np.random.default_rng(9)
    n = 5003
    data = (rng.random(n) < 0.5).astype(np.float32)  # a DNS mask: its diff stays zero
    history = (rng.standard_normal(n) * 1e-2).astype(np.float32)
    args = (np.float32(0.0005), np.float32(0.01), np.float32(0.9))
    data_ref, h_ref, d_ref = data.copy(), history.copy(), np.zeros(n, np.float32)
    sgd_momentum_update_ref(data_ref, d_ref, h_ref, *args, step)
    garbage = np.full(n, np.nan, np.float32)  # what the diff held before its deferred clear
    sgd_momentum_update(data, garbage, history, *args, step, diff_is_zero=True)
    np.testing.assert_array_equal(history, h_ref)
    np.testing.assert_array_equal(garbage, d_ref)  # diff = history, as always
    np.testing.assert_array_equal(data, data_ref)
