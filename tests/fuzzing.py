"""A seeded mutation fuzzer over the real files npcaffe reads (tests/test_fuzz.py runs it).

Seeds: the nets and solvers in prototxt/ and ../shared/upstream-dns, the DNS release's caffemodels,
a solverstate of ../shared/crosscheck, and an .npz and a .caffemodel.h5 written from them.  Each
case mutates one seed (text: extreme numbers, lines dropped, doubled or swapped, bytes flipped,
truncation; binary: bytes flipped or inserted, chunks doubled or cut, 32-bit words set to
0xFFFFFFFF or 0x7FFFFFFF) and hands the file to the reader that takes it: a net is built in the
TEST phase (the LeNets over tiny LMDBs, so their layers run a forward pass; the large nets only
parsed and upgraded), a solver checked as Solver.__init__ checks it, weights copied into the
LeNet they belong to, a solver state read against its solver's history shapes.

A worker process runs the cases under an address-space limit (a memory bomb becomes a
MemoryError, reported) and an alarm per case after CASE_SECONDS of its CPU time (a hang is
reported; CPU time, so that a busy machine cannot turn a slow case into a hang), and the parent
gives up on a worker silent for STALL_SECONDS (also a hang); the parent restarts a worker
that dies (a signal is reported with the case).  Outcomes per case: "ok", "npcaffe" (an
NpcaffeError naming the file), "unnamed" (an NpcaffeError that does not name it), the type of any
other exception, "hang", "killed:<signal>".

    python tests/fuzzing.py CASES [SEED]     prints the tally as JSON
"""
import gzip
import json
import os
import random
import re
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.environ.get("NPCAFFE_SHARED", os.path.join(ROOT, "..", "shared"))
CASE_SECONDS = 20      # a case's alarm, in CPU seconds of the worker: a hang (a loaded machine cannot fake it)
STALL_SECONDS = 300    # wall seconds without a line from the worker: stuck where no alarm reaches (or starved)
ADDRESS_SPACE = 6 << 30  # the worker's RLIMIT_AS (Numba's JIT reserves address space of its own)

BUILT_NETS = ["prototxt/lenet5/lenet5_train_test.prototxt", "prototxt/lenet5/lenet5_dns_train_test.prototxt",
              "prototxt/lenet300100/lenet300100_train_test.prototxt",
              "prototxt/lenet300100/lenet300100_dns_train_test.prototxt",
              "prototxt/lenet5/lenet5_bn_train_test.prototxt", "prototxt/lenet5/lenet5_deploy.prototxt",
              "prototxt/lenet300100/lenet300100_deploy.prototxt",
              "SHARED/upstream-dns/lenet5.prototxt", "SHARED/upstream-dns/lenet300100.prototxt"]
PARSED_NETS = ["prototxt/alexnet/alexnet_dns_train_val.prototxt", "prototxt/resnet50/ResNet-50-deploy.prototxt",
               "prototxt/squeezenet_v1_1/squeezenet_v1_1_deploy.prototxt", "prototxt/vgg16/VGG-16-deploy.prototxt",
               "prototxt/mobilenet_v2/mobilenet_v2_deploy.prototxt"]
SOLVERS = ["prototxt/lenet5/lenet5_solver.prototxt", "prototxt/lenet5/lenet5_dns_solver.prototxt",
           "prototxt/lenet300100/lenet300100_dns_solver.prototxt", "prototxt/alexnet/alexnet_dns_solver.prototxt",
           "prototxt/lenet5/lenet5_ssl_solver.prototxt", "prototxt/lenet300100/lenet300100_snip_solver.prototxt"]
WEIGHTS = ["SHARED/upstream-dns/caffe_lenet5_sparse.caffemodel",
           "SHARED/upstream-dns/caffe_lenet300100_original.caffemodel"]
STATE = "SHARED/crosscheck/lenet300100-dns/upstream/snap/lenet300100_dns_iter_150.solverstate.gz"
# (kind, how often): nets are most of what users download
KINDS = [("built_net", 40), ("parsed_net", 10), ("solver", 15), ("caffemodel", 12), ("solverstate", 8),
         ("npz", 8), ("h5", 7)]
EXTREMES = ["0", "-1", "1", "2147483647", "2147483648", "4294967295", "-2147483648", "99999999999",
            "1e39", "-1e39", "nan", "inf", "-inf", "1e-45", "0.5", "3", "65536", "100000"]


