"""npcaffe fetch-model (npcaffe/fetch.py): recorded URLs and sha256 sums, verified downloads, the
offline message.  No network here: a file:// copy or a replaced opener stands in for the server."""
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


@pytest.mark.parametrize("name", sorted(fetch.MODELS))
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
