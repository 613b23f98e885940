"""The main job, `npcaffe surgery`: a quick run in the default suite, the full Table-1 runs marked slow."""
import json
import os

import pytest

import npcaffe
from helpers import shared_path
from npcaffe import cli


def _workdir_with_shared_lmdbs(tmp_path):
    # prepare_mnist_lmdbs keeps complete LMDBs it finds, so link the shared ones in.
    data = tmp_path / "data" / "mnist"
    os.makedirs(data)
    for name in ("mnist_train_lmdb", "mnist_test_lmdb"):
        os.symlink(shared_path("data", "mnist-lmdb", name), data / name)
    return tmp_path


def test_quick_surgery_writes_report_and_models(tmp_path, capsys):
    work = _workdir_with_shared_lmdbs(tmp_path)
    weights = shared_path("upstream-dns", "caffe_lenet300100_original.caffemodel")
    assert cli.main(["surgery", "lenet300100", "--weights", weights, "--iterations", "20",
                     "--workdir", str(work), "--quiet"]) == 0
    out = capsys.readouterr().out
    report = json.loads((work / "report.json").read_text())
    assert report["iterations"] == 20 and report["params"] == 266610
    assert 1 < report["compression"] and 0 < report["test_accuracy"] <= 1
    assert f"{report['kept']} of 266610 parameters kept" in out
    # The plain pruned model loads into the plain deploy net and scores what the DNS test net scored.
    net = npcaffe.Net(os.path.join(os.path.dirname(__file__), "..", "prototxt", "lenet300100",
                                   "lenet300100_deploy.prototxt"), report["pruned_model"], npcaffe.TEST)
    kept = sum(int((b.data != 0).sum()) for blobs in net.params.values() for b in blobs)
    assert kept == report["kept"]


@pytest.mark.slow
@pytest.mark.parametrize("net_name,min_rate,max_error", [("lenet5", 100, 0.95), ("lenet300100", 50, 2.1)])
def test_table1_targets(net_name, min_rate, max_error, tmp_path):
    work = _workdir_with_shared_lmdbs(tmp_path)
    weights = shared_path("upstream-dns", f"caffe_{net_name}_original.caffemodel")
    assert cli.main(["surgery", net_name, "--weights", weights, "--workdir", str(work), "--quiet"]) == 0
    report = json.loads((work / "report.json").read_text())
    assert report["compression"] >= min_rate and report["test_error_pct"] <= max_error, report
