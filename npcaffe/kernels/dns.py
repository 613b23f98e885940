"""Dynamic Network Surgery kernels: threshold statistics, mask update, masked weights.

Every array is a flat float32 view of a blob (weight, bias, their masks).
Each Numba kernel has a plain NumPy `*_ref` beside it with the same result,
bit for bit.  The arithmetic follows the DNS fork's compress_conv_layer.cpp
and compress_inner_product_layer.cpp, C++ promotions included:

statistics (float32 members `mu`, `std`, an `unsigned int ncount`):
    for x in weights, then biases, in index order:
        mu  += |x|        std += x*x        ncount += (x != 0)
    mu /= ncount; std -= ncount*mu*mu; std /= ncount; std = sqrt(std)
  where x = mask*w for CConvolution and the raw w for CInnerProduct (the
  fork's two layers differ here; the IP layer ignores its masks), every
  product and sum rounded to float32 (so m*w*w is (m*w)*w in float32), and
  ncount converted to float wherever it meets a float.  The sums start from
  the layer's current `mu`/`std`: upstream never resets them before
  accumulating.  ncount == 0 gives 0/0 = NaN, as upstream (then no mask ever
  changes, since every comparison with NaN is false).

threshold and mask update:
    T = max(mu + c_rate*std, 0)                       (float32, std::max)
    prune:  mask == 1 and |w| <= 0.9*T  ->  mask = 0  (0.9, 1.1 are C++ doubles,
    splice: mask == 0 and |w| >  1.1*T  ->  mask = 1   so compared in double)
  Mask values other than exactly 0 or 1 are left alone, as upstream.
"""
import math

import numba
import numpy as np

from .. import parallel

_PRUNE = 0.9
_SPLICE = 1.1


@numba.njit(cache=True, error_model="numpy", nogil=True)
def dns_statistics(weight, bias, weight_mask, bias_mask, masked, mu, std):
    """(mu, std, ncount) over weight then bias; x = mask*w if `masked` else w.

    `mu`, `std` are the starting values of the float32 accumulators (the
    layer's members).  error_model="numpy" keeps IEEE 0/0 = NaN.
    """
    mu = np.float32(mu)
    std = np.float32(std)
    ncount = 0
    for k in range(weight.size):
        x = weight_mask[k] * weight[k] if masked else weight[k]
        mu += abs(x)
        std += x * weight[k]
        if x != 0:
            ncount += 1
    for k in range(bias.size):
        x = bias_mask[k] * bias[k] if masked else bias[k]
        mu += abs(x)
        std += x * bias[k]
        if x != 0:
            ncount += 1
    n = np.float32(ncount)
    mu = mu / n
    std = std - n * mu * mu
    std = std / n
    std = np.sqrt(std)
    return mu, std, ncount


def dns_statistics_ref(weight, bias, weight_mask, bias_mask, masked, mu, std):
    w = np.concatenate([weight, bias])
    x = w * np.concatenate([weight_mask, bias_mask]) if masked else w
    # cumsum adds strictly left to right, the C loop's order.
    mu = np.cumsum(np.concatenate([[np.float32(mu)], np.abs(x)]), dtype=np.float32)[-1]
    std = np.cumsum(np.concatenate([[np.float32(std)], x * w]), dtype=np.float32)[-1]
    ncount = int(np.count_nonzero(x))
    n = np.float32(ncount)
    with np.errstate(divide="ignore", invalid="ignore"):
        mu = np.float32(mu / n)
        std = np.float32(np.sqrt(np.float32(np.float32(std - n * mu * mu) / n)))
    return mu, std, ncount


def dns_threshold(mu, std, c_rate):
    """T = std::max(mu + c_rate*std, 0) in float32 (a NaN sum stays NaN, as std::max(a, b) = a < b ? b : a)."""
    t = np.float32(np.float32(mu) + np.float32(np.float32(c_rate) * np.float32(std)))
    return np.float32(0) if t < 0 else t


_FLT_MAX = float(np.finfo(np.float32).max)


def _float32_floor(x):
    """The largest float32 <= the double x: for float32 a, a <= x iff a <= it, and a > x iff a > it."""
    if x != x:
        return np.float32(math.nan)
    if x > _FLT_MAX:
        return np.float32(math.inf if x == math.inf else _FLT_MAX)
    if x < -_FLT_MAX:
        return np.float32(-math.inf)
    f = np.float32(x)
    if float(f) > x:
        f = np.nextafter(f, np.float32(-np.inf))
    return f


def dns_update_masks(values, mask, threshold):
    """Prune/splice `mask` in place from |values| against float32 `threshold`; returns (pruned, spliced).

    Upstream compares |w| with the doubles 0.9*T and 1.1*T; the kernel
    compares in float32 with the largest float32 at or below each (exactly
    the same outcome for float32 |w|), so the loop runs 16 lanes wide."""
    low = _float32_floor(_PRUNE * np.float64(threshold))
    high = _float32_floor(_SPLICE * np.float64(threshold))
    counts = parallel.run(_update_masks, values.size, values, mask, low, high, min_items=1 << 16)
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


