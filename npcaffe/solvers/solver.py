"""Solver: the training loop around one train net and its test nets (Caffe's solver.cpp).

The subclass (npcaffe.solvers.sgd) supplies the update rule: pre_solve,
apply_update, and the history it snapshots.  This module owns what every
solver shares: reading and checking the SolverParameter, building the nets,
Step / Solve / Test, the loss display and snapshots / restore.

Upstream behaviour mirrored on purpose:
- Step follows the DNS fork (older Caffe): the display line is
  `Iteration N, loss = X` (Caffe 1.0 adds an iter/s figure), the layers
  are told the iteration (`net.set_iter`) before each step's forwards, and
  the losses kept for average_loss are reset at every call of step().
- Solve's final forward-only pass prints the raw loss (the fork; 1.0 folds
  it into the smoothed loss) and does not call set_iter, so the layers
  still see max_iter - 1.
- Caffe 1.0 rules: a missing snapshot_prefix becomes the solver file's
  path without extension, a directory prefix becomes <dir>/<solver stem>;
  `weights` (comma-separated lists) load into the train and test nets;
  apply_update() increments iter (pycaffe's apply_update); SIGINT/SIGHUP
  style requests (request_action) stop or snapshot after an iteration.
- Losses and scores are float32 arithmetic, as Caffe's Dtype.
"""
import contextlib
import os

import numpy as np

from .. import distributed, glog, progress, rng
from ..errors import NetError, NonFiniteError, SolverError
from ..fileio import solverstate as ss
from ..fileio.caffemodel import write_caffemodel
from ..fileio.prototxt import read_net, read_solver, to_text
from ..fileio.upgrade import upgrade_solver
from ..finite import first_non_finite_param, first_non_finite_top
from .hyperparams import check_hyperparameters
from ..proto import caffe_pb2

f32 = np.float32
_SOLVERS = {}


def register_solver(type_name):
    """Class decorator: make a solver class constructible by its SolverParameter `type`."""
    def wrap(cls):
        _SOLVERS[type_name] = cls
        cls.type = type_name
        return cls
    return wrap


def solver_type_list():
    return sorted(_SOLVERS)


def solver_class(type_name, where="<solver>"):
    cls = _SOLVERS.get(type_name)
    if cls is None:
        raise SolverError(f"{where}: field 'type': unknown solver type '{type_name}' "
                          f"(known: {', '.join(solver_type_list())})")
    return cls


def load_solver_param(source):
    """(SolverParameter, where) from a solver .prototxt path or a SolverParameter.

    Files get Caffe 1.0's ReadSolverParamsFromTextFileOrDie upgrades:
    solver_type -> type, and the snapshot_prefix rule.
    """
    if isinstance(source, caffe_pb2.SolverParameter):
        param = caffe_pb2.SolverParameter()
        param.CopyFrom(source)
        return upgrade_solver(param, "<SolverParameter>"), "<SolverParameter>"
    path = os.fspath(source)
    param = read_solver(path)
    if not param.HasField("snapshot_prefix"):
        param.snapshot_prefix = os.path.splitext(path)[0]
        glog.info(f"snapshot_prefix was not specified and is set to {param.snapshot_prefix}")
    elif os.path.isdir(param.snapshot_prefix):
        stem = os.path.splitext(os.path.basename(path))[0]
        param.snapshot_prefix = os.path.join(param.snapshot_prefix, stem)
        glog.info(f"snapshot_prefix was a directory and is replaced to {param.snapshot_prefix}")
    return param, path


