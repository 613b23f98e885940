"""Solver snapshots: the `.solverstate` file and npcaffe's sidecar.

`<prefix>_iter_<N>.solverstate` is upstream's SolverState proto (iter,
learned_net, history, current_step) as a binary proto, or with
snapshot_format: HDF5 the `.solverstate.h5` layout of sgd_solver.cpp
(datasets iter, learned_net, current_step, group history/0..n-1; HDF5 needs
h5py).  These files hold nothing upstream Caffe would not write, so Caffe
can resume from our snapshots and we from Caffe's.

What a bit-exact resume needs beyond that (numpy RNG state, the glibc
rand() emulation's state, layer state such as DNS thresholds) goes to the
JSON sidecar `<solverstate>.npcaffe.json`.  All files are written
atomically, the sidecar before its .solverstate (Solver.snapshot), so a
.solverstate on disk always has its sidecar.
"""
import glob
import json
import math
import os
import tempfile

import numpy as np

from .. import glog
from ..errors import SolverError, WeightsError
from ..proto import caffe_pb2
from .atomic import atomic_write
from .caffemodel import array_to_blob, blob_shape, blob_to_array, read_proto_file
from .limits import MAX_BLOB_COUNT, check_regular_file

SIDECAR_SUFFIX = ".npcaffe.json"
SIDECAR_FORMAT = "npcaffe-solverstate-sidecar"


def snapshot_filename(prefix, iteration, extension):
    """Solver::SnapshotFilename: `<prefix>_iter_<N><extension>`."""
    return f"{prefix}_iter_{int(iteration)}{extension}"


def check_snapshot_prefix(prefix, where):
    """SolverError naming the field unless a file can be created where the snapshots go: tried
    for real (a probe file made and removed), as permission bits say nothing of a read-only
    file system, and root passes every os.access check."""
    directory = os.path.dirname(prefix) or "."
    try:
        fd, probe = tempfile.mkstemp(prefix=".npcaffe-write-check-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise SolverError(f"{where}: field 'snapshot_prefix': cannot write to snapshot prefix '{prefix}' "
                          f"({e.strerror or e}); make sure the directory '{directory}' exists and is "
                          "writable") from None


def remove_stray_temporaries(prefix):
    """Remove the temporary files a killed run left beside its snapshots (`<prefix>_iter_*.tmp`,
    ours only: atomic_write's and the HDF5 writers').  Two runs writing to one prefix at once
    would lose each other's files anyway; this takes the unfinished ones."""
    removed = []
    for path in glob.glob(glob.escape(prefix) + "_iter_*.tmp"):
        try:
            os.unlink(path)
            removed.append(path)
        except OSError:
            pass
    if removed:
        glog.info(f"Removed {len(removed)} temporary file(s) of an interrupted snapshot: {', '.join(removed)}")
    return removed


def _replace_or_clean(write, tmp, path):
    """write(tmp), then rename tmp to path; tmp removed if anything fails."""
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def is_hdf5(path):
    return os.fspath(path).endswith(".h5")


def _h5py(path):
    try:
        import h5py
    except ImportError:
        raise SolverError(f"{path}: HDF5 snapshots need the h5py package (pip install h5py), "
                          "or use snapshot_format: BINARYPROTO") from None
    return h5py


# -- SolverState -------------------------------------------------------------------
def read_solverstate(path, history_shapes=None):
    """SolverState proto from a .solverstate (binary proto) or .solverstate.h5 file.

    history_shapes (the solver's history blobs, in order): the file must hold as many, of these
    sizes; an HDF5 file's are checked from the declared shapes before anything is read."""
    path = os.fspath(path)
    if is_hdf5(path):
        return _read_solverstate_hdf5(path, history_shapes)
    state = read_proto_file(path, caffe_pb2.SolverState(), "binary SolverState")
    if history_shapes is not None:
        check_history(path, [blob_shape(b) for b in state.history], history_shapes)
    return state


def check_history(path, found, expected):
    """SolverError unless `found` history shapes match `expected` in number and element count."""
    if len(found) != len(expected):
        raise SolverError(f"{path}: {len(found)} history blobs in the file, but the solver keeps "
                          f"{len(expected)} for this net; incorrect length of history blobs (another net or "
                          "solver type?)")
    for i, (shape, target) in enumerate(zip(found, expected)):
        if any(d < 0 for d in shape) or math.prod(shape) != math.prod(target):
            raise SolverError(f"{path}: history blob {i} has shape {tuple(shape)}, the parameter "
                              f"{tuple(target)}")


