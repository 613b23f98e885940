"""tools/compare_pruning.py and npcaffe.pruning.compare: seeds as data orders, resumable cells, the tables."""
import json
import math
import os
import time

import lmdb
import numpy as np
import pytest

from npcaffe.errors import NpcaffeError
from npcaffe.pruning import compare
from npcaffe.surgery import prototxt_dir
from tests.helpers import load_tool, shared_path

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def _tool():
    return load_tool("compare_pruning")


def _write_lmdb(path, values):
    with lmdb.open(str(path), map_size=1 << 24) as env:
        with env.begin(write=True) as txn:
            for i, v in enumerate(values):
                txn.put(b"%08d" % i, v)


def _read_lmdb(path):
    with lmdb.open(str(path), readonly=True, lock=False) as env:
        with env.begin() as txn:
            return list(txn.cursor())


def test_shuffle_lmdb_is_a_seeded_permutation(tmp_path):
    values = [b"record-%d" % i for i in range(50)]
    _write_lmdb(tmp_path / "src", values)
    compare.shuffle_lmdb(str(tmp_path / "src"), str(tmp_path / "a"), 3)
    compare.shuffle_lmdb(str(tmp_path / "src"), str(tmp_path / "b"), 3)
    compare.shuffle_lmdb(str(tmp_path / "src"), str(tmp_path / "c"), 4)
    a, b, c = (_read_lmdb(tmp_path / n) for n in "abc")
    assert [k for k, _ in a] == [b"%08d" % i for i in range(50)]  # Caffe's keys, in order
    order = np.random.default_rng(3).permutation(50)
    assert [v for _, v in a] == [values[j] for j in order]
    assert a == b and a != c and sorted(v for _, v in c) == sorted(values)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".shuffle")]  # the temporary build is gone


def _cell(method, seed, error, compression, **extra):
    record = {"net": method.net, "method": method.name, "seed": seed, "params": 1000, "kept": 1000 / compression,
              "compression": compression, "test_error_pct": error, "weight_sparsity": 0.9, "iterations": 500,
              "seconds": 60.0, "load_average": [0.1, 0.2], "macs_dense": 100, "macs_kept": 10,
              "caffemodel_bytes": 4096, "npz_bytes": 1024}
    record.update(extra)
    return record


def test_summary_is_mean_and_sample_sd_over_the_seeds_and_verdicts_say_by_how_much():
    han = next(m for m in compare.METHODS if (m.net, m.name) == ("lenet5", "han-iterative"))
    snip = next(m for m in compare.METHODS if (m.net, m.name) == ("lenet5", "snip"))
    results = {"cells": {compare.cell_key(han, s): _cell(han, s, e, 12.5) for s, e in ((0, 0.80), (1, 0.84), (2, 0.82))}}
    results["cells"][compare.cell_key(snip, 0)] = _cell(snip, 0, 1.5, 80.0)
    rows = {r.method.name: r for r in compare.summarize(results, compare.methods_for(["lenet5"]), [0, 1, 2])}
    assert set(rows) == {"han-iterative", "snip"}
    assert rows["han-iterative"].error[0] == pytest.approx(0.82)
    assert rows["han-iterative"].error[1] == pytest.approx(np.std([0.80, 0.84, 0.82], ddof=1))
    assert rows["han-iterative"].verdict == "met"
    assert rows["snip"].seeds == [0] and math.isnan(rows["snip"].error[1])
    assert rows["snip"].verdict == "missed: error 0.40 points above 1.1%; compression 80.0x below 85x"
    doc = compare.format_doc(results, compare.methods_for(["lenet5"]), [0, 1, 2])
    total = 3 * len(compare.methods_for(["lenet5"]))
    assert "**0.82 ± 0.02**" in doc and "| snip: " in doc and f"4 of {total} runs done" in doc
    assert "`lenet5/dns/seed0`" in doc  # what is still to run is named
    headline = compare.format_headline(results, compare.methods_for(), [0, 1, 2])
    assert "| han-iterative | 12.5 ± 0.0× | 0.82 ± 0.02 | — | — |" in headline


