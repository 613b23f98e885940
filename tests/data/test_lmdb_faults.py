"""A corrupt LMDB is an error naming it, never an abort of the host (npcaffe.data.db.verify_lmdb);
records that are not a Datum name the file; prepare-mnist sizes its map to the data."""
import os
import random
import subprocess
import sys

import lmdb
import pytest

from npcaffe import Net
from npcaffe.data import db
from npcaffe.data.mnist import convert_mnist
from npcaffe.errors import DataError
from npcaffe.layer import TEST
from npcaffe.proto import caffe_pb2

NET = """
layer { name: "data" type: "Data" top: "data" top: "label"
  data_param { source: "SOURCE" batch_size: 4 backend: LMDB } }
"""


def make_lmdb(path, n=300, value=None):
    env = lmdb.open(str(path), map_size=1 << 24, subdir=True)
    with env.begin(write=True) as txn:
        for i in range(n):
            datum = caffe_pb2.Datum(channels=1, height=8, width=8, data=bytes([i % 256]) * 64, label=i % 10)
            txn.put(b"%08d" % i, value if value is not None else datum.SerializeToString())
    env.close()
    return str(path)


def net_on(tmp_path, source):
    path = tmp_path / "net.prototxt"
    path.write_text(NET.replace("SOURCE", source))
    return str(path)


def corrupt_pages(path, seed):
    """Overwrite 8 bytes of one page's header (after the two meta pages), chosen by seed: of seeds
    0-39 on make_lmdb's database, 32 and 35 make liblmdb abort(), most others make it raise."""
    data = os.path.join(path, "data.mdb")
    size = os.path.getsize(data)
    rng = random.Random(seed)
    with open(data, "r+b") as f:
        f.seek(rng.randrange(2, size // 4096) * 4096 + rng.randrange(0, 16))
        f.write(bytes(rng.randrange(256) for _ in range(8)))


def test_corrupt_lmdbs_are_errors_naming_the_file_and_the_host_survives(tmp_path):
    """In a child process (so an abort shows as a signal, not the end of pytest): 3 corruptions of
    one LMDB (aborting liblmdb, making it raise, harmless), each built into a Data layer and read; every outcome is a
    clean read or a DataError naming the database."""
    script = f"""
import os, random, shutil, sys
sys.path.insert(0, {os.path.dirname(__file__)!r})
from test_lmdb_faults import make_lmdb, corrupt_pages, net_on
from npcaffe import Net
from npcaffe.errors import DataError
from npcaffe.layer import TEST
import pathlib
tmp = pathlib.Path({str(tmp_path)!r})
outcomes = []
for seed in (32, 0, 1):
    path = make_lmdb(tmp / f"db{{seed}}")
    corrupt_pages(path, seed)
    try:
        net = Net(net_on(tmp, path), TEST)
        for _ in range(80):
            net.forward()
        outcomes.append("read")
    except DataError as e:
        assert path in str(e), str(e)
        outcomes.append("error")
print(" ".join(outcomes))
"""
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, (child.returncode, child.stderr[-3000:])
    outcomes = child.stdout.split()
    assert outcomes == ["error", "error", "read"]


def test_an_aborting_reader_becomes_a_data_error(tmp_path, monkeypatch):
    path = make_lmdb(tmp_path / "db")
    monkeypatch.setattr(db, "_WALK", "import os, signal; os.kill(os.getpid(), signal.SIGABRT)")
    with pytest.raises(DataError, match=rf"LMDB '{path}' is corrupt: reading its records killed the reader "
                                        r"\(SIGABRT\)"):
        db.verify_lmdb(path)


def test_a_record_that_is_not_a_datum_names_the_file(tmp_path):
    path = make_lmdb(tmp_path / "db", n=5, value=b"\xff\xff\xff")
    with pytest.raises(DataError, match=rf"source '{path}'.*not a serialized caffe.Datum"):
        Net(net_on(tmp_path, path), TEST)


def test_convert_mnist_sizes_the_map_to_the_data(tmp_path):
    import gzip
    import struct
    images, labels = tmp_path / "img.gz", tmp_path / "lab.gz"
    with gzip.open(images, "wb") as f:
        f.write(struct.pack(">IIII", 2051, 50, 28, 28) + bytes(50 * 784))
    with gzip.open(labels, "wb") as f:
        f.write(struct.pack(">II", 2049, 50) + bytes(50))
    assert convert_mnist(str(images), str(labels), str(tmp_path / "out")) == 50
    env = lmdb.open(str(tmp_path / "out"), readonly=True, lock=False)
    assert env.stat()["entries"] == 50 and env.info()["map_size"] < 64 << 20


@pytest.mark.slow
def test_prepare_mnist_under_a_4g_address_space_limit(tmp_path):
    """Caffe's 1 TiB map fails under `ulimit -v 4G`; the data's own size does not."""
    import gzip
    import struct
    images, labels = tmp_path / "img.gz", tmp_path / "lab.gz"
    with gzip.open(images, "wb") as f:
        f.write(struct.pack(">IIII", 2051, 20, 28, 28) + bytes(20 * 784))
    with gzip.open(labels, "wb") as f:
        f.write(struct.pack(">II", 2049, 20) + bytes(20))
    script = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (4 << 30, resource.RLIM_INFINITY))\n"
              "from npcaffe.data.mnist import convert_mnist\n"
              f"print(convert_mnist({str(images)!r}, {str(labels)!r}, {str(tmp_path / 'out')!r}))\n")
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert child.returncode == 0 and child.stdout.strip() == "20", child.stderr[-2000:]
