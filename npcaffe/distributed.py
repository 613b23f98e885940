"""Data-parallel training over MPI, with Caffe 1.0's multi-GPU semantics (mpi4py).

    mpirun -n N npcaffe train --solver S ...

Every rank builds the same solver and trains the same model on its share of
the data; after each backward pass the ranks' gradients are summed and
scaled by 1/N, and every rank applies the same update to the same weights.
A Solver built in a process that an MPI launcher started as one of N > 1
ranks joins the group by itself (`join`, from Solver.__init__), so pycaffe
style scripts run under `mpirun -n N python script.py` unchanged.

What BVLC Caffe 1.0 does with several solvers (src/caffe/parallel.cpp's NCCL,
layers/data_layer.cpp, solver.cpp, tools/caffe.cpp), and we with ranks:

- Data: DataLayer::Skip keeps the record whose position modulo
  solver_count is solver_rank, in TRAIN only (only rank 0 tests).  Our Data
  and HDF5Data layers of the train net do the same (layerlib/data.py,
  `_shard_skips`), counting positions from each batch's start, the same on
  every rank: the N ranks together read, batch after batch, the records one
  process with an N times larger batch_size reads, and all end each batch
  at the position that process would, so a snapshot's read position is
  valid for any N.  Other data layers in a train net read the same records
  on every rank (a warning says so).
- Start: rank 0's weights are broadcast (NCCL::Broadcast) before the first
  iteration; we also broadcast every parameter blob (masks, BatchNorm
  statistics) and the solver's history, and do it again after a restore.
- Gradients: NCCL::on_gradients_ready sums the raw diffs of all learnable
  parameters over the ranks (we leave out masks, whose diffs are always 0:
  `reduced_params`) and multiplies them by (float) 1/N, before
  ApplyUpdate, so clipping, iter_size normalisation, weight decay and
  momentum act on the averaged gradient.  Each rank's loss layer normalises
  by its own batch (SoftmaxWithLoss VALID or BATCH_SIZE without ignored
  labels: the batch size), so the result is the gradient of one process
  with an N times larger batch, up to rounding.  (With ignore_label the
  per-rank normalisers differ and the two are not the same; Caffe has the
  same property.)
- Deterministic reduction: the sum is ours, not MPI_Allreduce's (whose
  order the MPI standard only recommends be fixed).  The flat gradient is
  cut into N slices; MPI_Alltoallv hands slice k of every rank to rank k,
  which adds them in rank order, ((g_0 + g_1) + g_2) + ..., in float32, and
  scales by (float) 1/N; MPI_Allgatherv returns the slices to all.  MPI
  moves bytes only, so two runs with the same N give identical bits, and
  each rank sends and receives (N-1)/N of the gradient twice, as a ring
  allreduce does.
- Loss: Caffe's rank 0 displays its own loss; ours displays the mean over
  the ranks (the loss and the train net's outputs ride along in the
  reduction), which is the loss of the N times larger batch.  Solve's forward-only
  pass after the last iteration runs on rank 0 alone, on its own batch, as in Caffe.
- Rank 0 alone logs (INFO lines; warnings and errors print on every rank),
  tests and snapshots; a SIGINT / SIGHUP action is rank 0's, broadcast, so
  every rank stops or goes on at the same iteration.
- Random numbers: Caffe seeds each solver with random_seed + rank; rank r
  here draws from rank 0's stream jumped r times (numpy's
  BitGenerator.jumped).  As every rank draws as many numbers per iteration,
  rank r's stream is rank 0's jumped r times at every iteration, so a
  resumed run restores it from rank 0's snapshot (`after_rng_restore`).
- DNS: the fork's glibc rand() gate draws the same sequence on every rank
  (the same seed, one draw per C-layer per forward), and the statistics and
  masks are computed from identical weights, so the masks stay identical.
  `check` compares checksums of every layer's trained parameters and masks
  across the ranks every check_interval iterations (and at the last), and
  stops all ranks with the iteration and the layer if they differ.

Without mpi4py, or outside an MPI launch, nothing here is imported by the
single-process path; a launch by mpirun without mpi4py is an error that says
what to install.
"""
import os
import sys
import zlib