def make_snapshot_directory(param, where="<solver>"):
    """Create the directory of param.snapshot_prefix if the solver will snapshot there and it is missing
    (`npcaffe train` does, as a user expects; Caffe fails at the first snapshot, the library's
    check_solver_param before training).  Returns the directory created, else None."""
    if not (param.snapshot > 0 or param.snapshot_after_train) or not param.snapshot_prefix:
        return None
    directory = os.path.dirname(param.snapshot_prefix)
    if not directory or os.path.isdir(directory):
        return None
    try:
        os.makedirs(directory)
    except OSError as e:
        raise SolverError(f"{where}: field 'snapshot_prefix': cannot create the snapshot directory '{directory}' "
                          f"(for snapshot_prefix '{param.snapshot_prefix}'): {e.strerror or e}") from None
    glog.info(f"Created the snapshot directory {directory} (snapshot_prefix: {param.snapshot_prefix})")
    return directory


def check_solver_param(param, where):
    """Raise SolverError for a SolverParameter Caffe would reject (before any net is built)."""
    from .lr_policy import check_lr_policy

    def fail(field, message):
        raise SolverError(f"{where}: field '{field}': {message}")

    train_fields = [f for f in ("net", "net_param", "train_net", "train_net_param") if param.HasField(f)]
    if not train_fields:
        raise SolverError(f"{where}: no train net given; set one of the fields net, net_param, train_net, "
                          "train_net_param")
    if len(train_fields) > 1:
        raise SolverError(f"{where}: more than one train net given ({', '.join(train_fields)}); keep one")
    generic = param.HasField("net") or param.HasField("net_param")
    n_test = len(param.test_net) + len(param.test_net_param)
    n_iter = len(param.test_iter)
    if generic and n_iter < n_test:
        fail("test_iter", f"{n_iter} value(s) for {n_test} test net(s) (test_net/test_net_param); "
                          "give test_iter once per test net")
    if not generic and n_iter != n_test:
        if n_test == 0:
            fail("test_iter", f"{n_iter} value(s) given but there is no test net (train_net has no TEST "
                              "phase twin: add test_net, or use net: to test the same file)")
        fail("test_iter", f"{n_iter} value(s) for {n_test} test net(s); give test_iter once per test net")
    instances = max(n_iter, n_test) if generic else n_test
    if len(param.test_state) and len(param.test_state) != instances:
        fail("test_state", f"{len(param.test_state)} given for {instances} test net(s); "
                           "give it once per test net or not at all")
    if instances and param.test_interval <= 0:
        # Caffe accepts this and simply never tests while training; say so, it is rarely meant.
        glog.warning(f"{where}: test_iter is given but test_interval is {param.test_interval}, so the test "
                     "net(s) run only when asked (solver.test()); set test_interval to test while training")
    for i, n in enumerate(param.test_iter):
        if n <= 0:
            fail("test_iter", f"value #{i} must be > 0, got {n}")
    if param.average_loss < 1:
        fail("average_loss", f"must be >= 1, got {param.average_loss}")
    if param.iter_size < 1:
        fail("iter_size", f"must be >= 1, got {param.iter_size}")
    if param.display < 0:
        fail("display", f"must be >= 0, got {param.display}")
    if param.snapshot < 0:
        fail("snapshot", f"must be >= 0, got {param.snapshot}")
    if param.weight_decay and param.regularization_type not in ("L1", "L2"):
        fail("regularization_type", f"unknown regularization type '{param.regularization_type}' (L1 or L2)")
    check_lr_policy(param, where)
    if param.snapshot > 0:
        if not param.HasField("snapshot_prefix"):
            fail("snapshot_prefix", "snapshot is specified but snapshot_prefix is not")
        directory = os.path.dirname(param.snapshot_prefix) or "."
        if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
            fail("snapshot_prefix", f"cannot write to snapshot prefix '{param.snapshot_prefix}'; make sure "
                                    f"the directory '{directory}' exists and is writable")
    snapshots = param.snapshot > 0 or param.snapshot_after_train
    if snapshots and param.snapshot_format == caffe_pb2.SolverParameter.HDF5:
        try:
            import h5py  # noqa: F401
        except ImportError:
            fail("snapshot_format", "HDF5 snapshots need the h5py package (pip install h5py); "
                                    "or use snapshot_format: BINARYPROTO")


