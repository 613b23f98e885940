"""Softmax and softmax cross-entropy kernels over (outer, channels, inner) views.

A blob of shape (N, C, H, W) with softmax axis 1 is seen as outer = N,
channels = C, inner = H*W; the softmax runs over the middle index.  Labels are
the matching (outer, inner) float array holding class indices.

The Numba kernels are the ones the layers call: Numba's float32 exp and log
are glibc's expf/logf, the functions Caffe's CPU code calls, so results agree
with upstream to the float.  NumPy's own float32 exp/log are SIMD versions
that differ from glibc in the last bit for many inputs, so the `*_ref`
versions are references to compare with a tolerance, not bit for bit.  Sums
over channels run in float32.  Caffe leaves them to BLAS (sgemv/sdot), whose
order depends on the build; the forward's sum of exponentials follows the DNS
fork's OpenBLAS (0.3.21, Haswell) where it matters most, one position per
image (inner 1, every classifier): its sgemv adds the channels four at a time,
s + (((e0 + e1) + e2) + e3), then the rest one by one (measured against that
library, tests/kernels/test_softmax_kernel.py).  The adaptive solvers turn a
last-bit difference here into a different run (npcaffe.solvers.sgd).  With
several positions per image the sums run in index order, which agrees with
that sgemv for some shapes only.

Every kernel is safe when its output aliases its input (in-place layers).
"""
import numba
import numpy as np

FLT_MIN = np.float32(np.finfo(np.float32).tiny)


@numba.njit(cache=True, nogil=True)
def softmax_forward(x, out):
    """out = exp(x - max_c x) / sum_c exp(x - max_c x), per (outer, inner)."""
    outer, channels, inner = x.shape
    for i in range(outer):
        for k in range(inner):
            # Caffe's std::max(running, value) keeps the running max unless it is
            # smaller, which fixes how NaNs propagate; `m < v` reproduces that.
            m = x[i, 0, k]
            for c in range(1, channels):
                v = x[i, c, k]
                if m < v:
                    m = v
            for c in range(channels):
                out[i, c, k] = np.exp(x[i, c, k] - m)
            s = np.float32(0)
            c = 0
            if inner == 1:
                while c + 4 <= channels:
                    s += ((out[i, c, k] + out[i, c + 1, k]) + out[i, c + 2, k]) + out[i, c + 3, k]
                    c += 4
            while c < channels:
                s += out[i, c, k]
                c += 1
            for c in range(channels):
                out[i, c, k] = out[i, c, k] / s


def softmax_forward_ref(x, out):
    m = x.max(axis=1, keepdims=True)
    e = np.exp(x - m)
    out[...] = e / e.sum(axis=1, keepdims=True)


@numba.njit(cache=True, nogil=True)
def softmax_backward(top_data, top_diff, bottom_diff):
    """bottom_diff = (top_diff - sum_c top_diff * top_data) * top_data."""
    outer, channels, inner = top_data.shape
    for i in range(outer):
        for k in range(inner):
            d = np.float32(0)
            for c in range(channels):
                d += top_diff[i, c, k] * top_data[i, c, k]
            for c in range(channels):
                bottom_diff[i, c, k] = (top_diff[i, c, k] - d) * top_data[i, c, k]


def softmax_backward_ref(top_data, top_diff, bottom_diff):
    d = (top_diff * top_data).sum(axis=1, keepdims=True)
    bottom_diff[...] = (top_diff - d) * top_data


@numba.njit(cache=True, nogil=True)
def softmax_loss_forward(prob, label, has_ignore, ignore_label):
    """Sum of -log(max(prob[label], FLT_MIN)) over the non-ignored positions.

    Returns (loss_sum, valid_count, bad) where bad is the flat label position
    of the first label outside [0, channels), or -1.  Labels are truncated
    toward zero, as C++'s static_cast<int>.  The sum is a float32 running sum
    in Caffe's loop order.
    """
    outer, channels, inner = prob.shape
    loss = np.float32(0)
    count = 0
    for i in range(outer):
        for j in range(inner):
            lv = int(label[i, j])
            if has_ignore and lv == ignore_label:
                continue
            if lv < 0 or lv >= channels:
                return loss, count, i * inner + j
            p = prob[i, lv, j]
            if p < FLT_MIN:
                p = FLT_MIN
            loss -= np.log(p)
            count += 1
    return loss, count, -1


def softmax_loss_forward_ref(prob, label, has_ignore, ignore_label):
    lv = np.trunc(label).astype(np.int64)
    valid = ~(lv == ignore_label) if has_ignore else np.ones(lv.shape, bool)
    bad = valid & ((lv < 0) | (lv >= prob.shape[1]))
    if bad.any():
        return np.float32(0), 0, int(np.flatnonzero(bad)[0])
    picked = np.take_along_axis(prob, np.where(valid, lv, 0)[:, None, :], axis=1)[:, 0, :]
    loss = -np.log(np.maximum(picked[valid], FLT_MIN).astype(np.float64)).sum()
    return np.float32(loss), int(valid.sum()), -1


@numba.njit(cache=True, nogil=True)
def softmax_loss_backward(prob, label, has_ignore, ignore_label, bottom_diff):
    """bottom_diff = prob - onehot(label), zero where the label is ignored.

    Returns the number of non-ignored labels; the caller scales by
    loss_weight / normalizer.  Labels must already have passed the forward
    range check.
    """
    outer, channels, inner = prob.shape
    count = 0
    for i in range(outer):
        for j in range(inner):
            lv = int(label[i, j])
            if has_ignore and lv == ignore_label:
                for c in range(channels):
                    bottom_diff[i, c, j] = 0
            else:
                for c in range(channels):
                    bottom_diff[i, c, j] = prob[i, c, j]
                bottom_diff[i, lv, j] -= 1
                count += 1
    return count


def softmax_loss_backward_ref(prob, label, has_ignore, ignore_label, bottom_diff):
    lv = np.trunc(label).astype(np.int64)
    valid = ~(lv == ignore_label) if has_ignore else np.ones(lv.shape, bool)
    onehot = np.arange(prob.shape[1])[None, :, None] == lv[:, None, :]
    bottom_diff[...] = np.where(valid[:, None, :], prob - onehot, 0)
    return int(valid.sum())
