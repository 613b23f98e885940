"""SolverState files: upstream's binary format byte for byte, the npcaffe sidecar, learned_net lookup."""
import gzip
import os

import numpy as np
import pytest

from helpers import shared_path
from npcaffe.errors import SolverError, WeightsError
from npcaffe.fileio import solverstate as ss


def upstream_state_bytes():
    path = shared_path("crosscheck", "lenet5-dns", "upstream", "snap", "lenet5_dns_iter_300.solverstate.gz")
    with gzip.open(path) as f:
        return f.read()


def test_reads_upstream_state_and_writes_it_back_byte_for_byte(tmp_path):
    raw = upstream_state_bytes()
    src = tmp_path / "up.solverstate"
    src.write_bytes(raw)
    state = ss.read_solverstate(src)
    assert (state.iter, state.learned_net, state.current_step) == (300, "snap/lenet5_dns_iter_300.caffemodel", 0)
    arrays = ss.history_arrays(state, str(src))
    assert len(arrays) == 16 and arrays[8].shape == (500, 800) and arrays[0].dtype == np.float32
    # Built from plain arrays, our writer produces upstream's exact bytes.
    ours = ss.make_solverstate(300, state.learned_net, 0, arrays)
    out = tmp_path / "ours.solverstate"
    ss.write_solverstate(ours, out)
    assert out.read_bytes() == raw


def test_round_trip(tmp_path):
    history = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([-1.5], np.float32)]
    path = tmp_path / "x_iter_7.solverstate"
    ss.write_solverstate(ss.make_solverstate(7, "x_iter_7.caffemodel", 2, history), path)
    state = ss.read_solverstate(path)
    assert (state.iter, state.current_step) == (7, 2)
    for a, b in zip(ss.history_arrays(state, "x"), history):
        np.testing.assert_array_equal(a, b)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_snapshot_filename():
    assert ss.snapshot_filename("snap/lenet", 50, ".caffemodel") == "snap/lenet_iter_50.caffemodel"


def test_corrupt_and_missing_files(tmp_path):
    bad = tmp_path / "bad.solverstate"
    bad.write_bytes(b"\xff\xff\xff")
    with pytest.raises(WeightsError, match="bad.solverstate"):
        ss.read_solverstate(bad)
    with pytest.raises(WeightsError, match="not found"):
        ss.read_solverstate(tmp_path / "none.solverstate")


def test_sidecar(tmp_path):
    state = str(tmp_path / "s.solverstate")
    assert ss.read_sidecar(state) is None
    big = 2 ** 100 + 7  # numpy PCG64 states are 128-bit integers
    ss.write_sidecar(state, {"iter": 3, "rng": {"state": {"state": big}}})
    assert ss.sidecar_path(state) == state + ".npcaffe.json"
    body = ss.read_sidecar(state)
    assert body["iter"] == 3 and body["rng"]["state"]["state"] == big
    with open(ss.sidecar_path(state), "w") as f:
        f.write('{"format": "something else"}')
    with pytest.raises(WeightsError, match="not an npcaffe"):
        ss.read_sidecar(state)


def test_resolve_learned_net(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.makedirs("run/snap")
    (tmp_path / "run" / "snap" / "m_iter_5.caffemodel").write_bytes(b"")
    state = "run/snap/m_iter_5.solverstate"
    # as written from inside run/: cwd-relative fails, the state's directory + file name works
    assert ss.resolve_learned_net("snap/m_iter_5.caffemodel", state) == \
        os.path.join(str(tmp_path / "run" / "snap"), "m_iter_5.caffemodel")
    assert ss.resolve_learned_net("run/snap/m_iter_5.caffemodel", state) == "run/snap/m_iter_5.caffemodel"
    with pytest.raises(WeightsError, match="learned_net 'gone.caffemodel' not found"):
        ss.resolve_learned_net("gone.caffemodel", state)


def test_hdf5_needs_h5py(tmp_path):
    try:
        import h5py  # noqa: F401
    except ImportError:
        with pytest.raises(SolverError, match="h5py"):
            ss.write_solverstate(ss.make_solverstate(1, "m.caffemodel.h5", 0, []), tmp_path / "s.solverstate.h5")
        return
    history = [np.ones((2, 2), np.float32)]
    path = tmp_path / "s.solverstate.h5"
    ss.write_solverstate(ss.make_solverstate(4, "m.caffemodel.h5", 1, history), path)
    state = ss.read_solverstate(path)
    assert (state.iter, state.learned_net, state.current_step) == (4, "m.caffemodel.h5", 1)
