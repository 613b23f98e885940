"""Runs you can stop: `npcaffe surgery` stopped by SIGINT / SIGTERM mid-run writes its log and a snapshot,
says how to resume, and `--resume` ends with the numbers and weights of an uninterrupted run."""
import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

from helpers import shared_path
from npcaffe.fileio.caffemodel import read_caffemodel

PARSE_LOG_REGEXES = {  # the patterns Caffe's tools/extra/parse_log.py reads a log with
    "iteration": re.compile(r"Iteration (\d+)"),
    "train_output": re.compile(r"Train net output #(\d+): (\S+) = ([\.\deE+-]+)"),
    "test_output": re.compile(r"Test net output #(\d+): (\S+) = ([\.\deE+-]+)"),
    "learning_rate": re.compile(r"lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)"),
}
GLOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ [\w.]+:\d+\] ")


def _workdir_with_shared_lmdbs(path):
    data = path / "data" / "mnist"
    os.makedirs(data)
    for name in ("mnist_train_lmdb", "mnist_test_lmdb"):
        os.symlink(shared_path("data", "mnist-lmdb", name), data / name)
    return path


def npcaffe(*argv):
    return [sys.executable, "-m", "npcaffe", *argv]


def _stop_when(argv, trigger, signum, env=None):
    """Run argv, send signum once a stderr line contains trigger; (exit code, all of stderr)."""
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env={**os.environ, **(env or {})})
    lines, sent = [], False
    for line in proc.stderr:
        lines.append(line)
        if not sent and trigger in line:
            proc.send_signal(signum)
            sent = True
    assert sent, "".join(lines)
    return proc.wait(timeout=600), "".join(lines)


def parse_log(text):
    """What parse_log.py would take from a log: (train rows, test rows, learning rates seen)."""
    iteration, train, test, rates = -1, [], [], []
    for line in text.splitlines():
        match = PARSE_LOG_REGEXES["iteration"].search(line)
        if match:
            iteration = int(match.group(1))
        if iteration == -1:
            continue
        match = PARSE_LOG_REGEXES["learning_rate"].search(line)
        if match:
            rates.append(float(match.group(1)))
        for key, rows in (("train_output", train), ("test_output", test)):
            match = PARSE_LOG_REGEXES[key].search(line)
            if match:
                rows.append((iteration, match.group(2), float(match.group(3))))
    return train, test, rates


def _blobs(path):
    """{layer: [bytes of each blob's data]} of a caffemodel: its weights exactly."""
    model = read_caffemodel(str(path))
    return {layer.name: [np.asarray(blob.data, np.float32).tobytes() for blob in layer.blobs] for layer in model.layer}


def _same_results(a, b):
    keys = ("test_accuracy", "test_loss", "kept", "params", "compression", "layers", "stages", "iterations")
    return {k: a[k] for k in keys} == {k: b[k] for k in keys}


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stopped_surgery_resumes_bit_for_bit(signum, tmp_path):
    weights = shared_path("upstream-dns", "caffe_lenet300100_original.caffemodel")
    common = ["surgery", "lenet300100", "--weights", weights, "--iterations", "600"]
    whole = _workdir_with_shared_lmdbs(tmp_path / "whole")
    assert subprocess.run(npcaffe(*common, "--out", str(whole)), capture_output=True).returncode == 0

    stopped = _workdir_with_shared_lmdbs(tmp_path / "stopped")
    code, err = _stop_when(npcaffe(*common, "--out", str(stopped)), "Iteration 0, lr = ", signum)
    assert code == 130, err
    assert f"npcaffe surgery lenet300100 --resume --out {stopped}" in err and "stopped in stage 'surgery'" in err
    state = json.loads((stopped / "run.json").read_text())["stages"]["surgery"]
    assert not state["done"] and 0 < state["iter"] < 600 and os.path.isfile(state["snapshot"])
    assert not (stopped / "report.json").exists() and "Snapshotting" in (stopped / "log.txt").read_text()

    resumed = subprocess.run(npcaffe("surgery", "lenet300100", "--resume", "--out", str(stopped)),
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"Resuming stage 'surgery' from {state['snapshot']}" in resumed.stderr
    a, b = (json.loads((d / "report.json").read_text()) for d in (whole, stopped))
    assert _same_results(a, b), (a, b)
    for name in ("lenet300100_dns.caffemodel", "lenet300100_dns_pruned.caffemodel"):
        assert _blobs(whole / name) == _blobs(stopped / name), name  # (the files differ in their LMDB paths)

    # Resuming with other settings is refused, naming them.
    other = subprocess.run(npcaffe("surgery", "lenet300100", "--resume", "--iterations", "700", "--out",
                                   str(stopped)), capture_output=True, text=True)
    assert other.returncode == 1 and "iterations: 700 (the stopped run had 600)" in other.stderr


@pytest.mark.slow
def test_quick_try_offline_shortens_the_reference_and_its_log_parses(tmp_path):
    work = _workdir_with_shared_lmdbs(tmp_path / "run")
    run = subprocess.run(npcaffe("surgery", "lenet300100", "--iterations", "200", "--out", str(work)),
                         capture_output=True, text=True, env={**os.environ, "NPCAFFE_OFFLINE": "1",
                                                               "NPCAFFE_CACHE": str(tmp_path / "cache")})
    assert run.returncode == 0, run.stderr
    assert "could not be fetched" in run.stderr and "NPCAFFE_OFFLINE" in run.stderr
    assert "Training a dense reference lenet300100 first: 200 iterations" in run.stderr
    report = json.loads((work / "report.json").read_text())
    assert report["reference_iterations"] == 200 and report["stages"] == {"surgery": 200}
    assert "200 dense reference, then 200 surgery iterations" in (work / "report.txt").read_text()

    log = (work / "log.txt").read_text()
    assert GLOG_LINE.match(log) and "\r" not in log and "it/s" not in log  # glog lines, no bar
    train, test, rates = parse_log(log)
    # Both stages' displays (the reference every 100 iterations, the surgery every 500), their tests
    # (at iteration 0, and at 200 each stage's final test, once).
    assert [row[0] for row in train if row[1] == "loss"] == [0, 100, 0]
    assert [row[0] for row in test if row[1] == "accuracy"] == [0, 200, 0, 200]
    assert len(rates) == 3 and all(r > 0 for r in rates)
    # The solver dump and the labelled DNS statistics are in the log, not read as outputs.
    assert "Initializing solver from parameters" in log and "Initializing solver" not in run.stderr
    assert re.search(r"ip1: DNS statistics of \|w\| .*: mu [\d.e-]+, std [\d.e-]+, ncount \d+", log)
