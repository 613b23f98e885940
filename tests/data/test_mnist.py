"""MNIST tooling: IDX reading, convert_mnist against the shared LMDB, locating and downloading."""
import gzip
import os
import shutil
import urllib.error
import urllib.request

import lmdb
import numpy as np
import pytest

from helpers import shared_path
from npcaffe import fetch
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
    monkeypatch.delenv("NPCAFFE_OFFLINE", raising=False)
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
    monkeypatch.setattr(fetch, "_urlopen", refuse)
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
    def offline(url, timeout):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(fetch, "_urlopen", offline)
    with pytest.raises(DataError) as info:
        mnist.locate_mnist()
    message = str(info.value)
    assert all(mirror + "train-images-idx3-ubyte.gz: no network" in message for mirror in mnist.MNIST_MIRRORS)
    assert "--mnist DIR" in message and "NPCAFFE_MNIST_DIR" in message and "mnist_dir" not in message


def _serve_from(directory, refuse=(), fetched=None):
    """An opener serving MNIST URLs from a local directory (file://); hosts in `refuse` answer 403."""
    def opener(url, timeout):
        if fetched is not None:
            fetched.append(url)
        if any(url.startswith(prefix) for prefix in refuse):
            raise urllib.error.HTTPError(url, 403, "Forbidden", {}, None)
        return urllib.request.urlopen("file://" + os.path.join(directory, url.rsplit("/", 1)[1]), timeout=timeout)
    return opener


def test_download_verifies_sha256_and_falls_back_to_mirrors(mnist_dir, tmp_path, monkeypatch, no_env):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in mnist.MNIST_FILES:
        (bad / (name + ".gz")).write_bytes(b"not mnist")
    monkeypatch.setattr(fetch, "_urlopen", _serve_from(str(bad)))
    with pytest.raises(DataError, match=r"sha256 [0-9a-f]+, expected 440fcabf"):
        mnist.locate_mnist()
    assert os.listdir(tmp_path / "cache" / "mnist") == []  # neither the wrong file nor a partial one

    fetched = []
    official = mnist.MNIST_MIRRORS[0]
    monkeypatch.setattr(fetch, "_urlopen", _serve_from(mnist_dir, refuse=(official,), fetched=fetched))
    files = mnist.locate_mnist()
    assert sorted(files) == sorted(mnist.MNIST_FILES)
    # Each file: the official site first (403), then the first mirror.
    assert fetched[:2] == [official + "train-images-idx3-ubyte.gz",
                           mnist.MNIST_MIRRORS[1] + "train-images-idx3-ubyte.gz"] and len(fetched) == 8
    assert all(p.startswith(str(tmp_path / "cache" / "mnist")) for p in files.values())
    assert mnist.locate_mnist() == files and len(fetched) == 8  # served from the cache


def test_recorded_sha256_sums_are_the_shared_copies(mnist_dir):
    listed = dict(line.split()[::-1] for line in open(os.path.join(mnist_dir, "SHA256SUMS")) if line.strip())
    assert {name + ".gz": digest for name, digest in mnist.MNIST_SHA256.items()} == listed
    assert all(fetch.sha256_of(os.path.join(mnist_dir, name + ".gz")) == digest
               for name, digest in mnist.MNIST_SHA256.items())


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
