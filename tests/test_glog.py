"""npcaffe/glog.py: glog-format lines, quiet mode and a run's full log (tee)."""
import re

from npcaffe import glog


def test_tee_keeps_every_line_also_when_quiet(tmp_path, glog_capture):
    glog.set_quiet(True)
    try:
        with glog.tee(tmp_path / "log.txt"):
            glog.info("Iteration 5, loss = 0.25")
            glog.warning("a warning")
        glog.info("after the block")
    finally:
        glog.set_quiet(False)
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert len(lines) == 2 and re.match(r"I\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ test_glog\.py:\d+\] Iteration 5, loss = 0\.25$",
                                        lines[0])
    assert lines[1].startswith("W") and lines[1].endswith("] a warning")
    assert glog_capture.getvalue().count("\n") == 1 and "a warning" in glog_capture.getvalue()  # quiet console
