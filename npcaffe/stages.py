"""A run of training stages that stops on a signal and resumes bit for bit (`npcaffe surgery ... --resume`).

A pipeline (the surgery recipes: dense reference -> surgery -> fine-tuning)
runs each stage's solver through `RunState.stage`.  The run directory's
run.json records the run's settings and, per stage, whether it finished and
its latest snapshot.  When a solver stops early (SIGINT / SIGTERM through
the CLI's signal_actions, Caffe's "stop": finish the iteration, snapshot),
the stage's snapshot is recorded and `RunStopped` says how to resume.  On
--resume every finished stage is skipped (its snapshot stands for it), the
stopped stage's solver is built as a fresh run builds it and then restored
from its snapshot, whose npcaffe sidecar (random streams, glibc rand(), the
DNS layers' statistics, data positions) makes the rest of the run equal an
uninterrupted one bit for bit.  A run killed outright (no record of the
stop) resumes from the newest snapshot of the stage's prefix on disk.
"""
import glob
import json
import os
import re

import numpy as np

from . import glog, progress
from .errors import NpcaffeError
from .fileio.atomic import atomic_write
from .fileio.solverstate import sidecar_path


class RunStopped(Exception):
    """A stage stopped early on request; the message says where and how to resume, .solver is the
    stopped solver (at its snapshot)."""

    def __init__(self, message, solver=None):
        super().__init__(message)
        self.solver = solver


class RunState:
    """run.json of a run directory: settings and stage records; `stage` runs one stage."""

    def __init__(self, workdir, settings, resume=False, resume_command=None, strict=False):
        """settings: what defines the run; on resume each one given (not None; with strict, every one)
        must equal the recorded value."""
        self.path = os.path.join(workdir, "run.json")
        self.resume_command = resume_command
        self.resuming = resume
        settings = json.loads(json.dumps(settings))  # as run.json will hold them (tuples as lists)
        if not resume:
            self.state = {"settings": settings, "stages": {}}
            self._save()
            return
        if not os.path.isfile(self.path):
            raise NpcaffeError(f"--resume: no run to resume in {workdir} ({os.path.basename(self.path)} is missing); "
                               "start it without --resume")
        with open(self.path) as f:
            self.state = json.load(f)
        recorded = self.state["settings"]
        differing = [f"{key}: {value!r} (the stopped run had {recorded.get(key)!r})"
                     for key, value in settings.items() if (value is not None or strict) and recorded.get(key) != value]
        if differing:
            raise NpcaffeError("--resume continues the stopped run with its own settings; these differ: "
                               + "; ".join(differing) + (". Give the stopped run's command again with --resume"
                                                         if strict else ". Leave them out")
                               + ", or start a new run without --resume")

    @property
    def settings(self):
        return self.state["settings"]

    def set_setting(self, key, value):
        self.state["settings"][key] = value
        self._save()

    def done(self, name):
        return self.state["stages"].get(name, {}).get("done", False)

    def snapshot(self, name):
        return self.state["stages"].get(name, {}).get("snapshot")

    def _save(self):
        atomic_write(self.path, (json.dumps(self.state, indent=2) + "\n").encode())

    def _record(self, name, solver, done):
        state = solver.snapshot_filename(".solverstate")
        record = {"done": done, "snapshot": state, "iter": solver.iter, "max_iter": solver.param.max_iter}
        tested_at, results = solver.last_test.get(0, (None, None))
        if tested_at == solver.iter:
            # The test solve() ran after its snapshot (and after a display forward that moved the random
            # streams): kept, so a resumed run reports it instead of testing a restored net again.
            record["test"] = [[output, float(value)] for output, value in results]
        self.state["stages"][name] = record
        self._save()

    def stage(self, name, build, solve_wrapper=None):
        """Run stage `name`: build() -> a solver set up as a fresh run sets it up (weights copied or a
        previous stage restored); restored from the stage's snapshot when resuming; trained to
        max_iter under solve_wrapper (the CLI's signal handling) with a bar named after the stage.
        Returns the solver.  RunStopped when it stopped early (its snapshot recorded first)."""
        solver = build()
        snapshot = self.snapshot(name) or (_newest_snapshot(solver) if self.resuming else None)
        if snapshot:
            glog.info(f"Resuming stage '{name}' from {snapshot}")
            solver.restore(snapshot)
        if self.done(name):
            glog.info(f"Stage '{name}' finished before (iteration {solver.iter}); going on from its snapshot")
            test = self.state["stages"][name].get("test")
            if test is not None:
                solver.last_test[0] = (solver.iter, [(output, np.float32(value)) for output, value in test])
            return solver
        self.state["stages"][name] = {"done": False, "snapshot": snapshot}
        self._save()
        glog.info(f"Stage '{name}': iterations {solver.iter} to {solver.param.max_iter}")
        with progress.stage(name):
            if solve_wrapper is None:
                solver.solve()
            else:
                with solve_wrapper(solver):
                    solver.solve()
        self._record(name, solver, done=not solver.requested_early_exit)
        if solver.requested_early_exit:
            raise RunStopped(f"stopped in stage '{name}' at iteration {solver.iter} of {solver.param.max_iter}; "
                             f"snapshot {self.snapshot(name)}; to go on: {self.resume_command}", solver)
        return solver


def _newest_snapshot(solver):
    """The newest <prefix>_iter_N.solverstate (with its npcaffe sidecar) beyond the solver's
    iteration, or None: where a run killed without a word left off."""
    prefix = solver.param.snapshot_prefix
    best, best_iter = None, solver.iter
    for path in glob.glob(glob.escape(prefix) + "_iter_*.solverstate"):
        match = re.search(r"_iter_(\d+)\.solverstate$", path)
        if match and int(match.group(1)) > best_iter and os.path.isfile(sidecar_path(path)) \
                and int(match.group(1)) <= solver.param.max_iter:
            best, best_iter = path, int(match.group(1))
    return best
