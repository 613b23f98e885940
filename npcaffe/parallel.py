"""Splitting the heavy kernels over a few threads that never spin (opt-in).

A kernel that takes a half-open range [start, stop) of independent work
items (images, channels, rows) as its last two arguments is run by
`run(kernel, total, *args)`: with more than one thread the range is cut
into `num_threads()` parts, the calling thread computes the first and pool
threads the others, and `run` returns when all are done.  The kernels are
Numba functions compiled with nogil=True (or NumPy calls that release the
GIL), so the parts really run at the same time.  Each part writes only its
own items, so results do not depend on the thread count.  Matrix products
are left to the BLAS library's own threads (OPENBLAS_NUM_THREADS): on
LeNet's products OpenBLAS's two threads gain up to 1.9x on a quiet machine,
where splitting them over this pool gained nothing.

Why not Numba's parallel=True: its OpenMP layer spin-waits between parallel
regions, as OpenBLAS's threads do after each GEMM, and on two cores the two
kinds of spinning threads steal each other's core (measured: 2-3x slower
than serial).  Its workqueue layer does not spin but aborts the process when
two threads launch kernels at once.

Why one thread by default: on the 2-core machine the README's figures come
from, handing work to a sleeping pool thread costs ~90 microseconds (waking
an idle virtual CPU) and the memory-bound kernels gain only 1.1-1.4x, so a
LeNet-5 DNS training iteration runs ~10% slower split (19 -> 21 ms, measured
side by side) than serial with OpenBLAS's two threads.  It stays an option
for machines with more cores and cheaper wake-ups, untested for speed there:
NPCAFFE_NUM_THREADS=n (or `set_num_threads(n)`); results are the same bits
(tests/test_parallel.py).  Work under `min_items` per part is never split.
"""
import os
import threading
from concurrent.futures import ThreadPoolExecutor

DEFAULT_THREADS = 1
MIN_ITEMS_PER_PART = 1

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
