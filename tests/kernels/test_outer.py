"""npcaffe.kernels.outer: the batch-1 weight gradient, the bits sgemm gives for dyᵀ x with one row."""
import numpy as np
import pytest

from npcaffe import parallel
from npcaffe.kernels.outer import outer_product, outer_product_ref


@pytest.mark.parametrize("threads", [1, 3])
def test_outer_product_equals_sgemm_to_the_bit(threads, monkeypatch):
    monkeypatch.setattr("npcaffe.kernels.outer.MIN_ELEMENTS_PER_PART", 8)
    rng = np.random.default_rng(5)
    special = np.array([-0.0, 0.0, np.inf, 3e38, -1e-45, np.nan], np.float32)
    y = np.concatenate([special, rng.normal(size=37).astype(np.float32)])
    x = np.concatenate([rng.normal(size=50).astype(np.float32), special[::-1]])
    want = np.full((y.size, x.size), 9.0, np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        outer_product_ref(y, x, want)
    got = np.full_like(want, 9.0)
    parallel.set_num_threads(threads)
    try:
        outer_product(y, x, got)
    finally:
        parallel.set_num_threads(1)
    np.testing.assert_array_equal(got, want)
    numbers = ~np.isnan(want)  # a NaN's sign is not specified
    assert np.array_equal(np.signbit(got)[numbers], np.signbit(want)[numbers])  # -0.0 products: +0.0
