import os

import pytest

from helpers import shared_path
from npcaffe import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(argv, capsys):
    rc = cli.main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


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


def test_time_prints_every_layer(capsys):
    model = os.path.join(ROOT, "prototxt", "lenet5", "lenet5_deploy.prototxt")
    rc, out, err = run(["time", "--model", model, "--iterations", "2", "--phase", "TEST"], capsys)
    assert rc == 0
    for layer in ("conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2", "prob"):
        assert f"{layer}\tforward:" in out and f"{layer}\tbackward:" in out
    assert "Learnable parameters: 431,080" in out
