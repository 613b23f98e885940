"""Numerical gradient checker, as Caffe's test_gradient_check_util.hpp.

The objective is either half the sum of squares of all tops (check_gradient)
or 2 x one chosen top element (check_gradient_exhaustive runs every element).
Central differences with `stepsize`; a computed gradient g and an estimate e
must satisfy |g - e| <= threshold * max(|g|, |e|, 1), except for inputs
within `kink_range` of `kink` (non-smooth points such as ReLU's 0).
"""
import numpy as np

from npcaffe import rng


def _objective(top, top_id, top_data_id):
    if top_id < 0:
        loss = 0.0
        for t in top:
            loss += float(np.dot(t.flat_data.astype(np.float64), t.flat_data.astype(np.float64)))
            t.flat_diff[:] = t.flat_data
        return loss / 2.0
    for t in top:
        t.flat_diff[:] = 0
    loss_weight = 2.0
    top[top_id].flat_diff[top_data_id] = loss_weight
    return float(top[top_id].flat_data[top_data_id]) * loss_weight


def _check_single(layer, bottom, top, check_bottom, top_id, top_data_id, element_wise,
                  stepsize, threshold, seed, kink, kink_range, param_blobs):
    blobs_to_check = []
    propagate_down = [check_bottom == -1] * len(bottom)
    if param_blobs:
        for b in layer.blobs:
            b.flat_diff[:] = 0
            blobs_to_check.append(b)
    if check_bottom == -1:
        blobs_to_check.extend(bottom)
    elif check_bottom >= 0:
        blobs_to_check.append(bottom[check_bottom])
        propagate_down[check_bottom] = True
    rng.set_random_seed(seed)
    layer.forward(bottom, top)
    _objective(top, top_id, top_data_id)
    layer.backward(top, propagate_down, bottom)
    computed = [b.flat_diff.copy() for b in blobs_to_check]
    failures = []
    for k, blob in enumerate(blobs_to_check):
        flat = blob.flat_data
        for i in range(blob.count):
            estimated = 0.0
            if not element_wise or i == top_data_id:
                orig = flat[i]
                flat[i] = orig + np.float32(stepsize)
                rng.set_random_seed(seed)
                layer.forward(bottom, top)
                pos = _objective(top, top_id, top_data_id)
                flat[i] = orig - np.float32(stepsize)
                rng.set_random_seed(seed)
                layer.forward(bottom, top)
                neg = _objective(top, top_id, top_data_id)
                flat[i] = orig
                estimated = (pos - neg) / stepsize / 2.0
            g = float(computed[k][i])
            x = float(flat[i])
            if kink - kink_range > abs(x) or abs(x) > kink + kink_range:
                scale = max(abs(g), abs(estimated), 1.0)
                if abs(g - estimated) > threshold * scale:
                    failures.append(f"blob {k} ({blob.name or 'param' if k < len(layer.blobs) and param_blobs else blob.name}) "
                                    f"elem {i}: computed {g:.6g} vs estimated {estimated:.6g} (top {top_id}[{top_data_id}])")
    return failures


def check_gradient(layer, bottom, top, check_bottom=-1, stepsize=1e-2, threshold=1e-3, seed=1701,
                   kink=0.0, kink_range=-1.0, param_blobs=True, setup=True):
    """Check d(0.5 * sum top^2)/d(bottom, params); assert no element is off."""
    if setup:
        layer.setup(bottom, top)
    failures = _check_single(layer, bottom, top, check_bottom, -1, -1, False,
                             stepsize, threshold, seed, kink, kink_range, param_blobs)
    assert not failures, "gradient check failed:\n" + "\n".join(failures[:20])


def check_gradient_exhaustive(layer, bottom, top, check_bottom=-1, stepsize=1e-2, threshold=1e-3, seed=1701,
                              kink=0.0, kink_range=-1.0, param_blobs=True, element_wise=False):
    """Check the gradient of every top element separately (Caffe's CheckGradientExhaustive)."""
    layer.setup(bottom, top)
    assert top, "exhaustive gradient check needs at least one top blob"
    failures = []
    for i, t in enumerate(top):
        for j in range(t.count):
            failures += _check_single(layer, bottom, top, check_bottom, i, j, element_wise,
                                      stepsize, threshold, seed, kink, kink_range, param_blobs)
    assert not failures, "gradient check failed:\n" + "\n".join(failures[:20])


def check_gradient_elementwise(layer, bottom, top, stepsize=1e-2, threshold=1e-3, seed=1701,
                               kink=0.0, kink_range=-1.0):
    """For parameter-free element-wise layers: d top[j] / d bottom[i] is 0 unless i == j."""
    layer.setup(bottom, top)
    failures = []
    for j in range(top[0].count):
        failures += _check_single(layer, bottom, top, -1, 0, j, True,
                                  stepsize, threshold, seed, kink, kink_range, False)
    assert not failures, "gradient check failed:\n" + "\n".join(failures[:20])
