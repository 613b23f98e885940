"""How many threads NumPy's BLAS computes with, for the `npcaffe` command.

The command runs one BLAS thread unless asked for more: `--threads N`, or
OPENBLAS_NUM_THREADS / OMP_NUM_THREADS / MKL_NUM_THREADS in the environment
(then the library keeps what that variable gave it).  OpenBLAS's own default
is a thread per core, and its threads spin while they wait for work; on a
machine where anything else computes they wait for a core after every
product, and an iteration gets slower, not faster (a LeNet-5 DNS training
iteration on the 2-core development VM: the same 10 ms with one thread or
two when idle, 1.9x slower with two beside one busy process, 4-8x while
other training runs loaded it).  `import npcaffe` changes nothing: a
library user keeps the BLAS's default or their own setting (threadpoolctl,
the environment).

The limit is set at run time with threadpoolctl, on the BLAS libraries the
process has loaded (NumPy's, loaded with `npcaffe.cli`), and lifted when the
command returns.  Numba has no threads to limit here: npcaffe has no
`parallel=True` kernels, and its own kernel pool (npcaffe.parallel) is one
thread unless NPCAFFE_NUM_THREADS says otherwise.
"""
import contextlib
import os

ENV_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
DEFAULT_THREADS = 1


def _blas_libraries():
    from threadpoolctl import threadpool_info
    return [i for i in threadpool_info() if i.get("user_api") == "blas"]


def _describe(libraries, how):
    if not libraries:
        return f"BLAS threads: unknown (no BLAS library found in this process; {how})"
    counts = sorted({int(i["num_threads"]) for i in libraries})
    names = sorted({{"openblas": "OpenBLAS", "mkl": "MKL", "blis": "BLIS"}.get(i["internal_api"], i["internal_api"])
                    for i in libraries})
    return f"BLAS threads: {'/'.join(map(str, counts))} ({', '.join(names)}; {how})"


@contextlib.contextmanager
def limited(threads=None, environ=None):
    """Inside the block NumPy's BLAS uses `threads` threads; None: 1, or as the environment says if
    one of ENV_VARS is set.  Yields one line saying how many and why, for the run's log."""
    environ = os.environ if environ is None else environ
    given = [(name, environ[name]) for name in ENV_VARS if environ.get(name)]
    if threads is None and given:
        limit, how = None, f"{given[0][0]}={given[0][1]}; --threads N to change"
    elif threads is None:
        limit, how = DEFAULT_THREADS, "the default; --threads N or OPENBLAS_NUM_THREADS=N for more"
    else:
        limit, how = int(threads), f"--threads {int(threads)}"
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # an environment installed before npcaffe required it
        yield "BLAS threads: not limited (threadpoolctl is missing: pip install threadpoolctl)"
        return
    with threadpool_limits(limits=limit, user_api="blas"):
        yield _describe(_blas_libraries(), how)
