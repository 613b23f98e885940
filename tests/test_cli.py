"""The `npcaffe` command line: one clear error line for a bad net or weights, Caffe's flag spellings,
and `npcaffe time` on our and published nets (generated data, parameter counts, non-finite blobs)."""
import os

import pytest

from helpers import shared_path
from npcaffe import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(argv, capsys):
    rc = cli.main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def zoo(name):
    return shared_path("model-zoo", "bvlc", name)


@pytest.mark.parametrize("content,expected", [
    ('layer {\n name: "x"\n type "Input"\n}\n', "bad.prototxt:3"),
    ('layer { name: "x" type: "Nope" top: "x" }\n', "unknown layer type 'Nope'"),
    ('layer { name: "p" type: "Pooling" pooling_param { pool: MEDIAN } }\n', "bad.prototxt:1"),
    ('layer { name: "r" type: "ReLU" bottom: "missing" top: "r" }\n', "unknown bottom blob 'missing'"),
])
def test_bad_net_is_one_clear_line(content, expected, tmp_path, capsys):
    path = tmp_path / "bad.prototxt"
    path.write_text(content)
    rc, out, err = run(["test", "--model", str(path), "--iterations", "1"], capsys)
    assert rc == 1
    assert "npcaffe test: error:" in err and expected in err and "Traceback" not in err


def test_bad_weights_is_one_clear_line(tmp_path, capsys):
    bad = tmp_path / "cut.caffemodel"
    bad.write_bytes(open(shared_path("upstream-dns", "caffe_lenet5_original.caffemodel"), "rb").read()[:5000])
    model = shared_path("upstream-dns", "lenet5.prototxt")
    rc, out, err = run(["test", "--model", model, "--weights", str(bad), "--iterations", "1"], capsys)
    assert rc == 1 and "cut.caffemodel" in err and "Traceback" not in err
    rc, out, err = run(["test", "--model", model, "--weights",
                        shared_path("upstream-dns", "caffe_lenet300100_original.caffemodel"), "--iterations", "1"], capsys)
    assert rc == 1 and "shape mismatch" in err


# -- flags: Caffe's underscores, dashes accepted -------------------------------------

@pytest.mark.parametrize("argv, dest, value", [
    (["time", "--model", "m.prototxt", "{flag}", "data=1,3,8,8"], "data_shape", ["data=1,3,8,8"]),
    (["prune-report", "--model", "m.prototxt", "{flag}", "data=1"], "data_shape", ["data=1"]),
    (["train", "--solver", "s.prototxt", "{flag}", "trace.csv"], "dns_trace", "trace.csv"),
    (["train", "--solver", "s.prototxt", "{flag}", "none"], "sigint_effect", "none"),
    (["train", "--solver", "s.prototxt", "{flag}", "stop"], "sighup_effect", "stop"),
    (["train", "--solver", "s.prototxt", "{flag}"], "upstream_resume", True),
])
def test_multi_word_flags_take_both_spellings(argv, dest, value):
    for flag in (f"--{dest}", f"--{dest.replace('_', '-')}"):
        args = cli.build_parser().parse_args([flag if a == "{flag}" else a for a in argv])
        assert getattr(args, dest) == value, flag


