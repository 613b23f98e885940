"""Sweeps against the pruning ratio (npcaffe.pruning.sensitivity, `npcaffe sensitivity`): one layer pruned
at a time on a tiny net, exact counts, the summaries, and the command end to end on a tiny net with its
own LMDBs."""
import csv
import json
import os

import lmdb
import numpy as np
import pytest
from google.protobuf import text_format

import npcaffe
from npcaffe import cli, masks
from npcaffe.data.datum import array_to_datum
from npcaffe.fileio import relative_csr
from npcaffe.fileio.caffemodel import serialize_net
from npcaffe.proto import caffe_pb2
from npcaffe.pruning import select, sensitivity
from npcaffe.pruning.sensitivity import ALL, SweepRow
from pruning_nets import CONV_NET, make_net

ACCURACY = 'layer { name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy" }'


def tiny_net():
    net = make_net(*CONV_NET, ACCURACY, classes=4)
    net.forward()
    net.blobs["label"].data[...] = np.argmax(net.blobs["ip"].data, axis=1)  # unpruned: accuracy 1
    return net


def test_layer_sweep_shows_a_bar_of_its_tests(quiet_log, capsys):
    from npcaffe import progress
    net = tiny_net()
    previous = progress.configure(True)  # as on a terminal
    try:
        sensitivity.layer_sweep(sensitivity.Evaluation(net, 1), sensitivity.Pruner(net, ["conv", "ip"]), (0.0, 0.5))
    finally:
        progress.restore(previous)
    err = capsys.readouterr().err
    assert "sensitivity: 100%" in err and "6/6" in err and f"{ALL} at 0.5" in err  # 3 groups x 2 ratios


def test_each_layer_pruned_alone_with_exact_counts_then_restored(quiet_log):
    net = tiny_net()
    layers = net.layer_dict
    original = {name: [b.data.copy() for b in layers[name].blobs] for name in ("conv", "ip")}
    evaluation = sensitivity.Evaluation(net, 1)
    seen = []

    def evaluate():  # what the net holds at every test
        seen.append({name: layers[name].blobs[0].data.copy() for name in ("conv", "ip")})
        return evaluation()

    pruner = sensitivity.Pruner(net, ["conv", "ip"])
    ratios = (0.0, 0.25, 0.5, 0.9, 1.0)
    dense, rows = sensitivity.layer_sweep(evaluate, pruner, ratios)
    assert dense == {"loss": dense["loss"], "accuracy": 1.0}
    assert [(r.layer, r.ratio) for r in rows] == [(n, r) for n in ("conv", "ip", ALL) for r in ratios]
    sizes = {"conv": original["conv"][0].size, "ip": original["ip"][0].size}  # 3*2*3*3 = 54, 4*27 = 108
    for row, weights in zip(rows, seen[1:]):
        pruned = [row.layer] if row.layer != ALL else ["conv", "ip"]
        for name in ("conv", "ip"):
            w, w0 = weights[name], original[name][0]
            if name in pruned:
                # round(ratio x weights) of the smallest |w| are zero, every other weight is as it was.
                gone = select.pruned_count(row.ratio, w0.size)
                assert np.count_nonzero(w == 0) == gone
                order = np.argsort(np.abs(w0).ravel(), kind="stable")
                assert np.all(w.ravel()[order[:gone]] == 0)
                np.testing.assert_array_equal(w.ravel()[order[gone:]], w0.ravel()[order[gone:]])
            else:
                np.testing.assert_array_equal(w, w0)  # the other layer untouched
        assert row.weights == sum(sizes[n] for n in pruned)
        assert row.kept == sum(sizes[n] - select.pruned_count(row.ratio, sizes[n]) for n in pruned)
        if row.ratio == 0:
            assert row.scores == dense  # ratio 0 is the unpruned net, to the bit
    assert [r.kept for r in rows if r.layer == "conv"] == [54, 40, 27, 5, 0]  # 0.25 x 54 = 13.5 rounds up
    for name in ("conv", "ip"):  # afterwards: the weights as they were, no masks
        assert not masks.is_masked(layers[name])
        for blob, values in zip(layers[name].blobs, original[name]):
            np.testing.assert_array_equal(blob.data, values)


