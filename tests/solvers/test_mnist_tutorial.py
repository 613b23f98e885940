"""Caffe's MNIST tutorial, run as its files say (slow: 10,000 iterations; `pytest -m slow`)."""
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from helpers import shared_path


def make_tutorial_tree(root):
    """Caffe's layout: examples/mnist/{lenet_solver,lenet_train_test}.prototxt + the two LMDBs."""
    mnist = os.path.join(root, "examples", "mnist")
    os.makedirs(mnist)
    shutil.copy(shared_path("model-zoo", "bvlc", "examples_mnist_lenet_solver.prototxt"),
                os.path.join(mnist, "lenet_solver.prototxt"))
    shutil.copy(shared_path("model-zoo", "bvlc", "examples_mnist_lenet_train_test.prototxt"),
                os.path.join(mnist, "lenet_train_test.prototxt"))
    for name in ("mnist_train_lmdb", "mnist_test_lmdb"):
        os.symlink(shared_path("data", "mnist-lmdb", name), os.path.join(mnist, name))
    return os.path.join("examples", "mnist", "lenet_solver.prototxt")


@pytest.mark.slow
def test_lenet_tutorial_reaches_about_99_percent(tmp_path):
    solver = make_tutorial_tree(str(tmp_path))
    started = time.time()
    result = subprocess.run([sys.executable, "-m", "npcaffe", "train", "--solver", solver],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    accuracies = re.findall(r"Test net output #0: accuracy = (\S+)", result.stderr)
    print(f"wall time {time.time() - started:.0f} s, final accuracy {accuracies[-1]}")
    # The tutorial's solver sets no random_seed, so every run starts from other weights and ends a
    # little apart (0.9898 seen, around Caffe's "about 99%"): a bound under that spread.
    assert float(accuracies[-1]) >= 0.988
    assert os.path.exists(tmp_path / "examples" / "mnist" / "lenet_iter_10000.caffemodel")
