"""Data-parallel training over MPI (npcaffe/distributed.py).

The pieces by hand (the slices, the rank-order sum, the Data layers' shares, the random streams,
the checksums, launches without mpi4py), then `mpirun -n 2` on LeNet-300-100 DNS against one
process with twice the batch, and a 1-rank resume of the 2-rank run's snapshot.  The MPI runs
need mpi4py and an mpiexec (the test extra brings both: mpi4py and the mpich wheel).
"""
import io
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from helpers import shared_path
from npcaffe import distributed, glog
from npcaffe.errors import DistributedError
from npcaffe.layerlib.data import _shard_skips

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
f32 = np.float32


# -- the arithmetic ------------------------------------------------------------------------
def test_slices_cut_the_buffer_into_contiguous_pieces():
    assert distributed.slices(10, 3) == ([3, 3, 4], [0, 3, 6])
    assert distributed.slices(1, 2) == ([0, 1], [0, 0])
    counts, starts = distributed.slices(431_080, 7)
    assert sum(counts) == 431_080 and starts[0] == 0
    assert all(s + c == n for s, c, n in zip(starts, counts, starts[1:] + [431_080]))


def test_sum_is_in_rank_order_in_float32_then_scaled():
    # (1e8 + 1) - 1e8 is 0 in float32, (1e8 - 1e8) + 1 is 1: the order shows in the result.
    received = np.array([[1e8, 3], [1, 5], [-1e8, 7]], f32)
    total = distributed.sum_slices(received, f32(1.0 / 3))
    assert total.dtype == f32
    assert total[0] == 0
    assert total[1] == f32(15) * f32(1.0 / 3)
    assert distributed.sum_slices(received[[0, 2, 1]], f32(1))[0] == 1
    assert received[0, 0] == f32(1e8)  # the input is left alone


def test_data_shares_together_are_one_process_with_the_larger_batch():
    # 2 ranks of batch 3 against one process of batch 6, over 10 records (wrapping mid-batch).
    single = _positions((0, 1), 6, batches=5, records=10)
    ranks = [_positions((r, 2), 3, batches=5, records=10) for r in range(2)]
    for k in range(5):
        assert ranks[0][k][0] == single[k][0][0::2]
        assert ranks[1][k][0] == single[k][0][1::2]
        assert ranks[0][k][1] == ranks[1][k][1] == single[k][1]  # every rank ends the batch where it would
    three = [_positions((r, 3), 2, batches=4, records=10) for r in range(3)]
    for k in range(4):
        merged = [three[r][k][0][i] for i in range(2) for r in range(3)]
        assert merged == single[k][0]


def _positions(shard, batch, batches, records):
    """[(record positions read, position after)] per batch, as Data.forward_cpu steps its reader."""
    position, out = 0, []
    for _ in range(batches):
        skips, read = _shard_skips(shard, batch), []
        for i in range(batch):
            position = (position + skips[i]) % records
            read.append(position)
            position = (position + 1) % records
        position = (position + skips[-1]) % records
        out.append((read, position))
    return out


def test_data_layer_reads_its_share(tmp_path, quiet_log):
    import lmdb
    from npcaffe import Net, TRAIN
    from npcaffe.io import array_to_datum
    env = lmdb.open(str(tmp_path / "db"), map_size=1 << 20)
    with env.begin(write=True) as txn:
        for i in range(10):
            txn.put(f"{i:08d}".encode(), array_to_datum(np.full((1, 2, 2), i, np.uint8), i).SerializeToString())
    env.close()

    def net(batch):
        path = tmp_path / f"net{batch}.prototxt"
        path.write_text(f'layer {{ name: "d" type: "Data" top: "data" top: "label" '
                        f'data_param {{ source: "{tmp_path / "db"}" batch_size: {batch} backend: LMDB }} }}')
        return Net(str(path), TRAIN)

    single, rank0, rank1 = net(6), net(3), net(3)
    rank0.layers[0].shard, rank1.layers[0].shard = (0, 2), (1, 2)
    for _ in range(4):
        single.forward()
        rank0.forward()
        rank1.forward()
        labels = single.blobs["label"].data
        np.testing.assert_array_equal(rank0.blobs["label"].data, labels[0::2])
        np.testing.assert_array_equal(rank1.blobs["label"].data, labels[1::2])
        np.testing.assert_array_equal(rank1.blobs["data"].data[:, 0, 0, 0], labels[1::2])
        assert rank0.layers[0].get_state() == rank1.layers[0].get_state() == single.layers[0].get_state()


