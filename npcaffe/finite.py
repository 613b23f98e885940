"""Where a net holds NaN or infinity: the first layer and blob, in forward order.

`npcaffe test` and the solver ask these before they report or save anything,
so a diverged run or a damaged weight file is an error naming the place, not
a score printed from NaNs (Caffe's own tools go on silently).  The checks
are cheap: one float32 sum per blob, and an element-wise look only when
that sum is not finite (a finite sum of float32 values has no NaN or inf in
it; an overflowing sum of finite values is told apart by that second look).
"""
import numpy as np

from .errors import NonFiniteError


def all_finite(values):
    """Whether every value of a flat float array is finite (NaN and +-inf are not)."""
    if np.isfinite(values.sum(dtype=np.float32)):
        return True
    return bool(np.isfinite(values).all())


def _bad_count(values):
    return int(values.size - np.count_nonzero(np.isfinite(values)))


def first_non_finite_param(net, what="data", learnable_only=False):
    """'layer 'L' param j (shape S): k of n values non-finite' for the first parameter blob whose
    data (or diff) holds NaN / inf, layers in net order, else None."""
    learnable = {id(b) for b in net.learnable_params} if learnable_only else None
    for layer_name, layer in zip(net.layer_names, net.layers):
        for j, blob in enumerate(layer.blobs):
            if learnable is not None and id(blob) not in learnable:
                continue
            if what == "diff" and blob.diff_known_zero():  # a DNS mask's, after a solver's deferred clear
                continue
            values = blob.flat_data if what == "data" else blob.flat_diff
            if not all_finite(values):
                return (f"layer '{layer_name}' ({layer.type}) param {j} {what} (shape {blob.shape}): "
                        f"{_bad_count(values)} of {values.size} values are NaN or infinite")
    return None


def first_non_finite_top(net):
    """The same for the first top blob (forward order) whose data holds NaN / inf, else None.

    In-place layers (a ReLU writing its bottom) leave only their output behind: the layer named
    is the first in net order whose top holds NaN / inf after the pass."""
    for layer_name, layer, tops in zip(net.layer_names, net.layers, net.top_vecs):
        for blob in tops:
            values = blob.flat_data
            if not all_finite(values):
                name = _blob_name(net, blob)
                return (f"blob '{name}' (top of layer '{layer_name}', {layer.type}, shape {blob.shape}): "
                        f"{_bad_count(values)} of {values.size} values are NaN or infinite")
    return None


def _blob_name(net, blob):
    return next((name for name, b in net.blobs.items() if b is blob), "?")


def check_params(net, where, what="data"):
    """Raise NonFiniteError naming `where` and the first parameter blob with NaN / inf."""
    hit = first_non_finite_param(net, what)
    if hit:
        raise NonFiniteError(f"{where}: {hit}")


def check_outputs(net, where):
    """Raise NonFiniteError when an output blob of the net holds NaN / inf, naming the first
    non-finite top in forward order (where the NaN came from) and the output it reached."""
    bad = [name for name in net.outputs if not all_finite(net.blobs[name].flat_data)]
    if bad:
        origin = first_non_finite_top(net)
        raise NonFiniteError(f"{where}: output '{bad[0]}' is not finite; first non-finite: {origin}")