import numpy as np

from . import glog, progress, rng
from .errors import DistributedError

f32 = np.float32

# Variables MPI launchers set in each process they start: MPICH's and Intel MPI's hydra
# (PMI_*), Open MPI (OMPI_COMM_WORLD_*), PMIx launchers such as srun --mpi=pmix, MVAPICH2.
RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "MV2_COMM_WORLD_RANK")
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
DEFAULT_CHECK_INTERVAL = 100
INSTALL_HINT = ("pip install 'npcaffe[mpi]' (mpi4py and the MPICH runtime from PyPI; on a cluster with its own "
                "MPI, install mpi4py built against it instead)")

_world = None       # the World once MPI is up in a multi-rank launch
_world_known = False


class World:
    """This process's place in a multi-rank MPI launch: comm (mpi4py's COMM_WORLD), rank, size."""

    def __init__(self, comm):
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()


def launch_variables():
    """{name: value} of the MPI launcher variables in this process's environment."""
    return {name: os.environ[name] for name in RANK_VARIABLES + SIZE_VARIABLES if name in os.environ}


def launched_size():
    """The number of ranks the launcher says it started (None when it does not say, or no launcher)."""
    for name in SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return None


def launched():
    """Whether an MPI launcher started this process with more than one rank (or without saying how many)."""
    if not any(name in os.environ for name in RANK_VARIABLES):
        return False
    size = launched_size()
    return size is None or size > 1


def _describe_launch():
    return ", ".join(f"{name}={value}" for name, value in sorted(launch_variables().items()))


def _import_mpi():
    try:
        from mpi4py import MPI
    except ImportError:
        raise DistributedError(f"this process was started by an MPI launcher ({_describe_launch()}) to train with "
                               f"other ranks, but mpi4py is not installed, so the ranks cannot exchange gradients: "
                               f"{INSTALL_HINT}; or run npcaffe without mpirun") from None
    except RuntimeError as e:  # mpi4py present, no MPI library for it to load
        raise DistributedError(f"mpi4py cannot load an MPI library ({e}): {INSTALL_HINT}") from None
    return MPI


def world():
    """The World of a multi-rank MPI launch, else None (no launcher, or `mpirun -n 1`).

    The first call starts MPI (importing mpi4py); on ranks above 0 it turns INFO log lines and
    progress bars off, since rank 0 alone logs, and makes an uncaught exception end every rank
    (MPI_Abort) rather than leave the others waiting in the next reduction."""
    global _world, _world_known
    if _world_known:
        return _world
    if not launched():
        _world_known = True
        return None
    MPI = _import_mpi()
    comm = MPI.COMM_WORLD
    said = launched_size()
    if said is not None and comm.Get_size() != said:
        raise DistributedError(f"the launcher started {said} ranks ({_describe_launch()}), but mpi4py's MPI "
                               f"({MPI.Get_library_version().splitlines()[0].strip()}) sees a world of "
                               f"{comm.Get_size()}: the mpirun / mpiexec used belongs to another MPI; use the one "
                               f"installed with mpi4py's library (with the mpich wheel: the mpiexec beside this "
                               f"Python, {os.path.join(os.path.dirname(sys.executable), 'mpiexec')})")
    _world_known = True
    if comm.Get_size() == 1:
        return None
    _world = World(comm)
    if _world.rank > 0:
        glog.set_quiet(True)
        progress.configure(False)
    _abort_on_uncaught_exception(_world)
    return _world


def solver_count():
    """The number of ranks training together (Caffe::solver_count): 1 outside a multi-rank launch."""
    w = world()
    return w.size if w else 1


def solver_rank():
    """This process's rank (Caffe::solver_rank): 0 outside a multi-rank launch."""
    w = world()
    return w.rank if w else 0


