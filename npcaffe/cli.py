"""`npcaffe` command line, mirroring the `caffe` tool's commands and flags."""
import argparse
import sys
import time

import numpy as np

from . import glog
from .errors import NpcaffeError


def _phase(name):
    from .layer import TEST, TRAIN
    return {"TRAIN": TRAIN, "TEST": TEST}[name.upper()]


def _stages(text):
    return [s for s in (text or "").split(",") if s]


def cmd_test(args):
    """Score a model: run N forward batches, print the mean of every output blob."""
    from .net import Net
    net = Net(args.model, _phase("TEST"), level=args.level, stages=_stages(args.stage))
    if args.weights:
        for w in args.weights.split(","):
            net.copy_from(w)
    else:
        glog.warning("no --weights given: scoring the net's freshly initialised parameters")
    glog.info(f"Running for {args.iterations} iterations.")
    totals, names = None, []
    loss_total = 0.0
    for i in range(args.iterations):
        loss_total += float(net.forward_from_to())
        scores = []
        for name in net.outputs:
            values = net.blobs[name].flat_data
            for v in values:
                scores.append((name, np.float32(v)))
                glog.info(f"Batch {i}, {name} = {glog.fmt(v)}")
        if totals is None:
            totals = [s for _, s in scores]
            names = [n for n, _ in scores]
        else:
            # Caffe accumulates the scores in float32.
            totals = [np.float32(t + s) for t, (_, s) in zip(totals, scores)]
    glog.info(f"Loss: {glog.fmt(np.float32(loss_total) / args.iterations)}")
    weights = net.blob_loss_weights
    for name, total in zip(names, totals or []):
        mean = np.float32(total) / np.float32(args.iterations)
        note = ""
        if weights[name]:
            note = f" (* {glog.fmt(weights[name])} = {glog.fmt(weights[name] * mean)} loss)"
        glog.info(f"{name} = {glog.fmt(mean)}{note}")
        print(f"{name} = {glog.fmt(mean)}{note}")
    return 0


def cmd_time(args):
    """Time forward and backward of every layer, as `caffe time`."""
    from .net import Net
    net = Net(args.model, _phase(args.phase), level=args.level, stages=_stages(args.stage))
    if args.weights:
        net.copy_from(args.weights)
    glog.info("Performing Forward")
    loss = net.forward_from_to()
    glog.info(f"Initial loss: {glog.fmt(loss)}")
    glog.info("Performing Backward")
    net.backward_from_to()
    n_layers = len(net.layers)
    fwd = np.zeros(n_layers)
    bwd = np.zeros(n_layers)
    glog.info("*** Benchmark begins ***")
    glog.info(f"Testing for {args.iterations} iterations.")
    total_start = time.perf_counter()
    for j in range(args.iterations):
        iter_start = time.perf_counter()
        for i, layer in enumerate(net.layers):
            t = time.perf_counter()
            layer.forward(net.bottom_vecs[i], net.top_vecs[i])
            fwd[i] += time.perf_counter() - t
        for i in range(n_layers - 1, -1, -1):
            t = time.perf_counter()
            net.layers[i].backward(net.top_vecs[i], net.bottom_need_backward[i], net.bottom_vecs[i])
            bwd[i] += time.perf_counter() - t
        glog.info(f"Iteration: {j + 1} forward-backward time: {(time.perf_counter() - iter_start) * 1e3:.3f} ms.")
    total = time.perf_counter() - total_start
    print("Average time per layer:")
    width = max(len(n) for n in net._layer_names)
    for i, name in enumerate(net._layer_names):
        print(f"{name:>{width}}\tforward: {fwd[i] / args.iterations * 1e3:.4f} ms.")
        print(f"{name:>{width}}\tbackward: {bwd[i] / args.iterations * 1e3:.4f} ms.")
    print(f"Average Forward pass: {fwd.sum() / args.iterations * 1e3:.4f} ms.")
    print(f"Average Backward pass: {bwd.sum() / args.iterations * 1e3:.4f} ms.")
    print(f"Average Forward-Backward: {total / args.iterations * 1e3:.4f} ms.")
    print(f"Total Time: {total * 1e3:.4f} ms.")
    n_params = sum(b.count for b in net.learnable_params)
    print(f"Learnable parameters: {n_params:,}")
    return 0


def cmd_convert_mnist(args):
    from .data.mnist import convert_mnist
    n = convert_mnist(args.images, args.labels, args.out)
    print(f"wrote {n} items to {args.out}")
    return 0


def cmd_prepare_mnist(args):
    """MNIST train/test LMDBs under --out, from --mnist DIR, $NPCAFFE_MNIST_DIR or a verified download."""
    from .data.mnist import prepare_mnist_lmdbs
    train, test = prepare_mnist_lmdbs(args.out, args.mnist)
    print(f"train: {train}\ntest:  {test}")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="npcaffe", description="Caffe rebuilt in NumPy + Numba.")
    sub = parser.add_subparsers(dest="command", required=True)

    def net_flags(p, phase_default=None):
        p.add_argument("--model", required=True, help="net definition .prototxt")
        p.add_argument("--weights", help="trained .caffemodel (comma-separated list allowed for test)")
        p.add_argument("--iterations", type=int, default=50)
        p.add_argument("--level", type=int, default=0, help="net state level")
        p.add_argument("--stage", default="", help="comma-separated net state stages")
        if phase_default:
            p.add_argument("--phase", default=phase_default, choices=["TRAIN", "TEST", "train", "test"])

    p = sub.add_parser("test", help="score a model on its TEST-phase data")
    net_flags(p)
    p.set_defaults(func=cmd_test)
    p = sub.add_parser("time", help="time forward/backward per layer")
    net_flags(p, phase_default="TRAIN")
    p.set_defaults(func=cmd_time)
    p = sub.add_parser("convert-mnist", help="write MNIST IDX files into an LMDB as Caffe's convert_mnist_data")
    p.add_argument("images")
    p.add_argument("labels")
    p.add_argument("out")
    p.set_defaults(func=cmd_convert_mnist)
    p = sub.add_parser("prepare-mnist", help="MNIST LMDBs for the nets in prototxt/ (data/mnist/ by default)")
    p.add_argument("--mnist", help="directory with the four MNIST .gz IDX files (else $NPCAFFE_MNIST_DIR or download)")
    p.add_argument("--out", default="data/mnist", help="output directory (default: data/mnist)")
    p.set_defaults(func=cmd_prepare_mnist)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except NpcaffeError as e:
        print(f"npcaffe {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