def test_hdf5_data_layer_reads_its_share(tmp_path, quiet_log):
    h5py = pytest.importorskip("h5py")
    from npcaffe import Net, TRAIN
    with h5py.File(tmp_path / "rows.h5", "w") as f:
        f["data"] = np.arange(10, dtype=np.float32).reshape(10, 1)
    (tmp_path / "list.txt").write_text(f"{tmp_path / 'rows.h5'}\n")

    def net(batch):
        path = tmp_path / f"net{batch}.prototxt"
        path.write_text(f'layer {{ name: "d" type: "HDF5Data" top: "data" '
                        f'hdf5_data_param {{ source: "{tmp_path / "list.txt"}" batch_size: {batch} }} }}')
        return Net(str(path), TRAIN)

    single, rank0, rank1 = net(6), net(3), net(3)
    rank0.layers[0].shard, rank1.layers[0].shard = (0, 2), (1, 2)
    for _ in range(4):
        for n in (single, rank0, rank1):
            n.forward()
        rows = single.blobs["data"].data[:, 0]
        np.testing.assert_array_equal(rank0.blobs["data"].data[:, 0], rows[0::2])
        np.testing.assert_array_equal(rank1.blobs["data"].data[:, 0], rows[1::2])


def test_rank_streams_are_rank_0_s_jumped_at_every_iteration():
    # Drawing then jumping equals jumping then drawing: a resumed rank r finds its stream again.
    base = np.random.default_rng(5)
    rank1 = np.random.Generator(np.random.PCG64(5).jumped(1))
    base.random(7)
    rank1.random(7)
    resumed = np.random.default_rng()
    resumed.bit_generator.state = distributed.jumped_state(base.bit_generator.state, 1)
    np.testing.assert_array_equal(resumed.random(5), rank1.random(5))
    assert not np.array_equal(resumed.random(5), base.random(5))


# -- the divergence check ------------------------------------------------------------------
NET = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 4 } } }
layer { name: "ip1" type: "CInnerProduct" bottom: "data" top: "ip1"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } }
        cinner_product_param { weight_mask_filler { type: "constant" value: 1 }
                               bias_mask_filler { type: "constant" value: 1 } } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" param { lr_mult: 0 } param { lr_mult: 0 }
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.1 } } }
"""


def _net(tmp_path):
    from npcaffe import Net, TRAIN
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    return Net(str(path), TRAIN)


def test_checksums_see_trained_weights_and_masks_only(tmp_path, quiet_log):
    net = _net(tmp_path)
    names, sums = distributed.layer_checksums(net)
    assert names == ["data", "ip1", "ip2"] and sums.dtype == np.uint32
    assert sums[2] and sums[3] and not sums[5]
    net.params["ip1"][2].data[0, 0] = 0  # a mask entry
    changed = distributed.layer_checksums(net)[1]
    assert list(np.flatnonzero(changed != sums)) == [3]
    net.params["ip1"][0].data[1, 2] += 1e-7  # a weight
    assert list(np.flatnonzero(distributed.layer_checksums(net)[1] != changed)) == [2]
    before = distributed.layer_checksums(net)[1]
    net.params["ip2"][0].data[0, 0] += 1  # lr_mult 0: each rank's own (as BatchNorm's statistics)
    np.testing.assert_array_equal(distributed.layer_checksums(net)[1], before)


class _TwoRanks:
    """A comm of rank 0 whose partner holds `other`'s checksums."""

    def __init__(self, other):
        self.other = other

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 2

    def allgather(self, mine):
        return [mine, self.other]