def test_help_shows_the_underscore_spelling_first(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--dns_trace CSV, --dns-trace CSV" in out and "--upstream_resume, --upstream-resume" in out


# -- npcaffe time --------------------------------------------------------------------

def test_time_prints_every_layer(capsys):
    model = os.path.join(ROOT, "prototxt", "lenet5", "lenet5_deploy.prototxt")
    rc, out, err = run(["time", "--model", model, "--iterations", "2", "--phase", "TEST"], capsys)
    assert rc == 0
    for layer in ("conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2", "prob"):
        assert f"{layer}\tforward:" in out and f"{layer}\tbackward:" in out
    assert "Learnable parameters: 431,080" in out


def test_alexnet_train_val_with_generated_data(capsys):
    rc, out, err = run(["time", "--model", zoo("models_bvlc_alexnet_train_val.prototxt"), "--iterations", "1",
                        "--data_shape", "data=1,3,227,227", "--data_shape", "label=1"], capsys)
    assert rc == 0, err
    assert "norm1\tforward:" in out.replace(" ", "")
    assert "Learnable parameters: 60,965,224" in out


def test_caffenet_deploy_uses_its_input_shapes(capsys):
    rc, out, err = run(["time", "--model", zoo("models_bvlc_reference_caffenet_deploy.prototxt"),
                        "--iterations", "1", "--phase", "TEST",
                        "--data-shape", "data=1,3,227,227"], capsys)  # the dashed spelling still runs
    assert rc == 0, err
    assert "Learnable parameters: 60,965,224" in out
    for layer in ("conv1", "norm2", "fc8", "prob"):
        assert f"{layer}\tforward:" in out.replace(" ", "")


def test_resnet50_time_reports_statistics_separately(capsys):
    model = os.path.join(ROOT, "prototxt", "resnet50", "ResNet-50-deploy.prototxt")
    rc, out, err = run(["time", "--model", model, "--iterations", "1", "--phase", "TEST"], capsys)
    assert rc == 0, err
    assert "Learnable parameters: 25,557,096" in out
    assert "Parameters with lr_mult 0 (e.g. BatchNorm statistics): 53,173" in out


def test_non_finite_blob_is_named(tmp_path, capsys):
    model = tmp_path / "nan.prototxt"
    model.write_text('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }\n'
                     'layer { name: "log" type: "Log" bottom: "x" top: "y" }\n')
    rc, out, err = run(["time", "--model", str(model), "--iterations", "1", "--phase", "TEST"], capsys)
    assert rc == 1
    assert "blob 'y' (top of layer 'log', shape (2, 3)) has" in err and "non-finite data" in err


# -- no traps: every argument checked before the run, one line naming the flag ------------

LENET5 = os.path.join(ROOT, "prototxt", "lenet5", "lenet5_train_test.prototxt")


def usage_error(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err
    return err.splitlines()[-1]


@pytest.mark.parametrize("argv, flag", [
    (["time", "--model", LENET5, "--iterations", "0"], "--iterations"),  # was a ZeroDivisionError
    (["test", "--model", LENET5, "--iterations", "0"], "--iterations"),  # was `Loss: nan`, exit 0
    (["test", "--model", LENET5, "--iterations", "-1"], "--iterations"),
    (["train", "--solver", "s.prototxt", "--iterations", "0"], "--iterations"),
    (["surgery", "lenet5", "--iterations", "0"], "--iterations"),  # was 185x "compression" of an untrained net
    (["time", "--model", LENET5, "--threads", "0"], "--threads"),
    (["explain", "--layer", "ip1", "--iteration", "-1"], "--iteration"),
    (["explain", "--layer", "ip1", "--iteration", "1", "--nearest", "0"], "--nearest"),
    (["dnsify", "m.prototxt", "--out", "o.prototxt", "--gamma", "-1"], "--gamma"),
    (["dnsify", "m.prototxt", "--out", "o.prototxt", "--iter_stop", "x"], "--iter_stop"),
    (["plot", "flips", "-o", "f.png", "--interval", "0"], "--interval"),
])
def test_counts_and_rates_are_checked(argv, flag, capsys):
    line = usage_error(argv, capsys)
    assert line.startswith(f"npcaffe {argv[0]}: error: argument {flag}") and "expected " in line


@pytest.mark.parametrize("argv, message", [
    (["test", "--model", "missing.prototxt"], "--model: net file 'missing.prototxt' not found (relative paths"),
    (["test", "--model", LENET5, "--weights", f"{LENET5},gone.caffemodel"], "--weights: 'gone.caffemodel' not found"),
    (["train", "--solver", "nope_solver.prototxt"], "--solver: solver file 'nope_solver.prototxt' not found"),
    (["train", "--solver", LENET5, "--snapshot", "x.solverstate"], "--snapshot: 'x.solverstate' not found"),
    (["dnsify", "nothere.prototxt", "--out", "o.prototxt"], "model: net file 'nothere.prototxt' not found"),
    (["crosscheck", "no_bundle"], "bundle: bundle directory 'no_bundle' not found"),
    (["prepare-mnist", "--mnist", LENET5], f"--mnist: '{LENET5}' is a file, not a directory"),
    (["plot", "curves", "-o", "c.png", "--log", "no.log"], "--log: 'no.log' not found"),
])
def test_missing_input_is_one_line_naming_the_flag(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run(argv, capsys)
    assert rc == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"npcaffe {argv[0]}: error: {message}"), err


def test_time_defaults_the_label_shape_to_the_batch(capsys):
    rc, out, err = run(["time", "--model", LENET5, "--iterations", "1", "--data_shape", "data=4,1,28,28"], capsys)
    assert rc == 0, err
    assert "--data_shape label=4: the batch of data, as labels for layer 'loss'" in err
    assert "Learnable parameters: 431,080" in out


def test_prune_report_of_a_net_without_parameters(tmp_path, capsys):
    model = tmp_path / "relu.prototxt"
    model.write_text('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }\n'
                     'layer { name: "r" type: "ReLU" bottom: "x" top: "y" }\n')
    rc, out, err = run(["prune-report", "--model", str(model)], capsys)
    assert rc == 1 and "inf" not in out + err
    assert "relu.prototxt: no layer has parameters in phase TEST" in err


def test_compress_into_a_directory_or_a_name_without_npz(tmp_path, capsys):
    weights = shared_path("upstream-dns", "caffe_lenet300100_sparse.caffemodel")
    rc, out, err = run(["compress", "--weights", weights, "--out", str(tmp_path)], capsys)
    written = tmp_path / "caffe_lenet300100_sparse.npz"
    assert rc == 0 and written.is_file()
    assert out.strip().endswith(f"-> {written.stat().st_size} bytes in {written}")
    rc, out, err = run(["compress", "--weights", weights, "--out", str(tmp_path / "small")], capsys)
    assert rc == 0 and (tmp_path / "small.npz").is_file() and out.strip().endswith("small.npz")


def test_version_is_the_package_metadata(capsys):
    from importlib import metadata
    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"npcaffe {metadata.version('npcaffe')}"


def subcommands(parser):
    import argparse
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def test_every_flag_has_help():
    import argparse
    parser = cli.build_parser()
    missing = [f"{name} {action.option_strings or action.dest}"
               for name, command in [("npcaffe", parser), *subcommands(parser).items()]
               for action in command._actions if not action.help or action.help == argparse.SUPPRESS]
    assert missing == []
    # and every command its line in `npcaffe --help`
    listed = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)][0]
    described = {choice.dest for choice in listed._choices_actions if choice.help}
    assert set(subcommands(parser)) <= described


