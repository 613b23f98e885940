"""npcaffe/blas.py: the command line runs one BLAS thread unless asked; `import npcaffe` changes nothing."""
import os
import subprocess
import sys

import pytest

from npcaffe import blas, cli

threadpoolctl = pytest.importorskip("threadpoolctl")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }\n'
        'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 2 } }\n')


def blas_threads():
    counts = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    if not counts:
        pytest.skip("no BLAS library that threadpoolctl can see")
    return max(counts)


def test_default_is_one_thread_and_lifted_after(monkeypatch):
    before = blas_threads()
    with blas.limited(None, environ={}) as line:
        assert blas_threads() == 1
        assert line.startswith("BLAS threads: 1 (") and "--threads N or OPENBLAS_NUM_THREADS=N" in line
    assert blas_threads() == before


def test_flag_and_environment(monkeypatch):
    with blas.limited(2, environ={"OPENBLAS_NUM_THREADS": "1"}) as line:
        assert blas_threads() == 2 and line.startswith("BLAS threads: 2 (") and "--threads 2" in line
    before = blas_threads()
    for name in blas.ENV_VARS:
        with blas.limited(None, environ={name: "3"}) as line:
            assert blas_threads() == before  # the variable set the library up; left as it gave
            assert f"{name}=3" in line


def test_first_log_line_of_a_run_says_how_many(tmp_path, monkeypatch, capsys):
    for name in blas.ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    model = tmp_path / "tiny.prototxt"
    model.write_text(TINY)
    assert cli.main(["time", "--model", str(model), "--iterations", "1", "--phase", "TEST"]) == 0
    first = capsys.readouterr().err.splitlines()[0]
    assert "] BLAS threads: 1 (" in first
    assert cli.main(["time", "--model", str(model), "--iterations", "1", "--phase", "TEST", "--threads", "2"]) == 0
    assert "] BLAS threads: 2 (" in capsys.readouterr().err.splitlines()[0]


def test_import_npcaffe_leaves_the_library_alone():
    code = ("import threadpoolctl, numpy\n"
            "before = [i['num_threads'] for i in threadpoolctl.threadpool_info()]\n"
            "import npcaffe, npcaffe.cli\n"
            "print(before == [i['num_threads'] for i in threadpoolctl.threadpool_info()])\n")
    env = {k: v for k, v in os.environ.items() if k not in blas.ENV_VARS}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)
    assert done.stdout.strip() == "True", done.stderr[-2000:]
