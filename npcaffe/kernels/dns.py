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
import numba
import numpy as np

_PRUNE = 0.9
_SPLICE = 1.1


@numba.njit(cache=True, error_model="numpy")
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


@numba.njit(cache=True)
def dns_update_masks(values, mask, threshold):
    """Prune/splice `mask` in place from |values| against float32 `threshold`; returns (pruned, spliced)."""
    low = _PRUNE * np.float64(threshold)
    high = _SPLICE * np.float64(threshold)
    pruned = 0
    spliced = 0
    for k in range(values.size):
        a = np.float64(abs(values[k]))
        if mask[k] == 1:
            if a <= low:
                mask[k] = 0
                pruned += 1
        elif mask[k] == 0:
            if a > high:
                mask[k] = 1
                spliced += 1
    return pruned, spliced


def dns_update_masks_ref(values, mask, threshold):
    a = np.abs(values).astype(np.float64)
    prune = (mask == 1) & (a <= _PRUNE * np.float64(threshold))
    splice = (mask == 0) & (a > _SPLICE * np.float64(threshold))
    mask[prune] = 0
    mask[splice] = 1
    return int(prune.sum()), int(splice.sum())


@numba.njit(cache=True)
def masked_product(values, mask, out):
    """out = values * mask (float32), the weights the layer computes with."""
    for k in range(values.size):
        out[k] = values[k] * mask[k]


def masked_product_ref(values, mask, out):
    np.multiply(values, mask, out=out)


@numba.njit(cache=True)
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


@numba.njit(cache=True)
def masked_product_csr(values, mask, rows, max_nnz, out, indptr, indices, csr_values):
    """out = values * mask, as `masked_product`, and while it has at most `max_nnz`
    nonzeros, those in CSR: returns their count, or -1 once there are more.

    `out` is read as `rows` rows of out.size // rows; indptr (rows + 1),
    indices and csr_values (out.size each) receive the row pointers, column
    indices and values (left incomplete when -1).  A TRAIN forward of a
    C-layer needs W * T dense (the dense path, the weight gradient) and, when
    W * T is sparse, in CSR (npcaffe.kernels.sparse); one pass does both, a
    row at a time so the scan reads the row just written.  The scan is
    branch-free: every entry is written at the next free slot and only a
    nonzero advances it (so a write never passes the entry's own flat index),
    which costs the same at any density, where a test per entry mispredicts.
    """
    width = out.size // rows
    nnz = 0
    indptr[0] = 0
    for r in range(rows):
        base = r * width
        for c in range(width):
            out[base + c] = values[base + c] * mask[base + c]
        if nnz < 0:
            continue
        for c in range(width):
            v = out[base + c]
            indices[nnz] = c
            csr_values[nnz] = v
            nnz += np.int64(v != 0)
        if nnz > max_nnz:
            nnz = -1
        else:
            indptr[r + 1] = nnz
    return nnz


def masked_product_csr_ref(values, mask, rows, max_nnz, out, indptr, indices, csr_values):
    np.multiply(values, mask, out=out)
    r, c = np.nonzero(out.reshape(rows, -1))
    if r.size > max_nnz:
        return -1
    indptr[0] = 0
    np.cumsum(np.bincount(r, minlength=rows), out=indptr[1:])
    indices[:r.size] = c
    csr_values[:r.size] = out.reshape(rows, -1)[r, c]
    return r.size