def test_check_names_iteration_layer_and_ranks(tmp_path, quiet_log):
    from npcaffe.proto import caffe_pb2
    from npcaffe.solvers import SGDSolver
    (tmp_path / "net.prototxt").write_text(NET)
    param = caffe_pb2.SolverParameter(net=str(tmp_path / "net.prototxt"), base_lr=0.1, lr_policy="fixed", max_iter=10)
    solver = SGDSolver(param, where="s.prototxt")
    other = distributed.layer_checksums(solver.net)[1].copy()
    parallel = distributed.DataParallel(solver, distributed.World(_TwoRanks(other)))
    parallel.check()  # equal: nothing to say
    other[3] ^= 1
    solver.iter = 300
    with pytest.raises(DistributedError, match=r"s.prototxt: iteration 300: the masks of layer 'ip1' differ between "
                                               r"rank 0 and rank 1 .*no longer train one model"):
        parallel.check()


# -- launches --------------------------------------------------------------------------------
@pytest.fixture
def fresh_world(monkeypatch):
    """npcaffe.distributed as in a new process (its launch not looked at yet), launcher variables cleared."""
    for name in distributed.RANK_VARIABLES + distributed.SIZE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(distributed, "_world", None)
    monkeypatch.setattr(distributed, "_world_known", False)
    return monkeypatch


def test_mpirun_without_mpi4py_says_what_to_install(fresh_world, tmp_path, capsys):
    from npcaffe import cli
    fresh_world.setenv("PMI_RANK", "1")
    fresh_world.setenv("PMI_SIZE", "2")
    fresh_world.setitem(sys.modules, "mpi4py", None)  # import mpi4py raises ImportError
    with pytest.raises(DistributedError, match=r"PMI_RANK=1, PMI_SIZE=2.*mpi4py is not installed.*"
                                               r"pip install 'npcaffe\[mpi\]'"):
        distributed.check_command("train")
    assert cli.main(["train", "--solver", str(tmp_path / "missing.prototxt")]) == 1
    assert "mpi4py is not installed" in capsys.readouterr().err
    with pytest.raises(DistributedError, match="npcaffe test runs in one process.*only `npcaffe train`"):
        distributed.check_command("test")


def test_single_rank_launch_and_no_launch_run_alone(fresh_world):
    fresh_world.setitem(sys.modules, "mpi4py", None)
    assert distributed.world() is None and distributed.solver_count() == 1
    fresh_world.setattr(distributed, "_world_known", False)
    fresh_world.setenv("OMPI_COMM_WORLD_RANK", "0")
    fresh_world.setenv("OMPI_COMM_WORLD_SIZE", "1")
    assert distributed.check_command("test") is None and distributed.solver_rank() == 0


# -- mpirun -n 2 against one process ----------------------------------------------------------------
def _mpiexec():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        pytest.skip("mpi4py is not installed (pip install -e '.[test]' brings it)")
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    found = beside if os.path.exists(beside) else shutil.which("mpiexec")
    if not found:
        pytest.skip("no mpiexec (pip install mpich)")
    return found