def test_computing_commands_take_threads():
    for name, command in subcommands(cli.build_parser()).items():
        has = any("--threads" in action.option_strings for action in command._actions)
        assert has == (name not in cli.NO_THREADS_FLAG), name
    assert {"train", "test", "time", "surgery", "crosscheck", "explain"} <= set(subcommands(cli.build_parser()))


def test_run_outputs_are_ignored_by_git():
    import shutil
    import subprocess
    if shutil.which("git") is None or not os.path.isdir(os.path.join(ROOT, ".git")):
        pytest.skip("not a git checkout")
    paths = ["data/mnist/mnist_train_lmdb/data.mdb", "snap/lenet5_dns_iter_100.caffemodel", "runs/lenet5/report.txt"]
    done = subprocess.run(["git", "check-ignore", *paths], cwd=ROOT, capture_output=True, text=True)
    assert done.stdout.split() == paths
    done = subprocess.run(["git", "check-ignore", "npcaffe/data/mnist.py", "tests/data"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.stdout == ""


# The console script's own lines, with SIGINT sent the moment npcaffe's imports reach NumPy.
INTERRUPTED_START = """
import os, signal, sys
class InterruptAtNumpy:
    def find_spec(self, name, path=None, target=None):
        if name == "numpy" and not getattr(self, "sent", False):
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)
sys.meta_path.insert(0, InterruptAtNumpy())
sys.argv = [os.path.join("bin", "npcaffe"), "time", "--model", sys.argv[1], "--iterations", "1"]
from npcaffe.cli import main
sys.exit(main())
"""


def test_ctrl_c_while_the_command_starts_exits_130_without_a_traceback():
    import signal
    import subprocess
    import sys
    model = os.path.join(ROOT, "prototxt", "lenet5", "lenet5_deploy.prototxt")
    done = subprocess.run([sys.executable, "-c", INTERRUPTED_START, model], capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, OPENBLAS_NUM_THREADS="1"),
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert done.returncode == 130 and "Traceback" not in done.stderr, done.stderr  # was a KeyboardInterrupt
    assert "Performing" not in done.stderr  # stopped before the command ran
    done = subprocess.run([sys.executable, "-c", "import signal, npcaffe.cli; "
                           "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"],
                          capture_output=True, text=True, timeout=600,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert done.stdout.strip() == "True", done.stderr  # import npcaffe leaves a Python program's Ctrl-C alone


GATED_NET = """
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 8 dim: 10 } shape { dim: 8 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "uniform" min: 0 max: 2.99 } } }
layer { name: "ip1" type: "CInnerProduct" bottom: "data" top: "ip1"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } }
  cinner_product_param { gamma: 0.5 power: 1 iter_stop: 100 c_rate: 0.5
    weight_mask_filler { type: "constant" value: 1 } bias_mask_filler { type: "constant" value: 1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }
"""


def test_each_command_starts_the_gate_stream_as_a_new_process(tmp_path, monkeypatch):
    """The DNS gate draws from one process-wide rand(), as the fork's C rand(); a command run after
    other draws in the same process (a notebook, a second command) draws what a new process would."""
    from npcaffe.kernels import glibc_rand
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.prototxt").write_text(GATED_NET)
    (tmp_path / "solver.prototxt").write_text('net: "net.prototxt"\nbase_lr: 0.1\nlr_policy: "fixed"\n'
                                              'max_iter: 6\nsnapshot_prefix: "s"\nrandom_seed: 3\n')
    traces = []
    for earlier_draws in (0, 1000):
        for _ in range(earlier_draws):
            glibc_rand.rand()
        trace = f"trace{earlier_draws}.csv"
        assert cli.main(["train", "--solver", "solver.prototxt", "--dns_trace", trace, "--quiet"]) == 0
        traces.append((tmp_path / trace).read_text())
    glibc_rand.reset()
    first_draw = str(glibc_rand.rand())
    assert traces[0] == traces[1] and len(traces[0].splitlines()) == 1 + 6
    assert first_draw in traces[0].splitlines()[1].split(",")  # the new process's first draw
