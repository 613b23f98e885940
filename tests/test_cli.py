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
