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
