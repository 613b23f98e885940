"""Reading Caffe databases (util/db.cpp, util/db_lmdb.cpp).

Only LMDB is supported.  The environment is opened read-only and without
LMDB's lock file (`lock=False`), so databases on read-only storage can be
read; one read transaction and its cursor stay open for the reader's
lifetime, so a batch costs only the cursor steps.  py-lmdb refuses to open
one environment twice in a process, so readers of the same path (a train
and a test net on one source, a net built twice) share it.

A corrupt database must not take the host process down: liblmdb checks its
pages with assertions that abort() the process (SIGABRT, no message), which
no Python exception handler can catch, and about one page corruption in five
trips one.  So before a process first reads an LMDB, a child Python process
walks every record of it (`verify_lmdb`; keys and values copied, so every
page is read); if the child dies of a signal or lmdb raises, the database is
refused with an error naming it, and the host never touches its pages.
Validating pages ourselves would mean re-implementing LMDB's format, and
running every read in a child would cost each batch a round trip; one walk
per database and process (about 0.1 s for a small database, under a second
for MNIST's 60,000 records) is the cheap safe choice.  A database changed
after its walk (size or time of data.mdb) is walked again.  lmdb's own
exceptions while reading, and records that are not a Datum, are DataErrors
naming the file too.
"""
import os
import signal
import subprocess
import sys
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


# A child that reads every record: its exit status says whether liblmdb survived the database.
_WALK = """
import sys, lmdb
env = lmdb.open(sys.argv[1], readonly=True, lock=False, readahead=False, subdir=True)
count = 0
with env.begin(buffers=False) as txn:
    for key, value in txn.cursor():
        count += 1
print(count)
"""
_walked = {}  # (real path, size, mtime) of data.mdb -> records found


def verify_lmdb(path, where="data source", timeout=3600):
    """Walk every record of the LMDB at path in a child process (see the module docstring);
    DataError naming the database when the child is killed by a signal, fails or hangs."""
    data = os.path.join(path, "data.mdb")
    try:
        st = os.stat(data)
    except OSError as exc:
        raise DataError(f"{where}: cannot open LMDB '{path}': {exc.strerror or exc}") from None
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key in _walked:
        return _walked[key]
    try:
        child = subprocess.run([sys.executable, "-c", _WALK, path], capture_output=True, text=True,
                               timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DataError(f"{where}: LMDB '{path}': reading its records took over {timeout} s; "
                        "a damaged database?") from None
    detail = (child.stderr.strip().splitlines() or [""])[-1]
    if child.returncode < 0:
        name = signal.Signals(-child.returncode).name
        raise DataError(f"{where}: LMDB '{path}' is corrupt: reading its records killed the reader ({name})"
                        f"{': ' + detail if detail else ''}; rebuild it from its source data")
    if child.returncode != 0:
        raise DataError(f"{where}: LMDB '{path}' cannot be read: {detail}")
    _walked[key] = int(child.stdout.split()[-1])
    return _walked[key]


def open_env(path, where="data source"):
    """The process's read-only SharedEnv for the LMDB directory at path, walked first by
    verify_lmdb."""
    key = os.path.realpath(path)
    shared = _open_envs.get(key)
    if shared is None:
        verify_lmdb(path, where)
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
        self.where = where
        self._shared = open_env(path, where)
        with self._lmdb_errors():
            self.entries = self._shared.env.stat()["entries"]
            if self.entries == 0:
                raise DataError(f"{where}: LMDB '{path}' has no records")
            self._txn = self._shared.env.begin(buffers=False)
            self._cursor = self._txn.cursor()
            self._cursor.first()
        self.position = 0  # index of the current record, for snapshots

    def _lmdb_errors(self):
        return _LmdbErrors(self)

    def key(self):
        with self._lmdb_errors():
            return self._cursor.key()

    def value(self):
        with self._lmdb_errors():
            return self._cursor.value()

    def next(self):
        """Step to the next record, back to the first after the last."""
        self.position += 1
        with self._lmdb_errors():
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


class _LmdbErrors:
    """lmdb.Error inside the block -> DataError naming the reader's database."""

    def __init__(self, reader):
        self.reader = reader

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if kind is not None and issubclass(kind, lmdb.Error):
            raise DataError(f"{self.reader.where}: LMDB '{self.reader.path}': {exc}") from None
        return False


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
