"""Log lines in glog's format, so Caffe's log parsers read npcaffe's logs unchanged.

    I1122 01:02:03.456789  4242 solver.py:228] Iteration 100, loss = 0.2

(severity, month-day, time with microseconds, thread id, source file:line).
"""
import contextlib
import datetime
import os
import sys
import threading

_stream = None
_quiet = False
_show_details = None
_console_writer = None
_tees = []


def set_stream(stream):
    global _stream
    _stream = stream


def set_quiet(quiet=True):
    """Silence INFO lines (warnings and errors still print)."""
    global _quiet
    _quiet = quiet


def is_quiet():
    return _quiet


def set_show_details(show=None):
    """Whether `detail` lines (the solver's parameter dump) reach the console: True (-v), False, or
    None: only while no run's log file is being written (tee), which always gets them."""
    global _show_details
    _show_details = show


def shows_details():
    return _show_details if _show_details is not None else not _tees


def set_console_writer(writer):
    """writer(line) replaces the console stream's write while set (npcaffe.progress routes lines
    above its bar so); None restores the stream.  Returns the previous writer."""
    global _console_writer
    previous, _console_writer = _console_writer, writer
    return previous


@contextlib.contextmanager
def tee(path, append=False):
    """Inside the block, every line also goes to the file at `path`, INFO lines included when
    quiet: a run's full log (`npcaffe surgery --solver` writes DIR/log.txt so); append: go on
    with an existing log (a resumed run)."""
    with open(path, "a" if append else "w") as f:
        _tees.append(f)
        try:
            yield f
        finally:
            _tees.remove(f)


def _emit(severity, message, depth, detail=False):
    to_console = not (_quiet and severity == "I") and not (detail and not shows_details())
    if not to_console and not _tees:
        return
    frame = sys._getframe(depth)
    source = f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"
    now = datetime.datetime.now()
    tid = threading.get_native_id() % 100000
    line = f"{severity}{now:%m%d %H:%M:%S}.{now.microsecond:06d} {tid:>5d} {source}] {message}\n"
    for f in _tees:
        f.write(line)
        f.flush()
    if to_console:
        if _console_writer is not None and _stream is None:
            _console_writer(line)
            return
        stream = _stream or sys.stderr
        stream.write(line)
        stream.flush()


def info(message):
    _emit("I", message, 2)


def detail(message):
    """An INFO line of bulk detail (a parameter dump): always in the run's log file, on the
    console only while shows_details()."""
    _emit("I", message, 2, detail=True)


def warning(message):
    _emit("W", message, 2)


def error(message):
    _emit("E", message, 2)


def fmt(x):
    """A float as C++ ostream prints it by default (6 significant digits)."""
    return f"{float(x):.6g}"