def test_ranking_tolerance_and_crossovers():
    dense = {"accuracy": 0.9}
    rows = [SweepRow("a", r, 0, 10, {"accuracy": acc}) for r, acc in ((0, 0.9), (0.5, 0.895), (0.9, 0.7))]
    rows += [SweepRow("b", r, 0, 10, {"accuracy": acc}) for r, acc in ((0, 0.9), (0.5, 0.85), (0.9, 0.88))]
    rows += [SweepRow("c", r, 0, 10, {"accuracy": acc}) for r, acc in ((0, 0.9), (0.5, 0.9), (0.9, 0.895))]
    rows += [SweepRow(ALL, 0.9, 0, 30, {"accuracy": 0.1})]  # not a layer: not ranked
    ranked = sensitivity.ranking(dense, rows, "accuracy", True, 0.01)
    # b fails at 0.5 (recovering at 0.9 does not count), a at 0.9; c tolerates every ratio.
    assert [(e["layer"], e["tolerates"]) for e in ranked] == [("b", 0.0), ("a", 0.5), ("c", 0.9)]
    assert ranked[1]["loss_at_largest"] == pytest.approx(0.2)
    losses = [SweepRow("a", r, 0, 10, {"loss": v}) for r, v in ((0, 1.0), (0.5, 1.5))]
    assert sensitivity.ranking({"loss": 1.0}, losses, "loss", False, 0.1)[0]["tolerates"] == 0
    assert sensitivity.pays_from([5, 3, 2, 1], [4, 4, 4, 4], [0, 0.1, 0.2, 0.3]) == 0.1
    assert sensitivity.pays_from([3, 5, 2, 1], [4, 4, 4, 4], [0, 0.1, 0.2, 0.3]) == 0.2  # from then on only
    assert sensitivity.pays_from([5, 5], [4, 4], [0, 1]) is None


def test_storage_counts_every_parameter(quiet_log, tmp_path):
    net = tiny_net()
    pruner = sensitivity.Pruner(net, ["conv", "ip"])
    bits = {"conv": 3, "fc": 2}
    rows = sensitivity.storage_sweep(net, pruner, (0.0, 0.5, 0.95), bits)
    for row in rows:
        pruner.prune_all(row.ratio)
        conv, ip = (masks.effective_params(net.layer_dict[n])[0] for n in ("conv", "ip"))
        assert row.relative_csr == relative_csr.size_bytes(conv, 3) + relative_csr.size_bytes(ip, 2) + 4 * (3 + 4)
        assert row.csr == relative_csr.plain_csr_bytes(conv) + relative_csr.plain_csr_bytes(ip) + 4 * 7
        assert row.caffemodel == len(serialize_net(masks.plain_model(net)))
        assert row.kept == row.weights - select.pruned_count(row.ratio, 54) - select.pruned_count(row.ratio, 108)
    assert len({r.caffemodel for r in rows}) == 1  # dense: zeros cost as much as weights
    assert rows[0].npz > rows[-1].npz and rows[-1].relative_csr < rows[-1].caffemodel


def test_timing_paths_compute_the_same_outputs(quiet_log):
    net = tiny_net()
    param = text_format.Parse("\n".join((*CONV_NET, ACCURACY)), caffe_pb2.NetParameter())
    sample = {top: net.blobs[top].data.copy() for top in ("data", "label")}
    nets = sensitivity.timing_nets(param, net, (1, 5), sample)
    pruner = sensitivity.Pruner(net, ["conv", "ip"])
    pruner.prune_all(0.5)
    for batch, timed in nets.items():
        for name in ("conv", "ip"):
            for dst, src in zip(timed.layer_dict[name].blobs, net.layer_dict[name].blobs):
                dst.data[...] = src.data
        np.testing.assert_array_equal(timed.blobs["data"].data, np.resize(sample["data"], (batch, 2, 6, 6)))
        outputs = {}
        for path in sensitivity.PATHS:
            sensitivity.use_path(timed, path)
            packed = {name for name in ("conv", "ip") if timed.layer_dict[name].packed is not None}
            assert packed == {"dense": set(), "sparse": {"conv", "ip"}}.get(path, packed)
            timed.forward_from_to()
            outputs[path] = timed.blobs["ip"].data.copy()
        for path in ("sparse", "npcaffe"):
            np.testing.assert_allclose(outputs[path], outputs["dense"], rtol=1e-5, atol=1e-5)


