"""npcaffe speed and memory, side by side with PyTorch (CPU) in one run.

    python tools/bench.py               the full table (one to two minutes)
    python tools/bench.py --quick       fewer repeats
    python tools/bench.py --threshold   the sparse/dense crossover behind npcaffe.sparse.packing.DENSITY_THRESHOLD
    python tools/bench.py --slim        dense vs masked vs slim inference (npcaffe slim) of ResNet-50,
                                        MobileNet v2, SE-ResNet-50 at batch 1 and 16
    python tools/bench.py --mpi N       data-parallel training throughput (images/s) of LeNet-5 and
                                        AlexNet DNS with 1 and N ranks (mpiexec), one BLAS thread per rank
    python tools/bench.py --big         forward and forward+backward of AlexNet and ResNet-50 at batch 1
                                        and 16 (--big_batches), npcaffe against its PyTorch twin
    python tools/bench.py --conv_paths  Convolution's two dense batch paths (the batch's columns, image by
                                        image) on ResNet-50's and AlexNet's layer shapes at batch 16: what
                                        conv_paths.IMAGE_COLUMNS_POSITIONS is set from

The DNS training rows compare three thread settings in one run: one thread
each, each framework at its default (the `npcaffe` command's one BLAS
thread, npcaffe.blas; PyTorch's torch.get_num_threads() at import), and both
at one thread per core; then the defaults again with one busy process
beside (a Python loop, --no_load leaves it out), and how much each slowed.
Per round every setting runs in turn, npcaffe and PyTorch alternating (who
goes first alternates too), 20 iterations each; the median of five rounds'
medians is reported (--quick: three).  The other rows: every figure is the
median of repeats after warm-up, both frameworks with the
same thread count: OpenBLAS's (OPENBLAS_NUM_THREADS, default the CPU count)
and torch.set_num_threads for PyTorch.  npcaffe's own kernels run at
npcaffe.parallel's count (default 1; NPCAFFE_NUM_THREADS).  For one thread:
OPENBLAS_NUM_THREADS=1 python tools/bench.py.  PyTorch is optional (`pip install torch`); without it its column
says so.  It is never a dependency of npcaffe.

Every target cell ends with a verdict: "met", or "MISSED" with the ratio
reached and the time the goal needs; each missed goal gets a line saying
what it would ask of the weighted layers (their multiply-add rate, with
the other layers and the update as the profile measured them).

--big [NET ...] (alexnet, resnet50; default both) times the deploy nets
(AlexNet: the DNS train_val net's TEST phase with an Input and plain
layers) with generated weights (He-scaled; BatchNorm statistics measured
on the generated images), forward and forward+backward (loss: the
outputs weighted by fixed random numbers; gradients of every weight and of
the input), against a PyTorch twin that tools/bench.py builds by walking the
npcaffe Net layer by layer (torch_twin), with the same weights.  Each row
first checks the twin: outputs within 1e-3 of the largest npcaffe output,
input gradients within 5% in L2 norm (float32 rounding alone moves
ResNet-50's by ~1.5%), else the row is not timed.  The two frameworks
alternate repeat by repeat.  PyTorch is needed for this mode.

Workloads (MNIST images from ../shared/data/mnist, models from ../shared/upstream-dns):
- DNS training iteration: the nets in prototxt/ with their Data layer
  replaced by an Input fed from memory, batch 64, SGD (lr 0.01, momentum
  0.9, weight decay 5e-4, as upstream's solver), fine-tuning the upstream
  *_original model; one iteration = forward (with the surgery step) +
  backward + update.  PyTorch runs the same net: masked weights W*T, the
  gradient passed straight to W, the masks updated each iteration from the
  same threshold rule, torch.optim.SGD.
- Inference: the upstream deploy nets at batch 1 and 100; our dense path
  (upstream *_original model, and the pruned model forced dense) against
  the pruned model on the sparse kernels, through the Python API (which
  checks each forward that the weights did not change) and as `npcaffe
  test` runs it (weights fixed, no check).
- Peak RSS: a fresh process running 50 LeNet-5 DNS iterations (VmHWM).
- Cold start: a fresh process until its first LeNet-5 DNS iteration is
  done, with an empty NUMBA_CACHE_DIR (cold) and the cache that run filled (warm).
"""
import argparse
import contextlib
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("NPCAFFE_SHARED", os.path.join(os.path.dirname(ROOT), "shared"))
sys.path.insert(0, ROOT)

NETS = {
    "lenet5": ("prototxt/lenet5/lenet5_dns_train_test.prototxt", "ip2"),
    "lenet300100": ("prototxt/lenet300100/lenet300100_dns_train_test.prototxt", "ip3"),
}
UPSTREAM_TRAINING_MS = 23.0  # the figure for one upstream LeNet-5 DNS training iteration
# The goals: DNS training >= 2x PyTorch (LeNet-5 also <= 10 ms at one thread), AlexNet and
# ResNet-50 >= 1.5x PyTorch.
TRAINING_GOAL, LENET5_LIMIT_MS, BIG_GOAL = 2.0, 10.0, 1.5
UPSTREAM_REFERENCE = [
    ("upstream DNS Caffe, LeNet-5 forward+backward (batch 64)", "~21 ms (conv2 backward 7.5 ms, pool1 forward 2.6 ms)"),
    ("upstream DNS Caffe, LeNet-5 whole training iteration", "~23 ms"),
    ("PyTorch 2.13 CPU, LeNet-5 training iteration (issue's figure)", "~24 ms"),
]


def shared(*parts):
    return os.path.join(SHARED, *parts)


def median_ms(fn, repeats, warmup=5):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def blas_threads():
    try:
        from threadpoolctl import threadpool_info
        return max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
    except Exception:
        return int(os.environ.get("OPENBLAS_NUM_THREADS", os.cpu_count()))


def mnist(count=6400, split="train"):
    from npcaffe.data.mnist import read_idx
    images = read_idx(shared("data", "mnist", f"{split}-images-idx3-ubyte.gz"))[:count]
    labels = read_idx(shared("data", "mnist", f"{split}-labels-idx1-ubyte.gz"))[:count]
    return images.reshape(-1, 1, 28, 28).astype(np.float32) * np.float32(0.00390625), labels.astype(np.float32)


# -- npcaffe ---------------------------------------------------------------------------
def npcaffe_solver(name, batch=64):
    from npcaffe import glog
    from npcaffe.fileio.prototxt import read_net
    from npcaffe.graph import replace_data_layers
    from npcaffe.proto import caffe_pb2
    from npcaffe.solvers import solver_class
    glog.set_quiet(True)
    net = replace_data_layers(read_net(os.path.join(ROOT, NETS[name][0])),
                              {"data": (batch, 1, 28, 28), "label": (batch,)})
    param = caffe_pb2.SolverParameter(base_lr=0.01, momentum=0.9, weight_decay=0.0005, lr_policy="inv",
                                      gamma=0.0001, power=0.75, max_iter=10 ** 6, display=0)
    param.net_param.CopyFrom(net)
    solver = solver_class("SGD")(param, where="bench")
    solver.net.copy_from(shared("upstream-dns", f"caffe_{name}_original.caffemodel"))
    return solver


