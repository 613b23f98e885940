"""npcaffe fetch-model (npcaffe/fetch.py): recorded URLs and sha256 / sha1 sums, verified downloads,
the offline message.  No network here: a file:// copy or a replaced opener stands in for the server."""
import os
import urllib.error
import urllib.request

import pytest

from helpers import shared_path
from npcaffe import cli, fetch


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NPCAFFE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("NPCAFFE_OFFLINE", raising=False)
    return tmp_path / "cache"


@pytest.mark.parametrize("name", sorted(name for name in fetch.MODELS if name.startswith("dns-")))
def test_recorded_sums_are_the_shared_copies_of_the_forks_files(name):
    entry = fetch.MODELS[name]
    local = shared_path("upstream-dns", entry["file"])
    assert fetch.sha256_of(local) == entry["sha256"] and os.path.getsize(local) == entry["bytes"]
    net = entry["net"]
    assert all(url.endswith(f"/models/{net}/{entry['file']}") for url in entry["urls"])


def test_fetch_model_downloads_verifies_and_reuses(cache, monkeypatch, capsys):
    served = []

    def from_shared(url, timeout):
        served.append(url)
        return urllib.request.urlopen("file://" + shared_path("upstream-dns", os.path.basename(url)), timeout=timeout)
    monkeypatch.setattr(fetch, "_urlopen", from_shared)
    assert cli.main(["fetch-model", "dns-lenet300100"]) == 0
    path = capsys.readouterr().out.strip()
    assert path == str(cache / "models" / "caffe_lenet300100_original.caffemodel")
    assert fetch.sha256_of(path) == fetch.MODELS["dns-lenet300100"]["sha256"]
    assert served == fetch.MODELS["dns-lenet300100"]["urls"][:1]
    assert cli.main(["fetch-model", "dns-lenet300100"]) == 0 and len(served) == 1  # already there
    # A damaged copy is fetched again.
    with open(path, "r+b") as f:
        f.write(b"\0")
    assert cli.main(["fetch-model", "dns-lenet300100"]) == 0 and len(served) == 2
    assert fetch.cached_model("dns-lenet300100") == path


def test_a_wrong_file_is_refused_and_the_next_url_tried(cache, tmp_path, monkeypatch):
    wrong = tmp_path / "wrong.caffemodel"
    wrong.write_bytes(b"an html error page")
    urls = ["file://" + str(wrong), "file://" + shared_path("upstream-dns", "caffe_lenet5_original.caffemodel")]
    monkeypatch.setitem(fetch.MODELS["dns-lenet5"], "urls", urls)
    path = fetch.fetch_model("dns-lenet5", out=str(tmp_path / "models"))
    assert fetch.sha256_of(path) == fetch.MODELS["dns-lenet5"]["sha256"]
    monkeypatch.setitem(fetch.MODELS["dns-lenet5"], "urls", urls[:1])
    with pytest.raises(fetch.FetchError, match=r"wrong\.caffemodel: sha256 [0-9a-f]+, expected 96b8c611"):
        fetch.fetch_model("dns-lenet5", out=str(tmp_path / "elsewhere"))
    assert os.listdir(tmp_path / "elsewhere") == []


@pytest.mark.parametrize("how", ["no network", "NPCAFFE_OFFLINE"])
def test_offline_names_the_url_and_the_weights_flag(how, cache, monkeypatch, capsys):
    def refuse(url, timeout):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(fetch, "_urlopen", refuse)
    if how == "NPCAFFE_OFFLINE":
        monkeypatch.setenv("NPCAFFE_OFFLINE", "1")
    assert cli.main(["fetch-model", "dns-lenet5"]) == 1
    err = capsys.readouterr().err
    assert fetch.MODELS["dns-lenet5"]["urls"][0] in err and "--weights" in err
    assert "npcaffe surgery lenet5 --weights caffe_lenet5_original.caffemodel" in err and "Traceback" not in err


def test_model_zoo_names_are_caffes_with_its_readmes_sha1(cache, tmp_path, monkeypatch, capsys):
    """BVLC/caffe models/<name>/readme.md: caffemodel_url and sha1, which download_model_binary.py checks."""
    import hashlib
    zoo = {name: entry for name, entry in fetch.MODELS.items() if not name.startswith("dns-")}
    assert {"bvlc_alexnet", "bvlc_reference_caffenet", "bvlc_googlenet"} <= set(zoo)
    assert fetch.checksum(zoo["bvlc_alexnet"]) == ("sha1", "9116a64c0fbe4459d18f4bb6b56d647b63920377")
    for name, entry in zoo.items():
        assert entry["urls"] == [f"http://dl.caffe.berkeleyvision.org/{name}.caffemodel"]
    assert cli.main(["fetch-model", "list"]) == 0 and "bvlc_googlenet" in capsys.readouterr().out
    served = tmp_path / "served.caffemodel"
    served.write_bytes(b"weights")
    monkeypatch.setitem(fetch.MODELS["bvlc_alexnet"], "urls", ["file://" + str(served)])
    with pytest.raises(fetch.FetchError, match=r"served\.caffemodel: sha1 [0-9a-f]{40}, expected 9116a64c"):
        fetch.fetch_model("bvlc_alexnet")
    monkeypatch.setitem(fetch.MODELS["bvlc_alexnet"], "sha1", hashlib.sha1(b"weights").hexdigest())
    assert cli.main(["fetch-model", "bvlc_alexnet"]) == 0
    path = capsys.readouterr().out.strip()
    assert path == str(cache / "models" / "bvlc_alexnet.caffemodel") and fetch.cached_model("bvlc_alexnet") == path
    monkeypatch.setenv("NPCAFFE_OFFLINE", "1")
    assert cli.main(["fetch-model", "bvlc_googlenet"]) == 1
    err = capsys.readouterr().err
    assert "http://dl.caffe.berkeleyvision.org/bvlc_googlenet.caffemodel by hand (sha1 405fc5ac" in err
    assert "--weights bvlc_googlenet.caffemodel" in err
