"""`npcaffe prune` end to end on a tiny net with its own LMDBs (npcaffe.pruning.prune), the recipes'
files, and the MNIST recipes themselves (slow)."""
import json
import os

import lmdb
import numpy as np
import pytest

import npcaffe
from helpers import shared_path
from npcaffe import cli, masks
from npcaffe.data.datum import array_to_datum
from npcaffe.fileio.caffemodel import read_caffemodel
from npcaffe.fileio.prototxt import read_net, read_solver
from npcaffe.pruning import recipes, select, structured
from npcaffe.pruning.prune import parse_layer_values, resolve_values

TINY_NET = """
name: "tiny"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        transform_param { scale: 0.00390625 } data_param { source: "train_lmdb" batch_size: 16 backend: LMDB } }
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
        transform_param { scale: 0.00390625 } data_param { source: "test_lmdb" batch_size: 16 backend: LMDB } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" param { lr_mult: 1 } param { lr_mult: 2 }
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" }
                            bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip" param { lr_mult: 1 } param { lr_mult: 2 }
        inner_product_param { num_output: 4 weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""
TINY_DEPLOY = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip" inner_product_param { num_output: 4 } }
"""
TINY_SOLVER = """
net: "tiny_train_test.prototxt"
test_iter: 2
test_interval: 10
base_lr: 0.05
lr_policy: "fixed"
momentum: 0.9
weight_decay: 0.0005
display: 5
max_iter: 12
random_seed: 1
"""
CONV, IP = 4 * 9, 4 * 4 * 6 * 6  # weights of the two layers (biases: 4 each)


