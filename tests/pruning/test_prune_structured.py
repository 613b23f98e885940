"""`npcaffe prune` with the structured methods end to end on the tiny net of test_prune.py (its own
LMDBs): whole filters removed with the columns reading them, the channels and slim counts reported,
the slim net written, and bad flags refused naming the flag."""
import json

import numpy as np
import pytest

import npcaffe
from npcaffe.fileio.caffemodel import blob_to_array, read_caffemodel
from npcaffe.fileio.prototxt import read_net
from test_prune import prune, tiny  # noqa: F401  (the fixture)


def _report(tiny, out):
    return json.loads((tiny / out / "report.json").read_text())


def test_l1_filter_end_to_end_with_slim(tiny, capsys):
    assert prune("--method", "l1-filter", "--channel_sparsity", "conv=0.5", "--retrain_iter", "4", "--out", "run",
                 "--slim") == 0
    out = capsys.readouterr().out
    report = _report(tiny, "run")
    # the two filters kept are those of the largest sum |w| in the dense reference
    reference = {lp.name: [blob_to_array(b) for b in lp.blobs] for lp in read_caffemodel(report["weights"]).layer}
    l1 = np.abs(reference["conv"][0]).reshape(4, -1).sum(axis=1)
    assert report["channels"] == {"conv": {"channels": 4, "kept": 2, "kept_indices": sorted(np.argsort(l1)[2:].tolist())}}
    assert report["target"]["sparsity"] == {"conv": 0.5} and report["ranks"] == "filters"
    kept = report["channels"]["conv"]["kept_indices"]
    pruned = {lp.name: [blob_to_array(b) for b in lp.blobs] for lp in read_caffemodel(report["pruned_model"]).layer}
    gone = [c for c in range(4) if c not in kept]
    assert (pruned["conv"][0][gone] == 0).all() and (pruned["conv"][1][gone] == 0).all()
    assert (pruned["ip"][0].reshape(4, 4, 36)[:, gone] == 0).all()   # ip reads 36 inputs per conv channel
    assert (pruned["ip"][0].reshape(4, 4, 36)[:, kept] != 0).any()
    # what a slim net has: conv 2 filters x 9 + 2 biases, ip 4 x 72 + 4; its multiply-adds per image
    assert report["slim"]["conv"]["outputs_kept"] == 2 and report["slim"]["ip"]["inputs_kept"] == 72
    assert report["slim_params"] == 2 * 9 + 2 + 4 * 72 + 4 and report["slim_macs"] == 2 * 9 * 36 + 4 * 72
    # and the slim net written has exactly that, and runs
    assert report["slim_params_written"] == report["slim_params"]
    assert max(report["slim_output_difference"].values()) <= 1e-5
    slim = read_net(report["slim_model"])
    assert {lp.name: lp.convolution_param.num_output for lp in slim.layer if lp.type == "Convolution"} == {"conv": 2}
    net = npcaffe.Net(report["slim_model"], report["slim_weights"], npcaffe.TEST)
    assert net.layer_dict["ip"].blobs[0].shape == (4, 72)
    assert "filters kept: conv 2 of 4" in out and "slim net (npcaffe slim)" in out
    assert 0 <= report["steps_done"][0]["test_error_pct_pruned"] <= 100


def test_taylor_iterative_keep_channels_nests_the_removed_filters(tiny, capsys):
    assert prune("--method", "l1-filter", "--channel_sparsity", "0.25", "--retrain_iter", "2", "--out", "w") == 0
    weights = _report(tiny, "w")["pruned_model"]
    assert prune("--method", "taylor", "--weights", weights, "--keep_channels", "conv=1", "--schedule", "iterative",
                 "--steps", "2", "--retrain_iter", "2", "--score_batches", "2", "--criterion_option",
                 "normalize=true", "--out", "t") == 0
    report = _report(tiny, "t")
    assert report["channels"]["conv"]["kept"] == 1 and report["criterion_options"] == {"normalize": True}
    # step 1 keeps 4 - round(0.5 x 4) = 2 (the share 1 - (1 - 0.75)^(1/2)), step 2 one of those
    assert [s["kept"]["conv"] for s in report["steps_done"]] == [2 * 9 + 2, 9 + 1]
    assert report["score_batches"] == 2


@pytest.mark.parametrize("argv, message", [
    (["--method", "l1-filter", "--sparsity", "0.5"], "--sparsity is the share of weights pruned; l1-filter removes"),
    (["--method", "magnitude", "--channel_sparsity", "0.5"], "--channel_sparsity, --keep_channels and --criterion_option"),
    (["--method", "magnitude", "--sparsity", "0.5", "--slim"], "--slim removes whole channels"),
    (["--method", "l1-filter", "--channel_sparsity", "conv=1"], "--channel_sparsity conv=1: the share of channels"),
    (["--method", "l1-filter", "--channel_sparsity", "ip=0.5"], "layer 'ip': its output channels cannot be pruned"),
    (["--method", "l1-filter", "--channel_sparsity", "nope=0.5"], "--channel_sparsity nope=...: net 'tiny' has no layer"),
    (["--method", "l1-filter", "--keep_channels", "conv=5"], "layer 'conv': keep between 1 and its 4 channels, not 5"),
    (["--method", "apoz", "--channel_sparsity", "0.5", "--criterion_option", "bins=3"],
     "--criterion_option bins: apoz has no option 'bins'"),
    (["--method", "l1-filter"], "l1-filter needs one target: --channel_sparsity"),
    (["--method", "neurons", "--channel_sparsity", "conv=0.5"], "neurons prunes the channels of InnerProduct layers"),
])
def test_bad_structured_flags_are_named(tiny, capsys, argv, message):
    assert prune(*argv, "--retrain_iter", "1") == 1
    assert message in capsys.readouterr().err
    assert not list(tiny.glob("runs/*/*.caffemodel"))  # refused before any training