def test_the_forward_time_comes_from_the_lowest_timed_seed_and_names_it_unless_seed_0():
    han = next(m for m in compare.METHODS if (m.net, m.name) == ("lenet5", "han-iterative"))
    obd = next(m for m in compare.METHODS if (m.net, m.name) == ("lenet5", "obd"))

    def timing(one, many):
        return {"batches": {"1": {"auto": one, "dense": 9.0}, "64": {"auto": many, "dense": 90.0}}}

    results = {"cells": {}}
    for s in (0, 1, 2):
        results["cells"][compare.cell_key(han, s)] = _cell(han, s, 0.8, 12.5, **({"timing": timing(0.5, 4.0)}
                                                                                  if s == 0 else {}))
        results["cells"][compare.cell_key(obd, s)] = _cell(obd, s, 1.0, 13.0, **({"timing": timing(0.25, 3.0)}
                                                                                 if s == 2 else {}))
    rows = {r.method.name: r for r in compare.summarize(results, compare.methods_for(["lenet5"]), [0, 1, 2])}
    assert rows["han-iterative"].timing == {"1": 0.5, "64": 4.0}
    assert rows["obd"].timing == {"1": 0.25, "64": 3.0, "seed": 2}
    table = compare.format_table(list(rows.values()), "lenet5")
    assert "| 0.5 / 4 |" in table and "| 0.25 / 3 (seed 2) |" in table


def _structured_cell(method, seed, error, before, kept):
    return _cell(method, seed, error, 2.0, error_before_finetune_pct=before, dense_params=1000, slim_params=500,
                 slim_macs=30, outputs_kept={name: [k, 2 * most] for (name, most), k in zip(method.max_kept.items(), kept)},
                 slim_caffemodel_bytes=2048)


def test_structured_rows_count_the_slim_net_and_check_every_seed_against_the_filter_counts():
    l1 = next(m for m in compare.METHODS if (m.net, m.name) == ("lenet5", "l1-filter"))
    cp = next(m for m in compare.METHODS if (m.net, m.name) == ("lenet5", "dns-cp"))
    assert l1.structured and cp.structured and l1.max_kept == {"conv1": 10, "conv2": 25}
    results = {"cells": {compare.cell_key(l1, s): _structured_cell(l1, s, e, 3.0 + s, (10, 25))
                         for s, e in ((0, 0.90), (1, 0.94), (2, 0.92))}}
    results["cells"].update({compare.cell_key(cp, s): _structured_cell(cp, s, 0.8, 1.0, (9, 27 - s)) for s in (0, 1)})
    methods = compare.methods_for(["lenet5"])
    rows = {r.method.name: r for r in compare.summarize_structured(results, methods, [0, 1, 2])}
    assert set(rows) == {"l1-filter", "dns-cp"}
    assert not compare.summarize(results, methods, [0, 1, 2])  # not in the unstructured table
    assert rows["l1-filter"].error == pytest.approx((0.92, np.std([0.90, 0.94, 0.92], ddof=1)))
    assert rows["l1-filter"].error_before == pytest.approx((4.0, 1.0))
    assert rows["l1-filter"].outputs == {"conv1": (10, 20), "conv2": (25, 50)} and rows["l1-filter"].verdict == "met"
    assert rows["dns-cp"].outputs["conv2"] == (26.5, 50)
    assert rows["dns-cp"].verdict == "missed: conv2 keeps 27 > 25"  # one seed over the count is a miss
    results["cells"][compare.cell_key(l1, 1)]["timing"] = {"batches": {"1": {"auto": 0.05, "dense": 0.06},
                                                                     "64": {"auto": 2.5, "dense": 2.6}},
                                                         "date": "2026-12-07"}
    doc = compare.format_doc(results, methods, [0, 1, 2])
    assert "#### LeNet-5: structured" in doc and "| conv1 10/20, conv2 25/50 | 500 / 1,000 |" in doc
    assert "| 2.0 KB | 0.05 / 2.5 (seed 1) | conv1" in doc and "timed on 2026-12-07" in doc
    assert "| 2.0 KB | not measured | conv1" in doc  # dns-cp
    assert "**0.92 ± 0.02**" in doc and "conv1 ≤ 10, conv2 ≤ 25 at ≤ 1%: met" in doc
    headline = compare.format_headline(results, compare.methods_for(), [0, 1, 2])
    assert "| l1-filter (structured: slim net) | 2.0 ± 0.0× | 0.92 ± 0.02 | — | — |" in headline