def write_solverstate(state, path):
    """Write a SolverState to `path` (HDF5 layout when the name ends in .h5)."""
    path = os.fspath(path)
    if is_hdf5(path):
        _write_solverstate_hdf5(state, path)
    else:
        atomic_write(path, state.SerializeToString())


def make_solverstate(iteration, learned_net, current_step, history):
    """A SolverState from float32 arrays (Blob::ToProto of each history blob)."""
    state = caffe_pb2.SolverState()
    state.iter = int(iteration)
    state.learned_net = learned_net
    state.current_step = int(current_step)
    for array in history:
        array_to_blob(array, state.history.add())
    return state


def history_arrays(state, where):
    return [blob_to_array(blob, f"{where}: history blob {i}") for i, blob in enumerate(state.history)]


def _write_solverstate_hdf5(state, path):
    h5py = _h5py(path)

    def write(tmp):
        with h5py.File(tmp, "w") as f:
            f.create_dataset("iter", data=np.array([state.iter], dtype=np.int32))
            f.create_dataset("learned_net", data=np.bytes_(state.learned_net.encode()))
            f.create_dataset("current_step", data=np.array([state.current_step], dtype=np.int32))
            group = f.create_group("history")
            for i, blob in enumerate(state.history):
                group.create_dataset(str(i), data=blob_to_array(blob))
    _replace_or_clean(write, path + ".tmp", path)


def _dataset(h5py, f, key, path, max_count):
    """f[key] when it is a dataset of at most max_count elements (checked before reading)."""
    dataset = f.get(key)
    if not isinstance(dataset, h5py.Dataset):
        raise WeightsError(f"{path}: no dataset '{key}' (not a .solverstate.h5 written by Caffe or npcaffe)")
    if dataset.size is None or dataset.size > max_count:
        raise WeightsError(f"{path}: dataset '{key}' declares shape {dataset.shape}, at most {max_count} "
                           "values expected")
    return dataset


def _read_solverstate_hdf5(path, history_shapes=None):
    h5py = _h5py(path)
    if not os.path.exists(path):
        raise WeightsError(f"{path}: solver state file not found")
    check_regular_file(path, WeightsError)
    state = caffe_pb2.SolverState()
    try:
        with h5py.File(path, "r") as f:
            state.iter = int(np.asarray(_dataset(h5py, f, "iter", path, 1)).ravel()[0])
            if "learned_net" in f:
                value = _dataset(h5py, f, "learned_net", path, 1)[()]
                state.learned_net = value.decode() if isinstance(value, bytes) else str(value)
            state.current_step = int(np.asarray(_dataset(h5py, f, "current_step", path, 1)).ravel()[0])
            group = f.get("history")
            if not isinstance(group, h5py.Group):
                raise WeightsError(f"{path}: no group 'history'")
            keys = [str(i) for i in range(len(group))]
            datasets = [_dataset(h5py, group, key, path, MAX_BLOB_COUNT) for key in keys]
            if history_shapes is not None:
                check_history(path, [d.shape for d in datasets], history_shapes)
            for dataset in datasets:
                array_to_blob(np.asarray(dataset, dtype=np.float32), state.history.add())
    except (OSError, KeyError, ValueError, TypeError, IndexError, RuntimeError, UnicodeDecodeError) as e:
        raise WeightsError(f"{path}: not a readable .solverstate.h5: {e}") from None
    return state


# -- weights in HDF5 (Net::ToHDF5 / CopyTrainedLayersFromHDF5) ---------------------
def write_net_hdf5(layers, path):
    """Weights in Caffe's Net::ToHDF5 layout: group data/<layer> for every layer (in
    order, empty when it has no parameters or shares them all) holding dataset <i>
    for each parameter i it owns, and, when diffs are given, diff/<layer>/<i> for
    every parameter.  `layers`: [(layer name, {i: data}, {i: diff} or None)]."""
    h5py = _h5py(path)
    path = os.fspath(path)

    def write(tmp):
        with h5py.File(tmp, "w") as f:
            data = f.create_group("data")
            diff = f.create_group("diff") if any(d is not None for _, _, d in layers) else None
            for name, arrays, diffs in layers:
                group = data.create_group(name)
                for i, array in arrays.items():
                    group.create_dataset(str(i), data=np.asarray(array, np.float32))
                if diffs is not None:
                    group = diff.create_group(name)
                    for i, array in diffs.items():
                        group.create_dataset(str(i), data=np.asarray(array, np.float32))
    _replace_or_clean(write, path + ".tmp", path)