def _write_run(directory, batch, name):
    """LeNet-300-100 DNS (prototxt/) on the test's LMDB with this batch, its solver: 100 iterations,
    a snapshot at 50."""
    net = open(os.path.join(REPO, "prototxt", "lenet300100", "lenet300100_dns_train_test.prototxt")).read()
    old = 'data_param { source: "data/mnist/mnist_train_lmdb" batch_size: 64'
    assert old in net
    net = net.replace(old, f'data_param {{ source: "{directory}/train_lmdb" batch_size: {batch}')
    (directory / f"{name}_net.prototxt").write_text(net)
    solver = directory / f"{name}_solver.prototxt"
    (directory / name).mkdir(exist_ok=True)
    solver.write_text(f'net: "{directory}/{name}_net.prototxt"\nbase_lr: 0.01\nmomentum: 0.9\nweight_decay: 0.0005\n'
                      f'lr_policy: "inv"\ngamma: 0.0001\npower: 0.75\ndisplay: 1\nmax_iter: 100\nsnapshot: 50\n'
                      f'snapshot_prefix: "{directory}/{name}/lenet"\nrandom_seed: 1\n')
    return str(solver)


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    """The 2-rank run (batch 32 each): its directory and log."""
    mpiexec = _mpiexec()
    weights = shared_path("upstream-dns", "caffe_lenet300100_original.caffemodel")
    directory = tmp_path_factory.mktemp("mpi")
    _write_lmdb(directory / "train_lmdb", 1000)
    solver = _write_run(directory, 32, "ranks2")
    _write_run(directory, 64, "single")
    command = [mpiexec, "-n", "2", sys.executable, "-m", "npcaffe", "train", "--solver", solver, "--weights", weights,
               "--mpi_check_interval", "10"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return directory, weights, done.stderr


def _write_lmdb(path, count):
    """The first `count` MNIST training images as Caffe's convert_mnist_data writes them."""
    import lmdb
    from npcaffe.data.mnist import read_idx
    from npcaffe.io import array_to_datum
    images = read_idx(shared_path("data", "mnist", "train-images-idx3-ubyte.gz"))[:count]
    labels = read_idx(shared_path("data", "mnist", "train-labels-idx1-ubyte.gz"))[:count]
    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for i, (image, label) in enumerate(zip(images, labels)):
            txn.put(f"{i:08d}".encode(), array_to_datum(image.reshape(1, 28, 28), int(label)).SerializeToString())
    env.close()


def _train_here(argv):
    """npcaffe train in this process, one BLAS thread, glibc rand() where a new process has it (the DNS
    gate's stream is the process's, and other tests have drawn from it); its log."""
    from npcaffe import cli
    from npcaffe.kernels import glibc_rand
    glibc_rand.reset()
    stream = io.StringIO()
    glog.set_stream(stream)
    try:
        assert cli.main(["train", "--threads", "1"] + argv) == 0, stream.getvalue()[-3000:]
    finally:
        glog.set_stream(None)
    return stream.getvalue()


def _losses(log):
    return np.array([float(v) for v in re.findall(r"Iteration \d+, loss = (\S+)", log)])


def _model(path):
    from npcaffe.fileio.caffemodel import read_caffemodel
    from npcaffe.io import blobproto_to_array
    return {layer.name: [blobproto_to_array(b) for b in layer.blobs] for layer in read_caffemodel(path).layer
            if layer.blobs}


def _assert_same_model(a, b, tolerance=1e-5):
    assert a.keys() == b.keys() == {"ip1", "ip2", "ip3"}
    for name in a:
        weight, bias, weight_mask, bias_mask = a[name]
        np.testing.assert_array_equal(weight_mask, b[name][2], err_msg=f"{name} weight mask")
        np.testing.assert_array_equal(bias_mask, b[name][3], err_msg=f"{name} bias mask")
        for mine, theirs in ((weight, b[name][0]), (bias, b[name][1])):
            assert np.abs(mine - theirs).max() <= tolerance * np.abs(theirs).max(), name
    kept = sum(int(m.sum()) for layer in a.values() for m in layer[2:])
    assert 0 < kept < sum(m.size for layer in a.values() for m in layer[2:])  # DNS pruned, and not all


def test_two_ranks_train_as_one_process_with_twice_the_batch(two_rank_run):
    directory, weights, log2 = two_rank_run
    assert log2.count("Data-parallel training over MPI: 2 ranks") == 1  # rank 0 alone logs
    assert os.path.exists(directory / "ranks2" / "lenet_iter_100.caffemodel")
    log1 = _train_here(["--solver", str(directory / "single_solver.prototxt"), "--weights", weights])
    two, one = _losses(log2), _losses(log1)
    assert len(two) == len(one) == 101  # display 1, and Solve's forward after training (rank 0's batch alone)
    # rank 0 prints the mean over the ranks, 6 digits: within 1e-5 and the printing's last digit
    digit = 10.0 ** (np.floor(np.log10(np.abs(one[:100]))) - 5)
    assert np.all(np.abs(two[:100] - one[:100]) <= 1e-5 * np.abs(one[:100]) + digit)
    _assert_same_model(_model(directory / "ranks2" / "lenet_iter_100.caffemodel"),
                       _model(directory / "single" / "lenet_iter_100.caffemodel"))


def test_one_rank_resumes_the_two_rank_snapshot(two_rank_run):
    directory, _, log2 = two_rank_run
    log = _train_here(["--solver", str(directory / "single_solver.prototxt"),
                       "--snapshot", str(directory / "ranks2" / "lenet_iter_50.solverstate")])
    # iterations 50-99; the line after training is Solve's forward of one batch, rank 0's own under MPI
    resumed, uninterrupted = _losses(log)[:50], _losses(log2)[50:100]
    assert len(resumed) == len(uninterrupted) == 50
    digit = 10.0 ** (np.floor(np.log10(np.abs(resumed))) - 5)
    assert np.all(np.abs(resumed - uninterrupted) <= 1e-5 * np.abs(resumed) + digit)
    _assert_same_model(_model(directory / "single" / "lenet_iter_100.caffemodel"),
                       _model(directory / "ranks2" / "lenet_iter_100.caffemodel"))


@pytest.mark.slow
def test_two_runs_with_three_ranks_give_identical_bits(two_rank_run, tmp_path):
    """Three ranks, where the order of the sum matters (with two, a + b = b + a whatever MPI does)."""
    directory, weights, _ = two_rank_run
    outputs = []
    for run in range(2):
        solver = _write_run(directory, 16, f"ranks3_{run}")
        subprocess.run([_mpiexec(), "-n", "3", sys.executable, "-m", "npcaffe", "train", "--solver", solver,
                        "--weights", weights, "--iterations", "30", "--quiet"], check=True, timeout=600,
                       env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
        prefix = directory / f"ranks3_{run}" / "lenet_iter_30"
        outputs.append([open(f"{prefix}{ext}", "rb").read() for ext in (".caffemodel", ".solverstate")])
    assert outputs[0][0] == outputs[1][0]
    assert outputs[0][1].replace(b"ranks3_0", b"ranks3_1") == outputs[1][1]  # learned_net names its own file


SCRIPT = """
import sys
import npcaffe
from npcaffe.errors import DistributedError
solver = npcaffe.get_solver(sys.argv[1])
# One write per line: the ranks share stdout, and print's separate writes of its parts (and of the
# newline) interleave with the other rank's.
def say(line):
    sys.stdout.write(line + "\\n")
    sys.stdout.flush()
say(f"rank {npcaffe.solver_rank()} of {npcaffe.solver_count()} {solver.data_parallel is not None}")
solver.data_parallel.check_interval = 1
solver.step(3)
if npcaffe.solver_rank() == 1:
    solver.net.params["ip2"][0].data[0, 0] += 1e-3
try:
    solver.step(3)
except DistributedError as e:
    say(f"stopped: {e}")
"""


@pytest.mark.slow
def test_python_solver_api_under_mpirun_and_divergence_stops_every_rank(two_rank_run, tmp_path):
    directory, weights, _ = two_rank_run
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    solver = _write_run(directory, 32, "script")
    done = subprocess.run([_mpiexec(), "-n", "2", sys.executable, str(script), solver], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(re.findall(r"rank (\d) of 2 True", done.stdout)) == ["0", "1"]
    stops = re.findall(r"stopped: .*", done.stdout)
    assert len(stops) == 2 and all("iteration 3: the weights of layer 'ip2' differ between rank 0 and rank 1" in s
                                   for s in stops)
