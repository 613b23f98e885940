"""Progress bars (npcaffe/progress.py): on a terminal only, never in a log; the bar a user sees in a
pseudo-terminal (stage, iteration / total, rate, loss, DNS kept share)."""
import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

from npcaffe import glog, progress

NET = """
name: "bar"
layer { name: "data" type: "DummyData" top: "data" top: "label"
        dummy_data_param { shape { dim: 8 dim: 6 } shape { dim: 8 }
                           data_filler { type: "gaussian" } data_filler { type: "constant" value: 1 } } }
layer { name: "ip" type: "CInnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } }
        cinner_product_param { c_rate: 0.5 gamma: 0.0001 power: 1 iter_stop: 100
                               weight_mask_filler { type: "constant" value: 1 }
                               bias_mask_filler { type: "constant" value: 1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""
SOLVER = """
net: "net.prototxt"
test_iter: 3
test_interval: 20
base_lr: 0.01
lr_policy: "fixed"
display: 20
max_iter: 40
random_seed: 1
"""


def _write(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(SOLVER)
    return [sys.executable, "-m", "npcaffe", "train", "--solver", "solver.prototxt"]


def _run_in_terminal(argv, cwd):
    """(exit code, everything the program wrote) with stdin/stdout/stderr on a pseudo-terminal."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # 40 rows, 160 columns
    proc = subprocess.Popen(argv, cwd=cwd, stdin=follower, stdout=follower, stderr=follower,
                            env=os.environ)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the program closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return proc.wait(timeout=120), b"".join(chunks).decode("utf-8", "replace")


def test_bar_on_a_terminal_and_none_on_a_pipe(tmp_path):
    argv = _write(tmp_path)
    code, screen = _run_in_terminal(argv, tmp_path)
    assert code == 0, screen
    # tqdm redraws the bar with carriage returns: the last state is the finished bar.
    bars = [part for line in screen.splitlines() for part in line.split("\r") if part.startswith("train:")]
    assert any(part.startswith("train: test #0:") for part in bars), screen  # the tests' own bar
    final = [part for part in bars if "/40 " in part][-1]
    assert "40/40" in final and "100%" in final and ("it/s" in final or "s/it" in final), final
    assert "loss " in final and "kept " in final and "%" in final.split("kept ")[1], final
    # glog lines stay whole lines, above the bar.
    lines = [part for line in screen.splitlines() for part in line.split("\r")]
    assert any(line.startswith("I") and line.endswith("Iteration 20, loss = " + line.split("loss = ")[-1])
               for line in lines if "Iteration 20, loss" in line)

    piped = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0 and "Iteration 20, loss" in piped.stderr
    assert "\r" not in piped.stderr and "it/s" not in piped.stderr and "40/40" not in piped.stderr


def test_configure_follows_the_terminal_unless_forced(monkeypatch):
    class Terminal:
        def isatty(self):
            return True
    previous = progress.enabled()
    try:
        monkeypatch.setattr(sys, "stderr", Terminal())
        progress.configure(None)
        assert progress.enabled()
        progress.configure(False)  # --no-progress
        assert not progress.enabled()
        monkeypatch.setattr(sys, "stderr", open(os.devnull, "w"))
        progress.configure(None)
        assert not progress.enabled()
        progress.configure(True)  # --progress
        assert progress.enabled()
    finally:
        progress.restore(previous)


def test_detail_lines_stay_in_the_log_file_unless_asked(tmp_path, glog_capture):
    with glog.tee(tmp_path / "log.txt"):
        glog.detail("Initializing solver from parameters: ...")
        glog.info("Solving net")
    assert "Initializing solver" not in glog_capture.getvalue() and "Solving net" in glog_capture.getvalue()
    assert "Initializing solver" in (tmp_path / "log.txt").read_text()
    glog.set_show_details(True)  # -v
    try:
        with glog.tee(tmp_path / "log2.txt"):
            glog.detail("dump")
    finally:
        glog.set_show_details(None)
    assert "dump" in glog_capture.getvalue()
    glog.detail("no log file: the console gets it")  # `npcaffe train`, as Caffe
    assert "no log file" in glog_capture.getvalue()


def test_a_reporter_hears_each_solver_stage_without_bars(tmp_path, monkeypatch):
    """progress.report_to: the comparison tool's workers tell their parent stage and iteration."""
    from npcaffe.solvers import get_solver
    from npcaffe.fileio.prototxt import read_solver
    _write(tmp_path)
    monkeypatch.chdir(tmp_path)
    previous_bars = progress.configure(False)
    heard = []
    previous = progress.report_to(lambda stage, iteration, total: heard.append((stage, iteration, total)))
    try:
        with progress.stage("prune step 1/2"):
            get_solver(read_solver(str(tmp_path / "solver.prototxt"))).solve()
        progress.report_to(None)
        get_solver(read_solver(str(tmp_path / "solver.prototxt"))).solve()  # no reporter: nothing heard
    finally:
        progress.report_to(previous)
        progress.restore(previous_bars)
    # throttled to once a second, but the first iteration and the last are always heard
    assert heard[0] == ("prune step 1/2", 1, 40) and heard[-1] == ("prune step 1/2", 40, 40), heard
    assert len(heard) < 40 and [h[1] for h in heard] == sorted(h[1] for h in heard)
