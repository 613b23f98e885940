"""The upstream DNS bundles, rerun and compared number by number (npcaffe crosscheck)."""
import pytest

from helpers import shared_path
from npcaffe import crosscheck


@pytest.mark.parametrize("bundle", ["lenet300100-dns", "lenet5-dns"])
def test_bundle_matches_upstream(bundle, tmp_path):
    report = crosscheck.run(shared_path("crosscheck", bundle), str(tmp_path))
    assert not report.failures, report.text()
    checks = {what: (status, detail) for what, status, detail in report.rows}
    # The targets that must hold exactly, whatever the BLAS.
    assert checks["masks after iteration 0"] == ("ok", "identical")
    assert checks["snapshot 50 masks"] == ("ok", "identical")
    assert checks["gate draws"][0] == "ok"
    assert checks["loss, iterations 0-9"][0] == "ok"


def test_report_fails_on_a_perturbed_run(tmp_path, monkeypatch):
    """The comparison can fail: a different c_rate in one layer breaks the iteration-0 masks and the losses."""
    import os
    bundle = tmp_path / "bundle"
    src = shared_path("crosscheck", "lenet300100-dns")
    os.makedirs(bundle)
    for name in os.listdir(src):
        target = bundle / name
        if name == "net.prototxt":
            with open(os.path.join(src, name)) as f:
                text = f.read()
            target.write_text(text.replace("c_rate: 0.7", "c_rate: 0.75", 1))
        else:
            os.symlink(os.path.join(src, name), target)
    report = crosscheck.run(str(bundle), str(tmp_path / "work"))
    failed = {f.split(":")[0] for f in report.failures}
    assert "masks after iteration 0" in failed and "loss, iterations 0-9" in failed
