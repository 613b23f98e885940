"""Progress bars for the command line: tqdm on stderr, only when stderr is a terminal.

The `npcaffe` command turns bars on (`configure`: a terminal, or --progress /
--no-progress); the library leaves them off, so scripts, notebooks and logs
see only glog lines.  A bar is never part of a log: glog's lines reach the
console above the bar (tqdm.write) and a run's log file (glog.tee) as they
always did, so Caffe's tools/extra/parse_log.py reads a saved log unchanged.

Who shows what:
- `bar(stage, total)`: one bar for a counted loop (prepare-mnist's images,
  a sensitivity sweep's points, `npcaffe test`'s batches).
- `Solver.solve` / `Solver.test` open their own bars when bars are on:
  stage name, iteration / max_iter, rate, ETA, the smoothed loss and, for
  a net with masks (DNS), the share of parameters kept.  The stage name is
  the innermost `stage(name)` block's (a pipeline's: "surgery",
  "fine-tuning", "prune step 2/5"), else "train" / "test".
- `report_to(callback)`: a process whose bars nobody sees (a worker of
  tools/compare_pruning.py) sends each solver's stage and iteration to its
  parent, which shows them on its own bar.
"""
import contextlib
import sys
import time

from . import glog

_on = False
_stages = []


def configure(force=None):
    """Bars on when force is True, off when False, and with None only if stderr is a terminal.
    Returns the previous setting (for `restore`)."""
    global _on
    previous = _on
    _on = bool(force) if force is not None else _is_terminal(sys.stderr)
    return previous


def restore(previous):
    global _on
    _on = previous


def enabled():
    return _on


def _is_terminal(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def stage(name):
    """Name the bars opened inside the block (a pipeline's stage)."""
    _stages.append(name)
    try:
        yield
    finally:
        _stages.pop()


def current_stage(default):
    return _stages[-1] if _stages else default


class _NoBar:
    def update(self, n=1):
        pass

    def set_postfix_str(self, text, refresh=True):
        pass


_open_bars = 0


def _write_above(line):
    from tqdm import tqdm
    tqdm.write(line.rstrip("\n"), file=sys.stderr)


@contextlib.contextmanager
def bar(name, total, initial=0, unit="it", leave=True):
    """A tqdm bar on stderr while bars are on (else an object whose update does nothing);
    glog's console lines print above it meanwhile."""
    global _open_bars
    if not _on:
        yield _NoBar()
        return
    from tqdm import tqdm
    shown = tqdm(total=total, initial=initial, desc=name, unit=unit, file=sys.stderr, leave=leave,
                 dynamic_ncols=True, mininterval=0.5, smoothing=0.1)
    previous = glog.set_console_writer(_write_above)
    _open_bars += 1
    try:
        yield shown
    finally:
        _open_bars -= 1
        glog.set_console_writer(previous)
        shown.close()


class SolverBar:
    """A solver's bar: iteration / max_iter, rate and ETA (tqdm), loss and kept share as postfix.

    The kept share counts the masks (npcaffe.masks), at most once a second: counting a
    LeNet-5's 431,080 entries every iteration would cost more than the bar is worth."""
    refresh_seconds = 1.0

    def __init__(self, shown, solver):
        self.shown, self.solver = shown, solver
        self.masked = None
        self.last_refresh = 0.0

    def __call__(self, solver):
        self.shown.update(1)
        now = time.monotonic()
        if now - self.last_refresh < self.refresh_seconds:
            return
        self.last_refresh = now
        parts = []
        loss = getattr(solver, "smoothed_loss", None)
        if loss is not None:
            parts.append(f"loss {glog.fmt(loss)}")
        kept = kept_share(solver.net, self)
        if kept is not None:
            parts.append(f"kept {100 * kept:.2f}%")
        self.shown.set_postfix_str(", ".join(parts), refresh=False)


def kept_share(net, cache):
    """Kept / total parameters of the net's masked layers (None without masks)."""
    from .masks import layer_kept, masked_layers
    if cache.masked is None:
        cache.masked = [layer for _, layer in masked_layers(net)]
    if not cache.masked:
        return None
    params = kept = 0
    for layer in cache.masked:
        count = layer_kept(layer)
        params += count.params
        kept += count.kept
    return kept / params if params else None


_reporter = None  # f(stage, iteration, total) while set: a worker telling its parent how far it is


def report_to(callback):
    """Send every solver's progress to callback(stage, iteration, max_iter), at most once a second
    and at the last iteration, whether or not bars are on (a worker process of the comparison tool
    feeds its parent's bar this way).  None stops it.  Returns the previous callback."""
    global _reporter
    previous, _reporter = _reporter, callback
    return previous


class _Report:
    """A solver listener passing (stage, iteration, total) to the reporter, throttled."""
    refresh_seconds = 1.0

    def __init__(self, callback, stage, total):
        self.callback, self.stage, self.total = callback, stage, total
        self.last = 0.0

    def __call__(self, solver):
        now = time.monotonic()
        if now - self.last >= self.refresh_seconds or solver.iter >= self.total:
            self.last = now
            self.callback(self.stage, solver.iter, self.total)


@contextlib.contextmanager
def solver_bar(solver, total, default_stage="train"):
    """While training: a bar fed by the solver's iteration_listeners (and the reporter, if set)."""
    listeners = []
    if _reporter is not None:
        listeners.append(_Report(_reporter, current_stage(default_stage), total))
    with contextlib.ExitStack() as stack:
        if _on:
            shown = stack.enter_context(bar(current_stage(default_stage), total, initial=solver.iter))
            listeners.append(SolverBar(shown, solver))
        solver.iteration_listeners.extend(listeners)
        try:
            yield
        finally:
            for listener in listeners:
                solver.iteration_listeners.remove(listener)