def test_unknown_names_and_broken_files_are_clear_errors(tmp_path):
    with pytest.raises(NpcaffeError, match="--nets 'alexnet'"):
        compare.methods_for(["alexnet"])
    with pytest.raises(NpcaffeError, match="--methods 'nope': choose from"):
        compare.methods_for(None, ["nope"])
    bad = tmp_path / "r.json"
    bad.write_text("{")
    with pytest.raises(NpcaffeError, match="r.json: not a results file"):
        compare.load_results(str(bad))
    with pytest.raises(NpcaffeError, match="doc.md: needs one '<!-- compare:begin -->'"):
        compare.replace_between("no markers\n", "compare", "x", "doc.md")
    text = "a\n<!-- compare:begin -->\nold\n<!-- compare:end -->\nb\n"
    assert compare.replace_between(text, "compare", "new", "doc.md") == \
        "a\n<!-- compare:begin -->\nnew\n<!-- compare:end -->\nb\n"


def test_quick_runs_are_resumable_and_the_seeds_change_the_data_order(tmp_path, capsys):
    tool = _tool()
    work, mnist = tmp_path / "work", shared_path("data", "mnist")
    argv = ["--quick", "--nets", "lenet300100", "--methods", "han-direct,dns,neurons", "--seeds", "0,1",
            "--mnist", mnist, "--work", str(work), "--progress"]
    assert tool.main(argv) == 0
    shown = capsys.readouterr()
    # the bar (stderr) counts the runs; the runs' lines (stdout) stay whole lines above it
    assert "compare: 100%" in shown.err and "6/6" in shown.err, shown.err[-500:]
    assert sum(line.startswith("compare: [") for line in shown.out.splitlines()) == 6, shown.out
    results = json.loads((work / "results.json").read_text())
    assert sorted(results["cells"]) == ["lenet300100/dns/seed0", "lenet300100/dns/seed1",
                                        "lenet300100/han-direct/seed0", "lenet300100/han-direct/seed1",
                                        "lenet300100/neurons/seed0", "lenet300100/neurons/seed1"]
    neurons = results["cells"]["lenet300100/neurons/seed0"]  # half the hidden neurons, counted on the slim net
    assert neurons["outputs_kept"] == {"ip1": [150, 300], "ip2": [50, 100], "ip3": [10, 10]}
    assert neurons["slim_params"] == 784 * 150 + 150 + 150 * 50 + 50 + 50 * 10 + 10
    assert neurons["compression"] == pytest.approx(266610 / neurons["slim_params"])
    assert 0 < neurons["slim_caffemodel_bytes"] < neurons["caffemodel_bytes"]
    han0, han1 = (results["cells"][f"lenet300100/han-direct/seed{s}"] for s in (0, 1))
    # the same masks' share, another data order: another retrained net
    assert han0["kept"] == han1["kept"] and han0["test_error_pct"] != han1["test_error_pct"]
    for cell in results["cells"].values():
        assert cell["macs_kept"] < cell["macs_dense"] and 0 < cell["npz_bytes"] < cell["caffemodel_bytes"]
        assert os.path.isfile(os.path.join(ROOT, cell["pruned_model"]))
    first = _read_lmdb(work / "data" / "seed0" / "mnist_train_lmdb")[:3]
    other = _read_lmdb(work / "data" / "seed1" / "mnist_train_lmdb")[:3]
    assert first != other
    table = (work / "pruning.md").read_text()
    assert "han-direct: " in table and (work / "figures" / "compare_lenet300100.png").stat().st_size > 0
    capsys.readouterr()
    assert tool.main(argv) == 0  # everything is there: nothing runs again
    assert "all 6 runs are in" in capsys.readouterr().out
    assert json.loads((work / "results.json").read_text())["cells"] == results["cells"]


def test_timing_measures_the_pruned_net_on_both_paths(tmp_path, monkeypatch):
    monkeypatch.setattr(compare, "MAX_TIMING_LOAD", math.inf)
    model = shared_path("upstream-dns", "caffe_lenet300100_sparse.caffemodel")
    timing = compare.time_cell({"net": "lenet300100"}, model, rounds=1, repeats=2)
    assert set(timing["batches"]) == {"1", "64"}
    assert all(v["auto"] > 0 and v["dense"] > 0 for v in timing["batches"].values())
    # a net given by its prototxt (a slim net's): LeNet-5's, with LeNet-5's weights
    lenet5 = compare.time_cell({"net": "lenet300100"}, shared_path("upstream-dns", "caffe_lenet5_sparse.caffemodel"),
                               os.path.join(prototxt_dir(), "lenet5", "lenet5_train_test.prototxt"),
                               rounds=1, repeats=2)
    assert set(lenet5["batches"]) == {"1", "64"} and lenet5["date"] == time.strftime("%Y-%m-%d")
    monkeypatch.setattr(compare, "MAX_TIMING_LOAD", -1.0)
    assert compare.time_cell({"net": "lenet300100"}, model) is None  # a busy machine gives no figure