@numba.njit(cache=True, nogil=True)
def _update_masks(values, mask, low, high, start, stop):
    # Branch-free (selects), so it vectorizes; NaN compares false and keeps its mask.
    # The range is sliced first: indexing with start + k (maybe negative, to Numba)
    # would add a wraparound test to every access and stop vectorization.
    w = values[start:stop]
    t = mask[start:stop]
    pruned = 0
    spliced = 0
    one = np.float32(1)
    zero = np.float32(0)
    for k in range(w.size):
        a = abs(w[k])
        m = t[k]
        prune = (m == one) & (a <= low)
        splice = (m == zero) & (a > high)
        t[k] = zero if prune else (one if splice else m)
        pruned += prune
        spliced += splice
    return pruned, spliced


def dns_update_masks_ref(values, mask, threshold):
    a = np.abs(values).astype(np.float64)
    prune = (mask == 1) & (a <= _PRUNE * np.float64(threshold))
    splice = (mask == 0) & (a > _SPLICE * np.float64(threshold))
    mask[prune] = 0
    mask[splice] = 1
    return int(prune.sum()), int(splice.sum())


def masked_product(values, mask, out):
    """out = values * mask (float32), the weights the layer computes with."""
    parallel.run(_masked_product, values.size, values, mask, out, min_items=1 << 16)


@numba.njit(cache=True, nogil=True)
def _masked_product(values, mask, out, start, stop):
    w, m, o = values[start:stop], mask[start:stop], out[start:stop]  # sliced: see _update_masks
    for k in range(w.size):
        o[k] = w[k] * m[k]


def masked_accumulate(diff, mask, grad):
    """diff = diff * mask + grad in one pass (float32, rounded after each operation as the
    two NumPy steps it replaces): a C-layer's backward masks the accumulated gradient of its
    weights before adding the new one."""
    parallel.run(_masked_accumulate, diff.size, diff, mask, grad, min_items=1 << 16)


@numba.njit(cache=True, nogil=True)
def _masked_accumulate(diff, mask, grad, start, stop):
    d, m, g = diff[start:stop], mask[start:stop], grad[start:stop]  # sliced: see _update_masks
    for k in range(d.size):
        d[k] = d[k] * m[k] + g[k]


def masked_accumulate_ref(diff, mask, grad):
    np.multiply(diff, mask, out=diff)
    diff += grad


def masked_product_ref(values, mask, out):
    np.multiply(values, mask, out=out)


@numba.njit(cache=True, nogil=True)
def gate_probability(gamma, iteration, power):
    """p = powf(1 + gamma*iter, -power): float32 throughout, iter converted to float.

    Numba lowers float32 ** float32 to the platform's powf, the function the
    upstream build calls.
    """
    base = np.float32(1) + np.float32(gamma) * np.float32(iteration)
    return base ** (-np.float32(power))


def gate_probability_ref(gamma, iteration, power):
    base = np.float32(1) + np.float32(gamma) * np.float32(iteration)
    return np.float32(base ** -np.float32(power))


@numba.njit(cache=True, nogil=True)
def masked_csr(values, mask, rows, max_nnz, indptr, indices, csr_values):
    """values * mask in CSR while it has at most `max_nnz` nonzeros: returns
    their count, or -1 as soon as there are more.

    The product is read as `rows` rows of values.size // rows; indptr
    (rows + 1), indices and csr_values (at least max_nnz each) receive the
    row pointers, column indices and values (left incomplete when -1).  A
    TRAIN forward of a C-layer needs W * T in CSR when it is sparse
    (npcaffe.kernels.sparse); the dense product is then never needed.  DNS
    masks keep a few percent of the weights, so the scan tests sixteen
    products at a time (a vectorized OR) and looks at single entries only in
    the rare groups holding a nonzero; -0.0 counts as zero, NaN as nonzero.
    """
    width = values.size // rows
    nnz = 0
    indptr[0] = 0
    for r in range(rows):
        w = values[r * width:(r + 1) * width]
        m = mask[r * width:(r + 1) * width]
        for c0 in range(0, width, 16):
            c1 = min(c0 + 16, width)
            any_kept = False
            for c in range(c0, c1):
                any_kept |= w[c] * m[c] != 0
            if not any_kept:
                continue
            for c in range(c0, c1):
                v = w[c] * m[c]
                if v != 0:
                    if nnz == max_nnz:
                        return -1
                    indices[nnz] = c
                    csr_values[nnz] = v
                    nnz += 1
        indptr[r + 1] = nnz
    return nnz


def masked_csr_ref(values, mask, rows, max_nnz, indptr, indices, csr_values):
    product = (values * mask).reshape(rows, -1)
    r, c = np.nonzero(product)
    if r.size > max_nnz:
        return -1
    indptr[0] = 0
    np.cumsum(np.bincount(r, minlength=rows), out=indptr[1:])
    indices[:r.size] = c
    csr_values[:r.size] = product[r, c]
    return r.size