# -- the command on a tiny net with its own LMDBs -------------------------------------------------------------
TINY_NET = """
name: "tiny"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        transform_param { scale: 0.00390625 } data_param { source: "train_lmdb" batch_size: 16 backend: LMDB } }
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
        transform_param { scale: 0.00390625 } data_param { source: "test_lmdb" batch_size: 16 backend: LMDB } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" }
                            bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
        inner_product_param { num_output: 4 weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""
TINY_SOLVER = """
net: "tiny_train_test.prototxt"
test_iter: 3 test_interval: 10 base_lr: 0.05 lr_policy: "fixed" momentum: 0.9 weight_decay: 0.0005
display: 5 max_iter: 12 snapshot: 2 snapshot_prefix: "snap/tiny" random_seed: 1
"""
CONV, IP = 4 * 9, 4 * 4 * 6 * 6


def _write_lmdb(path, count, seed):
    """8x8 images whose label is the brightest quadrant."""
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
    _write_lmdb(tmp_path / "test_lmdb", 40, 2)  # 40 of batch 16: three passes, the last wrapping around
    (tmp_path / "tiny_train_test.prototxt").write_text(TINY_NET)
    (tmp_path / "tiny_solver.prototxt").write_text(TINY_SOLVER)
    npcaffe.set_random_seed(5)
    net = npcaffe.Net("tiny_train_test.prototxt", npcaffe.TRAIN)
    net.save("tiny.caffemodel")
    return tmp_path


def sweep(*argv):
    return cli.main(["sensitivity", "--model", "tiny_train_test.prototxt", "--weights", "tiny.caffemodel",
                     "--quiet", *argv])


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_sensitivity_command_end_to_end(tiny, capsys):
    assert sweep("--ratios", "0.9,0,0.5", "--storage", "--timing", "--batch", "1,4", "--repeats", "1",
                 "--rounds", "1", "--solver", "tiny_solver.prototxt", "--retrain_iter", "4", "--steps", "2",
                 "--out", "run", "--plot") == 0
    out = capsys.readouterr().out
    run = tiny / "run"
    report = json.loads((run / "report.json").read_text())
    assert report["layers"] == ["conv", "ip"] and report["ratios"] == [0, 0.5, 0.9]
    assert report["iterations"] == 3 and report["metric"] == "accuracy" and report["metric_is_accuracy"]
    rows = report["sensitivity"]
    assert [(r["layer"], r["ratio"]) for r in rows] == [(n, x) for n in ("conv", "ip", ALL) for x in (0, 0.5, 0.9)]
    for r in rows:
        sizes = {"conv": [CONV], "ip": [IP], ALL: [CONV, IP]}[r["layer"]]
        assert r["weights"] == sum(sizes)
        assert r["kept"] == sum(n - select.pruned_count(r["ratio"], n) for n in sizes)
        if r["ratio"] == 0:
            assert r["scores"] == report["dense"]
    assert {e["layer"] for e in report["ranking"]} == {"conv", "ip"}
    # The unpruned score is what `npcaffe test` prints over the same batches.
    assert cli.main(["test", "--model", "tiny_train_test.prototxt", "--weights", "tiny.caffemodel",
                     "--iterations", "3"]) == 0
    printed = dict(line.split(" = ")[:2] for line in capsys.readouterr().out.splitlines() if " = " in line)
    assert float(printed["accuracy"]) == pytest.approx(report["dense"]["accuracy"], abs=1e-6)

    sched = report["schedules"]
    assert [(r["schedule"], r["ratio"], r["steps"], r["iterations"]) for r in sched["rows"]] == [
        ("direct", 0.5, 1, 4), ("direct", 0.9, 1, 4), ("iterative", 0.5, 2, 4), ("iterative", 0.9, 2, 4)]
    assert all(r["kept"] == CONV + IP - select.pruned_count(r["ratio"], CONV) - select.pruned_count(r["ratio"], IP)
               for r in sched["rows"])
    assert not os.path.exists(tiny / "snap")  # retraining writes no snapshots

    storage = report["storage"]
    assert storage["index_bits"] == {"conv": 8, "fc": 5} and len(storage["rows"]) == 3
    timing = report["timing"]
    assert {(r["ratio"], r["batch"], r["path"]) for r in timing["rows"]} == {
        (x, b, p) for x in (0, 0.5, 0.9) for b in (1, 4) for p in ("dense", "sparse", "npcaffe")}
    assert all(r["median_ms"] > 0 and r["best_ms"] <= r["median_ms"] for r in timing["rows"])

    assert len(_csv(run / "sensitivity.csv")) == 9 and _csv(run / "sensitivity.csv")[0].keys() >= {"accuracy", "loss"}
    assert len(_csv(run / "schedules.csv")) == 4 and len(_csv(run / "storage.csv")) == 3
    assert len(_csv(run / "timing.csv")) == 18
    for kind in ("sensitivity", "schedules", "storage", "timing"):
        assert (run / f"{kind}.png").stat().st_size > 1000
    text = (run / "report.txt").read_text()
    assert text.strip() in out and "most sensitive first" in text and "relative CSR" in text
    assert "Schedule iterative" in (run / "log.txt").read_text()  # the whole log, though --quiet
    # npcaffe plot redraws a figure from the report.
    assert cli.main(["plot", "storage", "--sweep", "run/report.json", "-o", "storage.svg"]) == 0
    assert (tiny / "storage.svg").exists()


def test_data_flag_and_generated_data_for_timing(tiny, capsys):
    (tiny / "moved.prototxt").write_text(TINY_NET.replace('source: "test_lmdb"', 'source: "nowhere"'))
    assert cli.main(["sensitivity", "--model", "moved.prototxt", "--weights", "tiny.caffemodel", "--quiet",
                     "--data", "test_lmdb", "--ratios", "0,0.5", "--layers", "ip", "--iterations", "2",
                     "--out", "a"]) == 0
    report = json.loads((tiny / "a" / "report.json").read_text())
    assert report["layers"] == ["ip"] and report["iterations"] == 2
    assert sweep("--no_layers", "--timing", "--storage", "--data_shape", "data=1,1,8,8", "--data_shape", "label=1",
                 "--ratios", "0.5", "--batch", "2", "--repeats", "1", "--rounds", "1", "--out", "b") == 0
    report = json.loads((tiny / "b" / "report.json").read_text())
    assert report["timing"]["data"] == "generated" and "sensitivity" not in report


@pytest.mark.parametrize("argv, message", [
    (["--weights", "missing.caffemodel"], ("--weights", "missing.caffemodel")),
    (["--model", "missing.prototxt"], ("--model", "missing.prototxt")),
    (["--layers", "conv,relu"], "--layers: layer 'relu' (ReLU) has no weights"),
    (["--layers", "nope"], "--layers: net 'tiny' has no layer 'nope'"),
    (["--ratios", "0,1.5"], "--ratios '1.5'"),
    (["--metric", "top5"], "--metric 'top5': not a scalar output"),
    (["--index_bits", "conv=40"], "--index_bits 'conv=40'"),
    (["--batch", "0"], "--batch '0'"),
    (["--iterations", "0"], "--iterations must be at least 1"),
    (["--data_shape", "data=1,1,8,8"], "--data_shape generates data"),
    (["--data", "nowhere"], "--data: 'nowhere' is not an LMDB directory"),
    (["--solver", "nope.prototxt"], ("--solver", "nope.prototxt")),
    (["--solver", "tiny_solver.prototxt", "--steps", "1"], "--steps 1"),
    (["--no_layers"], "nothing to do"),
])
def test_bad_input_is_one_line_naming_the_flag(tiny, capsys, argv, message):
    base = {"--model": "tiny_train_test.prototxt", "--weights": "tiny.caffemodel"}
    for flag in base:
        if flag in argv:
            base[flag] = argv[argv.index(flag) + 1]
            argv = [a for i, a in enumerate(argv) if i not in (argv.index(flag), argv.index(flag) + 1)]
    assert cli.main(["sensitivity", *[x for kv in base.items() for x in kv], "--quiet", "--out", "e", *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("npcaffe sensitivity: error: ") and err.count("\n") == 1, err
    assert all(part in err for part in ([message] if isinstance(message, str) else message)), err
