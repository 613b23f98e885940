"""npcaffe.parallel: splitting a range of work items over threads."""
import threading

import numpy as np
import pytest

from npcaffe import parallel


@pytest.fixture
def threads():
    before = parallel.num_threads()
    yield parallel.set_num_threads
    parallel.set_num_threads(before)


@pytest.mark.parametrize("total, count", [(10, 3), (2, 4), (0, 2), (7, 1), (64, 2)])
def test_parts_cover_the_range_once(total, count):
    pieces = parallel.parts(total, count)
    covered = [k for start, stop in pieces for k in range(start, stop)]
    assert covered == list(range(total))
    assert len(pieces) <= max(count, 1)
    sizes = [stop - start for start, stop in pieces]
    assert not sizes or max(sizes) - min(sizes) <= 1


def test_min_items_keeps_small_work_on_one_thread():
    assert parallel.parts(100, 4, min_items=64) == [(0, 100)]
    assert len(parallel.parts(256, 4, min_items=64)) == 4


@pytest.mark.parametrize("count", [1, 2, 3])
def test_run_uses_the_pool_and_returns_results_in_order(threads, count):
    threads(count)
    seen = []

    def kernel(out, start, stop):
        seen.append(threading.current_thread().name)
        out[start:stop] = np.arange(start, stop)
        return start

    out = np.zeros(9)
    assert parallel.run(kernel, 9, out) == [start for start, _ in parallel.parts(9, count)]
    np.testing.assert_array_equal(out, np.arange(9))
    assert len(seen) == count and sum(name.startswith("npcaffe") for name in seen) == count - 1


def test_run_waits_for_every_part_before_raising(threads):
    threads(2)
    done = threading.Event()

    def kernel(start, stop):
        if start == 0:
            raise RuntimeError("first part failed")
        done.wait(0.2)
        done.set()

    with pytest.raises(RuntimeError, match="first part failed"):
        parallel.run(kernel, 2)
    assert done.is_set()

    def failing_worker(start, stop):
        if start != 0:
            raise ValueError("second part failed")

    with pytest.raises(ValueError, match="second part failed"):
        parallel.run(failing_worker, 2)


def test_thread_count_checks(monkeypatch, threads):
    with pytest.raises(ValueError):
        threads(0)
    monkeypatch.setenv("NPCAFFE_NUM_THREADS", "three")
    with pytest.raises(ValueError, match="NPCAFFE_NUM_THREADS"):
        parallel._default_threads()
    monkeypatch.setenv("NPCAFFE_NUM_THREADS", "3")
    assert parallel._default_threads() == 3


def _lenet5_dns_solver(batch=16):
    import os
    from npcaffe.fileio.prototxt import read_net
    from npcaffe.graph import replace_data_layers
    from npcaffe.proto import caffe_pb2
    from npcaffe.solvers import solver_class
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    net = replace_data_layers(read_net(os.path.join(root, "prototxt/lenet5/lenet5_dns_train_test.prototxt")),
                              {"data": (batch, 1, 28, 28), "label": (batch,)})
    param = caffe_pb2.SolverParameter(base_lr=0.01, momentum=0.9, weight_decay=0.0005, lr_policy="inv",
                                      gamma=0.0001, power=0.75, max_iter=100, display=0, random_seed=1)
    param.net_param.CopyFrom(net)
    return solver_class("SGD")(param, where="test")


def test_dns_training_is_bit_identical_with_threads(threads, quiet_log):
    """Every kernel a LeNet-5 DNS step uses, serial and split over three threads: the same bits."""
    from npcaffe.kernels import glibc_rand
    rng = np.random.default_rng(0)
    data = rng.random((16, 1, 28, 28), dtype=np.float32)
    labels = rng.integers(0, 10, 16).astype(np.float32)
    results = []
    for count in (1, 3):
        threads(count)
        glibc_rand.reset()
        solver = _lenet5_dns_solver()
        solver.net.blobs["data"].data[...] = data
        solver.net.blobs["label"].data[...] = labels
        solver.step(3)
        results.append([b.data.copy() for b in solver.net.learnable_params] + [solver.history[0].copy()])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
