"""MNIST tooling: IDX reading, convert_mnist against the shared LMDB, locating and downloading."""
import gzip
import os
import shutil
import urllib.error

import lmdb
import numpy as np
import pytest

from helpers import shared_path
from npcaffe.data import mnist
from npcaffe.errors import DataError

T10K_IMAGES = "t10k-images-idx3-ubyte.gz"
T10K_LABELS = "t10k-labels-idx1-ubyte.gz"


@pytest.fixture
def mnist_dir():
    return shared_path("data", "mnist")


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    monkeypatch.delenv("NPCAFFE_MNIST_DIR", raising=False)
    monkeypatch.setenv("NPCAFFE_CACHE", str(tmp_path / "cache"))


def test_read_idx_gz_and_raw(mnist_dir, tmp_path):
    labels = mnist.read_idx(os.path.join(mnist_dir, T10K_LABELS))
    assert labels.shape == (10000,) and labels.dtype == np.uint8 and labels[0] == 7
    raw = tmp_path / "t10k-images-idx3-ubyte"
    with open(os.path.join(mnist_dir, T10K_IMAGES), "rb") as f:
        raw.write_bytes(gzip.decompress(f.read()))
    images = mnist.read_idx(str(raw))
    assert images.shape == (10000, 28, 28)
    np.testing.assert_array_equal(images, mnist.read_idx(os.path.join(mnist_dir, T10K_IMAGES)))


def test_read_idx_rejects_other_files(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"hello world")
    with pytest.raises(DataError, match="not an IDX file"):
        mnist.read_idx(str(path))


def test_convert_matches_shared_lmdb(mnist_dir, tmp_path):
    out = str(tmp_path / "test_lmdb")
    n = mnist.convert_mnist(os.path.join(mnist_dir, T10K_IMAGES), os.path.join(mnist_dir, T10K_LABELS), out)
    assert n == 10000
    ours = lmdb.open(out, readonly=True, lock=False)
    theirs = lmdb.open(shared_path("data", "mnist-lmdb", "mnist_test_lmdb"), readonly=True, lock=False)
    with ours.begin() as a, theirs.begin() as b:
        assert a.stat()["entries"] == b.stat()["entries"] == 10000
        for (ka, va), (kb, vb), _ in zip(a.cursor(), b.cursor(), range(2000)):
            assert (ka, va) == (kb, vb)
    ours.close()
    theirs.close()
    with pytest.raises(DataError, match="already exists"):
        mnist.convert_mnist(os.path.join(mnist_dir, T10K_IMAGES), os.path.join(mnist_dir, T10K_LABELS), out)


def test_convert_checks_magic(mnist_dir, tmp_path):
    images, labels = os.path.join(mnist_dir, T10K_IMAGES), os.path.join(mnist_dir, T10K_LABELS)
    with pytest.raises(DataError, match=r"t10k-labels.*image file magic 2049"):
        mnist.convert_mnist(labels, labels, str(tmp_path / "x"))
    with pytest.raises(DataError, match=r"label file magic 2051"):
        mnist.convert_mnist(images, images, str(tmp_path / "x"))


def test_prepare_builds_once_and_skips_when_complete(mnist_dir, tmp_path, monkeypatch, no_env):
    train, test = mnist.prepare_mnist_lmdbs(str(tmp_path / "out"), mnist_dir)
    assert mnist.lmdb_complete(train, 60000) and mnist.lmdb_complete(test, 10000)
    assert sorted(os.listdir(tmp_path / "out")) == ["mnist_test_lmdb", "mnist_train_lmdb"]

    def refuse(*args):
        raise AssertionError("rebuilt a complete LMDB")
    monkeypatch.setattr(mnist, "convert_mnist", refuse)
    monkeypatch.setattr(mnist, "_fetch", refuse)
    assert mnist.prepare_mnist_lmdbs(str(tmp_path / "out")) == (train, test)


def test_prepare_rebuilds_an_incomplete_lmdb(mnist_dir, tmp_path, monkeypatch, no_env):
    out = tmp_path / "out"
    shutil.copytree(shared_path("data", "mnist-lmdb", "mnist_train_lmdb"), out / "mnist_train_lmdb")
    partial = lmdb.open(str(out / "mnist_test_lmdb"), map_size=1 << 24)
    with partial.begin(write=True) as txn:
        txn.put(b"00000000", b"x")
    partial.close()
    monkeypatch.setenv("NPCAFFE_MNIST_DIR", mnist_dir)
    _, test = mnist.prepare_mnist_lmdbs(str(out))
    assert mnist.lmdb_complete(test, 10000)


def test_offline_without_a_copy_says_what_to_do(monkeypatch, no_env):
    def offline(url, dest):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(mnist, "_fetch", offline)
    with pytest.raises(DataError, match=r"downloading http://yann\.lecun\.com.*NPCAFFE_MNIST_DIR"):
        mnist.locate_mnist()


def test_download_verifies_md5(mnist_dir, tmp_path, monkeypatch, no_env):
    monkeypatch.setattr(mnist, "_fetch", lambda url, dest: open(dest, "wb").write(b"not mnist"))
    with pytest.raises(DataError, match=r"md5 .* expected"):
        mnist.locate_mnist()
    assert not [f for f in os.listdir(tmp_path / "cache" / "mnist") if f.endswith(".gz")]

    fetched = []

    def from_shared(url, dest):
        fetched.append(url)
        shutil.copy(os.path.join(mnist_dir, url.rsplit("/", 1)[1]), dest)
    monkeypatch.setattr(mnist, "_fetch", from_shared)
    files = mnist.locate_mnist()
    assert sorted(files) == sorted(mnist.MNIST_FILES) and len(fetched) == 4
    assert all(p.startswith(str(tmp_path / "cache" / "mnist")) for p in files.values())
    assert mnist.locate_mnist() == files and len(fetched) == 4  # served from the cache


def test_user_files_are_checksummed(mnist_dir, tmp_path, no_env):
    for name in os.listdir(mnist_dir):
        if name.endswith(".gz"):
            shutil.copy(os.path.join(mnist_dir, name), tmp_path / name)
    assert mnist.locate_mnist(str(tmp_path))["t10k-labels-idx1-ubyte"] == str(tmp_path / T10K_LABELS)
    # Unpacked files are checked against the md5 of the official content.
    raw = tmp_path / "t10k-labels-idx1-ubyte"
    raw.write_bytes(gzip.decompress((tmp_path / T10K_LABELS).read_bytes()))
    os.remove(tmp_path / T10K_LABELS)
    assert mnist.locate_mnist(str(tmp_path))["t10k-labels-idx1-ubyte"] == str(raw)
    raw.write_bytes(raw.read_bytes()[:-1] + b"\x00")
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte' has md5"):
        mnist.locate_mnist(str(tmp_path))
    os.remove(raw)
    with pytest.raises(DataError, match=r"lacks t10k-labels-idx1-ubyte"):
        mnist.locate_mnist(str(tmp_path))
