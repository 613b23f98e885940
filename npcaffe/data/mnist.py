"""MNIST: IDX files, finding or downloading them, and Caffe's MNIST LMDBs.

convert_mnist writes what examples/mnist/convert_mnist_data.cpp writes:
key "%08d" of the 0-based index, value a serialized Datum {channels 1,
height 28, width 28, data: the 784 raw pixel bytes, label}, committed every
1000 entries.  The key/value contents equal Caffe's; the LMDB page layout
need not.

Where the four files come from, in order: the directory passed in (the
CLI's --mnist DIR), the directory in $NPCAFFE_MNIST_DIR, the download cache
($NPCAFFE_CACHE or ~/.cache/npcaffe/mnist), a download into that cache from
the first of MNIST_MIRRORS that serves the file: the official site first
(widely reported to refuse downloads, HTTP 403, for years), then the copies
torchvision and TensorFlow's datasets read.  A local file is checked
against the official md5 (of the .gz, or of its uncompressed content for
unpacked files), a download against the official .gz's sha256
(npcaffe.fetch.download), so a mirror cannot hand over another file.
"""
import gzip
import hashlib
import os
import shutil
import tempfile

import lmdb
import numpy as np

from .. import progress
from ..errors import DataError
from ..proto import caffe_pb2
from .db import open_env

MNIST_MIRRORS = ("http://yann.lecun.com/exdb/mnist/", "https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/")
MNIST_URL = MNIST_MIRRORS[0]
# name -> sha256 of the official .gz (../shared/data/mnist/SHA256SUMS; its SOURCE.txt checks them)
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}

# name -> (md5 of the official .gz, md5 of its uncompressed content)
MNIST_FILES = {
    "train-images-idx3-ubyte": ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels-idx1-ubyte": ("d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"),
    "t10k-images-idx3-ubyte": ("9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"),
    "t10k-labels-idx1-ubyte": ("ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"),
}
SPLITS = {  # LMDB name -> (images, labels, number of entries)
    "mnist_train_lmdb": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60000),
    "mnist_test_lmdb": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10000),
}
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_COMMIT_EVERY = 1000


def lmdb_map_size(records, record_bytes):
    """An LMDB map for `records` values of about record_bytes each: twice their bytes with LMDB's
    per-record overhead (a node header and the 8-byte key, half-empty pages after splits), plus
    16 MiB.  Caffe's converters ask for 1 TiB, which fails under `ulimit -v` (the map is address
    space), as MNIST needs 0.1 GB."""
    return 2 * records * (record_bytes + 64) + (16 << 20)


# -- IDX -------------------------------------------------------------------------
def _read_bytes(path):
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise DataError(f"cannot read '{path}': {exc.strerror}") from exc
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"'{path}' is a damaged gzip file ({exc})") from exc
    return raw


def read_idx(path):
    """An IDX file (gzip-compressed or not) as a numpy array in native byte order."""
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"'{path}' is not an IDX file (bad magic {raw[:4].hex()})")
    ndim = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    count = int(np.prod(dims, dtype=np.int64))
    if len(raw) - offset != count * dtype.itemsize:
        raise DataError(f"'{path}': header says shape {dims} ({count * dtype.itemsize} bytes of data), "
                        f"file has {len(raw) - offset}")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(dims).astype(dtype.newbyteorder("="))


# -- LMDB ------------------------------------------------------------------------
def convert_mnist(images_path, labels_path, out_lmdb):
    """Write an MNIST image/label IDX pair into a new LMDB at out_lmdb, as
    convert_mnist_data does (magic 2051/2049 checked, counts must agree).
    Returns the number of entries written."""
    images, labels = _read_bytes(images_path), _read_bytes(labels_path)
    image_magic, num_items, rows, cols = (int(v) for v in np.frombuffer(images, ">u4", count=4))
    label_magic, num_labels = (int(v) for v in np.frombuffer(labels, ">u4", count=2))
    if image_magic != 2051:
        raise DataError(f"'{images_path}': incorrect image file magic {image_magic} (expected 2051)")
    if label_magic != 2049:
        raise DataError(f"'{labels_path}': incorrect label file magic {label_magic} (expected 2049)")
    if num_items != num_labels:
        raise DataError(f"'{images_path}' has {num_items} images but '{labels_path}' has {num_labels} labels")
    size = rows * cols
    if len(images) != 16 + num_items * size or len(labels) != 8 + num_labels:
        raise DataError(f"'{images_path}' or '{labels_path}' is truncated")
    if os.path.exists(out_lmdb):
        raise DataError(f"cannot create LMDB '{out_lmdb}': it already exists (remove it first)")
    os.makedirs(out_lmdb)
    # A Datum adds about 16 bytes to the pixels (channels, height, width, label, field tags).
    try:
        env = lmdb.open(out_lmdb, map_size=lmdb_map_size(num_items, size + 16), subdir=True)
    except lmdb.Error as exc:
        raise DataError(f"cannot create LMDB '{out_lmdb}': {exc}") from None
    datum = caffe_pb2.Datum(channels=1, height=rows, width=cols)
    try:
        with progress.bar(f"MNIST -> {os.path.basename(out_lmdb)}", num_items, unit="img") as shown:
            for start in range(0, num_items, _COMMIT_EVERY):
                with env.begin(write=True) as txn:
                    for item in range(start, min(start + _COMMIT_EVERY, num_items)):
                        datum.data = images[16 + item * size: 16 + (item + 1) * size]
                        datum.label = labels[8 + item]
                        txn.put(b"%08d" % item, datum.SerializeToString(), append=True)
                shown.update(min(_COMMIT_EVERY, num_items - start))
    except lmdb.Error as exc:
        raise DataError(f"cannot write LMDB '{out_lmdb}': {exc}") from None
    finally:
        env.close()
    return num_items


