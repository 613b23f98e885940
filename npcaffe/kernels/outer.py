"""The outer product y xᵀ: a fully connected layer's weight gradient at batch 1.

An InnerProduct layer's weight gradient is dyᵀ x over the batch; with one
image that is an outer product, one multiply per weight, bound by the speed
of writing the weights' diff (AlexNet's fc6: 151 MB).  OpenBLAS's sgemm
with an inner dimension of 1 takes about twice as long as a plain loop (it
packs its operands for a product that reuses nothing), so this kernel
writes it directly.  Each element is the single float32 product sgemm
computes (alpha 1, beta 0) added to +0.0 as sgemm's accumulator starts, so a
-0.0 product comes out +0.0 there too: the bits are sgemm's.  It runs on one
thread (npcaffe.parallel's default): two threads write it twice as fast
alone, but inside a training pass OpenBLAS's threads still spin after the
layer's other products and the two-thread version measured no faster
(AlexNet batch 1: 84-89 ms per forward+backward both ways).
"""
import numba
import numpy as np

from .. import parallel

# Elements per part below which the product is not split over threads (about 1 MB).
MIN_ELEMENTS_PER_PART = 1 << 18


def outer_product(y, x, out):
    """out[i, j] = y[i] * x[j]; out is C-contiguous (len(y), len(x))."""
    min_rows = max(1, MIN_ELEMENTS_PER_PART // max(x.size, 1))
    parallel.run(_outer_rows, y.size, y, x, out, min_items=min_rows)


@numba.njit(cache=True, nogil=True)
def _outer_rows(y, x, out, start, stop):
    zero = np.float32(0)
    for i in range(start, stop):
        row, scale = out[i], y[i]
        for j in range(x.size):
            row[j] = zero + scale * x[j]


def outer_product_ref(y, x, out):
    np.dot(y.reshape(-1, 1), x.reshape(1, -1), out=out)