def npcaffe_training_steps(name, images, labels, batch_split=None):
    """(one training iteration, one forward+backward, one solver update) of the net's DNS solver, fed
    batch after batch of 64 from `images`; with batch_split K, its iterations split in K threads."""
    solver = npcaffe_solver(name)
    solver.set_batch_split(batch_split)
    net = solver.net
    state = {"i": 0}

    def feed():
        k = (state["i"] % (len(images) // 64)) * 64
        state["i"] += 1
        net.blobs["data"].data[...] = images[k:k + 64]
        net.blobs["label"].data[...] = labels[k:k + 64]

    def iteration():
        feed()
        solver.step(1)

    def forward_backward():
        feed()
        net.clear_param_diffs(deferred=True)  # as the solver's step
        net.forward_backward()

    return iteration, forward_backward, solver.apply_update


def npcaffe_inference(name, weights, batch, images, repeats, dense=False, verify=True):
    import npcaffe
    from npcaffe.sparse import packing
    net = npcaffe.Net(shared("upstream-dns", f"{name}.prototxt"), shared("upstream-dns", weights), npcaffe.TEST)
    if dense:
        packing.sparsify(net, threshold=0)
    elif not verify:
        packing.sparsify(net, verify=False)
    net.blobs["data"].reshape(batch, 1, 28, 28)
    net.reshape()
    net.blobs["data"].data[...] = images[:batch]
    return median_ms(net.forward_from_to, repeats)


# -- PyTorch -----------------------------------------------------------------------------
def torch_models(torch):
    nn, F = torch.nn, torch.nn.functional

    class StraightThrough(torch.autograd.Function):
        """W * T forward; the gradient reaches W unmasked (DNS)."""
        @staticmethod
        def forward(ctx, weight, mask):
            return weight * mask

        @staticmethod
        def backward(ctx, grad):
            return grad, None

    class CLayer(nn.Module):
        def __init__(self, core, c_rate):
            super().__init__()
            self.core, self.c_rate = core, c_rate
            self.register_buffer("mask", torch.ones_like(core.weight))
            self.register_buffer("bias_mask", torch.ones_like(core.bias))
            self.threshold = None

        @torch.no_grad()
        def surgery(self):
            w, b = self.core.weight, self.core.bias
            if self.threshold is None:
                x = torch.cat([(w * self.mask).flatten(), (b * self.bias_mask)])
                x = x[x != 0]
                self.threshold = max(float(x.abs().mean() + self.c_rate * x.std(unbiased=False)), 0.0)
            for value, mask in ((w, self.mask), (b, self.bias_mask)):
                a = value.abs()
                mask.masked_fill_(mask.eq(1) & a.le(0.9 * self.threshold), 0)
                mask.masked_fill_(mask.eq(0) & a.gt(1.1 * self.threshold), 1)

        def forward(self, x):
            if self.training:
                self.surgery()
            w = StraightThrough.apply(self.core.weight, self.mask)
            b = StraightThrough.apply(self.core.bias, self.bias_mask)
            if isinstance(self.core, nn.Conv2d):
                return F.conv2d(x, w, b)
            return F.linear(x, w, b)

    class LeNet5(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = CLayer(nn.Conv2d(1, 20, 5), 2)
            self.conv2 = CLayer(nn.Conv2d(20, 50, 5), 3)
            self.ip1 = CLayer(nn.Linear(800, 500), 4)
            self.ip2 = CLayer(nn.Linear(500, 10), 2.5)

        def forward(self, x):
            x = F.max_pool2d(self.conv1(x), 2, 2)
            x = F.max_pool2d(self.conv2(x), 2, 2)
            return self.ip2(F.relu(self.ip1(x.flatten(1))))

    class LeNet300100(nn.Module):
        def __init__(self):
            super().__init__()
            self.ip1 = CLayer(nn.Linear(784, 300), 2)
            self.ip2 = CLayer(nn.Linear(300, 100), 1)
            self.ip3 = CLayer(nn.Linear(100, 10), 0.5)

        def forward(self, x):
            return self.ip3(F.relu(self.ip2(F.relu(self.ip1(x.flatten(1))))))

    return {"lenet5": LeNet5, "lenet300100": LeNet300100}


def torch_load(torch, model, weights):
    from npcaffe.fileio.caffemodel import blob_to_array, read_caffemodel
    layers = {lp.name: lp for lp in read_caffemodel(shared("upstream-dns", weights)).layer}
    with torch.no_grad():
        for name, module in model.named_children():
            lp = layers[name]
            module.core.weight.copy_(torch.from_numpy(blob_to_array(lp.blobs[0], name).reshape(module.core.weight.shape)))
            module.core.bias.copy_(torch.from_numpy(blob_to_array(lp.blobs[1], name).reshape(module.core.bias.shape)))


def torch_training_step(torch, name, images, labels):
    """One training iteration of the PyTorch twin of the net's DNS training, batch after batch of 64."""
    model = torch_models(torch)[name]()
    torch_load(torch, model, f"caffe_{name}_original.caffemodel")
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=0.0005)
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels).long()
    state = {"i": 0}

    def iteration():
        k = (state["i"] % (len(images) // 64)) * 64
        state["i"] += 1
        optimizer.zero_grad(set_to_none=False)
        loss = torch.nn.functional.cross_entropy(model(x_all[k:k + 64]), y_all[k:k + 64])
        loss.backward()
        optimizer.step()

    return iteration


def torch_inference(torch, name, weights, batch, images, repeats):
    model = torch_models(torch)[name]()
    torch_load(torch, model, weights)
    model.eval()
    x = torch.from_numpy(images[:batch])

    def forward():
        with torch.inference_mode():
            model(x)

    return median_ms(forward, repeats)


# -- training side by side: thread settings alternated, and under load ---------------------------
def timed_turn(fn, threads, torch=None, count=20, warmup=2):
    """Median ms of `count` calls of fn with NumPy's BLAS (and PyTorch, if given) at `threads` threads."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=threads, user_api="blas"):
        if torch is not None:
            torch.set_num_threads(threads)
        return median_ms(fn, count, warmup)


@contextlib.contextmanager
def busy_process():
    """One other CPU-bound process on the machine for the duration of the block."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.5)
    try:
        yield
    finally:
        busy.kill()
        busy.wait()


def thread_settings(torch_default):
    """(label, npcaffe's BLAS threads, npcaffe's batch split, PyTorch's threads) for the training rows:
    one thread each, each at its default (the `npcaffe` command's one BLAS thread, PyTorch's
    torch.get_num_threads() at import), both at one thread per core, and npcaffe's iteration split over
    the cores (--batch_split, one BLAS thread per part) against PyTorch at one thread per core."""
    from npcaffe.blas import DEFAULT_THREADS
    cores = os.cpu_count()
    return [("1 thread each", 1, None, 1),
            (f"defaults (npcaffe {DEFAULT_THREADS}, PyTorch {torch_default} threads)", DEFAULT_THREADS, None,
             torch_default),
            (f"both at {cores} threads", cores, None, cores),
            (f"npcaffe --batch_split {cores}, PyTorch {cores} threads", 1, cores, cores)]


def training_comparison(torch, torch_default, name, images, labels, rounds, under_load=True):
    """{setting label: (npcaffe ms, PyTorch ms or None)} for a DNS training iteration (batch 64): per
    round, every thread setting in turn, npcaffe and PyTorch alternating (who goes first alternates
    too), `rounds` medians of 20 iterations each, their median reported.  With under_load, the
    default setting again beside one busy process (key "under load")."""
    settings = thread_settings(torch_default)
    if os.cpu_count() < 2:
        settings = [s for s in settings if s[2] is None]
    ours = {split: npcaffe_training_steps(name, images, labels, split)[0] for split in {s[2] for s in settings}}
    theirs = torch_training_step(torch, name, images, labels) if torch else None
    if under_load:
        settings.append(("under load",) + settings[1][1:])
    samples = {label: ([], []) for label, _, _, _ in settings}

    def run_round(round_index, chosen):
        for label, n_ours, split, n_theirs in chosen:
            turns = [(0, lambda: timed_turn(ours[split], n_ours))]
            if theirs is not None:
                turns.append((1, lambda: timed_turn(theirs, n_theirs, torch)))
            for side, turn in (turns if round_index % 2 == 0 else turns[::-1]):
                samples[label][side].append(turn())

    for r in range(rounds):
        run_round(r, [s for s in settings if s[0] != "under load"])
    if under_load:
        with busy_process():
            for r in range(rounds):
                run_round(r, settings[-1:])
    return {label: (statistics.median(a), statistics.median(b) if b else None) for label, (a, b) in samples.items()}


# -- processes ---------------------------------------------------------------------------
def child_first_iteration():
    """Run in a fresh process: build the LeNet-5 DNS solver, run one iteration, report."""
    images, labels = mnist(64, "t10k")  # the small file: unzipping 60k images is not start-up
    solver = npcaffe_solver("lenet5")
    solver.net.blobs["data"].data[...] = images
    solver.net.blobs["label"].data[...] = labels
    solver.step(1)
    print("first-iteration-done", flush=True)


def child_training(iterations):
    images, labels = mnist(6400)
    solver = npcaffe_solver("lenet5")
    for i in range(iterations):
        k = (i % 100) * 64
        solver.net.blobs["data"].data[...] = images[k:k + 64]
        solver.net.blobs["label"].data[...] = labels[k:k + 64]
        solver.step(1)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec, so a
    # child of this (large, torch-importing) process would report our size.
    with open("/proc/self/status") as status:
        peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    print(peak_kb, flush=True)


def run_child(flag, env=None):
    start = time.perf_counter()
    out = subprocess.run([sys.executable, os.path.abspath(__file__), flag], capture_output=True, text=True,
                         env=env, check=True).stdout
    return time.perf_counter() - start, out


def cold_start(repeats):
    cold, warm = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="npcaffe-numba-") as cache:
            env = dict(os.environ, NUMBA_CACHE_DIR=cache)
            cold.append(run_child("--child-first-iteration", env)[0])
            warm.append(run_child("--child-first-iteration", env)[0])
    return statistics.median(cold), statistics.median(warm)


# -- the sparse / dense crossover ------------------------------------------------------------
def threshold_table(repeats):
    """Sparse vs dense forward per weight layer, randomly pruned to each density."""
    import npcaffe
    from npcaffe.sparse import packing
    images, _ = mnist(100, "t10k")
    rng = np.random.default_rng(0)
    densities = [0.01, 0.03, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7]
    print("density at which the sparse kernels stop winning (random pruning, per layer)")
    print(f"{'net':12} {'layer':6} {'batch':>5}  " + "  ".join(f"{d:>5}" for d in densities) + "   (dense/sparse time)")
    crossovers = {1: [], 100: []}
    for name in ("lenet5", "lenet300100"):
        for batch in (1, 100):
            net = npcaffe.Net(shared("upstream-dns", f"{name}.prototxt"),
                              shared("upstream-dns", f"caffe_{name}_original.caffemodel"), npcaffe.TEST)
            net.blobs["data"].reshape(batch, 1, 28, 28)
            net.reshape()
            net.blobs["data"].data[...] = images[:batch]
            net.forward_from_to()
            original = {n: [b.data.copy() for b in blobs] for n, blobs in net.params.items()}
            for i, (layer_name, layer) in enumerate(zip(net.layer_names, net.layers)):
                if not layer.blobs:
                    continue
                ratios = []
                for density in densities:
                    w = original[layer_name][0] * (rng.random(original[layer_name][0].shape) < density)
                    layer.blobs[0].data[...] = w
                    forward = lambda: layer.forward(net.bottom_vecs[i], net.top_vecs[i])  # noqa: E731
                    packing.sparsify(net, threshold=0)
                    dense_ms = median_ms(forward, repeats)
                    packing.sparsify(net, threshold=1.01, verify=False)  # the kernels, without the weights check
                    small_batch_threshold = packing.SMALL_BATCH_DENSITY_THRESHOLD
                    packing.SMALL_BATCH_DENSITY_THRESHOLD = 1.01  # measure small batches on the kernels too
                    sparse_ms = median_ms(forward, repeats)
                    packing.SMALL_BATCH_DENSITY_THRESHOLD = small_batch_threshold
                    ratios.append(dense_ms / sparse_ms)
                layer.blobs[0].data[...] = original[layer_name][0]
                above = [d for d, r in zip(densities, ratios) if r < 1]
                crossover = above[0] if above else densities[-1]
                if layer.blobs[0].count >= 10000:  # tiny layers cost the same either way
                    crossovers[batch].append(crossover)
                print(f"{name:12} {layer_name:6} {batch:>5}  " + "  ".join(f"{r:5.2f}" for r in ratios)
                      + f"   sparse slower from {crossover}")
    for batch in (1, 100):
        print(f"batch {batch}: lowest crossover of the layers with >= 10000 weights: {min(crossovers[batch])}")
    print(f"npcaffe.sparse.packing: DENSITY_THRESHOLD = {packing.DENSITY_THRESHOLD}, below batch {packing.SMALL_BATCH} "
          f"SMALL_BATCH_DENSITY_THRESHOLD = {packing.SMALL_BATCH_DENSITY_THRESHOLD}")


# -- the table ---------------------------------------------------------------------------
SLIM_NETS = {"resnet50": "prototxt/resnet50/ResNet-50-deploy.prototxt",
             "mobilenet_v2": "prototxt/mobilenet_v2/mobilenet_v2_deploy.prototxt",
             "se_resnet50": "prototxt/se_resnet50/SE-ResNet-50-deploy.prototxt"}


def generate_weights(net, rng):
    """Fill every parameter blob of `net` in place: weights He-scaled normal (std sqrt(2 / fan-in)), other
    blobs normal(0, 0.1), BatchNorm statistics near (0, 1) with scale factor 1."""
    for layer in net.layers:
        if layer.type == "BatchNorm":
            layer.blobs[0].data[...] = rng.normal(0, 0.1, layer.blobs[0].shape)
            layer.blobs[1].data[...] = rng.uniform(0.5, 1.5, layer.blobs[1].shape)
            layer.blobs[2].data[...] = 1
        elif layer.blobs:
            weight = layer.blobs[0]
            weight.data[...] = rng.normal(0, np.sqrt(2.0 / max(1, weight.count // weight.shape[0])), weight.shape)
            for blob in layer.blobs[1:]:
                blob.data[...] = rng.normal(0, 0.1, blob.shape)


def slim_workload(path, batch, seed=0):
    """(dense, masked, slim Net, multiply-adds dense, slim) for a deploy prototxt at a batch: He-scaled
    generated weights, BatchNorm near (0, 1), then about half of every prunable channel group's units
    masked off (npcaffe.pruning.groups.set_channel_masks) and the masked net slimmed (npcaffe slim)."""
    import npcaffe
    from npcaffe.fileio.prototxt import read_net
    from npcaffe.pruning import slim
    from npcaffe.pruning.groups import channel_groups, set_channel_masks
    from npcaffe.pruning.schedule import copy_params
    param = read_net(os.path.join(ROOT, path))
    for layer in param.layer:
        if layer.type == "Input":
            for shape in layer.input_param.shape:
                shape.dim[0] = batch
    rng = np.random.default_rng(seed)
    dense = npcaffe.Net(param, npcaffe.TEST)
    generate_weights(dense, rng)
    masked = npcaffe.Net(param, npcaffe.TEST)
    copy_params(dense, masked)
    for net in (dense, masked):
        for name in net.inputs:
            net.blobs[name].data[...] = np.random.default_rng(seed + 1).normal(size=net.blobs[name].shape)
    for group in channel_groups(masked).prunable():
        keep = rng.random(group.size) < 0.5
        keep[rng.integers(group.size)] = True
        set_channel_masks(masked, group, keep)
    result = slim.slim_net(masked, param)
    return (dense, masked, result["net"], sum(v[2] for v in result["before"].values()),
            sum(v[2] for v in result["after"].values()))


def slim_table(names, batches, repeats):
    """Forward milliseconds of the dense, masked and slim nets (npcaffe slim), median of `repeats` with
    the three taking turns, and whether the slim net's time drop is at least 0.7x its multiply-add
    drop (issue 14's bar)."""
    print(f"npcaffe bench --slim: {os.cpu_count()} CPUs, {blas_threads()} BLAS threads, load average "
          f"{os.getloadavg()[0]:.2f} at start; median of {repeats}, the three nets taking turns; generated weights, "
          "about half of every channel group masked off", flush=True)
    print(f"{'net':<14} {'batch':>5} {'dense ms':>10} {'masked ms':>10} {'slim ms':>10} {'mult-adds':>10} "
          f"{'time':>8}  time drop >= 0.7 x mult-add drop")
    for name in names:
        for batch in batches:
            dense, masked, slimmed, macs, macs_slim = slim_workload(SLIM_NETS[name], batch)
            ms = alternating_median_ms([dense.forward, masked.forward, slimmed.forward], repeats, 1)
            flop_ratio, time_ratio = macs_slim / macs, ms[2] / ms[1]
            ok = (1 - time_ratio) >= 0.7 * (1 - flop_ratio)
            print(f"{name:<14} {batch:>5} {ms[0]:>10.1f} {ms[1]:>10.1f} {ms[2]:>10.1f} {flop_ratio:>10.3f} "
                  f"{time_ratio:>8.3f}  {'yes' if ok else 'no'}", flush=True)
            # Three ResNet-sized nets at batch 16 hold several GiB; free them before the next row
            # builds its own (the layers' reference cycles keep them alive until a collection).
            del dense, masked, slimmed
            gc.collect()
    print(f"load average at end: {os.getloadavg()[0]:.2f} (other work on the machine inflates every figure)")


# -- data-parallel training over MPI (npcaffe.distributed) -----------------------------------
# net: (prototxt, batch per rank, input shape, weights or None for the fillers)
MPI_NETS = {
    "lenet5": (NETS["lenet5"][0], 64, (1, 28, 28), "caffe_lenet5_original.caffemodel"),
    "alexnet": ("prototxt/alexnet/alexnet_dns_train_val.prototxt", 8, (3, 227, 227), None),
}


def child_mpi(name, iterations, warmup):
    """One rank of `--mpi` (or the single process): `warmup` then `iterations` DNS training iterations
    on its own batch; rank 0 prints the milliseconds per iteration, those spent in the gradient
    reduction, and the images per second of all ranks together."""
    import npcaffe
    from npcaffe import glog
    from npcaffe.fileio.prototxt import read_net
    from npcaffe.graph import replace_data_layers
    from npcaffe.proto import caffe_pb2
    from npcaffe.solvers import solver_class
    path, batch, shape, weights = MPI_NETS[name]
    glog.set_quiet(True)
    net = replace_data_layers(read_net(os.path.join(ROOT, path)), {"data": (batch,) + shape, "label": (batch,)})
    param = caffe_pb2.SolverParameter(base_lr=0.01, momentum=0.9, weight_decay=0.0005, lr_policy="fixed",
                                      max_iter=10 ** 6, display=0, random_seed=1)
    param.net_param.CopyFrom(net)
    solver = solver_class("SGD")(param, where="bench")
    if weights:
        solver.net.copy_from(shared("upstream-dns", weights))
    rank, size = npcaffe.solver_rank(), npcaffe.solver_count()
    if name == "lenet5":
        images, labels = mnist(batch * size * 4)
    else:
        generator = np.random.default_rng(rank)
        images = generator.normal(size=(batch * 2,) + shape).astype(np.float32)
        labels = generator.integers(0, 1000, batch * 2).astype(np.float32)
    parallel = solver.data_parallel
    in_reduce = [0.0]
    if parallel is not None:
        reduce = parallel.reduce

        def timed_reduce(loss):
            start = time.perf_counter()
            try:
                return reduce(loss)
            finally:
                in_reduce[0] += time.perf_counter() - start
        parallel.reduce = timed_reduce
    batches = len(images) // batch

    def iteration(i):
        k = ((i * size + rank) % batches) * batch
        solver.net.blobs["data"].data[...] = images[k:k + batch]
        solver.net.blobs["label"].data[...] = labels[k:k + batch]
        solver.step(1)

    for i in range(warmup):
        iteration(i)
    if parallel is not None:
        parallel.comm.Barrier()
    in_reduce[0] = 0.0
    start = time.perf_counter()
    for i in range(iterations):
        iteration(warmup + i)
    if parallel is not None:
        parallel.comm.Barrier()
    elapsed = time.perf_counter() - start
    if rank == 0:
        from npcaffe.distributed import reduced_params
        floats = sum(b.count for b in reduced_params(solver.net))
        print(f"mpi-result {elapsed / iterations * 1e3:.3f} {in_reduce[0] / iterations * 1e3:.3f} "
              f"{size * batch * iterations / elapsed:.3f} {floats}", flush=True)


def mpiexec():
    """The mpiexec beside this Python (the mpich wheel's), else the one on PATH."""
    import shutil
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    found = beside if os.path.exists(beside) else shutil.which("mpiexec")
    if not found:
        sys.exit("--mpi needs mpiexec: pip install 'npcaffe[mpi]' (mpi4py and the mpich wheel)")
    return found


def mpi_table(ranks, names, iterations, warmup):
    """Training throughput with 1 and `ranks` ranks, each in fresh processes with one BLAS thread."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               NPCAFFE_NUM_THREADS="1")
    print(f"npcaffe bench --mpi {ranks}: {os.cpu_count()} CPUs, one BLAS thread per rank, load average "
          f"{os.getloadavg()[0]:.2f} at start; {iterations} iterations after {warmup} of warm-up, each rank on "
          "its own batch (the effective batch grows with the ranks, as Caffe's multi-GPU training)", flush=True)
    header = ("net", "ranks", "batch per rank", "ms per iteration", "in reduction + waiting (ms)", "images/s",
              "speedup", "floats reduced", "target")
    rows = []
    for name in names:
        single = None
        for n in (1, ranks):
            command = [sys.executable, os.path.abspath(__file__), f"--child-mpi={name}",
                       f"--mpi_iterations={iterations}", f"--mpi_warmup={warmup}"]
            if n > 1:
                command = [mpiexec(), "-n", str(n)] + command
            out = subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout
            ms, reduce_ms, throughput, floats = out.split("mpi-result")[-1].split()
            throughput = float(throughput)
            single = single or throughput
            target = f">= 1.6x with {ranks}" if name == "lenet5" and n > 1 else ""
            rows.append((name, str(n), str(MPI_NETS[name][1]), ms, reduce_ms if n > 1 else "-", f"{throughput:.1f}",
                         f"{throughput / single:.2f}x", f"{int(floats):,}", target))
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths)))
    print(f"load average at end: {os.getloadavg()[0]:.2f} (other work on the machine inflates every figure; "
          f"{ranks} ranks need {ranks} idle cores)")


# -- big nets against a PyTorch twin (issue 18) ------------------------------------------------
# net: (prototxt, image shape when the prototxt has a Data layer instead of an Input)
BIG_NETS = {"alexnet": ("prototxt/alexnet/alexnet_dns_train_val.prototxt", (3, 227, 227)),
            "resnet50": ("prototxt/resnet50/ResNet-50-deploy.prototxt", None)}
TWIN_TOLERANCE = 1e-3  # max |npcaffe - PyTorch| of the outputs allowed, as a share of max |npcaffe|
# |npcaffe - PyTorch| / |npcaffe| (L2 norms) of the input gradient allowed.  Not 1e-3: float32 rounding
# flips ReLU and max-pooling choices near ties and each flip moves the gradient upstream of it, so
# ResNet-50's input gradient differs by ~1.5% between npcaffe and PyTorch, and as much between PyTorch
# float32 and float64 (AlexNet: 1e-6); a twin with a wrong backward is off by order 1.
TWIN_GRADIENT_TOLERANCE = 0.05
TWIN_LAYER_TYPES = ("Input", "Convolution", "InnerProduct", "ReLU", "Pooling", "LRN", "BatchNorm", "Scale",
                    "Eltwise", "Concat", "Dropout", "Softmax", "Split")


def deploy_param(path, batch, image_shape=None):
    """The plain deploy NetParameter of a prototxt at `batch` images.  A deploy prototxt keeps its layers
    (its Input's batch set); a train_val one (image_shape given) is taken in its TEST phase with the Data
    layer as an Input of (batch,) + image_shape, no loss or accuracy, and DNS layers as their plain types
    (CConvolution -> Convolution, ...; their surgery parameters dropped)."""
    from npcaffe.fileio.prototxt import read_net
    from npcaffe.graph import DATA_LAYER_TYPES, filter_net
    from npcaffe.layer import registered_class
    from npcaffe.proto import caffe_pb2
    param = read_net(os.path.join(ROOT, path))
    if image_shape is None:
        for layer in param.layer:
            if layer.type == "Input":
                for shape in layer.input_param.shape:
                    shape.dim[0] = batch
        return param
    param.state.phase = caffe_pb2.TEST
    source = filter_net(param)
    del param.layer[:]
    for layer in source.layer:
        if layer.type in ("Accuracy", "SoftmaxWithLoss"):
            continue
        out = param.layer.add()
        if layer.type in DATA_LAYER_TYPES:
            out.name, out.type = layer.name, "Input"
            out.top.append(layer.top[0])  # the images; the labels fed only the loss
            out.input_param.shape.add().dim.extend((batch,) + tuple(image_shape))
            continue
        out.CopyFrom(layer)
        del out.include[:]
        cls = registered_class(layer.type)
        if getattr(cls, "plain_type", None):
            out.type = cls.plain_type
            out.ClearField(cls.surgery_field)
    return param


def _twin_step(torch, layer, bottom_shapes, new_param):
    """A function (list of bottom tensors -> list of top tensors) computing one npcaffe layer in PyTorch;
    new_param(array) gives a learnable torch parameter holding a copy of the array."""
    F = torch.nn.functional
    kind, p = layer.layer_param.type, layer.layer_param
    if kind not in TWIN_LAYER_TYPES:
        raise ValueError(f"PyTorch twin: layer '{layer.name}' has type '{kind}', which the twin does not "
                         f"translate (it knows {', '.join(TWIN_LAYER_TYPES)})")
    if kind == "Convolution":
        if layer.nd or layer.channel_axis != 1:
            raise ValueError(f"PyTorch twin: layer '{layer.name}' (Convolution): only 2-D convolutions over axis 1")
        weight = new_param(layer.blobs[0].data)
        bias = new_param(layer.blobs[1].data) if layer.bias_term else None
        stride, pad, dilation, group = tuple(layer.stride), tuple(layer.pad), tuple(layer.dilation), layer.group
        return lambda x: [F.conv2d(x[0], weight, bias, stride, pad, dilation, group)]
    if kind == "InnerProduct":
        axis = p.inner_product_param.axis % len(bottom_shapes[0])
        weight = new_param(layer.blobs[0].data)
        bias = new_param(layer.blobs[1].data.reshape(-1)) if layer.bias_term else None
        if layer.transpose:  # the weight is stored (K, N)
            return lambda x: [torch.addmm(bias, x[0].flatten(axis), weight) if bias is not None
                              else x[0].flatten(axis) @ weight]
        return lambda x: [F.linear(x[0].flatten(axis), weight, bias)]
    if kind == "ReLU":
        slope = float(layer.negative_slope)
        return (lambda x: [F.leaky_relu(x[0], slope)]) if slope else (lambda x: [F.relu(x[0])])
    if kind == "Pooling":
        pool = p.pooling_param
        kernel, stride, pad, ceil = tuple(layer.kernel), tuple(layer.stride), tuple(layer.pad), bool(layer.ceil_mode)
        if any(2 * q > k for q, k in zip(pad, kernel)):  # Caffe allows pad < kernel, PyTorch pad <= kernel / 2
            raise ValueError(f"PyTorch twin: layer '{layer.name}' (Pooling): pad {pad} over half the kernel {kernel}")
        if pool.pool == pool.MAX:
            return lambda x: [F.max_pool2d(x[0], kernel, stride, pad, ceil_mode=ceil)]
        if pool.pool == pool.AVE:
            # Caffe divides by the window clipped to the padded image (padding counted, the overhang past
            # it not): PyTorch's count_include_pad=True divisor, ceil_mode windows included.
            return lambda x: [F.avg_pool2d(x[0], kernel, stride, pad, ceil_mode=ceil, count_include_pad=True)]
        raise ValueError(f"PyTorch twin: layer '{layer.name}' (Pooling): only MAX and AVE pooling")
    if kind == "LRN":
        size, alpha, beta, k = layer.size, float(layer.alpha), float(layer.beta), float(layer.k)
        if layer.region == p.lrn_param.ACROSS_CHANNELS:
            # Caffe: x (k + alpha / size sum x^2) ^ -beta; PyTorch averages the squares over `size`: the same.
            return lambda x: [F.local_response_norm(x[0], size, alpha, beta, k)]
        # WITHIN_CHANNEL as Caffe (and npcaffe): shift 1 whatever k, alpha over size^2 (a zero-padded average).
        return lambda x: [x[0] * (1 + alpha * F.avg_pool2d(x[0] * x[0], size, 1, size // 2,
                                                          count_include_pad=True)) ** -beta]
    if kind == "BatchNorm":
        if not layer.use_global_stats:
            raise ValueError(f"PyTorch twin: layer '{layer.name}' (BatchNorm): only use_global_stats (inference)")
        factor = layer.blobs[2].data.reshape(-1)[0]
        factor = np.float32(0 if factor == 0 else 1 / factor)
        mean = torch.from_numpy(layer.blobs[0].data * factor)
        var = torch.from_numpy(layer.blobs[1].data * factor)
        eps = float(layer.eps)
        return lambda x: [F.batch_norm(x[0], mean, var, None, None, False, 0.0, eps)]
    if kind == "Scale":
        if len(bottom_shapes) != 1:
            raise ValueError(f"PyTorch twin: layer '{layer.name}' (Scale): only a learned scale (one bottom)")
        axis = p.scale_param.axis % len(bottom_shapes[0])
        trailing = (1,) * (len(bottom_shapes[0]) - axis - layer.blobs[0].data.ndim)
        scale = new_param(layer.blobs[0].data)
        bias = new_param(layer.blobs[1].data) if layer.bias_term else None
        if bias is None:
            return lambda x: [x[0] * scale.view(scale.shape + trailing)]
        return lambda x: [torch.addcmul(bias.view(bias.shape + trailing), x[0], scale.view(scale.shape + trailing))]
    if kind == "Eltwise":
        op, coeffs = p.eltwise_param.operation, [float(c) for c in layer.coeffs]
        if op == p.eltwise_param.SUM:
            if all(c == 1 for c in coeffs):
                return lambda x: [sum(x[1:], x[0])]
            return lambda x: [sum((c * t for c, t in zip(coeffs[1:], x[1:])), coeffs[0] * x[0])]
        combine = torch.mul if op == p.eltwise_param.PROD else torch.maximum

        def eltwise(x):
            out = x[0]
            for t in x[1:]:
                out = combine(out, t)
            return [out]
        return eltwise
    if kind == "Concat":
        axis = layer.axis
        return lambda x: [torch.cat(x, axis)]
    if kind == "Softmax":
        axis = layer.axis
        return lambda x: [F.softmax(x[0], axis)]
    if kind == "Split":
        tops = len(layer.layer_param.top)
        return lambda x: [x[0]] * tops
    return lambda x: [x[0]]  # Dropout: the identity outside training, as npcaffe's TEST phase


def torch_twin(torch, net):
    """A torch.nn.Module computing the npcaffe Net `net` (TEST phase) on copies of its weights, built by
    walking its layers, their LayerParameters and blob names: twin(**inputs) -> {output name: tensor}.
    Conv / InnerProduct / Scale parameters are learnable (requires_grad), BatchNorm statistics are not (as
    Caffe's, which its backward leaves alone).  The first call checks every top's shape against npcaffe's."""
    nn = torch.nn

    class Twin(nn.Module):
        def __init__(self):
            super().__init__()
            self.weights = nn.ParameterList()
            self.steps = []  # (layer name, function, bottom names, top names, npcaffe's top shapes)
            self.outputs = list(net.outputs)
            self.shapes_checked = False

            def new_param(array):
                self.weights.append(nn.Parameter(torch.from_numpy(np.array(array, np.float32))))
                return self.weights[-1]

            for i, (name, layer) in enumerate(zip(net.layer_names, net.layers)):
                if layer.layer_param.type == "Input":
                    continue
                bottom_shapes = [b.shape for b in net.bottom_vecs[i]]
                self.steps.append((name, _twin_step(torch, layer, bottom_shapes, new_param), net.bottom_names[name],
                                   net.top_names[name], [tuple(t.shape) for t in net.top_vecs[i]]))

        def forward(self, **inputs):
            blobs = dict(inputs)
            for name, step, bottoms, tops, shapes in self.steps:
                outs = step([blobs[b] for b in bottoms])
                if not self.shapes_checked:
                    got = [tuple(t.shape) for t in outs]
                    if got != shapes:
                        raise ValueError(f"PyTorch twin: layer '{name}' gives shapes {got}, npcaffe {shapes}")
                blobs.update(zip(tops, outs))
            self.shapes_checked = True
            return {name: blobs[name] for name in self.outputs}

    return Twin()


def twin_difference(torch, net, train, twin, images, top_diffs):
    """(max |output difference| / max |output|, |input gradient difference| / |input gradient| in L2 norms)
    between npcaffe and the twin: `net` forward, `train` (force_backward, same weights) forward and backward
    from `top_diffs`; infinite when npcaffe's values are all zero."""
    outputs = {name: blob.copy() for name, blob in net.forward(**images).items()}
    train.clear_param_diffs()
    train.forward(**images)
    grads = train.backward(**top_diffs)
    x = {name: torch.from_numpy(a.copy()).requires_grad_(True) for name, a in images.items()}
    theirs = twin(**x)
    torch.autograd.backward([theirs[n] for n in top_diffs], [torch.from_numpy(d) for d in top_diffs.values()])

    def relative(ours, other, norm):
        scale = max(norm(a) for a in ours.values())
        if scale == 0:  # all zero (a saturated Softmax's gradient): agreement would prove nothing
            return float("inf")
        return max(norm(ours[n] - other[n]) for n in ours) / scale

    largest = lambda a: float(np.abs(a).max())  # noqa: E731
    l2 = lambda a: float(np.linalg.norm(a.astype(np.float64)))  # noqa: E731
    return (relative(outputs, {n: t.detach().numpy() for n, t in theirs.items()}, largest),
            relative({n: grads[n] for n in images}, {n: t.grad.numpy() for n, t in x.items()}, l2))


def alternating_median_ms(fns, repeats, warmup):
    """Median milliseconds of each function, the functions run in turn repeat by repeat (after `warmup`
    turns) so that the machine's drifts hit all of them alike."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, samples in zip(fns, times):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
    return [statistics.median(samples) * 1e3 for samples in times]


def calibrate_batch_norm(net):
    """Set every BatchNorm's statistics to the channel means and variances of what reaches it from the
    net's current inputs (the layers run in order), as a trained net's are those of its data.  With
    statistics near (0, 1) the generated weights let ResNet-50's activations grow block after block until
    its Softmax saturates: outputs exactly 0 and 1, gradients exactly 0, nothing left to compare."""
    for i, layer in enumerate(net.layers):
        if layer.type == "BatchNorm":
            x = net.bottom_vecs[i][0].data
            axes = (0,) + tuple(range(2, x.ndim))
            layer.blobs[0].data[...] = x.mean(axes)
            layer.blobs[1].data[...] = x.var(axes)
            layer.blobs[2].data[...] = 1
        layer.forward(net.bottom_vecs[i], net.top_vecs[i])


def big_workload(torch, name, batch, seed=0):
    """(deploy Net, the same with force_backward, its PyTorch twin, {input: images}, {output: top diff}) for
    a BIG_NETS net at `batch`: generated weights (generate_weights, calibrate_batch_norm on the generated
    images) copied into all three."""
    import npcaffe
    from npcaffe.pruning.schedule import copy_params
    path, image_shape = BIG_NETS[name]
    param = deploy_param(path, batch, image_shape)
    net = npcaffe.Net(param, npcaffe.TEST)
    generate_weights(net, np.random.default_rng(seed))
    rng = np.random.default_rng(seed + 1)
    images = {n: rng.normal(size=net.blobs[n].shape).astype(np.float32) for n in net.inputs}
    for n, a in images.items():
        net.blobs[n].data[...] = a
    calibrate_batch_norm(net)
    param.force_backward = True
    train = npcaffe.Net(param, npcaffe.TEST)
    copy_params(net, train)
    # Fixed random weights on the outputs, not ones: a final Softmax sums to one, so the gradient of the
    # plain sum would be zero (rounding noise) and the twin's gradients could not be compared.
    top_diffs = {n: rng.normal(size=net.blobs[n].shape).astype(np.float32) for n in net.outputs}
    return net, train, torch_twin(torch, net), images, top_diffs


def net_state(net):
    """(its NetParameter, {layer: copies of its parameter arrays}, {input: a copy of its data}): what
    winograd_net builds a copy from, held apart so that the net can be freed first."""
    weights = {layer.name: [blob.data.copy() for blob in layer.blobs] for layer in net.layers}
    return net.param, weights, {name: net.blobs[name].data.copy() for name in net.inputs}


def winograd_net(param, weights, inputs):
    """The net of net_state's (param, weights, inputs) with `engine: WINOGRAD` on every Convolution (the
    3x3 stride-1 dense ones take Winograd's F(2x2, 3x3); the rest keep Caffe's path), run forward once,
    and how many layers took Winograd."""
    import npcaffe
    from npcaffe.layerlib.conv_paths import Winograd
    from npcaffe.proto import caffe_pb2
    copy_param = caffe_pb2.NetParameter()
    copy_param.CopyFrom(param)
    for layer in copy_param.layer:
        if layer.type == "Convolution":
            layer.convolution_param.engine = caffe_pb2.ConvolutionParameter.WINOGRAD
    copy = npcaffe.Net(copy_param, npcaffe.TEST)
    for layer in copy.layers:
        for blob, array in zip(layer.blobs, weights[layer.name]):
            blob.data[...] = array
    for name, array in inputs.items():
        copy.blobs[name].data[...] = array
    copy.forward()
    return copy, sum(1 for layer in copy.layers if getattr(layer, "winograd", False) and Winograd.suits(layer.shape))


def sgemm_rate(threads, size=1024, repeats=5):
    """Multiply-adds per second of NumPy's sgemm on a square `size` product: what the BLAS reaches on
    the shape it is best at, the ceiling of any GEMM-bound layer."""
    from threadpoolctl import threadpool_limits
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((size, size), dtype=np.float32) for _ in range(2))
    out = np.empty((size, size), np.float32)
    with threadpool_limits(limits=threads, user_api="blas"):
        ms = median_ms(lambda: np.dot(a, b, out=out), repeats, 2)
    return size ** 3 / (ms * 1e-3)


def layer_profile(net, top_diffs, backward, repeats=3):
    """What a pass of `net` spends where: ({layer type: median ms, run layer by layer}, median ms of the
    pass as Net runs it (its plan may fuse layers), multiply-adds of its Convolution / InnerProduct
    layers).  Forward only unless `backward`; then each such layer counts its product again for the
    weight gradient and, where its bottom needs one, for the bottom gradient."""
    from npcaffe.pruning.report import count_macs
    samples, whole = {}, []
    for repeat in range(-2, repeats):  # two passes to warm up
        if backward:
            net.clear_param_diffs(deferred=True)  # as a solver's step
        start = time.perf_counter()
        net.forward_from_to()
        if backward:
            for n, d in top_diffs.items():
                net.blobs[n].diff[...] = d
            net.backward_from_to()
        whole.append((time.perf_counter() - start) * 1e3)
        spent = {}
        for i, layer in enumerate(net.layers):
            start = time.perf_counter()
            layer.forward(net.bottom_vecs[i], net.top_vecs[i])
            spent[layer.type] = spent.get(layer.type, 0.0) + time.perf_counter() - start
        if backward:
            net.clear_param_diffs(deferred=True)
            for n, d in top_diffs.items():
                net.blobs[n].diff[...] = d
            for i in range(len(net.layers) - 1, -1, -1):
                start = time.perf_counter()
                net.layers[i].backward(net.top_vecs[i], net.bottom_need_backward[i], net.bottom_vecs[i])
                spent[net.layers[i].type] = spent.get(net.layers[i].type, 0.0) + time.perf_counter() - start
        if repeat < 0:
            whole.clear()
            continue
        for kind, seconds in spent.items():
            samples.setdefault(kind, []).append(seconds * 1e3)
    batch = net.blobs[net.inputs[0]].shape[0]
    index = {name: i for i, name in enumerate(net.layer_names)}
    macs = batch * sum(r.dense * (1 + (1 + bool(net.bottom_need_backward[index[r.name]][0]) if backward else 0))
                       for r in count_macs(net))
    return {kind: statistics.median(ms) for kind, ms in samples.items()}, statistics.median(whole), macs


GEMM_LAYER_TYPES = ("Convolution", "InnerProduct", "CConvolution", "CInnerProduct", "CMaskedConvolution",
                    "CMaskedInnerProduct")


def verdict(ours_ms, theirs_ms, goal, limit_ms=None):
    """The target cell's verdict: 'met', or the miss with its distance (the ratio reached and the time
    the goal needs); `limit_ms`: also at most that many ms."""
    ratio = theirs_ms / ours_ms
    misses = []
    if ratio < goal:
        misses.append(f"{ratio:.2f}x of {goal:g}x: needs <= {theirs_ms / goal:.{1 if ours_ms >= 100 else 2}f} ms")
    if limit_ms is not None and ours_ms > limit_ms:
        misses.append(f"{ours_ms - limit_ms:.2f} ms over {limit_ms:g} ms")
    return "met" if not misses else "MISSED (" + "; ".join(misses) + ")"


def weighted_ms(by_type):
    """The profile's time in the weighted (GEMM) layers."""
    return sum(ms for kind, ms in by_type.items() if kind in GEMM_LAYER_TYPES)


def needed_rate(by_type, whole_ms, macs, rate, needed_ms):
    """What a goal of `needed_ms` for the pass asks of its weighted layers, from the profile: the
    multiply-add rate they would need with the other layers as they are (or that those alone are over)."""
    gemm_ms = weighted_ms(by_type)
    other_ms = max(whole_ms - gemm_ms, 0)
    if other_ms >= needed_ms:
        return f"the other layers alone take {other_ms:.1f} ms, over the {needed_ms:.1f} ms it allows"
    need = macs / (needed_ms - other_ms) / 1e6
    return (f"with the other layers as they are, {needed_ms:.{1 if needed_ms >= 10 else 2}f} ms asks the weighted "
            f"layers for {need:.0f} G/s = {need * 1e9 / rate:.0%} of sgemm's square rate "
            f"(now {macs / gemm_ms / 1e6:.0f} G/s)")


def profile_line(measure, by_type, whole_ms, macs, rate, theirs_ms=None, goal=None):
    """What bounds a row, as one line: the GEMM layers' time and rate against sgemm's best, the rest by
    layer type, and (given PyTorch's time) the ratio to PyTorch that the multiply-adds alone at sgemm's
    best rate would allow (`macs` then must count only products the pass cannot skip); given a `goal`
    ratio the pass misses, what it would ask of the weighted layers (needed_rate)."""
    gemm_ms = weighted_ms(by_type)
    rest = sorted(((ms, kind) for kind, ms in by_type.items() if kind not in GEMM_LAYER_TYPES), reverse=True)
    line = (f"  profile, {measure}: {whole_ms:.{1 if whole_ms < 100 else 0}f} ms as Net runs it; the weighted "
            f"layers {gemm_ms:.{1 if gemm_ms < 100 else 0}f} ms ({min(gemm_ms / whole_ms, 1):.0%}), "
            f"{macs / 1e9:.3g} G mult-adds at {macs / gemm_ms / 1e6:.1f} G/s = {macs / gemm_ms * 1e3 / rate:.0%} of "
            f"sgemm's square rate ({rate / 1e9:.1f} G/s); the other layers "
            f"{max(whole_ms - gemm_ms, 0):.{1 if whole_ms < 100 else 0}f} ms (layer by layer: "
            + (", ".join(f"{kind} {ms:.{1 if ms < 10 else 0}f}" for ms, kind in rest[:4] if ms >= 0.05)
               or "none over 0.05 ms") + ")")
    if theirs_ms is not None:
        floor_ms = macs / rate * 1e3
        line += (f"; the mult-adds alone at sgemm's square rate take {floor_ms:.0f} ms: at most "
                 f"{theirs_ms / floor_ms:.2f}x PyTorch's {theirs_ms:.0f} ms on the exact path")
        if goal is not None and theirs_ms / whole_ms < goal:
            line += f"; {goal:g}x PyTorch: " + needed_rate(by_type, whole_ms, macs, rate, theirs_ms / goal)
    return line


def big_table(names, batches, repeats, warmup):
    """Forward and forward+backward milliseconds of npcaffe and its PyTorch twin per net and batch, the two
    frameworks alternating repeat by repeat; a twin whose outputs disagree with npcaffe's is not timed."""
    try:
        import torch
    except ImportError:
        sys.exit("--big compares with PyTorch: pip install torch (it is never a dependency of npcaffe)")
    from npcaffe import glog, parallel
    glog.set_quiet(True)
    threads = blas_threads()
    torch.set_num_threads(threads)
    print(f"npcaffe bench --big: {os.cpu_count()} CPUs, npcaffe {threads} BLAS threads (OPENBLAS_NUM_THREADS) and "
          f"npcaffe.parallel {parallel.num_threads()} thread(s), PyTorch {torch.__version__} "
          f"torch.set_num_threads({torch.get_num_threads()}); load average {os.getloadavg()[0]:.2f} at start; "
          f"median of {repeats} after {warmup} warm-up, the frameworks alternating repeat by repeat", flush=True)
    print("generated weights (He-scaled normal; BatchNorm statistics those of the generated images, "
          "calibrate_batch_norm), the same numbers in both; "
          "forward+backward = loss sum(output x fixed random weights): gradients of every Convolution, "
          "InnerProduct and Scale parameter and of the input images (npcaffe force_backward, parameter diffs "
          "cleared first; PyTorch autograd, zero_grad first), Dropout the identity in both; twin diff = outputs' max "
          f"|npcaffe - PyTorch| / max |npcaffe| (<= {TWIN_TOLERANCE:g}) / input gradients' |npcaffe - PyTorch| / "
          f"|npcaffe| in L2 norm (<= {TWIN_GRADIENT_TOLERANCE:g}: float32 flips of ReLU and max-pooling choices "
          "move a deep net's gradient by about a percent), else the row is not timed", flush=True)
    print("WINOGRAD: the same npcaffe nets with convolution_param { engine: WINOGRAD } on every Convolution "
          "(its 3x3 stride-1 layers take F(2x2, 3x3); the weight gradient stays exact); its error = max |WINOGRAD - "
          "exact| / max |exact| of the outputs", flush=True)
    header = ("net", "batch", "measure", "npcaffe ms", "PyTorch ms", "PyTorch/npcaffe", "twin diff",
              "WINOGRAD ms", "PyTorch/WINOGRAD", "WINOGRAD error", "target (the issue's)")
    widths = (8, 5, 16, 10, 10, 15, 17, 11, 16, 14, 15)

    def row(*cells):
        print(" | ".join(c.ljust(w) for c, w in zip(cells, widths)), flush=True)

    rate = sgemm_rate(threads)
    print(f"sgemm, square 1024 at {threads} thread(s): {rate / 1e9:.1f} G mult-adds/s; each row's profile line "
          "(npcaffe's exact path layer by layer, median of 3) says where its time goes", flush=True)
    row(*header)
    print("-+-".join("-" * w for w in widths))
    for name in names:
        for batch in batches:
            net, train, twin, images, top_diffs = big_workload(torch, name, batch)
            out_diff, grad_diff = twin_difference(torch, net, train, twin, images, top_diffs)
            agreement = f"{out_diff:.1e} / {grad_diff:.1e}"
            if not (out_diff <= TWIN_TOLERANCE and grad_diff <= TWIN_GRADIENT_TOLERANCE):
                row(name, str(batch), "not timed: twin differs", "-", "-", "-", agreement, "-", "-", "-",
                    f"diff <= {TWIN_TOLERANCE:g} / {TWIN_GRADIENT_TOLERANCE:g}")
                continue
            for n, a in images.items():
                net.blobs[n].data[...] = a
                train.blobs[n].data[...] = a
            wino, taken = winograd_net(*net_state(net))
            net.forward()
            wino_error = max(float(np.abs(wino.blobs[n].data - net.blobs[n].data).max()
                                   / max(np.abs(net.blobs[n].data).max(), 1e-30)) for n in net.outputs)
            x = {n: torch.from_numpy(a) for n, a in images.items()}
            x_grad = {n: torch.from_numpy(a.copy()).requires_grad_(True) for n, a in images.items()}
            diffs = {n: torch.from_numpy(d) for n, d in top_diffs.items()}

            def torch_forward():
                with torch.inference_mode():
                    twin(**x)

            def forward_backward(train):
                def run():
                    train.clear_param_diffs(deferred=True)
                    train.forward_from_to()
                    for n, d in top_diffs.items():  # an in-place last layer would overwrite it
                        train.blobs[n].diff[...] = d
                    train.backward_from_to()
                return run

            def torch_forward_backward():
                twin.zero_grad(set_to_none=True)
                for t in x_grad.values():
                    t.grad = None
                outs = twin(**x_grad)
                torch.autograd.backward([outs[n] for n in diffs], list(diffs.values()))

            def measure_row(measure, ours_ms, theirs_ms, wino_ms, wino_theirs_ms):
                row(name, str(batch), measure, f"{ours_ms:.1f}", f"{theirs_ms:.1f}", f"{theirs_ms / ours_ms:.2f}x",
                    agreement, f"{wino_ms:.1f}", f"{wino_theirs_ms / wino_ms:.2f}x",
                    f"{wino_error:.1e} ({taken} layers)",
                    f">= {BIG_GOAL:g}x PyTorch: {verdict(ours_ms, theirs_ms, BIG_GOAL)}")

            ours_ms, theirs_ms, wino_ms = alternating_median_ms([net.forward_from_to, torch_forward,
                                                                 wino.forward_from_to], repeats, warmup)
            measure_row("forward", ours_ms, theirs_ms, wino_ms, theirs_ms)
            print(profile_line("forward", *layer_profile(net, top_diffs, backward=False), rate, theirs_ms,
                               BIG_GOAL), flush=True)
            # ResNet-50's nets at batch 16 hold gigabytes each, the force_backward ones several: the
            # WINOGRAD copy of the force_backward net is made after the exact one is timed and freed, and
            # timed against PyTorch again (its ratio is from that second alternation).
            del net, wino
            gc.collect()
            ours_ms, theirs_ms = alternating_median_ms([forward_backward(train), torch_forward_backward], repeats,
                                                       warmup)
            fb_profile = layer_profile(train, top_diffs, backward=True)
            state = net_state(train)
            del train  # the two ResNet-50 force_backward nets at batch 16 do not fit in memory together
            gc.collect()
            wino_train, _ = winograd_net(*state)
            wino_ms, wino_theirs_ms = alternating_median_ms([forward_backward(wino_train), torch_forward_backward],
                                                            repeats, warmup)
            measure_row("forward+backward", ours_ms, theirs_ms, wino_ms, wino_theirs_ms)
            print(profile_line("forward+backward", *fb_profile, rate, theirs_ms, BIG_GOAL), flush=True)
            del twin, x_grad, wino_train
            gc.collect()
    print(f"load average at end: {os.getloadavg()[0]:.2f} (other work on the machine inflates every figure)")


# (name, channels, num_output, kernel, pad, stride, input size, group): ResNet-50's distinct convolutions,
# AlexNet's first two and LeNet-5's conv2 (the shape the batch's columns were built for).
CONV_PATH_SHAPES = [
    ("resnet conv1", 3, 64, 7, 3, 2, 224, 1), ("resnet 56 1x1 in", 64, 64, 1, 0, 1, 56, 1),
    ("resnet 56 3x3", 64, 64, 3, 1, 1, 56, 1), ("resnet 56 1x1 out", 64, 256, 1, 0, 1, 56, 1),
    ("resnet 56 1x1 reduce", 256, 64, 1, 0, 1, 56, 1), ("resnet 28 1x1 reduce", 512, 128, 1, 0, 1, 28, 1),
    ("resnet 28 3x3", 128, 128, 3, 1, 1, 28, 1), ("resnet 28 1x1 out", 128, 512, 1, 0, 1, 28, 1),
    ("resnet 14 1x1 reduce", 1024, 256, 1, 0, 1, 14, 1), ("resnet 14 3x3", 256, 256, 3, 1, 1, 14, 1),
    ("resnet 14 1x1 out", 256, 1024, 1, 0, 1, 14, 1), ("resnet 7 3x3", 512, 512, 3, 1, 1, 7, 1),
    ("resnet 7 1x1 reduce", 2048, 512, 1, 0, 1, 7, 1), ("resnet 1x1 s2 56", 256, 128, 1, 0, 2, 56, 1),
    ("resnet 1x1 s2 proj 28", 512, 1024, 1, 0, 2, 28, 1),
    ("alexnet conv1", 3, 96, 11, 0, 4, 227, 1), ("alexnet conv2", 96, 256, 5, 2, 1, 27, 2),
    ("lenet5 conv2", 20, 50, 5, 0, 1, 12, 1)]


def conv_paths_table(batch, repeats):
    """Forward+backward ms of DenseColumns and ImageColumns on each CONV_PATH_SHAPES layer, alternating."""
    from npcaffe.blob import Blob
    from npcaffe.layerlib.conv_paths import IMAGE_COLUMNS_POSITIONS, ConvShape, DenseColumns, ImageColumns, Scratch
    threads = blas_threads()
    print(f"npcaffe bench --conv_paths: batch {batch}, {threads} BLAS thread(s), load average "
          f"{os.getloadavg()[0]:.2f} at start; forward + backward (weight, bias and bottom gradients) of one "
          f"layer, median of {repeats} alternating; ImageColumns is taken from {IMAGE_COLUMNS_POSITIONS} output "
          "positions on", flush=True)
    widths = (22, 10, 16, 17, 9, 12)
    print(" | ".join(c.ljust(w) for c, w in zip(("layer", "positions", "batch columns ms", "image by image ms",
                                                  "speed-up", "path taken"), widths)))
    rng = np.random.default_rng(0)
    for name, channels, outputs, kernel, pad, stride, size, group in CONV_PATH_SHAPES:
        out = (size + 2 * pad - kernel) // stride + 1
        shape = ConvShape(batch, channels, outputs, group, (kernel, kernel), (pad, pad), (stride, stride), (1, 1),
                          (size, size), (out, out))
        bottom, top = Blob((batch, channels, size, size)), Blob((batch, outputs, out, out))
        bottom.data[...] = rng.standard_normal(bottom.shape, dtype=np.float32)
        top.diff[...] = rng.standard_normal(top.shape, dtype=np.float32)
        weight = rng.standard_normal((outputs, channels // group, kernel, kernel), dtype=np.float32)
        bias = np.zeros(outputs, np.float32)
        weight_diff, bias_diff = np.zeros_like(weight), np.zeros_like(bias)

        def run(path):
            def step():
                path.forward([bottom], [top], weight, bias)
                path.backward([top], [True], [bottom], weight, None, weight_diff, bias_diff)
            return step

        dense_ms, image_ms = alternating_median_ms([run(DenseColumns(shape, Scratch())),
                                                    run(ImageColumns(shape, Scratch()))], repeats, 2)
        taken = "ImageColumns" if ImageColumns.suits(shape) else "DenseColumns"
        print(" | ".join(c.ljust(w) for c, w in zip((name, str(out * out), f"{dense_ms:.2f}", f"{image_ms:.2f}",
                                                     f"{dense_ms / image_ms:.2f}x", taken), widths)), flush=True)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


def batch_list(parser, flag, text):
    """Positive batch sizes from a comma-separated flag value (a usage error otherwise)."""
    try:
        batches = [int(b) for b in text.split(",") if b]
    except ValueError:
        batches = []
    if not batches or min(batches) < 1:
        parser.error(f"{flag}: positive batch sizes, comma-separated; got '{text}'")
    return batches


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--no_load", "--no-load", action="store_true",
                        help="leave out the training rows beside a busy process")
    parser.add_argument("--threshold", action="store_true", help="measure the sparse/dense crossover instead")
    parser.add_argument("--slim", nargs="*", choices=sorted(SLIM_NETS), metavar="NET",
                        help="instead: dense vs masked vs slim (npcaffe slim) inference of these nets "
                             f"({', '.join(sorted(SLIM_NETS))}; default all) with generated weights and about half "
                             "of every channel group masked off")
    parser.add_argument("--slim_batches", "--slim-batches", default="1,16",
                        help="batch sizes for --slim, comma-separated (default 1,16)")
    parser.add_argument("--big", nargs="*", choices=sorted(BIG_NETS), metavar="NET",
                        help="instead: forward and forward+backward of these nets "
                             f"({', '.join(sorted(BIG_NETS))}; default both) in npcaffe and in a PyTorch twin "
                             "built from the npcaffe Net, generated weights")
    parser.add_argument("--conv_paths", "--conv-paths", action="store_true",
                        help="instead: Convolution's batch-columns and image-by-image paths on ResNet-50's, "
                             "AlexNet's and LeNet-5's layer shapes at batch 16")
    parser.add_argument("--big_batches", "--big-batches", default="1,16",
                        help="batch sizes for --big, comma-separated (default 1,16)")
    parser.add_argument("--mpi", type=int, metavar="N",
                        help="instead: data-parallel training throughput of LeNet-5 and AlexNet DNS with 1 and N "
                             "ranks (mpiexec -n N, npcaffe.distributed), one BLAS thread per rank")
    parser.add_argument("--mpi_nets", "--mpi-nets", default="lenet5,alexnet",
                        help=f"nets for --mpi, comma-separated ({', '.join(MPI_NETS)}; default both)")
    parser.add_argument("--mpi_iterations", "--mpi-iterations", type=int, default=None,
                        help="timed iterations per run for --mpi (default 200 for LeNet-5, 5 for AlexNet; "
                             "--quick: 50 and 2)")
    parser.add_argument("--mpi_warmup", "--mpi-warmup", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-mpi", help=argparse.SUPPRESS)
    parser.add_argument("--child-first-iteration", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-training", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_first_iteration:
        return child_first_iteration()
    if args.child_training:
        return child_training(args.child_training)
    if args.child_mpi:
        return child_mpi(args.child_mpi, args.mpi_iterations, args.mpi_warmup)
    if args.mpi is not None:
        if args.mpi < 2:
            parser.error(f"--mpi: the number of ranks to compare with one must be at least 2, got {args.mpi}")
        names = [n for n in args.mpi_nets.split(",") if n]
        unknown = [n for n in names if n not in MPI_NETS]
        if unknown or not names:
            parser.error(f"--mpi_nets: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(MPI_NETS)}")
        for name in names:
            lenet = name == "lenet5"
            iterations = args.mpi_iterations or ((50 if args.quick else 200) if lenet else (2 if args.quick else 5))
            warmup = args.mpi_warmup if args.mpi_warmup is not None else (10 if lenet else 1)
            if iterations < 1 or warmup < 0:
                parser.error("--mpi_iterations must be at least 1")
            mpi_table(args.mpi, [name], iterations, warmup)
        return None
    if args.conv_paths:
        return conv_paths_table(16, 3 if args.quick else 9)
    if args.big is not None:
        batches = batch_list(parser, "--big_batches", args.big_batches)
        return big_table(args.big or sorted(BIG_NETS), batches, 3 if args.quick else 10, 1 if args.quick else 2)
    repeats = 15 if args.quick else 50
    if args.threshold:
        return threshold_table(repeats)
    if args.slim is not None:
        batches = batch_list(parser, "--slim_batches", args.slim_batches)
        return slim_table(args.slim or sorted(SLIM_NETS), batches, 3 if args.quick else 10)

    threads = blas_threads()
    from npcaffe import parallel
    try:
        import torch
        torch_default = torch.get_num_threads()
        torch.set_num_threads(threads)
        torch_note = f"PyTorch {torch.__version__}, {threads} threads"
    except ImportError:
        torch, torch_default = None, None
        torch_note = "PyTorch not installed: its column is empty (pip install torch to fill it)"
    load = os.getloadavg()[0]
    print(f"npcaffe bench: {os.cpu_count()} CPUs, {threads} BLAS threads, "
          f"npcaffe.parallel {parallel.num_threads()} thread(s), "
          f"load average {load:.2f} at start; "
          f"median of {repeats} after warm-up; {torch_note}")
    images, labels = mnist()
    rows, profiles = [], []
    from threadpoolctl import threadpool_limits

    def row(label, ours, theirs=None, target=""):
        ratio = f"{theirs / ours:.2f}x" if theirs else ""
        digits = 3 if ours < 1 else 2
        rows.append((label, f"{ours:.{digits}f}", f"{theirs:.{digits}f}" if theirs else "-", ratio, target))

    for name, label in (("lenet5", "LeNet-5"), ("lenet300100", "LeNet-300-100")):
        measured = training_comparison(torch, torch_default, name, images, labels, 3 if args.quick else 5,
                                       under_load=not args.no_load)
        for setting, (ours, theirs) in measured.items():
            if setting == "under load":
                continue
            limit = LENET5_LIMIT_MS if name == "lenet5" and setting == "1 thread each" else None
            target = f">= {TRAINING_GOAL:g}x PyTorch" + (f", <= {limit:g} ms" if limit else "")
            if theirs:
                target += ": " + verdict(ours, theirs, TRAINING_GOAL, limit)
            row(f"{label} DNS training iteration, batch 64, {setting} (ms)", ours, theirs, target)
        if "under load" in measured:
            (ours, theirs), (idle_ours, idle_theirs) = measured["under load"], list(measured.values())[1]
            row(f"{label} DNS training iteration, defaults, one busy process beside (ms)", ours, theirs)
            slower = ("met" if ours / idle_ours <= theirs / idle_theirs else "MISSED") if theirs else ""
            rows.append(("  slowdown from the busy process: npcaffe / PyTorch", f"{ours / idle_ours:.2f}x",
                         f"{theirs / idle_theirs:.2f}x" if theirs else "-", "",
                         f"npcaffe's <= PyTorch's: {slower}" if theirs else "npcaffe's <= PyTorch's"))
        if name == "lenet5":
            total = measured["1 thread each"][0]
            rows.append(("  vs upstream DNS Caffe's ~23 ms (reference figure, not measured here)", "", "",
                         f"{UPSTREAM_TRAINING_MS / total:.2f}x", ">= 2x upstream"))
        _, forward_backward, update = npcaffe_training_steps(name, images, labels)
        pass_ms = timed_turn(forward_backward, 1, count=repeats, warmup=5)
        update_ms = timed_turn(update, 1, count=repeats, warmup=5)
        row("  of which forward+backward, 1 thread (ms)", pass_ms)
        row("  of which solver update, 1 thread (ms)", update_ms)
        solver_net = npcaffe_solver(name).net
        solver_net.blobs["data"].data[...] = images[:64]
        solver_net.blobs["label"].data[...] = labels[:64]
        rate = sgemm_rate(1)
        with threadpool_limits(limits=1, user_api="blas"):
            by_type, whole_ms, macs = layer_profile(solver_net, {}, backward=True, repeats=repeats)
        profiles.append(profile_line(f"{label} DNS forward+backward, 1 thread (mult-adds: the dense products, "
                                     "as PyTorch's twin computes them)", by_type, whole_ms, macs, rate))
        # The goals npcaffe's one-thread iteration misses (one thread each; the defaults, where npcaffe
        # runs one thread): what they would ask of the pass, with the update and the rest as they are.
        for setting in [s for s in ("1 thread each", thread_settings(torch_default)[1][0]) if s in measured]:
            ours, theirs = measured[setting]
            if not theirs or theirs / ours >= TRAINING_GOAL:
                continue
            needed = theirs / TRAINING_GOAL
            outside = ours - pass_ms  # the update, the surgery's bookkeeping and the solver's Python
            line = (f"  {label}, {setting}: {TRAINING_GOAL:g}x PyTorch's {theirs:.2f} ms needs an iteration <= "
                    f"{needed:.2f} ms; npcaffe's takes {ours:.2f}: the forward+backward {pass_ms:.2f} ms, the "
                    f"rest {outside:.2f} ms (update {update_ms:.2f}); ")
            if outside >= needed:
                line += "the rest alone is over it"
            else:
                line += needed_rate(by_type, whole_ms, macs, rate, needed - outside)
            profiles.append(line)
    for name, label in (("lenet5", "LeNet-5"), ("lenet300100", "LeNet-300-100")):
        for batch in (1, 100):
            # A batch-1 forward takes tens of microseconds: many more repeats, and the
            # dense and sparse paths measured in turn, so drifts hit both alike.
            n = repeats * 20 if batch == 1 else repeats
            rounds = 9 if batch == 1 else 3
            measured = {"dense": [], "pruned_dense": [], "pruned": [], "fixed": []}
            for _ in range(rounds):
                measured["dense"].append(npcaffe_inference(name, f"caffe_{name}_original.caffemodel", batch, images,
                                                           n // rounds))
                measured["pruned_dense"].append(npcaffe_inference(name, f"caffe_{name}_sparse.caffemodel", batch,
                                                                  images, n // rounds, dense=True))
                measured["pruned"].append(npcaffe_inference(name, f"caffe_{name}_sparse.caffemodel", batch, images,
                                                            n // rounds))
                measured["fixed"].append(npcaffe_inference(name, f"caffe_{name}_sparse.caffemodel", batch, images,
                                                           n // rounds, verify=False))
            dense, pruned_dense, pruned, fixed = (statistics.median(measured[k]) for k in measured)
            theirs = torch_inference(torch, name, f"caffe_{name}_original.caffemodel", batch, images, n) \
                if torch else None
            row(f"{label} inference, batch {batch}, dense model (ms)", dense, theirs)
            row(f"{label} inference, batch {batch}, pruned model, dense path (ms)", pruned_dense)
            target = ">= 3x our dense path" if batch == 1 else ">= 1.5x our dense path"
            rows.append((f"{label} inference, batch {batch}, pruned model, sparse path, Python API (ms)",
                         f"{pruned:.3f}", "-", f"{pruned_dense / pruned:.2f}x vs dense path", target))
            rows.append((f"{label} inference, batch {batch}, pruned model, sparse path, as npcaffe test (ms)",
                         f"{fixed:.3f}", "-", f"{pruned_dense / fixed:.2f}x vs dense path", target))
    _, out = run_child("--child-training=50")
    rows.append(("Peak RSS, LeNet-5 DNS training, 50 iterations (MB)", f"{int(out.split()[-1]) / 1024:.0f}", "-", "",
                 "<= 400 MB"))
    cold, warm = cold_start(1 if args.quick else 3)
    rows.append(("Cold start to first LeNet-5 iteration, empty Numba cache (s)", f"{cold:.2f}", "-", "", ""))
    rows.append(("Cold start to first LeNet-5 iteration, warm Numba cache (s)", f"{warm:.2f}", "-", "", "<= 3 s"))

    widths = [max(len(r[i]) for r in rows + [("measure", "npcaffe", "PyTorch", "ratio", "target")])
              for i in range(5)]
    header = ("measure", "npcaffe", "PyTorch", "ratio", "target")
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths)))
    print("\nWhere the training iteration's time goes (layer by layer, median of the repeats), and what each "
          "missed goal would ask:")
    for line in profiles:
        print(line)
    print("\nReference figures (not measured here):")
    for label, value in UPSTREAM_REFERENCE:
        print(f"  {label}: {value}")
    print(f"load average at end: {os.getloadavg()[0]:.2f} (other work on the machine inflates every figure)")


if __name__ == "__main__":
    main()