def _write_lmdb(path, count, seed):
    """8x8 images whose label is the brightest quadrant: learnable in a few iterations."""
    rng = np.random.default_rng(seed)
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i in range(count):
            image = rng.integers(0, 120, size=(1, 8, 8)).astype(np.uint8)
            label = rng.integers(0, 4)
            image[0, 4 * (label // 2):4 * (label // 2) + 4, 4 * (label % 2):4 * (label % 2) + 4] += 120
            txn.put(b"%08d" % i, array_to_datum(image, label).SerializeToString())
    env.close()


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_lmdb(tmp_path / "train_lmdb", 64, 1)
    _write_lmdb(tmp_path / "test_lmdb", 32, 2)
    (tmp_path / "tiny_train_test.prototxt").write_text(TINY_NET)
    (tmp_path / "tiny_deploy.prototxt").write_text(TINY_DEPLOY)
    (tmp_path / "tiny_solver.prototxt").write_text(TINY_SOLVER)
    return tmp_path


def prune(*argv):
    return cli.main(["prune", "--solver", "tiny_solver.prototxt", "--quiet", *argv])


def test_prune_end_to_end(tiny, capsys):
    assert prune("--method", "magnitude", "--sparsity", "0.5", "--sparsity", "ip=0.8", "--schedule", "iterative",
                 "--steps", "2", "--retrain_iter", "6", "--out", "run") == 0
    out = capsys.readouterr().out
    report = json.loads((tiny / "run" / "report.json").read_text())
    # No --weights: a dense reference was trained first with the solver as it is.
    assert report["weights"].endswith("tiny_reference_iter_12.caffemodel")
    assert report["target"]["sparsity"] == {"conv": 0.5, "ip": 0.8}
    assert [s["iterations"] for s in report["steps_done"]] == [6, 6] and report["iterations"] == 12
    kept_conv, kept_ip = CONV - select.pruned_count(0.5, CONV) + 4, IP - select.pruned_count(0.8, IP) + 4
    assert report["steps_done"][-1]["kept"] == {"conv": kept_conv, "ip": kept_ip}
    assert report["layers"] == {"conv": {"type": "Convolution", "params": CONV + 4, "kept": kept_conv},
                                "ip": {"type": "InnerProduct", "params": IP + 4, "kept": kept_ip}}
    assert report["kept"] == kept_conv + kept_ip and report["compression"] == (CONV + IP + 8) / report["kept"]
    assert report["macs"]["conv"] == {"dense": CONV * 36, "kept": (kept_conv - 4) * 36}
    assert report["macs"]["ip"] == {"dense": IP, "kept": kept_ip - 4}
    assert 0 <= report["test_error_pct"] <= 100 and report["accuracy_output"] == "accuracy"
    assert "test error before pruning" in out and "step 2: pruned" in out and "multiply-adds" in out
    log = (tiny / "run" / "log.txt").read_text()  # the whole log, though --quiet kept it off the console
    assert "Pruning step 2 of 2" in log and "Testing net (#0)" in log
    assert (tiny / "run" / "report.txt").read_text().strip() in out

    # The pruned model: two blobs per layer, the net's own types, loads in the deploy net; its nonzeros
    # are the report's kept counts, as the mask core counts them.
    stored = {layer.name: (layer.type, len(layer.blobs)) for layer in read_caffemodel(report["pruned_model"]).layer
              if layer.blobs}
    assert stored == {"conv": ("Convolution", 2), "ip": ("InnerProduct", 2)}
    deploy = npcaffe.Net("tiny_deploy.prototxt", report["pruned_model"], npcaffe.TEST)
    for name in ("conv", "ip"):
        assert tuple(masks.layer_kept(deploy.layer_dict[name])) == (report["layers"][name]["params"],
                                                                    report["layers"][name]["kept"])


def test_prune_every_method_from_given_weights(tiny, capsys):
    assert prune("--method", "magnitude", "--sparsity", "0.3", "--retrain_iter", "2", "--out", "a") == 0
    weights = json.loads((tiny / "a" / "report.json").read_text())["pruned_model"]
    for method, extra in (("obd", ["--score_batches", "2"]), ("lobs", ["--retrain_iter", "0"]),
                          ("magnitude", ["--quality", "0.7", "--layers", "ip", "--bias"])):
        args = ["--method", method, "--weights", weights, "--out", method, *extra]
        if method != "magnitude":
            args += ["--sparsity", "0.6"]
        assert prune(*args, *([] if "--retrain_iter" in extra else ["--retrain_iter", "3"])) == 0
        report = json.loads((tiny / method / "report.json").read_text())
        assert report["weights"] == weights and report["method"] == method
    assert report["layers_pruned"] == ["ip"] and report["target"]["quality"] == 0.7 and report["bias"]
    assert json.loads((tiny / "lobs" / "report.json").read_text())["steps_done"][0]["lobs_layer_error"]


def test_snip_prunes_the_initialisation_then_trains(tiny, capsys):
    assert prune("--method", "snip", "--sparsity", "0.9", "--global", "--retrain_iter", "8", "--out", "s") == 0
    report = json.loads((tiny / "s" / "report.json").read_text())
    assert report["weights"] is None and report["global"] and report["score_batches"] == 1
    assert report["pruned_layers_params"] - report["pruned_layers_kept"] == select.pruned_count(0.9, CONV + IP)
    assert "from the initialisation" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--method", "obd", "--quality", "1"], "--quality is Han et al.'s threshold"),
    (["--method", "magnitude", "--sparsity", "fc=0.5"], "--sparsity fc=0.5: no layer 'fc'"),
    (["--method", "magnitude", "--sparsity", "ip=x"], "--sparsity 'ip=x': expected LAYER=VALUE"),
    (["--method", "magnitude", "--sparsity", "0.5", "--steps", "3"], "--schedule direct"),
    (["--method", "magnitude", "--sparsity", "0.5", "--layers", "relu"], "layer 'relu' (ReLU) has no weights"),
    (["--method", "snip", "--sparsity", "0.5", "--global", "--sparsity", "ip=0.1"], "--global ranks all layers"),
    (["--method", "magnitude", "--sparsity", "0.5", "--weights", "nothing.caffemodel"], "--weights: 'nothing"),
    (["--recipe", "han-lenet5", "--method", "obd"], "brings its own solver and method"),
    (["--sparsity", "0.5"], "give --method and --solver"),
])
def test_bad_input_is_one_error_naming_the_flag(tiny, capsys, argv, message):
    assert cli.main(["prune", "--quiet", *(["--solver", "tiny_solver.prototxt"] if "--recipe" not in argv and
                                           "--method" in argv else []), *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("npcaffe prune: error: ") and message in err.replace('"', "'"), err


def test_missing_solver_and_unknown_recipe(tiny, capsys):
    assert cli.main(["prune", "--method", "obd", "--solver", "nope.prototxt", "--sparsity", "0.5"]) == 1
    assert "--solver: solver file 'nope.prototxt' not found" in capsys.readouterr().err
    assert cli.main(["prune", "--recipe", "nope"]) == 1
    assert "--recipe 'nope': unknown; known: han-lenet300100" in capsys.readouterr().err


def test_parse_layer_values():
    assert parse_layer_values(["0.9"], "--sparsity") == 0.9
    assert parse_layer_values(["ip1=0.92,ip2=0.91", "ip3=0.74"], "--sparsity") == {"ip1": 0.92, "ip2": 0.91, "ip3": 0.74}
    both = parse_layer_values(["0.5", "ip2=0.9"], "--sparsity")
    assert resolve_values(both, ["ip1", "ip2", "ip3"]) == {"ip1": 0.5, "ip2": 0.9, "ip3": 0.5}
    assert parse_layer_values(None, "--quality") is None


@pytest.mark.parametrize("name", sorted(recipes.RECIPES))
def test_recipes_name_their_files_and_layers(name):
    recipe = recipes.RECIPES[name]
    root = os.path.join(os.path.dirname(__file__), "..", "..", "prototxt", recipe.net)
    for solver_file in (recipe.solver, recipe.dense_solver) + ((recipe.regularize_solver,) if recipe.regularize_solver
                                                               else ()):
        solver = read_solver(os.path.join(root, solver_file))
        net = read_net(os.path.join(root, os.path.basename(solver.net)))
    layers = [layer.name for layer in net.layer if layer.type in ("Convolution", "InnerProduct")]
    if structured.is_structured(recipe.method):  # channel shares of the hidden layers only
        assert set(recipe.sparsity) < set(layers) and recipe.why
        return
    if isinstance(recipe.sparsity, dict):
        assert list(recipe.sparsity) == layers
    assert recipe.method in ("magnitude", "obd", "lobs", "snip") and recipe.why


# -- the MNIST recipes (slow: minutes each) ------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ["han-lenet300100"])
def test_recipe_meets_its_target(name, tmp_path):
    recipe = recipes.RECIPES[name]
    weights = shared_path("upstream-dns", f"caffe_{recipe.net}_original.caffemodel")
    out = tmp_path / name
    assert cli.main(["prune", "--recipe", name, "--mnist", shared_path("data", "mnist"), "--weights", weights,
                     "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["compression"] >= recipe.min_compression and report["test_error_pct"] <= recipe.max_error, report


@pytest.mark.parametrize("flag, value", [("--steps", "0"), ("--retrain_iter", "-1"), ("--score_batches", "0"),
                                         ("--steps", "two")])
def test_prune_counts_are_checked_where_they_are_parsed(flag, value, capsys):
    with pytest.raises(SystemExit):
        cli.main(["prune", "--method", "obd", "--solver", "s.prototxt", flag, value])
    assert f"argument {flag}" in capsys.readouterr().err


def test_each_retraining_step_reports_its_stage_and_iterations(tiny):
    """The prune schedule's retraining shows as 'prune step k/n' on a bar, and reaches
    progress.report_to (how tools/compare_pruning.py's workers feed its bar)."""
    from npcaffe import progress
    heard = []
    previous = progress.report_to(lambda stage, iteration, total: heard.append((stage, iteration, total)))
    try:
        assert prune("--method", "magnitude", "--sparsity", "0.5", "--schedule", "iterative", "--steps", "2",
                     "--retrain_iter", "6", "--out", "run") == 0
    finally:
        progress.report_to(previous)
    # the dense reference's training, then each step's retraining, each to its last iteration
    steps = [h for h in heard if h[0].startswith("prune step")]
    assert {h[0] for h in steps} == {"prune step 1/2", "prune step 2/2"}, heard
    assert ("prune step 1/2", 6, 6) in steps and ("prune step 2/2", 6, 6) in steps, heard