def rank_label():
    """' (rank r of n)' for messages of a multi-rank run, else ''."""
    w = _world
    return f" (rank {w.rank} of {w.size})" if w else ""


def _abort_on_uncaught_exception(w):
    previous = sys.excepthook

    def hook(kind, value, traceback):
        previous(kind, value, traceback)
        abort(1)

    sys.excepthook = hook


def abort(code=1):
    """End every rank (MPI_Abort) after this one failed, in a multi-rank run; else do nothing.
    Without it the other ranks would wait for this one forever in the next collective call."""
    if _world is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        _world.comm.Abort(code)


def check_command(command, allowed=("train",)):
    """Before a command runs: raise DistributedError if it was started by an MPI launcher with
    several ranks and is not one that trains data-parallel, or if mpi4py is missing."""
    size = launched_size()
    if launched() and command not in allowed:
        ranks = f"{size} ranks" if size else "several ranks"
        raise DistributedError(f"npcaffe {command} runs in one process, but an MPI launcher started {ranks} "
                               f"({_describe_launch()}); under mpirun only `npcaffe train` runs (data-parallel); "
                               f"run npcaffe {command} without mpirun")
    return world()


# -- the data-parallel solver ----------------------------------------------------------
def join(solver, check_interval=DEFAULT_CHECK_INTERVAL):
    """Make solver one of the ranks of this MPI launch (DataParallel), or return None when the
    process is not a rank of a multi-rank launch.  Solver.__init__ calls it."""
    w = world()
    if w is None:
        return None
    return DataParallel(solver, w, check_interval)


def detach(solver):
    """Take solver out of data-parallel training: from now on it trains alone on its own data
    (every rank reads every record), with nothing exchanged.  Call it on every rank."""
    parallel = solver.data_parallel
    if parallel is None:
        return
    solver.callbacks = [c for c in solver.callbacks if c[0] != parallel.on_start]
    for layer in solver.net.layers:
        if getattr(layer, "splits_records", False):
            layer.shard = (0, 1)
    solver.data_parallel = None


def _nothing():
    pass


