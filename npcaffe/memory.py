"""Memory a net asks for, counted before it is allocated.

While a Net is built, every blob that grows (a top sized by its layer's reshape, a parameter
made by layer setup) is charged its bytes (data and diff, 8 per element) before NumPy is asked
for them; when the running total passes the memory available, building stops with an error
naming the biggest blobs.  So `batch_size: 100000`, or kernel_size and num_output swapped, is a
message at once, not gigabytes filled before one, or the host's OOM killer.

"Available" is the kernel's MemAvailable plus free swap, and no more than the address space a
`ulimit -v` (RLIMIT_AS) leaves; where neither can be read nothing is checked.  The total is a
lower bound of what the net will use (layers' own buffers are not counted), so a net that passes
may still not fit; one that fails cannot.
"""
import contextlib
import resource

from . import blob as blob_module
from .errors import NetError

_GiB = 2 ** 30


def _meminfo_bytes(field):
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _address_space_left():
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/statm") as f:
            used = int(f.read().split()[0]) * resource.getpagesize()
    except OSError:
        used = 0
    return max(soft - used, 0)


def available_bytes():
    """Bytes a net may still take, or None when the system does not say."""
    free = _meminfo_bytes("MemAvailable")
    if free is not None:
        free += _meminfo_bytes("SwapFree") or 0
    limit = _address_space_left()
    candidates = [v for v in (free, limit) if v is not None]
    return min(candidates) if candidates else None


def _size(n):
    return f"{n / _GiB:.2f} GiB" if n >= _GiB / 10 else f"{n / 2 ** 20:.1f} MiB"


class Budget:
    """The bytes charged while one net is built, and what they went to."""

    def __init__(self, available):
        self.available = available
        self.used = 0
        self.charges = []  # (bytes, what)
        self.layer = None  # the layer being set up (Net sets it)

    def charge(self, blob, count):
        grow = 8 * (count - blob.capacity())
        if grow <= 0:
            return
        what = f"blob '{blob.name}'" if blob.name else f"a parameter of layer '{self.layer}'"
        self.used += grow
        self.charges.append((grow, f"{what} {tuple(blob.pending_shape)}"))
        if self.available is not None and self.used > self.available:
            biggest = [c for c in sorted(self.charges, key=lambda c: -c[0])[:3] if c[0] >= 2 ** 20]
            listed = "; ".join(f"{what} {_size(n)}" for n, what in biggest)
            raise NetError(f"layer '{self.layer}': the net's blobs need at least {_size(self.used)} "
                           f"(data and diff) so far, more than the {_size(self.available)} of memory available; "
                           f"the biggest: {listed}; check batch_size, num_output and kernel_size")


@contextlib.contextmanager
def budget():
    """Charge every blob growth inside the block to one Budget (a net built inside another's
    setup, as RNN's unrolled net, is charged to the outer one)."""
    if blob_module.allocation_check is not None:
        yield blob_module.allocation_check.__self__
        return
    current = Budget(available_bytes())
    blob_module.allocation_check = current.charge
    try:
        yield current
    finally:
        blob_module.allocation_check = None