def lmdb_complete(path, entries):
    """True if path is an LMDB holding exactly `entries` records, keyed 0..entries-1."""
    if not os.path.isfile(os.path.join(path, "data.mdb")):
        return False
    try:
        env = open_env(path).env
    except DataError:
        return False
    if env.stat()["entries"] != entries:
        return False
    with env.begin() as txn:
        cursor = txn.cursor()
        return cursor.last() and cursor.key() == b"%08d" % (entries - 1)


def prepare_mnist_lmdbs(out_dir, mnist_dir=None):
    """Make out_dir/mnist_train_lmdb and out_dir/mnist_test_lmdb (Caffe's
    examples/mnist names) from the MNIST files; returns (train_path, test_path).

    A complete LMDB already there is kept, and then the MNIST files are not
    even looked for.  Each LMDB is built under a temporary name and renamed
    at the end, so an interrupted run never leaves one that looks complete.
    """
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    files = None
    for name, (images, labels, entries) in SPLITS.items():
        path = os.path.join(out_dir, name)
        paths[name] = path
        if lmdb_complete(path, entries):
            continue
        if files is None:
            files = locate_mnist(mnist_dir)
        tmp = tempfile.mkdtemp(prefix=f".{name}.", dir=out_dir)
        try:
            build = os.path.join(tmp, name)
            convert_mnist(files[images], files[labels], build)
            if os.path.exists(path):
                shutil.rmtree(path)
            os.rename(build, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return paths["mnist_train_lmdb"], paths["mnist_test_lmdb"]


# -- finding and downloading -------------------------------------------------------
def cache_dir():
    """Where downloads go: $NPCAFFE_CACHE/mnist, else ~/.cache/npcaffe/mnist."""
    root = os.environ.get("NPCAFFE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "npcaffe")
    return os.path.join(root, "mnist")


def _md5(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verified(path, name):
    """Check one file against the official md5; DataError naming it on mismatch."""
    gz_md5, raw_md5 = MNIST_FILES[name]
    expected = gz_md5 if path.endswith(".gz") else raw_md5
    actual = _md5(path)
    if actual != expected:
        raise DataError(f"MNIST file '{path}' has md5 {actual}, expected {expected}: it is damaged "
                        "or not the official file; replace it (or delete it to download it again)")
    return path


def _find_in(directory):
    """name -> verified path of the files present in directory (.gz preferred)."""
    found = {}
    for name in MNIST_FILES:
        for candidate in (name + ".gz", name):
            path = os.path.join(directory, candidate)
            if os.path.isfile(path):
                found[name] = _verified(path, name)
                break
    return found


_MNIST_FILES_NOTE = ("the four MNIST files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                     "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz; gzipped or not)")


def _download(name, directory, opener=None):
    """name.gz from the first mirror serving the official file, into directory."""
    from ..fetch import FetchError, download
    urls = [mirror + name + ".gz" for mirror in MNIST_MIRRORS]
    try:
        return download(urls, os.path.join(directory, name + ".gz"), MNIST_SHA256[name], f"MNIST {name}.gz",
                        opener=opener)
    except FetchError as exc:
        raise DataError(f"MNIST: no local copy of {name}, and {exc}\nGive the directory holding "
                        f"{_MNIST_FILES_NOTE} with --mnist DIR, or set NPCAFFE_MNIST_DIR to it.") from None


def locate_mnist(mnist_dir=None):
    """name -> path of each of the four MNIST files, verified (see module doc)."""
    where = mnist_dir or os.environ.get("NPCAFFE_MNIST_DIR")
    if where:
        if not os.path.isdir(where):
            origin = "--mnist" if mnist_dir else "NPCAFFE_MNIST_DIR"
            raise DataError(f"MNIST: {origin} '{where}' is not a directory")
        found = _find_in(where)
        missing = [n for n in MNIST_FILES if n not in found]
        if missing:
            raise DataError(f"MNIST: '{where}' lacks {', '.join(m + '[.gz]' for m in missing)}")
        return found
    cache = cache_dir()
    found = _find_in(cache) if os.path.isdir(cache) else {}
    for name in MNIST_FILES:
        if name not in found:
            found[name] = _download(name, cache)
    return found