class DataParallel:
    """One rank's side of data-parallel training (Caffe's NCCL solver callback, over MPI).

    The solver calls `on_start` before each iteration's forward (a broadcast from rank 0 when
    the ranks are not known to be in step), `reduce(loss)` when the gradients are ready, before
    the loss is displayed and the update applied, `agree(action)` for SIGINT / SIGHUP actions and
    `after_rng_restore` when a snapshot set the random stream.  The update (fused or not,
    npcaffe.solvers.sgd) runs after `reduce` returns, on the averaged gradients.
    """

    def __init__(self, solver, world, check_interval=DEFAULT_CHECK_INTERVAL):
        self.solver = solver
        self.comm = world.comm
        self.rank, self.size = world.rank, world.size
        self.check_interval = check_interval
        self.in_step_at = None  # the iteration at which every rank is known to hold rank 0's state
        self._buffer = None
        self._separate_random_stream()
        self._share_data()
        solver.add_callback(self.on_start, _nothing)
        glog.info(f"Data-parallel training over MPI: {self.size} ranks, rank r reading the records at positions "
                  f"r modulo {self.size}; gradients summed in rank order and scaled by 1/{self.size}; rank 0 logs, "
                  "tests and snapshots")

    # -- setup -------------------------------------------------------------------------
    def _separate_random_stream(self):
        if self.rank > 0:
            rng.set_state(jumped_state(rng.get_state(), self.rank))

    def after_rng_restore(self):
        """A snapshot's sidecar has set the random stream to rank 0's: move rank r to its own."""
        self._separate_random_stream()

    def _share_data(self):
        net = self.solver.net
        say = glog.warning if self.rank == 0 else (lambda message: None)  # the same on every rank
        for name, layer in zip(net.layer_names, net.layers):
            if getattr(layer, "splits_records", False):
                layer.shard = (self.rank, self.size)
                if getattr(layer, "shuffle", False):
                    say(f"layer '{name}' ({layer.type}) reshuffles after each pass with each rank's own random "
                        "stream, so from the second pass on the ranks' shares overlap; shuffle the records once "
                        "beforehand instead")
            elif layer.type in ("MemoryData", "ImageData", "WindowData", "Python") and not layer.layer_param.bottom:
                say(f"layer '{name}' ({layer.type}) does not split its records between the {self.size} ranks "
                    "(only Data and HDF5Data layers do, as in Caffe 1.0): every rank reads the same batches unless "
                    "the layer itself uses npcaffe.distributed.solver_rank()")

    # -- the solver's hooks -------------------------------------------------------------
    def on_start(self):
        """Before an iteration: broadcast rank 0's state unless the ranks are in step since the last
        reduction (the first iteration, after a restore)."""
        if self.in_step_at != self.solver.iter:
            self.broadcast()

    def broadcast(self):
        """Every rank takes rank 0's parameters (all blobs of the train net) and solver history
        (NCCL::Broadcast, which sends the learnable parameters)."""
        solver = self.solver
        positions = self.comm.allgather((solver.iter, solver.current_step))
        if len(set(positions)) != 1:
            raise DistributedError(f"{solver.where}: the ranks are at different iterations (iter, current_step "
                                   f"by rank: {positions}); resume every rank from the same snapshot")
        net = solver.net
        for net_param_id, blob in enumerate(net.params_list):
            if net.param_owners[net_param_id] == -1:  # a shared parameter is its owner's storage
                self.comm.Bcast(blob.flat_data, root=0)
        for history in solver.state_arrays():
            self.comm.Bcast(history, root=0)
        self.in_step_at = solver.iter

    def reduce(self, loss):
        """The ranks' gradients summed in rank order and multiplied by (float) 1/N, into every
        rank's diffs; the loss and the train net's outputs averaged the same way.  Returns the
        averaged loss.  Every check_interval iterations, and at the last, `check` first."""
        solver = self.solver
        if self.check_interval and (solver.iter % self.check_interval == 0 or solver.iter + 1 == solver.param.max_iter):
            self.check()
        net = solver.net
        params = reduced_params(net)
        outputs = [net.blobs[name] for name in net.outputs]
        n_grad = sum(b.count for b in params)
        size = n_grad + 1 + sum(b.count for b in outputs)
        if self._buffer is None or self._buffer.size != size:
            self._buffer = np.empty(size, f32)
        buffer = self._buffer
        offset = 0
        for blob in params:
            buffer[offset:offset + blob.count] = blob.flat_diff
            offset += blob.count
        buffer[offset] = loss
        offset += 1
        for blob in outputs:
            buffer[offset:offset + blob.count] = blob.flat_data
            offset += blob.count
        sum_in_rank_order(self.comm, buffer)
        offset = 0
        for blob in params:
            blob.flat_diff[...] = buffer[offset:offset + blob.count]
            offset += blob.count
        loss = f32(buffer[offset])
        offset += 1
        for blob in outputs:
            blob.flat_data[...] = buffer[offset:offset + blob.count]
            offset += blob.count
        self.in_step_at = solver.iter + 1  # after this iteration's update, the same on every rank
        return loss

    def agree(self, action):
        """Rank 0's SIGINT / SIGHUP action ('none', 'stop', 'snapshot'), the same on every rank."""
        return self.comm.bcast(action, root=0)

    # -- the divergence check -------------------------------------------------------------
    def check(self):
        """Compare every layer's trained parameters and masks across the ranks (CRC-32 checksums,
        gathered to all); raise DistributedError on every rank, naming the iteration, the layer and
        the ranks, if any differ."""
        net = self.solver.net
        names, sums = layer_checksums(net)
        gathered = self.comm.allgather(sums)
        for other_rank, other in enumerate(gathered):
            differing = np.flatnonzero(other != gathered[0])
            if differing.size:
                index = int(differing[0])
                what = "masks" if index % 2 else "weights"
                raise DistributedError(
                    f"{self.solver.where}: iteration {self.solver.iter}: the {what} of layer '{names[index // 2]}' "
                    f"differ between rank 0 and rank {other_rank} (CRC-32 {gathered[0][index]:08x} and "
                    f"{other[index]:08x}; {differing.size} of {len(names) * 2} checksums differ): the ranks no longer "
                    "train one model")


