"""docs/examples/*.py run as a student runs them: from the repository root, with ../shared beside it."""
import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "docs", "examples", "*.py")))
EXPECTED = {
    "01_first_step.py": "kept after iteration 0:",
    "02_watch_the_gate.py": "rows written to",
    "03_splice_back.py": "spliced back",
    "04_explain.py": "Algorithm 1",
}


def test_every_example_is_listed():
    assert sorted(os.path.basename(p) for p in EXAMPLES) == sorted(EXPECTED)


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_example_runs(path):
    if not os.path.isdir(os.path.join(ROOT, "..", "shared", "data", "mnist-lmdb")):
        pytest.skip("the examples read ../shared (MNIST LMDBs, upstream models) beside the repository")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    done = subprocess.run([sys.executable, path], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert EXPECTED[os.path.basename(path)] in done.stdout
