"""The solver bundles (../shared/crosscheck/solver-*): a plain net trained by the DNS fork's AdaGrad,
rerun and compared number by number (npcaffe crosscheck)."""
import os

from helpers import shared_path
from npcaffe import crosscheck

CHECKS = ["loss, every iteration",
          "snapshot 50 weights", "snapshot 50 solverstate",
          "snapshot 100 weights", "snapshot 100 solverstate",
          "from upstream's iteration-50 state: loss, iterations 50-100",
          "from upstream's iteration-50 state: snapshot 100 weights"]


def test_adagrad_bundle_matches_upstream(tmp_path):
    bundle = shared_path("crosscheck", "solver-adagrad")
    assert crosscheck.is_solver_bundle(bundle)
    report = crosscheck.run(bundle, str(tmp_path))
    assert not report.failures, report.text()
    status = {what: (ok, detail) for what, ok, detail in report.rows}
    for what in CHECKS:
        assert status[what][0] == "ok", report.text()
    # Our .solverstate holds what the fork's holds: one history blob per learnable param.
    assert status["snapshot 50 solverstate"][1].startswith("6 history blobs")
    if status["BLAS"][1].startswith("OpenBLAS Haswell kernels, 1 thread"):
        # Upstream's kernels on one thread: the fork's run to the bit (npcaffe.solvers.sgd).
        assert status["loss printed identically"][1] == "101/101 iterations"
        for what in ("snapshot 50 weights", "snapshot 100 weights"):
            assert status[what][1].startswith("max relative error 0.00e+00"), report.text()


def test_report_fails_on_another_learning_rate(tmp_path):
    """The comparison can fail, also from upstream's own state: a 10% larger base_lr."""
    bundle = tmp_path / "bundle"
    src = shared_path("crosscheck", "solver-adagrad")
    os.makedirs(bundle)
    for name in os.listdir(src):
        if name == "solver.prototxt":
            with open(os.path.join(src, name)) as f:
                text = f.read()
            assert "base_lr: 0.01\n" in text
            (bundle / name).write_text(text.replace("base_lr: 0.01\n", "base_lr: 0.011\n"))
        else:
            os.symlink(os.path.join(src, name), bundle / name)
    report = crosscheck.run(str(bundle), str(tmp_path / "work"))
    failed = {f.split(":")[0] for f in report.failures}
    assert {"loss, every iteration", "snapshot 50 weights", "from upstream's iteration-50 state"} <= failed