def reduced_params(net):
    """The learnable parameters whose gradients the ranks sum: all but masks (DNS, DNS-CP), whose
    diffs their layers never write and whose data the update never changes (Net.updates_param);
    leaving them out halves a DNS net's traffic."""
    return [blob for learnable_id, blob in enumerate(net.learnable_params) if net.updates_param(learnable_id)]


def layer_checksums(net):
    """(layer names, uint32 array of 2 CRC-32 per layer: the parameters the solver trains (lr_mult
    != 0: not BatchNorm's statistics, which each rank computes from its own batch), then the
    masks (npcaffe.masks), 0 where a layer has none)."""
    trained = {}
    for net_param_id, (layer_id, param_id) in enumerate(net.param_layer_indices):
        learnable_id = net.learnable_param_ids[net_param_id]
        if net.updates_param(learnable_id) and net.params_lr[learnable_id] != 0:
            trained.setdefault(layer_id, []).append(net.layers[layer_id].blobs[param_id])
    sums = np.zeros(2 * len(net.layers), np.uint32)
    for layer_id, layer in enumerate(net.layers):
        crc = 0
        for blob in trained.get(layer_id, ()):
            crc = zlib.crc32(np.ascontiguousarray(blob.flat_data), crc)
        sums[2 * layer_id] = crc
        mask_blobs = layer.mask_blobs()
        if mask_blobs is not None:
            crc = 0
            for blob in mask_blobs:
                if blob is not None:
                    crc = zlib.crc32(np.ascontiguousarray(blob.flat_data), crc)
            sums[2 * layer_id + 1] = crc
    return list(net.layer_names), sums


# -- arithmetic ----------------------------------------------------------------------------
def slices(length, size):
    """(counts, displacements) cutting `length` values into `size` contiguous slices, the
    first ones no longer than the last."""
    bounds = [length * k // size for k in range(size + 1)]
    counts = [bounds[k + 1] - bounds[k] for k in range(size)]
    return counts, bounds[:-1]


def sum_slices(received, scale):
    """received: (N, n) float32, row j from rank j; their sum in rank order, in float32,
    multiplied by scale (a float32) as Caffe's caffe_gpu_scal."""
    total = received[0].copy()
    for row in received[1:]:
        total += row
    total *= scale
    return total


def sum_in_rank_order(comm, buffer):
    """buffer (float32, the same length on every rank) <- (sum over ranks, in rank order) * (float) 1/N,
    the same bits on every rank and in every run with the same N (see the module docstring)."""
    from mpi4py import MPI
    size, rank = comm.Get_size(), comm.Get_rank()
    counts, displacements = slices(buffer.size, size)
    mine = counts[rank]
    received = np.empty((size, mine), f32)
    comm.Alltoallv([buffer, (counts, displacements), MPI.FLOAT],
                   [received, ([mine] * size, [j * mine for j in range(size)]), MPI.FLOAT])
    total = sum_slices(received, f32(1.0 / size))
    comm.Allgatherv([total, MPI.FLOAT], [buffer, (counts, displacements), MPI.FLOAT])


def jumped_state(state, jumps):
    """A numpy BitGenerator state advanced as `BitGenerator.jumped(jumps)` does (a stream apart
    from the original's), keeping its buffered 32-bit half."""
    generator = getattr(np.random, state["bit_generator"])()
    generator.state = state
    result = generator.jumped(jumps).state
    for key in ("has_uint32", "uinteger"):
        if key in state:
            result[key] = state[key]
    return result