def _resolve(path):
    return os.path.join(SHARED, path[len("SHARED/"):]) if path.startswith("SHARED/") else os.path.join(ROOT, path)


# -- mutations ------------------------------------------------------------------------
def mutate_text(text, rng):
    lines = text.split("\n")
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        op = rng.randrange(7)
        if op == 0:  # a number replaced by an extreme one
            numbers = list(re.finditer(r"(?<![\w.])-?\d+(\.\d+)?(e-?\d+)?", text))
            if numbers:
                m = rng.choice(numbers)
                text = text[:m.start()] + rng.choice(EXTREMES) + text[m.end():]
        elif op == 1 and len(lines) > 1:  # a line dropped
            lines = text.split("\n")
            del lines[rng.randrange(len(lines))]
            text = "\n".join(lines)
        elif op == 2:  # a line doubled
            lines = text.split("\n")
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i])
            text = "\n".join(lines)
        elif op == 3:  # two tokens swapped
            tokens = list(re.finditer(r"[\w.\"-]+", text))
            if len(tokens) > 2:
                a, b = sorted(rng.sample(range(len(tokens)), 2))
                ta, tb = tokens[a], tokens[b]
                text = (text[:ta.start()] + tb.group() + text[ta.end():tb.start()] + ta.group()
                        + text[tb.end():])
        elif op == 4:  # bytes flipped
            data = bytearray(text.encode("utf-8", "surrogateescape"))
            for _ in range(rng.randint(1, 4)):
                if data:
                    data[rng.randrange(len(data))] = rng.randrange(256)
            text = data.decode("utf-8", "surrogateescape")
        elif op == 5:  # truncated
            text = text[:rng.randrange(len(text) + 1)]
        else:  # a line from elsewhere in the file pasted in
            lines = text.split("\n")
            lines.insert(rng.randrange(len(lines) + 1), rng.choice(lines))
            text = "\n".join(lines)
    return text.encode("utf-8", "surrogateescape")


