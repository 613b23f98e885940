"""Splitting the heavy kernels over a few threads that never spin (opt-in).

A kernel that takes a half-open range [start, stop) of independent work
items (images, channels, rows) as its last two arguments is run by
`run(kernel, total, *args)`: with more than one thread the range is cut
into `num_threads()` parts, the calling thread computes the first and pool
threads the others, and `run` returns when all are done.  The kernels are
Numba functions compiled with nogil=True (or NumPy calls that release the
GIL), so the parts really run at the same time.  Each part writes only its
own items, so results do not depend on the thread count.  `dot(a, b, out)`
and `matmul` split the rows of a matrix product the same way, each part one
single-threaded BLAS call (OpenBLAS is held at one thread meanwhile, through
threadpoolctl: `pip install npcaffe[parallel]`; without it products are not
split).

Why not Numba's parallel=True: its OpenMP layer spin-waits between parallel
regions, as OpenBLAS's threads do after each GEMM, and on two cores the two
kinds of spinning threads steal each other's core (measured: 2-3x slower
than serial).  Its workqueue layer does not spin but aborts the process when
two threads launch kernels at once.

Why one thread by default: on the 2-core machine the README's figures come
from, handing work to a sleeping pool thread costs ~90 microseconds (waking
an idle virtual CPU), two single-threaded OpenBLAS calls at once gain
nothing over one, and the memory-bound kernels gain 1.1-1.4x; a LeNet-5 DNS
iteration ran 1.5x slower split than serial (tools/bench.py, README).  On a
machine with fast wake-ups and more cores, NPCAFFE_NUM_THREADS=n (or
`set_num_threads(n)`) turns the splitting on; results are the same bits.
Work under `min_items` per part is never split, nor products under
MIN_DOT_FLOPS.
"""
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

DEFAULT_THREADS = 1
MIN_ITEMS_PER_PART = 1
MIN_DOT_FLOPS = 4_000_000

_lock = threading.Lock()
_pool = None
_threads = None


def _default_threads():
    value = os.environ.get("NPCAFFE_NUM_THREADS")
    if not value:
        return DEFAULT_THREADS
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"NPCAFFE_NUM_THREADS must be a positive integer, got {value!r}") from None
    if count < 1:
        raise ValueError(f"NPCAFFE_NUM_THREADS must be a positive integer, got {value!r}")
    return count


def num_threads():
    """How many threads `run` uses (the caller's included)."""
    global _threads
    if _threads is None:
        _threads = _default_threads()
    return _threads


def set_num_threads(count):
    """Use `count` threads (the caller's included) from now on; 1 runs every kernel serially."""
    global _threads, _pool
    count = int(count)
    if count < 1:
        raise ValueError(f"thread count must be at least 1, got {count}")
    with _lock:
        _threads = count
        if _pool is not None:
            _pool.shutdown(wait=True)
            _pool = None


def _executor():
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=num_threads() - 1, thread_name_prefix="npcaffe")
        return _pool


def parts(total, count=None, min_items=MIN_ITEMS_PER_PART):
    """[(start, stop)] cutting range(total) into at most `count` (default num_threads()) near-equal parts."""
    count = num_threads() if count is None else count
    count = max(1, min(count, total // max(min_items, 1)))
    bounds = [total * k // count for k in range(count + 1)]
    return [(bounds[k], bounds[k + 1]) for k in range(count) if bounds[k + 1] > bounds[k]]


def run(kernel, total, *args, min_items=MIN_ITEMS_PER_PART):
    """kernel(*args, start, stop) over range(total), split across the threads; returns the results in order."""
    if (_threads or num_threads()) == 1:
        return [kernel(*args, 0, total)]  # the common case, kept cheap for batch-1 inference
    pieces = parts(total, min_items=min_items)
    if len(pieces) <= 1:
        return [kernel(*args, 0, total)]
    futures = [_executor().submit(kernel, *args, start, stop) for start, stop in pieces[1:]]
    try:
        first = kernel(*args, *pieces[0])
    finally:
        errors = [f.exception() for f in futures]  # waits: never return while a part may still write
    for error in errors:
        if error is not None:
            raise error
    return [first] + [f.result() for f in futures]


# -- matrix products ------------------------------------------------------------------
class _SingleThreadedBlas:
    """Hold every BLAS library at one thread while any split product runs (re-entrant, thread-safe)."""

    def __init__(self):
        self._guard = threading.Lock()
        self._depth = 0
        self._saved = []
        self._libraries = None

    def libraries(self):
        if self._libraries is None:
            try:
                from threadpoolctl import ThreadpoolController
                self._libraries = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
            except ImportError:  # without threadpoolctl products are not split
                self._libraries = []
        return self._libraries

    def __enter__(self):
        with self._guard:
            if self._depth == 0:
                self._saved = [lib.get_num_threads() for lib in self._libraries]
                for lib in self._libraries:
                    lib.set_num_threads(1)
            self._depth += 1

    def __exit__(self, *exc):
        with self._guard:
            self._depth -= 1
            if self._depth == 0:
                for lib, count in zip(self._libraries, self._saved):
                    lib.set_num_threads(count)


_blas = _SingleThreadedBlas()


def _dot_part(a, b, out, start, stop):
    np.dot(a[start:stop], b, out=out[start:stop])


def dot(a, b, out):
    """out = a . b (2-D; out C-contiguous), the rows of a / out split over the threads.

    Every part is the same BLAS call on fewer rows, so each row's result is
    the one np.dot gives it: no bit changes with the thread count."""
    rows = a.shape[0]
    flops = 2 * rows * a.shape[1] * b.shape[1]
    if num_threads() == 1 or flops < MIN_DOT_FLOPS or not _blas.libraries():
        np.dot(a, b, out=out)
        return out
    with _blas:
        run(_dot_part, rows, a, b, out, min_items=8)
    return out


def _matmul_part(a, b, out, start, stop):
    np.matmul(a[start:stop], b[start:stop], out=out[start:stop])


def matmul(a, b, out):
    """out[i] = a[i] . b[i] for stacks of matrices (3-D), the stack split over the threads."""
    count = a.shape[0]
    flops = 2 * count * a.shape[1] * a.shape[2] * b.shape[2]
    if num_threads() == 1 or flops < MIN_DOT_FLOPS or not _blas.libraries():
        np.matmul(a, b, out=out)
        return out
    with _blas:
        run(_matmul_part, count, a, b, out)
    return out