class Solver:
    """Base of the solvers.  Construct with a solver .prototxt path or a SolverParameter.

    pycaffe face: net, test_nets, iter, param, step(n), solve(resume_file=None),
    snapshot(), restore(path), apply_update(), add_callback(on_start, on_gradients_ready).
    """
    type = None
    data_parallel = None  # npcaffe.distributed.DataParallel of a rank of an MPI launch

    def __init__(self, source, *, where=None):
        # get_solver passes a SolverParameter it already loaded, with the file it came from.
        param, where = (source, where) if where is not None else load_solver_param(source)
        self.where = where
        check_solver_param(param, where)
        check_hyperparameters(param, where, self.type)
        self.check_param(param, where)
        _say_cpu_once(param, where)
        distributed.world()  # under mpirun: MPI started, and ranks above 0 quiet before the nets are built
        glog.detail("Initializing solver from parameters: \n" + to_text(param))
        self.param = param
        if param.random_seed >= 0:
            rng.set_random_seed(param.random_seed)
        self.net = self._init_train_net()
        self.test_nets = self._init_test_nets()
        for models in param.weights:
            self.copy_weights(models)
        glog.info("Solver scaffolding done.")
        self.iter = 0
        self.current_step = 0
        self.callbacks = []
        self.action_function = None
        self.requested_early_exit = False
        self.last_snapshot = None  # the .solverstate of the latest complete snapshot this run wrote
        self.smoothed_loss = None
        self.iteration_listeners = []  # f(solver) after each iteration (npcaffe.progress's bar)
        self.last_test = {}  # test net id -> (iter, results) of its latest test
        self.batch_split = None  # a BatchSplit when each iteration runs on several threads (set_batch_split)
        self.pre_solve()
        # A rank of an `mpirun -n N` launch trains data-parallel with the others (npcaffe.distributed).
        self.data_parallel = distributed.join(self)

    def set_batch_split(self, parts):
        """Run each iteration's forward and backward on `parts` threads, the batch split between them
        (npcaffe.solvers.batch_split: gradients summed in a fixed order, so a run repeats to the bit,
        but not the unsplit run's bits); None or 1: unsplit, the default."""
        from .batch_split import BatchSplit
        if self.batch_split is not None:
            self.batch_split.close()
            self.batch_split = None
        if parts is not None and int(parts) > 1:
            self.batch_split = BatchSplit(self.net, parts)

    @property
    def root_solver(self):
        """Whether this solver tests, snapshots and logs: rank 0 of a data-parallel run, or alone
        (Caffe::root_solver)."""
        return self.data_parallel is None or self.data_parallel.rank == 0
    # -- hooks for the update rule ------------------------------------------------
    @classmethod
    def check_param(cls, param, where):
        """Solver-type specific checks (raise SolverError)."""

    def pre_solve(self):
        """Allocate the update rule's state (SGDSolver::PreSolve)."""

    def apply_update(self):
        raise NotImplementedError

    def state_arrays(self):
        """The arrays a .solverstate stores as `history`, in order."""
        return []

    # -- nets ------------------------------------------------------------------------
    def _read_net_file(self, field, path):
        if not os.path.exists(path):
            raise SolverError(f"{self.where}: field '{field}': net file '{path}' not found "
                              f"(relative paths are taken from the working directory, {os.getcwd()})")
        if not os.path.isfile(path):  # /dev/zero, a FIFO, a directory: read_net would name the path alone
            raise SolverError(f"{self.where}: field '{field}': '{path}' is not a regular file (a device, FIFO "
                              "or directory); give a net file")
        return read_net(path)

    def _build_net(self, net_param, state, source):
        from ..net import Net
        try:
            return Net(net_param, state.phase, level=state.level, stages=list(state.stage))
        except NetError as e:
            raise NetError(f"{source}: {e}") from None

    def _init_train_net(self):
        p = self.param
        if p.HasField("train_net_param"):
            glog.info("Creating training net specified in train_net_param.")
            net_param, source = p.train_net_param, f"{self.where} (train_net_param)"
        elif p.HasField("train_net"):
            glog.info(f"Creating training net from train_net file: {p.train_net}")
            net_param, source = self._read_net_file("train_net", p.train_net), p.train_net
        elif p.HasField("net_param"):
            glog.info("Creating training net specified in net_param.")
            net_param, source = p.net_param, f"{self.where} (net_param)"
        else:
            glog.info(f"Creating training net from net file: {p.net}")
            net_param, source = self._read_net_file("net", p.net), p.net
        # NetState precedence: solver default (TRAIN) < the net's own state < train_state.
        state = caffe_pb2.NetState(phase=caffe_pb2.TRAIN)
        state.MergeFrom(net_param.state)
        state.MergeFrom(p.train_state)
        return self._build_net(net_param, state, source)

    def _init_test_nets(self):
        p = self.param
        sources, params = [], []
        for net_param in p.test_net_param:
            sources.append("test_net_param")
            params.append(net_param)
        for path in p.test_net:
            sources.append(f"test_net file: {path}")
            params.append(self._read_net_file("test_net", path))
        remaining = len(p.test_iter) - len(params)
        if p.HasField("net_param"):
            for _ in range(remaining):
                sources.append("net_param")
                params.append(p.net_param)
        if p.HasField("net"):
            generic = self._read_net_file("net", p.net) if remaining > 0 else None
            for _ in range(remaining):
                sources.append(f"net file: {p.net}")
                params.append(generic)
        nets = []
        for i, (source, net_param) in enumerate(zip(sources, params)):
            state = caffe_pb2.NetState(phase=caffe_pb2.TEST)
            state.MergeFrom(net_param.state)
            if len(p.test_state):
                state.MergeFrom(p.test_state[i])
            glog.info(f"Creating test net (#{i}) specified by {source}")
            nets.append(self._build_net(net_param, state, source))
        return nets

    def copy_weights(self, models):
        """Load comma-separated .caffemodel files into the train and test nets (fine-tuning)."""
        for path in [m for m in models.split(",") if m]:
            glog.info(f"Finetuning from {path}")
            for net in [self.net] + self.test_nets:
                net.copy_from(path)  # .caffemodel or .caffemodel.h5

    # -- training --------------------------------------------------------------------
    def add_callback(self, on_start, on_gradients_ready):
        self.callbacks.append((on_start, on_gradients_ready))

    def request_action(self):
        """'none', 'stop' or 'snapshot', from action_function (Caffe's SignalHandler)."""
        action = self.action_function() if self.action_function else "none"
        return self.data_parallel.agree(action) if self.data_parallel is not None else action

    def step(self, iters):
        """Run `iters` training iterations (Solver::Step)."""
        p = self.param
        start_iter = self.iter
        stop_iter = self.iter + int(iters)
        average_loss = p.average_loss
        losses = []
        smoothed_loss = f32(0)
        while self.iter < stop_iter:
            self.net.clear_param_diffs(deferred=True)
            if p.test_interval and self.iter % p.test_interval == 0 and (self.iter > 0 or p.test_initialization) \
                    and self.root_solver:
                self.test_all()
                if self.requested_early_exit:
                    break
            for on_start, _ in self.callbacks:
                on_start()
            display = p.display and self.iter % p.display == 0
            self.net.debug_info = bool(display and p.debug_info)  # as Caffe 1.0: at display iterations
            self.net.set_iter(self.iter)
            loss = f32(0)
            # debug_info's per-layer lines come from the whole net, unsplit
            split = self.batch_split if not self.net.debug_info else None
            for _ in range(p.iter_size):
                loss += f32(split.forward_backward() if split else self.net.forward_backward())
                if not np.isfinite(loss):
                    self._diverged(f"the loss is {loss}",
                                   split.first_non_finite_top() if split else first_non_finite_top(self.net))
            loss /= f32(p.iter_size)
            if self.data_parallel is not None:  # the ranks' gradients summed x 1/N, their losses averaged
                loss = self.data_parallel.reduce(loss)
            bad_diff = first_non_finite_param(self.net, "diff", learnable_only=True)
            if bad_diff:
                self._diverged("a gradient is not finite", bad_diff)
            if len(losses) < average_loss:
                losses.append(loss)
                size = len(losses)
                smoothed_loss = (smoothed_loss * f32(size - 1) + loss) / f32(size)
            else:
                idx = (self.iter - start_iter) % average_loss
                smoothed_loss += (loss - losses[idx]) / f32(average_loss)
                losses[idx] = loss
            if display:
                glog.info(f"Iteration {self.iter}, loss = {glog.fmt(smoothed_loss)}")
                self._display_outputs(self.net, "Train")
            for _, on_gradients_ready in self.callbacks:
                on_gradients_ready()
            self.apply_update()
            self.smoothed_loss = smoothed_loss
            for listener in self.iteration_listeners:
                listener(self)
            request = self.request_action()
            if ((p.snapshot and self.iter % p.snapshot == 0) or request == "snapshot") and self.root_solver:
                self._snapshot_or_report()
            if request == "stop":
                self.requested_early_exit = True
                break

    def _diverged(self, what, where):
        """Stop training before a NaN / inf reaches the weights: the update is not applied and no
        snapshot is written, so the last one on disk is the last good state."""
        last = f"the last snapshot is {self.last_snapshot}" if self.last_snapshot else "no snapshot was written"
        raise NonFiniteError(f"{self.where}: training diverged at iteration {self.iter}: {what}; first non-finite: "
                             f"{where}; stopped before the update ({last}); lower base_lr or check the "
                             "data and weights (--debug_info prints every layer's values)")

    def _display_outputs(self, net, label):
        weights = net.blob_loss_weights
        index = 0
        for name in net.outputs:
            w = f32(weights[name])
            for v in net.blobs[name].flat_data:
                note = f" (* {glog.fmt(w)} = {glog.fmt(w * v)} loss)" if w else ""
                glog.info(f"    {label} net output #{index}: {name} = {glog.fmt(v)}{note}")
                index += 1

    def solve(self, resume_file=None):
        """Train to max_iter (Solver::Solve), optionally resuming from a .solverstate."""
        p = self.param
        glog.info(f"Solving {self.net.name}")
        glog.info(f"Learning Rate Policy: {p.lr_policy}")
        self.requested_early_exit = False
        if p.snapshot or p.snapshot_after_train:
            ss.check_snapshot_prefix(p.snapshot_prefix, self.where)
            ss.remove_stray_temporaries(p.snapshot_prefix)
        if resume_file:
            glog.info(f"Restoring previous solver status from {resume_file}")
            self.restore(resume_file)
        with progress.solver_bar(self, p.max_iter):
            self.step(p.max_iter - self.iter)
        if p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0) and self.root_solver:
            self._snapshot_or_report(final=True)
        if self.requested_early_exit:
            glog.info("Optimization stopped early.")
            return
        if not self.root_solver:  # as Caffe, the other ranks' Solve ends with the steps
            return
        if p.display and self.iter % p.display == 0:
            loss = self.net.forward_from_to()
            glog.info(f"Iteration {self.iter}, loss = {glog.fmt(loss)}")
        if p.test_interval and self.iter % p.test_interval == 0:
            self.test_all()
        glog.info("Optimization Done.")

    # -- testing ---------------------------------------------------------------------
    def test_all(self):
        for i in range(len(self.test_nets)):
            if self.requested_early_exit:
                break
            self.test(i)

    def test(self, test_net_id=0):
        """Run test_iter forwards of a test net and log the mean of every output (Solver::Test)."""
        p = self.param
        glog.info(f"Iteration {self.iter}, Testing net (#{test_net_id})")
        net = self.test_nets[test_net_id]
        net.share_with(self.net)
        n = p.test_iter[test_net_id]
        with progress.bar(f"{progress.current_stage('train')}: test #{test_net_id}", n, leave=False) as shown:
            scores, names, loss = self._test_batches(net, n, shown)
        if p.test_compute_loss:
            loss /= f32(n)
            glog.info(f"Test loss: {glog.fmt(loss)}")
        weights = net.blob_loss_weights
        results = []
        for i, (name, total) in enumerate(zip(names, scores if scores is not None else [])):
            mean = f32(total) / f32(n)
            w = f32(weights[name])
            note = f" (* {glog.fmt(w)} = {glog.fmt(w * mean)} loss)" if w else ""
            glog.info(f"    Test net output #{i}: {name} = {glog.fmt(mean)}{note}")
            results.append((name, mean))
        self.last_test[test_net_id] = (self.iter, results)
        return results

    def _test_batches(self, net, n, shown):
        """(summed outputs, their names, summed loss) of n forward passes, in float32 as Caffe."""
        scores, names = None, []
        loss = f32(0)
        for _ in range(n):
            iter_loss = f32(net.forward_from_to())
            if self.param.test_compute_loss:
                loss += iter_loss
            values = np.concatenate([net.blobs[name].flat_data for name in net.outputs]) if net.outputs \
                else np.zeros(0, np.float32)
            if scores is None:
                scores = values.astype(np.float32)
                names = [name for name in net.outputs for _ in range(net.blobs[name].count)]
            else:
                scores += values
            shown.update(1)
        return scores, names, loss

    # -- snapshots -------------------------------------------------------------------
    def snapshot_filename(self, extension):
        return ss.snapshot_filename(self.param.snapshot_prefix, self.iter, extension)

    def snapshot(self):
        """Write <prefix>_iter_<N>.caffemodel, the npcaffe sidecar, then the .solverstate.

        Each file is written atomically, and the .solverstate last: a .solverstate on disk
        always has its weights and its sidecar, so resuming from it repeats the uninterrupted
        run.  Should a write fail (a full disk, a directory turned read-only), the files this
        snapshot wrote are removed again, so no .caffemodel is left without its .solverstate,
        and the OSError is raised; the training state is untouched."""
        p = self.param
        hdf5 = p.snapshot_format == caffe_pb2.SolverParameter.HDF5
        model = self.snapshot_filename(".caffemodel.h5" if hdf5 else ".caffemodel")
        state_file = self.snapshot_filename(".solverstate.h5" if hdf5 else ".solverstate")
        written = []
        try:
            glog.info(f"Snapshotting to {'HDF5' if hdf5 else 'binary proto'} file {model}")
            written.append(model)
            if hdf5:
                self.net.save_hdf5(model, write_diff=p.snapshot_diff)
            else:
                write_caffemodel(self.net.to_proto(write_diff=p.snapshot_diff), model)
            written.append(ss.sidecar_path(state_file))
            ss.write_sidecar(state_file, self._npcaffe_state())
            glog.info(f"Snapshotting solver state to {'HDF5' if hdf5 else 'binary proto'} file {state_file}")
            state = ss.make_solverstate(self.iter, model, self.current_step, self.state_arrays())
            written.append(state_file)
            ss.write_solverstate(state, state_file)
        except BaseException:
            for path in written:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            raise
        self.last_snapshot = state_file
        return model, state_file

    def _snapshot_or_report(self, final=False):
        """snapshot(); a write that fails mid-run is reported in one line and training goes on
        (the next snapshot tries again); the final snapshot's failure is an error."""
        try:
            self.snapshot()
        except (OSError, RuntimeError) as e:  # h5py reports some write failures as RuntimeError
            where = getattr(e, "filename", None) or self.param.snapshot_prefix
            reason = getattr(e, "strerror", None) or e
            last = self.last_snapshot or "none"
            if final:
                raise SolverError(f"{where}: the final snapshot (iteration {self.iter}) could not be written: "
                                  f"{reason}; the latest snapshot on disk is {last}") from None
            glog.error(f"Snapshot at iteration {self.iter} failed ({where}: {reason}); training goes on and "
                       f"tries again at the next snapshot; the latest snapshot on disk is {last}")

    def _named_nets(self):
        return [("train", self.net)] + [(f"test/{i}", net) for i, net in enumerate(self.test_nets)]

    def _npcaffe_state(self):
        layers = {}
        for key, net in self._named_nets():
            states = {name: layer.get_state() for name, layer in zip(net.layer_names, net.layers)
                      if callable(getattr(layer, "get_state", None))}
            if states:
                layers[key] = states
        payload = {"iter": self.iter, "rng": rng.get_state(), "layers": layers}
        glibc = _glibc_rand()
        if glibc is not None and callable(getattr(glibc, "get_state", None)):
            payload["glibc_rand"] = glibc.get_state()
        return payload

    def restore(self, state_file, upstream_resume=False):
        """Resume from a .solverstate[.h5]: iter, current_step, history, learned_net weights, sidecar.

        With upstream_resume the sidecar is ignored and layers are put where a
        restarted upstream binary has them (npcaffe.layerlib.dns.upstream_resume:
        DNS statistics 0, glibc rand() from its default seed), to compare with
        an upstream run resumed from the same snapshot.

        All or nothing: the files are read and checked first (iter within [0, max_iter],
        current_step >= 0, the history's count and shapes against this solver's, the sidecar's
        iter), then applied; should the weights or a layer's state still not fit, the solver
        is put back as it was before the call (Caffe would abort half-restored).
        """
        state_file = os.fspath(state_file)
        state = ss.read_solverstate(state_file, [a.shape for a in self.state_arrays()])
        if not 0 <= state.iter <= self.param.max_iter:
            raise SolverError(f"{state_file}: iter {state.iter} is outside [0, max_iter = {self.param.max_iter}] "
                              "of this solver; a snapshot of another run, or raise max_iter (--iterations)")
        if state.current_step < 0:
            raise SolverError(f"{state_file}: current_step {state.current_step} is negative")
        arrays = ss.history_arrays(state, state_file)
        learned = None
        if state.HasField("learned_net") and state.learned_net:
            if "\0" in state.learned_net:
                raise SolverError(f"{state_file}: learned_net {state.learned_net!r} holds a NUL character")
            learned = ss.resolve_learned_net(state.learned_net, state_file)
        sidecar = None if upstream_resume else ss.read_sidecar(state_file)
        if sidecar is not None and sidecar.get("iter") != state.iter:
            raise SolverError(f"{ss.sidecar_path(state_file)}: written at iteration {sidecar.get('iter')}, the "
                              f"solver state at {state.iter}; not this snapshot's sidecar")
        saved = self._capture_state()
        try:
            self.iter = state.iter
            if learned is not None:
                self.net.copy_from(learned)  # .caffemodel or .caffemodel.h5
            self.current_step = state.current_step
            self.restore_state_arrays(arrays, state_file)
            if upstream_resume:
                from ..layerlib import dns
                glog.info("Resuming as upstream does: npcaffe sidecar ignored")
                for net in [self.net] + self.test_nets:
                    dns.upstream_resume(net)
            elif sidecar is None:
                glog.warning(f"{ss.sidecar_path(state_file)} not found (an upstream snapshot?): random streams "
                             "and layer state start afresh, so the run will not repeat an uninterrupted one bit "
                             "for bit")
            else:
                try:
                    self._restore_npcaffe_state(sidecar, state_file)
                except (KeyError, TypeError, ValueError, IndexError) as e:
                    raise SolverError(f"{ss.sidecar_path(state_file)}: malformed npcaffe sidecar "
                                      f"({type(e).__name__}: {e})") from None
        except BaseException:
            self._roll_back(saved)
            raise

    def _capture_state(self):
        """What restore may change: iter, current_step, history, every parameter's data and diff,
        the random streams and the layers' own state."""
        blobs = {id(b): b for net in [self.net] + self.test_nets for layer in net.layers for b in layer.blobs}
        glibc = _glibc_rand()
        return {"iter": self.iter, "current_step": self.current_step,
                "history": [a.copy() for a in self.state_arrays()],
                "blobs": [(b, b.data.copy(), b.diff.copy()) for b in blobs.values()],
                "rng": rng.get_state(),
                "glibc": glibc.get_state() if glibc is not None and hasattr(glibc, "get_state") else None,
                "layers": [(layer, layer.get_state()) for _, net in self._named_nets() for layer in net.layers
                           if callable(getattr(layer, "get_state", None))]}

    def _roll_back(self, saved):
        self.iter, self.current_step = saved["iter"], saved["current_step"]
        for target, array in zip(self.state_arrays(), saved["history"]):
            target[...] = array
        for blob, data, diff in saved["blobs"]:
            blob.data[...] = data
            blob.diff[...] = diff
        rng.set_state(saved["rng"])
        if saved["glibc"] is not None:
            _glibc_rand().set_state(saved["glibc"])
        for layer, state in saved["layers"]:
            layer.set_state(state)

    def restore_state_arrays(self, arrays, where):
        targets = self.state_arrays()
        if len(arrays) != len(targets):
            raise SolverError(f"{where}: {len(arrays)} history blobs in the file, but this {self.type} solver "
                              f"keeps {len(targets)} for this net; incorrect length of history blobs "
                              "(another net or solver type?)")
        glog.info(f"{type(self).__name__}: restoring history")
        for i, (target, array) in enumerate(zip(targets, arrays)):
            if array.size != target.size:
                raise SolverError(f"{where}: history blob {i} has {array.size} values {array.shape}, "
                                  f"the parameter has {target.size} {target.shape}")
            target[...] = array.reshape(target.shape)

    def _restore_npcaffe_state(self, sidecar, state_file):
        rng.set_state(sidecar["rng"])
        if self.data_parallel is not None:
            self.data_parallel.after_rng_restore()
        glibc = _glibc_rand()
        if "glibc_rand" in sidecar and glibc is not None and callable(getattr(glibc, "set_state", None)):
            glibc.set_state(sidecar["glibc_rand"])
        saved = sidecar.get("layers", {})
        for key, net in self._named_nets():
            states = saved.get(key, {})
            for name, layer in zip(net.layer_names, net.layers):
                if name in states and callable(getattr(layer, "set_state", None)):
                    layer.set_state(states[name])

    def trace_dns(self, path=None):
        """Record every DNS gate draw of the train net from now on (npcaffe.dnstrace.GateTrace)."""
        from ..dnstrace import trace_dns
        return trace_dns(self, path)

    def __repr__(self):
        return f"<npcaffe.{type(self).__name__} '{self.net.name}' iter {self.iter}>"


_cpu_said = False


def _say_cpu_once(param, where):
    """As caffe.cpp (1.0) in a CPU-only build, once per process: "Use CPU." when the solver leaves
    solver_mode at its default (GPU), and a warning only when the file asks for GPU itself (Caffe's
    CPU build would stop there: "Cannot use GPU in CPU-only Caffe"); npcaffe computes on the CPU."""
    global _cpu_said
    if _cpu_said:
        return
    _cpu_said = True
    if param.HasField("solver_mode") and param.solver_mode == caffe_pb2.SolverParameter.GPU:
        glog.warning(f"{where}: solver_mode: GPU; npcaffe computes on the CPU")
    else:
        glog.info("Use CPU.")


def _glibc_rand():
    try:
        from ..kernels import glibc_rand
    except ImportError:
        return None
    return glibc_rand
