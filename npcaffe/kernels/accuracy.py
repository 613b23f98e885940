"""Top-k classification hits over (outer, classes, inner) score views.

The rank rule is the DNS fork's (src/caffe/layers/accuracy_layer.cpp there):
it sorts (score, class) pairs with std::greater, so among equal scores the
higher class index ranks first.  The true class is a hit iff fewer than top_k
classes c beat it, where c beats the label l when s_c > s_l, or s_c == s_l and
c > l.  (BVLC 1.0 counts every other class with s_c >= s_l instead, so a tie
always goes against the label; see npcaffe.layerlib.loss.AccuracyLayer.)
"""
import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def accuracy_hits(scores, label, top_k, has_ignore, ignore_label, hits_per_class, count_per_class):
    """Count top-k hits; returns (hits, valid_count, bad).

    `hits_per_class` / `count_per_class` (float32, one per class, zeroed by
    the caller) receive per-class tallies.  `bad` is the flat label position
    of the first label outside [0, classes), or -1.  Labels are truncated
    toward zero, as C++'s static_cast<int>.
    """
    outer, classes, inner = scores.shape
    hits = 0
    count = 0
    for i in range(outer):
        for j in range(inner):
            lv = int(label[i, j])
            if has_ignore and lv == ignore_label:
                continue
            if lv < 0 or lv >= classes:
                return hits, count, i * inner + j
            s = scores[i, lv, j]
            better = 0
            for c in range(classes):
                v = scores[i, c, j]
                if v > s or (v == s and c > lv):
                    better += 1
            count_per_class[lv] += 1
            if better < top_k:
                hits += 1
                hits_per_class[lv] += 1
            count += 1
    return hits, count, -1


def accuracy_hits_ref(scores, label, top_k, has_ignore, ignore_label, hits_per_class, count_per_class):
    classes = scores.shape[1]
    lv = np.trunc(label).astype(np.int64)
    valid = ~(lv == ignore_label) if has_ignore else np.ones(lv.shape, bool)
    bad = valid & ((lv < 0) | (lv >= classes))
    if bad.any():
        return 0, 0, int(np.flatnonzero(bad)[0])
    safe = np.where(valid, lv, 0)
    s = np.take_along_axis(scores, safe[:, None, :], axis=1)
    c = np.arange(classes)[None, :, None]
    better = ((scores > s) | ((scores == s) & (c > safe[:, None, :]))).sum(axis=1)
    hit = valid & (better < top_k)
    np.add.at(count_per_class, lv[valid], 1)
    np.add.at(hits_per_class, lv[hit], 1)
    return int(hit.sum()), int(valid.sum()), -1