def test_bad_flags_name_themselves(capsys):
    tool = _tool()
    with pytest.raises(SystemExit):
        tool.main(["--seeds", "0,0"])
    assert "expected distinct seeds" in capsys.readouterr().err
    assert tool.main(["--quick", "--methods", "nope", "--doc"]) == 1
    assert "--methods 'nope'" in capsys.readouterr().err


def test_timing_falls_back_to_the_lowest_seed_with_a_model_on_disk(tmp_path, monkeypatch, capsys):
    tool = _tool()
    han = next(m for m in compare.METHODS if (m.net, m.name) == ("lenet5", "han-iterative"))
    dns = next(m for m in compare.METHODS if (m.net, m.name) == ("lenet5", "dns"))
    kept = tmp_path / "seed2.caffemodel"
    kept.write_bytes(b"model")
    results = {"cells": {compare.cell_key(han, s): _cell(han, s, 0.8, 12.5, pruned_model=str(tmp_path / f"seed{s}.caffemodel"))
                         for s in (0, 1, 2)}}
    results["cells"][compare.cell_key(dns, 0)] = _cell(dns, 0, 0.9, 100.0, pruned_model=str(tmp_path / "gone"))
    timed = []
    # a structured method is timed on its slim net (weights and prototxt), not on its masked pruned model
    l1 = next(m for m in compare.METHODS if (m.net, m.name) == ("lenet5", "l1-filter"))
    slim_weights, slim_model = tmp_path / "slim.caffemodel", tmp_path / "slim.prototxt"
    slim_weights.write_bytes(b"slim")
    slim_model.write_text("slim")
    results["cells"][compare.cell_key(l1, 0)] = _structured_cell(l1, 0, 0.9, 3.0, (10, 25))
    results["cells"][compare.cell_key(l1, 0)].update(pruned_model=str(kept), slim_weights=str(slim_weights),
                                                    slim_model=str(slim_model))
    timed = []
    monkeypatch.setattr(compare, "time_cell", lambda record, weights, model=None: timed.append(
        (record["seed"], weights, model)) or {"batches": {"1": {"auto": 1.0, "dense": 2.0}}, "date": "2026-12-07"})

    class Args:
        seeds = [0, 1, 2]

    assert tool.run_timing(Args, [han, dns, l1], results, str(tmp_path / "results.json")) == 2
    assert timed == [(2, str(kept), None), (0, str(slim_weights), str(slim_model))]
    assert results["cells"][compare.cell_key(han, 2)]["timing"]["batches"]["1"]["auto"] == 1.0
    assert "lenet5/dns has no pruned model on disk for any seed" in capsys.readouterr().out
    slim_model.unlink()
    del results["cells"][compare.cell_key(l1, 0)]["timing"]
    assert tool.run_timing(Args, [l1], results, str(tmp_path / "results.json")) == 0
    assert "lenet5/l1-filter has no slim net on disk" in capsys.readouterr().out


def test_a_run_of_one_seed_rewrites_the_tables_with_all_seeds(tmp_path, monkeypatch):
    tool = _tool()
    seen = []
    monkeypatch.setattr(compare, "format_doc", lambda results, methods, seeds, figures=None: seen.append(list(seeds)) or "")
    monkeypatch.setattr(compare, "format_headline", lambda results, methods, seeds: "")
    monkeypatch.setattr(compare, "plot", lambda results, methods, seeds, out: None)
    monkeypatch.setattr(compare, "replace_between", lambda text, name, body, where: text)
    monkeypatch.setattr(tool, "ROOT", str(tmp_path))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "pruning.md").write_text("x")
    (tmp_path / "README.md").write_text("x")
    results = tmp_path / "results.json"
    results.write_text('{"cells": {}}')
    assert tool.main(["--doc", "--seeds", "2", "--results", str(results)]) == 0
    assert tool.main(["--doc", "--seeds", "3", "--results", str(results)]) == 0
    assert seen == [[0, 1, 2], [0, 1, 2, 3]]
