"""README.md's snippets: one way to call the commands, and the Python example runs as printed."""
import os
import re

import pytest

from helpers import shared_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def blocks(language):
    with open(os.path.join(ROOT, "README.md")) as f:
        return re.findall(rf"^```{language}\n(.*?)^```", f.read(), flags=re.S | re.M)


def test_shell_snippets_run_in_the_activated_venv():
    lines = [line for block in blocks("sh") for line in block.splitlines()]
    assert lines and not [line for line in lines if ".venv/bin/" in line.replace(". .venv/bin/activate", "")]


def test_python_example_runs(monkeypatch, capsys):
    shared_path("upstream-dns", "caffe_lenet5_sparse.caffemodel")
    shared_path("data", "mnist", "t10k-images-idx3-ubyte.gz")
    example = next(block for block in blocks("python") if "caffe.Net(" in block)
    monkeypatch.chdir(ROOT)  # the README's paths are from the repository root, ../shared beside it
    if not os.path.exists(os.path.join("..", "shared", "upstream-dns")):
        pytest.skip("../shared is not beside the repository (NPCAFFE_SHARED points elsewhere)")
    exec(compile(example, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert printed.startswith("[7 2 1 0 4 1 4 9 5 9") and "(20, 1, 5, 5)" in printed
