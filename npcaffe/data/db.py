"""Reading Caffe databases (util/db.cpp, util/db_lmdb.cpp).

Only LMDB is supported.  The environment is opened read-only and without
LMDB's lock file (`lock=False`), so databases on read-only storage can be
read; one read transaction and its cursor stay open for the reader's
lifetime, so a batch costs only the cursor steps.  py-lmdb refuses to open
one environment twice in a process, so readers of the same path (a train
and a test net on one source, a net built twice) share it.
"""
import os
import weakref

import lmdb

from ..errors import DataError
from ..proto import caffe_pb2

LMDB = caffe_pb2.DataParameter.LMDB
LEVELDB = caffe_pb2.DataParameter.LEVELDB


_open_envs = weakref.WeakValueDictionary()


class SharedEnv:
    """A read-only LMDB environment shared by everyone reading one path;
    closed when the last holder lets go of it."""

    def __init__(self, env):
        self.env = env


def open_env(path, where="data source"):
    """The process's read-only SharedEnv for the LMDB directory at path."""
    key = os.path.realpath(path)
    shared = _open_envs.get(key)
    if shared is None:
        try:
            env = lmdb.open(path, readonly=True, lock=False, readahead=False, subdir=True)
        except lmdb.Error as exc:
            raise DataError(f"{where}: cannot open LMDB '{path}': {exc}") from exc
        shared = _open_envs[key] = SharedEnv(env)
    return shared


class LMDBReader:
    """Cursor over an LMDB's records in key order that wraps to the first key
    at the end, as DataLayer::Next does in Caffe."""

    def __init__(self, path, where="data source"):
        self.path = path
        self._shared = open_env(path, where)
        self.entries = self._shared.env.stat()["entries"]
        if self.entries == 0:
            raise DataError(f"{where}: LMDB '{path}' has no records")
        self._txn = self._shared.env.begin(buffers=False)
        self._cursor = self._txn.cursor()
        self._cursor.first()
        self.position = 0  # index of the current record, for snapshots

    def key(self):
        return self._cursor.key()

    def value(self):
        return self._cursor.value()

    def next(self):
        """Step to the next record, back to the first after the last."""
        self.position += 1
        if not self._cursor.next():
            self._cursor.first()
            self.position = 0

    def seek(self, position):
        """Go to the record with this index (as counted by `position`)."""
        self._cursor.first()
        self.position = 0
        for _ in range(int(position) % self.entries):
            self.next()

    def close(self):
        self._cursor.close()
        self._txn.abort()
        self._shared = None


def open_db(source, backend=LMDB, where="data source"):
    """Open `source` (a path relative to the working directory, as in Caffe)
    for reading with the given DataParameter.DB backend."""
    if backend == LEVELDB:
        hint = ""
        if os.path.isfile(os.path.join(source, "data.mdb")):
            hint = (" This directory holds an LMDB: set data_param { backend: LMDB } "
                    "(Caffe's default backend is LEVELDB).")
        raise DataError(
            f"{where}: source '{source}' uses backend LEVELDB, which npcaffe does not read.{hint} "
            "Otherwise convert the LevelDB to an LMDB (for example with Caffe's "
            "convert_imageset/convert_mnist_data --backend=lmdb, or by copying its records "
            "with the plyvel and lmdb Python packages) and set backend: LMDB.")
    if backend != LMDB:
        raise DataError(f"{where}: unknown data_param backend {backend}")
    if not os.path.isdir(source):
        raise DataError(
            f"{where}: LMDB source '{source}' not found (resolved against the working "
            f"directory: '{os.path.abspath(source)}'). As in Caffe, a relative source is "
            "read from the directory you run in; run from there or give an absolute path.")
    return LMDBReader(source, where)