def mutate_bytes(data, rng):
    data = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 3])):
        op = rng.randrange(6)
        if not data:
            break
        i = rng.randrange(len(data))
        if op == 0:
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif op == 1:
            data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == 2:
            j = min(len(data), i + rng.randint(1, 4096))
            data[i:i] = data[i:j]
        elif op == 3:
            del data[i:i + rng.randint(1, 4096)]
        elif op == 4:
            data[i:i + 4] = rng.choice([b"\xff\xff\xff\xff", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80"])
        else:
            data = data[:i]
    return bytes(data)


# -- the worker ------------------------------------------------------------------------
class _Alarm(Exception):
    pass


def _make_lmdbs(directory):
    import lmdb
    from npcaffe.proto import caffe_pb2
    for name, n in (("mnist_train_lmdb", 70), ("mnist_test_lmdb", 110)):
        env = lmdb.open(os.path.join(directory, "data", "mnist", name), map_size=1 << 24, subdir=True)
        with env.begin(write=True) as txn:
            for i in range(n):
                datum = caffe_pb2.Datum(channels=1, height=28, width=28, label=i % 10,
                                        data=bytes((i * 7 + k) % 256 for k in range(784)))
                txn.put(b"%08d" % i, datum.SerializeToString())
        env.close()


class Targets:
    """The readers, each taking a mutated file's path."""

    def __init__(self, workdir):
        from npcaffe import glog
        glog.set_quiet(True)
        self.workdir = workdir
        os.makedirs(os.path.join(workdir, "data", "mnist"))
        _make_lmdbs(workdir)
        from npcaffe import Net
        from npcaffe.fileio import compressed
        from npcaffe.layer import TEST, TRAIN
        from npcaffe.solvers import get_solver
        self.seed_bytes = {}
        self.lenet5 = lambda: Net(_resolve("SHARED/upstream-dns/lenet5.prototxt"), TEST)
        self.lenet300100 = lambda: Net(_resolve("SHARED/upstream-dns/lenet300100.prototxt"), TEST)
        net = self.lenet5()
        net.copy_from(_resolve(WEIGHTS[0]))
        npz = os.path.join(workdir, "seed.npz")
        compressed.write_compressed(npz, compressed.layers_from_net(net))
        h5 = os.path.join(workdir, "seed.caffemodel.h5")
        net.save_hdf5(h5)
        with gzip.open(_resolve(STATE)) as f:
            state = f.read()
        os.makedirs(os.path.join(workdir, "snap"))  # the state's learned_net, relative to the working directory
        with gzip.open(_resolve(STATE.replace(".solverstate", ".caffemodel"))) as f, \
                open(os.path.join(workdir, "snap", "lenet300100_dns_iter_150.caffemodel"), "wb") as out:
            out.write(f.read())
        solver_dir = os.path.join(workdir, "solver")
        os.makedirs(solver_dir)
        for name in ("lenet300100_dns_solver.prototxt", "lenet300100_dns_train_test.prototxt"):
            shutil.copy(os.path.join(ROOT, "prototxt", "lenet300100", name), solver_dir)
        cwd = os.getcwd()
        os.chdir(solver_dir)
        try:
            text = open("lenet300100_dns_solver.prototxt").read()
            text = re.sub(r'net: ".*"', 'net: "lenet300100_dns_train_test.prototxt"', text)
            text = text.replace('snapshot_prefix: "', 'snapshot_prefix: "./')
            open("lenet300100_dns_solver.prototxt", "w").write(text)
            os.symlink(os.path.join(workdir, "data"), "data")
            os.makedirs("snap")
            self.state_solver = get_solver("lenet300100_dns_solver.prototxt")
        finally:
            os.chdir(cwd)
        self.history_shapes = [a.shape for a in self.state_solver.state_arrays()]
        self.seeds = {
            "built_net": [(_resolve(p), ".prototxt") for p in BUILT_NETS],
            "parsed_net": [(_resolve(p), ".prototxt") for p in PARSED_NETS],
            "solver": [(_resolve(p), ".prototxt") for p in SOLVERS],
            "caffemodel": [(_resolve(p), ".caffemodel") for p in WEIGHTS],
            "solverstate": [(None, ".solverstate")],
            "npz": [(npz, ".npz")],
            "h5": [(h5, ".caffemodel.h5")],
        }
        self.state_bytes = state
        self.TRAIN, self.TEST = TRAIN, TEST

    def seed(self, kind, rng):
        path, ext = rng.choice(self.seeds[kind])
        if path is None:
            return "lenet300100_dns_iter_150.solverstate", self.state_bytes, ext
        with open(path, "rb") as f:
            return path, f.read(), ext

    def run(self, kind, path, seed_path):
        from npcaffe import Net
        if kind == "built_net":
            net = Net(path, self.TEST)
            net.forward()
        elif kind == "parsed_net":
            from npcaffe.fileio.prototxt import read_net
            from npcaffe.graph import filter_net, insert_splits
            from npcaffe.errors import NpcaffeError
            from npcaffe.net import _name_the_source
            param = read_net(path)
            param.state.phase = self.TEST
            try:  # the graph's rewrites take a NetParameter: the file is named where it is known, as Net does
                insert_splits(filter_net(param))
            except NpcaffeError as e:
                _name_the_source(e, path)
                raise
        elif kind == "solver":
            from npcaffe.solvers.hyperparams import check_hyperparameters
            from npcaffe.solvers.lr_policy import learning_rate
            from npcaffe.solvers.solver import check_solver_param, load_solver_param
            param, where = load_solver_param(path)
            check_solver_param(param, where)
            check_hyperparameters(param, where, param.type)
            learning_rate(param, 1000, 0)
        elif kind == "caffemodel":
            net = self.lenet5() if "lenet5" in seed_path else self.lenet300100()
            net.copy_from(path)
        elif kind == "solverstate":
            self.state_solver.restore(path)
        elif kind == "npz":
            self.lenet5().copy_from(path)
        elif kind == "h5":
            self.lenet5().copy_from(path)


def worker(seed, start, stop):
    """Run cases start..stop-1 of `seed`, one JSON line per case (and one before it, so a death
    names its case)."""
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, resource.RLIM_INFINITY))
    from npcaffe.errors import NpcaffeError
    workdir = tempfile.mkdtemp(prefix="npcaffe-fuzz-")
    os.chdir(workdir)
    targets = Targets(workdir)

    def on_alarm(signum, frame):
        raise _Alarm()
    signal.signal(signal.SIGPROF, on_alarm)
    kinds = [k for k, weight in KINDS for _ in range(weight)]
    for case in range(start, stop):
        rng = random.Random(f"{seed}:{case}")
        kind = rng.choice(kinds)
        seed_path, data, ext = targets.seed(kind, rng)
        text = kind in ("built_net", "parsed_net", "solver")
        mutated = mutate_text(data.decode("utf-8"), rng) if text else mutate_bytes(data, rng)
        path = os.path.join(workdir, f"case{case}{ext}")
        with open(path, "wb") as f:
            f.write(mutated)
        print(json.dumps({"start": case, "kind": kind}), flush=True)
        signal.setitimer(signal.ITIMER_PROF, CASE_SECONDS)
        try:
            targets.run(kind, path, seed_path)
            outcome, detail = "ok", ""
        except _Alarm:
            outcome, detail = "hang", ""
        except NpcaffeError as e:
            outcome = "npcaffe" if os.path.basename(path) in str(e) else "unnamed"
            detail = str(e)[:300]
        except Exception as e:  # noqa: BLE001 - the fuzzer records what escaped
            outcome, detail = type(e).__name__, f"{e}"[:300]
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
        os.unlink(path)
        print(json.dumps({"case": case, "kind": kind, "outcome": outcome, "detail": detail}), flush=True)
    print(json.dumps({"peak_rss_kib": _own_peak_rss_kib()}), flush=True)
    shutil.rmtree(workdir, ignore_errors=True)


