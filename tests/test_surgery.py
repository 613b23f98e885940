"""The main job, `npcaffe surgery`: a quick run in the default suite, the full Table-1 runs marked slow."""
import json
import os
import re

import numpy as np
import pytest

import npcaffe
from helpers import shared_path
from npcaffe import cli
from npcaffe.stages import RunStopped


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
    # The error is a count of the 10,000 test images (float32 arithmetic: 95 wrong gives 0.9500027).
    assert report["compression"] >= min_rate and round(report["test_error_pct"], 4) <= max_error, report


# -- any net: npcaffe surgery --solver ---------------------------------------------------
TINY_NET = """
name: "tiny"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        data_param { source: "no_such_train_lmdb" batch_size: 8 backend: LMDB } }
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
        data_param { source: "no_such_test_lmdb" batch_size: 8 backend: LMDB } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" param { lr_mult: 1 }
        convolution_param { num_output: 4 kernel_size: 3 bias_term: false weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1"
        inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip1" bottom: "label" top: "accuracy" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }
"""
TINY_DEPLOY = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 bias_term: false } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1" inner_product_param { num_output: 10 } }
"""
TINY_SOLVER = """
net: "tiny_train_test.prototxt"
test_iter: 2
test_interval: 5
base_lr: 0.05
lr_policy: "fixed"
momentum: 0.9
weight_decay: 0.0005
display: 5
max_iter: 10
random_seed: 1
"""
TINY_SHAPES = ["--data_shape", "data=8,1,8,8", "--data_shape", "label=8"]


@pytest.fixture
def tiny_solver(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny_train_test.prototxt").write_text(TINY_NET)
    (tmp_path / "tiny_deploy.prototxt").write_text(TINY_DEPLOY)
    (tmp_path / "tiny_solver.prototxt").write_text(TINY_SOLVER)
    return tmp_path


def test_surgery_on_any_solver(tiny_solver, capsys):
    from npcaffe import masks
    from npcaffe.fileio.caffemodel import read_caffemodel
    assert cli.main(["surgery", "--solver", "tiny_solver.prototxt", *TINY_SHAPES, "--c_rate", "ip1=1",
                     "--quiet"]) == 0
    out = capsys.readouterr().out
    run = tiny_solver / "runs" / "tiny_solver"
    report = json.loads((run / "report.json").read_text())
    assert report["iterations"] == 10 and report["settings"]["iter_stop"] == 8
    assert report["settings"]["c_rate"] == {"conv1": 3, "ip1": 1}
    assert report["weights"].endswith("tiny_reference_iter_10.caffemodel")  # no --weights: a dense reference
    assert report["accuracy_output"] == "accuracy" and 0 <= report["test_error_pct"] <= 100
    assert "test error" in out and "conv1: Convolution -> CConvolution, c_rate 3 (bias_term: false" in out
    # c_rate 3 on 36 barely trained (uniform) weights: mu + 3 std of |w| is above them all.
    assert report["layers"]["conv1"]["kept"] == 0 and "warning: layer conv1 keeps no parameters" in out
    # The whole log, though --quiet kept it off the console.
    log = (run / "log.txt").read_text()
    assert "Iteration 5, loss = " in log and "Testing net (#0)" in log

    # The pruned model: the user's layer types, two blobs (one for bias_term: false), loads in the deploy net.
    pruned = read_caffemodel(report["pruned_model"])
    stored = {layer.name: (layer.type, len(layer.blobs)) for layer in pruned.layer if layer.blobs}
    assert stored == {"conv1": ("Convolution", 1), "ip1": ("InnerProduct", 2)}
    assert not any(layer.HasField("cconvolution_param") or layer.HasField("cinner_product_param")
                   for layer in pruned.layer)  # no DNS fields: BVLC reads 140 / 141 as elu_param / bias_param
    deploy = npcaffe.Net("tiny_deploy.prototxt", report["pruned_model"], npcaffe.TEST)
    kept = sum(int(np.count_nonzero(b.data)) for blobs in deploy.params.values() for b in blobs)
    assert kept == report["kept"] and report["params"] == 4 * 9 + 10 * 4 * 6 * 6 + 10

    # The 4-blob snapshot: the report's counts are the mask core's.
    dns = npcaffe.Net(report["net_prototxt"], npcaffe.TEST)
    dns.copy_from(report["snapshot_model"])
    counts = dict(masks.masked_layers(dns))
    assert (report["layers"]["ip1"]["params"], report["layers"]["ip1"]["kept"]) == masks.layer_kept(counts["ip1"])
    conv = masks.layer_kept(counts["conv1"])  # with the zero bias dnsify added, which the report leaves out
    assert (report["layers"]["conv1"]["params"], report["layers"]["conv1"]["kept"]) == (conv.params - 4, conv.kept)

    # The snapshot resumes DNS with the converted solver.
    assert cli.main(["train", "--solver", report["solver_prototxt"], "--snapshot", report["snapshot_state"],
                     "--iterations", "12", "--quiet"]) == 0
    assert (run / "tiny_dns_iter_12.caffemodel").exists()


def test_surgery_on_any_solver_from_weights_and_some_layers(tiny_solver, capsys):
    assert cli.main(["surgery", "--solver", "tiny_solver.prototxt", *TINY_SHAPES, "--iterations", "3",
                     "--quiet", "--out", "a"]) == 0
    weights = json.loads((tiny_solver / "a" / "report.json").read_text())["weights"]
    assert cli.main(["surgery", "--solver", "tiny_solver.prototxt", *TINY_SHAPES, "--iterations", "4",
                     "--weights", weights, "--layers", "ip1", "--iter_stop", "2", "--gamma", "0.5", "--power", "2",
                     "--quiet", "--out", "b"]) == 0
    report = json.loads((tiny_solver / "b" / "report.json").read_text())
    assert report["weights"] == weights and "reference_test_scores" not in report
    assert report["settings"] == {"gamma": 0.5, "power": 2.0, "iter_stop": 2, "c_rate": {"ip1": 3.0}}
    assert report["layers"]["conv1"]["type"] == "Convolution"  # not converted, counted as it is
    text = (tiny_solver / "b" / "tiny_dns_train_test.prototxt").read_text()
    assert 'type: "CInnerProduct"' in text and 'type: "CConvolution"' not in text


@pytest.mark.parametrize("argv,message", [
    (["--layers", "conv1,pool9"], "no layer named 'pool9'; the net's weight layers are conv1, ip1"),
    (["--layers", "relu1"], "layer 'relu1' is ReLU; only Convolution and InnerProduct"),
    (["--c_rate", "ip9=2"], "c_rate given for layer 'ip9', but the net's weight layers are conv1, ip1"),
    (["--c_rate", "ip1=x"], "--c_rate 'ip1=x': expected LAYER=VALUE"),
    (["--weights", "missing.caffemodel"], "--weights: 'missing.caffemodel' not found"),
    (["--model", "missing.prototxt"], "--model: net file 'missing.prototxt' not found"),
    (["--data_shape", "pixels=1,1,8,8"], "--data_shape names \\['pixels'\\]"),
])
def test_surgery_errors_name_the_culprit(tiny_solver, capsys, argv, message):
    assert cli.main(["surgery", "--solver", "tiny_solver.prototxt", *TINY_SHAPES, *argv]) == 1
    captured = capsys.readouterr()
    assert re.search(message, captured.err.splitlines()[-1]) and "Traceback" not in captured.err
    assert not (tiny_solver / "runs").exists() or message.startswith("--data_shape")


def test_surgery_solver_errors(tiny_solver, capsys):
    (tiny_solver / "no_max_iter.prototxt").write_text(TINY_SOLVER.replace("max_iter: 10\n", ""))
    (tiny_solver / "far_net_solver.prototxt").write_text(TINY_SOLVER.replace("tiny_train_test", "examples/x"))
    (tiny_solver / "split_solver.prototxt").write_text(TINY_SOLVER.replace("net:", "train_net:"))
    for argv, message in [
            (["--solver", "split_solver.prototxt"], "field 'train_net': surgery needs one net"),
            (["--solver", "missing_solver.prototxt"], "--solver: solver file 'missing_solver.prototxt' not found"),
            (["--solver", "no_max_iter.prototxt"], "no_max_iter.prototxt: field 'max_iter' is not set"),
            (["--solver", "far_net_solver.prototxt"], "field 'net': net file 'examples/x.prototxt' not found"),
            (["lenet5", "--layers", "ip1"], "--layers: the named recipe 'lenet5' fixes its net and settings"),
            ([], "give --solver S.prototxt")]:
        assert cli.main(["surgery", *argv]) == 1
        assert message in capsys.readouterr().err
    # The far net given with --model is fine (a few iterations).
    assert cli.main(["surgery", "--solver", "far_net_solver.prototxt", "--model", "tiny_train_test.prototxt",
                     *TINY_SHAPES, "--iterations", "2", "--weights", _dense_weights(tiny_solver),
                     "--quiet"]) == 0


def _dense_weights(directory):
    net = npcaffe.Net(str(directory / "tiny_deploy.prototxt"), npcaffe.TEST)
    path = str(directory / "dense.caffemodel")
    net.save(path)
    return path


def test_dnsify_command(tiny_solver, capsys):
    from npcaffe.fileio.prototxt import read_net
    from npcaffe.pruning.dnsify import dnsify
    assert cli.main(["dnsify", "tiny_train_test.prototxt", "--out", "tiny_dns.prototxt", "--solver",
                     "tiny_solver.prototxt", "--c_rate", "2", "--c_rate", "ip1=4"]) == 0
    assert "ip1: InnerProduct -> CInnerProduct, c_rate 4" in capsys.readouterr().out
    text = (tiny_solver / "tiny_dns.prototxt").read_text()
    assert text.startswith("# Converted from tiny_train_test.prototxt\n")
    expected, _ = dnsify(read_net("tiny_train_test.prototxt"), c_rate={"ip1": 4}, default_c_rate=2, iter_stop=8)
    assert read_net("tiny_dns.prototxt") == expected
    assert cli.main(["dnsify", "tiny_train_test.prototxt", "--out", "x.prototxt"]) == 1
    assert "give --iter_stop N" in capsys.readouterr().err


def test_surgery_stopped_early_still_reports(tiny_solver, capsys):
    import contextlib

    from npcaffe import surgery

    @contextlib.contextmanager
    def stop_at_4(solver):  # what SIGINT does through cli.signal_actions
        solver.action_function = lambda: "stop" if solver.iter >= 4 else "none"
        yield

    shapes = {"data": (8, 1, 8, 8), "label": (8,)}
    with pytest.raises(RunStopped, match=r"stopped in stage 'dense reference' at iteration 4 of 10; snapshot "
                                         r"runs/tiny_solver/tiny_reference_iter_4\.solverstate; to go on: .*--resume"):
        surgery.run_solver("tiny_solver.prototxt", data_shapes=shapes, quiet=True, solve_wrapper=stop_at_4)
    summary = surgery.run_solver("tiny_solver.prototxt", weights=_dense_weights(tiny_solver), data_shapes=shapes,
                                 quiet=True, solve_wrapper=stop_at_4)
    assert summary["stopped_early"] and summary["iterations"] == 4
    assert summary["snapshot_state"].endswith("tiny_dns_iter_4.solverstate") and os.path.exists(summary["snapshot_state"])
    out = capsys.readouterr().out
    assert "stopped at iteration 4 of 10" in out and "stopped in stage 'surgery' at iteration 4" in out


def test_surgery_on_any_solver_resumes_bit_for_bit(tiny_solver, capsys):
    """Stopped in the dense reference, then in the surgery, resumed twice: the numbers and weights of
    one uninterrupted run (npcaffe.stages)."""
    import contextlib

    from npcaffe import surgery
    from npcaffe.fileio.caffemodel import read_caffemodel

    def stop_at(n, stage):
        @contextlib.contextmanager
        def wrapper(solver):  # what SIGINT does through cli.signal_actions
            here = solver.param.snapshot_prefix.endswith(stage)
            solver.action_function = lambda: "stop" if here and solver.iter == n else "none"
            yield
        return wrapper

    kw = {"data_shapes": {"data": (8, 1, 8, 8), "label": (8,)}, "quiet": True, "c_rate": {"ip1": 1.0}}
    whole = surgery.run_solver("tiny_solver.prototxt", out="whole", **kw)
    with pytest.raises(RunStopped):
        surgery.run_solver("tiny_solver.prototxt", out="parts", solve_wrapper=stop_at(3, "_reference"), **kw)
    stopped = surgery.run_solver("tiny_solver.prototxt", out="parts", solve_wrapper=stop_at(7, "_dns"), resume=True, **kw)
    assert stopped["stopped_early"] and stopped["iterations"] == 7 and "--resume" in stopped["stopped"]
    with pytest.raises(npcaffe.NpcaffeError, match=r"these differ: iterations: 12 \(the stopped run had 10\)"):
        surgery.run_solver("tiny_solver.prototxt", out="parts", resume=True, **{**kw, "iterations": 12})
    resumed = surgery.run_solver("tiny_solver.prototxt", out="parts", resume=True, **kw)
    for key in ("iterations", "test_scores", "kept", "layers", "reference_test_scores"):
        assert resumed[key] == whole[key], key
    for key in ("pruned_model", "snapshot_model"):
        a, b = (read_caffemodel(s[key]) for s in (whole, resumed))
        assert [[list(blob.data) for blob in layer.blobs] for layer in a.layer] == \
               [[list(blob.data) for blob in layer.blobs] for layer in b.layer], key
    log = open(resumed["log"]).read()
    assert log.count("Stage 'surgery': iterations") == 2 and "Resuming stage 'surgery' from " in log


def test_surgery_with_batch_split_runs_each_stage_split(tiny_solver, capsys, monkeypatch):
    from npcaffe.solvers.solver import Solver
    splits = []
    original = Solver.set_batch_split

    def recorded(self, parts):
        splits.append(parts)
        return original(self, parts)

    monkeypatch.setattr(Solver, "set_batch_split", recorded)
    assert cli.main(["surgery", "--solver", "tiny_solver.prototxt", *TINY_SHAPES, "--batch_split", "2",
                     "--quiet"]) == 0
    report = json.loads((tiny_solver / "runs" / "tiny_solver" / "report.json").read_text())
    assert report["iterations"] == 10 and 0 <= report["test_error_pct"] <= 100
    assert splits == [2, 2]  # the dense reference and the surgery, each split
