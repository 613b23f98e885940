"""`npcaffe prune --method thinet|lasso|ssl|slimming` end to end on test_prune's tiny net and LMDBs: the
channels kept, the report, the pruned model's zero columns; slimming on the tiny net with a BatchNorm."""
import json

import numpy as np

from npcaffe.fileio.caffemodel import read_caffemodel
from test_prune import TINY_NET, prune, tiny  # noqa: F401  (the fixture)


def _weights(path):
    return {layer.name: [np.array(b.data) for b in layer.blobs] for layer in read_caffemodel(path).layer if layer.blobs}


def test_reconstruction_and_ssl_methods_through_npcaffe_prune(tiny, capsys):  # noqa: F811
    assert prune("--method", "l1-filter", "--keep_channels", "conv=4", "--retrain_iter", "4", "--out", "dense") == 0
    weights = json.loads((tiny / "dense" / "report.json").read_text())["pruned_model"]
    for method, layer in (("thinet", "ip"), ("lasso", "ip"), ("ssl", "conv")):
        assert prune("--method", method, "--weights", weights, "--keep_channels", f"{layer}=2", "--score_batches", "2",
                     "--retrain_iter", "0", "--out", method) == 0
        report = json.loads((tiny / method / "report.json").read_text())
        ip = _weights(report["pruned_model"])["ip"][0].reshape(4, 4, 36)   # ip's columns per conv channel
        conv = _weights(report["pruned_model"])["conv"][0].reshape(4, -1)
        gone = [c for c in range(4) if not ip[:, c].any()]
        assert len(gone) == 2 and not conv[gone].any() and all(conv[c].any() for c in range(4) if c not in gone)


def test_slimming_through_npcaffe_prune(tiny, capsys):  # noqa: F811
    bn = TINY_NET.replace('layer { name: "relu"', 'layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }\n'
                          'layer { name: "scale" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }\n'
                          'layer { name: "relu"')
    (tiny / "tiny_train_test.prototxt").write_text(bn)
    solver = (tiny / "tiny_solver.prototxt").read_text()
    (tiny / "tiny_solver.prototxt").write_text(solver + "structured_sparsity_param { scale_l1_decay: 0.01 }\n")
    assert prune("--method", "slimming", "--channel_sparsity", "conv=0.5", "--retrain_iter", "2", "--out", "s") == 0
    report = json.loads((tiny / "s" / "report.json").read_text())
    conv = _weights(report["pruned_model"])["conv"][0].reshape(4, -1)
    gamma = _weights(report["weights"])["scale"][0]
    gone = [c for c in range(4) if not conv[c].any()]
    assert sorted(gone) == sorted(np.argsort(np.abs(gamma), kind="stable")[:2].tolist())


def test_regularize_solver_trains_first_then_prunes(tiny, capsys):  # noqa: F811
    assert prune("--method", "l1-filter", "--keep_channels", "conv=4", "--retrain_iter", "2", "--out", "dense") == 0
    weights = json.loads((tiny / "dense" / "report.json").read_text())["pruned_model"]
    solver = (tiny / "tiny_solver.prototxt").read_text()
    (tiny / "ssl_solver.prototxt").write_text(solver.replace("max_iter: 12", "max_iter: 5")
                                              + 'structured_sparsity_param { filter_decay: 0.5 layer: "conv" }\n')
    assert prune("--method", "ssl", "--weights", weights, "--regularize_solver", "ssl_solver.prototxt",
                 "--keep_channels", "conv=2", "--retrain_iter", "0", "--out", "ssl") == 0
    report = json.loads((tiny / "ssl" / "report.json").read_text())
    assert report["regularized_from"] == weights and report["regularize_solver"] == "ssl_solver.prototxt"
    assert report["weights"].endswith("ssl/tiny_regularized_iter_5.caffemodel")
    before, after = _weights(weights)["conv"][0].reshape(4, -1), _weights(report["weights"])["conv"][0].reshape(4, -1)
    assert np.linalg.norm(after, axis=1).sum() < np.linalg.norm(before, axis=1).sum()  # the group lasso pulled
    assert prune("--method", "ssl", "--regularize_solver", "nope.prototxt", "--keep_channels", "conv=2") == 1
    assert "--regularize_solver: solver file 'nope.prototxt' not found" in capsys.readouterr().err