def _own_peak_rss_kib():
    """This process's own peak RSS: VmHWM of its memory map.  Not getrusage's ru_maxrss, which Linux
    carries over an exec from the map the process had before (a pytest process gigabytes large after
    other tests, whose map a vfork'ed worker starts from)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class _Lines:
    """Lines of a pipe, read with os.read: select() on a buffered file object misses lines already in
    its buffer, and would wait for the worker's next line while one is there."""

    def __init__(self, fd):
        self.fd, self.buffer = fd, b""

    def next(self, timeout):
        """The next line ('' at the end of the stream), or None when none came within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                line, self.buffer = self.buffer, b""
                return line.decode()
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode() + "\n"


def _tail(stream, size):
    stream.seek(0)
    return stream.read()[-size:]


def run(cases, seed=0, start=0, nice=0):
    """Run cases [start, start + cases) in workers; the tally and every non-clean case."""
    tally, bad, peak, case = {}, [], 0, start
    stop = start + cases
    while case < stop:
        command = [sys.executable, os.path.abspath(__file__), "--worker", str(seed), str(case), str(stop)]
        if nice:
            command = ["nice", "-n", str(nice)] + command
        # stderr into a file, not a pipe: nobody reads it while the worker runs, and a full pipe (64 KB of
        # warnings) would block the worker and look like a hang
        errors = tempfile.TemporaryFile(mode="w+")
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, cwd=ROOT)
        lines = _Lines(proc.stdout.fileno())
        current, deadline = None, time.monotonic() + 300  # the first deadline covers the worker's start
        while True:
            line = lines.next(max(0.0, deadline - time.monotonic()))
            if line is None:  # no line for STALL_SECONDS: stuck in code the CPU-time alarm cannot reach
                proc.kill()
                proc.wait()
                outcome = "hang"
                break
            if not line:
                proc.wait()
                outcome = f"killed:{signal.Signals(-proc.returncode).name}" if proc.returncode < 0 else \
                    f"exit:{proc.returncode}"
                break
            record = json.loads(line)
            if "start" in record:
                current = record
                deadline = time.monotonic() + STALL_SECONDS
            elif "case" in record:
                tally[record["outcome"]] = tally.get(record["outcome"], 0) + 1
                if record["outcome"] not in ("ok", "npcaffe"):
                    bad.append(record)
                case = record["case"] + 1
                current = None
                # the next case's start line is due at once: time from here, not from the last start
                deadline = time.monotonic() + STALL_SECONDS
            else:
                peak = max(peak, record["peak_rss_kib"])
        if case >= stop and current is None:
            break
        if current is None:  # the worker died or stalled between cases (at start): nothing to blame on a case
            raise RuntimeError(f"fuzz worker failed ({outcome}, after case {case - 1}): {_tail(errors, 2000)}")
        tally[outcome] = tally.get(outcome, 0) + 1
        bad.append({"case": current["start"], "kind": current["kind"], "outcome": outcome,
                    "detail": _tail(errors, 500)})
        errors.close()
        case = current["start"] + 1
    return {"cases": cases, "tally": tally, "bad": bad, "peak_rss_mib": round(peak / 1024, 1)}


if __name__ == "__main__":
    if sys.argv[1] == "--worker":
        sys.path.insert(0, ROOT)
        worker(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        result = run(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 0)
        print(json.dumps(result, indent=1))
