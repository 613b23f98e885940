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