def read_net_hdf5(path, expected=None, ignored=None):
    """[(layer name, {i: float32 array})] of a Net::ToHDF5 file's data group.

    expected ({layer name: [param shapes]}, the net's): only those layers are read, the names of
    the others go to the list `ignored`, and each dataset's declared shape must be the net's
    before it is read, so a small file declaring a huge dataset allocates nothing.  Without it,
    each dataset is read when it declares at most Caffe's INT_MAX values."""
    h5py = _h5py(path)
    path = os.fspath(path)
    if not os.path.exists(path):
        raise WeightsError(f"{path}: file not found")
    check_regular_file(path, WeightsError)
    layers = []
    try:
        with h5py.File(path, "r") as f:
            data = f.get("data")
            if not isinstance(data, h5py.Group):
                raise WeightsError(f"{path}: no 'data' group; not weights written by Caffe's Net::ToHDF5")
            for name, group in data.items():
                if expected is not None and name not in expected:
                    if ignored is not None:
                        ignored.append(name)
                    continue
                if not isinstance(group, h5py.Group):
                    raise WeightsError(f"{path}: data/{name} is not a group of datasets 0, 1, ...")
                arrays = {}
                for key, dataset in group.items():
                    if not key.isdigit() or not isinstance(dataset, h5py.Dataset):
                        raise WeightsError(f"{path}: data/{name}/{key}: expected datasets named 0, 1, ...")
                    j = int(key)
                    if expected is not None:
                        shapes = expected[name]
                        if j >= len(shapes):
                            raise WeightsError(f"{path}: layer '{name}' has dataset data/{name}/{key} but "
                                               f"{len(shapes)} parameter blobs in the net; incompatible "
                                               "number of blobs")
                        if tuple(dataset.shape) != tuple(shapes[j]):
                            raise WeightsError(f"{path}: cannot copy param {j} of layer '{name}': shape "
                                               f"mismatch. Source shape {tuple(dataset.shape)}; target "
                                               f"shape {tuple(shapes[j])}")
                    elif dataset.size is None or dataset.size > MAX_BLOB_COUNT:
                        raise WeightsError(f"{path}: data/{name}/{key} declares shape {dataset.shape}, "
                                           "more values than a blob holds")
                    arrays[j] = np.asarray(dataset, dtype=np.float32)
                layers.append((name, arrays))
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
        raise WeightsError(f"{path}: not a readable HDF5 weights file: {e}") from None
    return layers


# -- the npcaffe sidecar -----------------------------------------------------------
def sidecar_path(state_path):
    return os.fspath(state_path) + SIDECAR_SUFFIX


def write_sidecar(state_path, payload):
    body = dict(format=SIDECAR_FORMAT, version=1, **payload)
    atomic_write(sidecar_path(state_path), json.dumps(body, indent=1, sort_keys=True).encode("utf-8"))


def read_sidecar(state_path):
    """The sidecar's dict, or None when there is none (an upstream snapshot)."""
    path = sidecar_path(state_path)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            body = json.load(f)
    except (OSError, ValueError) as e:
        raise WeightsError(f"{path}: unreadable npcaffe sidecar: {e}") from None
    if body.get("format") != SIDECAR_FORMAT:
        raise WeightsError(f"{path}: not an npcaffe solver-state sidecar (format {body.get('format')!r})")
    return body


def resolve_learned_net(learned_net, state_path):
    """Path of a state's learned_net: as Caffe opens it (relative to the working
    directory), else relative to the state file's directory, else its file
    name in that directory (a snapshot directory moved as a whole)."""
    if os.path.isabs(learned_net) or os.path.exists(learned_net):
        return learned_net
    beside = os.path.join(os.path.dirname(os.path.abspath(os.fspath(state_path))), learned_net)
    if os.path.exists(beside):
        return beside
    alt = os.path.join(os.path.dirname(os.path.abspath(os.fspath(state_path))), os.path.basename(learned_net))
    if os.path.exists(alt):
        return alt
    raise WeightsError(f"{state_path}: learned_net '{learned_net}' not found (looked relative to the working "
                       f"directory and to the solver state's directory)")
