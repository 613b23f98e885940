"""`npcaffe` command line, mirroring the `caffe` tool's commands and flags."""
import argparse
import contextlib
import os
import shlex
import signal
import sys
import time

import numpy as np

from . import _interrupted_while_starting, _interrupted_while_starting_signals, blas, distributed, glog, progress
from .argtypes import non_negative_float, non_negative_int, positive_int
from .errors import NpcaffeError
from .kernels import glibc_rand
from .layerlib.python_layer import python_layers_allowed


def _phase(name):
    from .layer import TEST, TRAIN
    return {"TRAIN": TRAIN, "TEST": TEST}[name.upper()]


def _stages(text):
    return [s for s in (text or "").split(",") if s]




def cmd_test(args):
    """Score a model: run N forward batches, print the mean of every output blob (an error, naming
    the first layer and blob, when the weights or an output hold NaN / inf)."""
    from .finite import check_outputs, check_params
    from .net import Net
    net = Net(args.model, _phase("TEST"), level=args.level, stages=_stages(args.stage))
    if args.weights:
        for w in args.weights.split(","):
            net.copy_from(w, pack=False)  # packed once, below
        from .sparse.packing import sparsify
        sparsify(net, verify=False)  # the weights stay fixed from here on
        check_params(net, f"--weights {args.weights}")
    else:
        glog.warning("no --weights given: scoring the net's freshly initialised parameters")
    glog.info(f"Running for {args.iterations} iterations.")
    totals, names = None, []
    loss_total = 0.0
    with progress.bar("test", args.iterations) as shown:
        for i in range(args.iterations):
            loss_total += float(net.forward_from_to())
            check_outputs(net, f"{args.model}, batch {i}")
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
            shown.update(1)
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
    from .fileio.prototxt import read_net
    from .graph import replace_data_layers
    from .net import Net
    from .synthetic import check_finite, fill_inputs, parse_data_shapes, with_label_shapes
    shapes = parse_data_shapes(args.data_shape)
    model = args.model
    if shapes:
        # Published nets without their datasets: data layers become Inputs of the given shapes.
        param = read_net(args.model)
        shapes = with_label_shapes(param, shapes)
        model = replace_data_layers(param, shapes)
    net = Net(model, _phase(args.phase), level=args.level, stages=_stages(args.stage))
    unknown = sorted(set(shapes) - set(net.inputs))
    if unknown:
        raise NpcaffeError(f"--data_shape names {unknown}, which are not data-layer tops of {args.model} "
                           f"in phase {args.phase.upper()} (its inputs: {net.inputs})")
    if args.weights:
        net.copy_from(args.weights)
    fill_inputs(net)
    glog.info("Performing Forward")
    loss = net.forward_from_to()
    check_finite(net, "the first forward pass")
    glog.info(f"Initial loss: {glog.fmt(loss)}")
    glog.info("Performing Backward")
    net.backward_from_to()
    check_finite(net, "the first backward pass", diffs=True)
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
    width = max(len(n) for n in net.layer_names)
    for i, name in enumerate(net.layer_names):
        print(f"{name:>{width}}\tforward: {fwd[i] / args.iterations * 1e3:.4f} ms.")
        print(f"{name:>{width}}\tbackward: {bwd[i] / args.iterations * 1e3:.4f} ms.")
    print(f"Average Forward pass: {fwd.sum() / args.iterations * 1e3:.4f} ms.")
    print(f"Average Backward pass: {bwd.sum() / args.iterations * 1e3:.4f} ms.")
    print(f"Average Forward-Backward: {total / args.iterations * 1e3:.4f} ms.")
    print(f"Total Time: {total * 1e3:.4f} ms.")
    learned = sum(b.count for b, lr in zip(net.learnable_params, net.params_lr) if lr != 0)
    print(f"Learnable parameters: {learned:,}")
    frozen = sum(b.count for b, lr in zip(net.learnable_params, net.params_lr) if lr == 0)
    if frozen:
        print(f"Parameters with lr_mult 0 (e.g. BatchNorm statistics): {frozen:,}")
    return 0


@contextlib.contextmanager
def signal_actions(solver, sigint_effect="stop", sighup_effect="snapshot", sigterm_effect=None):
    """SIGINT / SIGHUP become solver actions while training, as caffe.cpp's SignalHandler: stop
    (after the final snapshot), snapshot, or none; a second SIGINT with `stop` stops at once.
    SIGTERM only when sigterm_effect is given (Caffe leaves it alone; npcaffe surgery stops on it)."""
    import signal

    pending = []
    effects = {"SIGINT": sigint_effect, "SIGHUP": sighup_effect}
    if sigterm_effect is not None:
        effects["SIGTERM"] = sigterm_effect

    def on_signal(signum, frame):
        effect = effects[signal.Signals(signum).name]
        if effect == "stop" and "stop" in pending:
            raise KeyboardInterrupt  # asked twice: stop now, without the final snapshot
        pending.append(effect)

    def action():
        return pending.pop(0) if pending else "none"

    solver.action_function = action
    previous = {}
    for name in effects:
        if hasattr(signal, name):
            try:
                previous[name] = signal.signal(getattr(signal, name), on_signal)
            except ValueError:  # not the main thread
                pass
    try:
        yield solver
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)


def cmd_train(args):
    """Train or fine-tune from a solver definition, as `caffe train` (tools/caffe.cpp, Caffe 1.0)."""
    if args.snapshot and args.weights:
        raise NpcaffeError("give --snapshot to resume training or --weights to fine-tune, not both")
    glog.set_quiet(args.quiet)
    try:
        return _train(args)
    finally:
        glog.set_quiet(False)


def _train(args):
    from .solvers import load_solver_param, make_snapshot_directory, solver_class
    param, where = load_solver_param(args.solver)
    # As caffe.cpp: --level always overrides the solver's train_state level; stages are added.
    param.train_state.level = args.level
    param.train_state.stage.extend(_stages(args.stage))
    if args.iterations is not None:
        param.max_iter = args.iterations
    if args.debug_info:
        param.debug_info = True
    # As caffe.cpp: a snapshot or --weights replaces the solver file's own `weights`.
    if args.snapshot or args.weights:
        del param.weights[:]
    if args.weights:
        param.weights.append(args.weights)
    make_snapshot_directory(param, where)
    solver = solver_class(param.type, where)(param, where=where)
    if solver.data_parallel is not None:
        solver.data_parallel.check_interval = args.mpi_check_interval
    solver.set_batch_split(args.batch_split)

    trace = None
    if args.dns_trace and solver.root_solver:  # under mpirun every rank draws the same gates: rank 0 writes them
        from .dnstrace import trace_dns
        trace = trace_dns(solver, args.dns_trace)
    try:
        with signal_actions(solver, args.sigint_effect, args.sighup_effect):
            if args.snapshot:
                glog.info(f"Resuming from {args.snapshot}")
                solver.restore(args.snapshot, upstream_resume=args.upstream_resume)
            glog.info("Starting Optimization")
            solver.solve()
            glog.info("Optimization Done.")
    finally:
        if trace is not None:
            trace.close()
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


def cmd_fetch_model(args):
    """Download a recorded model (npcaffe.fetch.MODELS), verify its checksum, print its path."""
    from .fetch import MODELS, fetch_model
    if args.name == "list":
        for name, entry in MODELS.items():
            print(f"{name:<24} {entry['what']}\n{'':<24} {entry['urls'][0]}")
        return 0
    print(fetch_model(args.name, out=args.out))
    return 0


PRUNE_HELP = """\
Prune a net with one method on one schedule, retraining with the masks fixed (pruned weights get
no gradient and stay zero, unlike DNS):

  npcaffe prune --method magnitude --solver S.prototxt --weights W.caffemodel --sparsity ip1=0.92 \\
                --schedule iterative --steps 3 --retrain_iter 10000

methods (criterion, npcaffe/pruning/criteria/):
  magnitude  |w|, Han et al. 2015 (also --quality q: prune |w| <= q x std of the layer's weights)
  obd        saliency 1/2 h w^2 from a second-derivative pass (LeCun et al. 1989)
  lobs       layer-wise OBS: w^2 / (2 [H^-1]_qq) and the compensating update of the kept
             weights (Dong et al. 2017); --retrain_iter 0 for no retraining
  snip       |g w| on one batch at initialisation (Lee et al. 2019): without --weights it prunes
             the solver's initialisation, then trains the sparse net from scratch
schedules: direct (one step), iterative --steps k (each step keeps the same share of what is left:
  sparsity 1 - (1 - s)^(i/k) after step i; a quality grows as q i / k).  Each step scores on
  --score_batches forward passes of the train net's data (obd, lobs 100; snip 1), prunes (entries
  pruned before stay pruned), applies L-OBS's update, retrains --retrain_iter iterations with a
  fresh solver from the current weights (the solver's schedule starts again, as `caffe train
  --weights`; default: its max_iter), and tests.  Biases are pruned only with --bias.
structured methods (npcaffe/pruning/structured/) remove whole filters / neurons with what reads
them (the next layer's input columns), to --channel_sparsity [LAYER=]share (of each layer's
channels removed) or --keep_channels LAYER=count, on the same schedules; the report adds the
channels kept per layer and the parameters and multiply-adds a slim net would have:
  l1-filter        sum |w| of each filter (Li et al. 2017)
  apoz             1 - share of zero ReLU outputs over --score_batches (Hu et al. 2016)
  mean-activation  mean |output| of each channel over --score_batches
  entropy          entropy of each channel's global-pooled outputs, 100 bins (Luo & Wu 2017)
  taylor           |activation x gradient| per example, averaged (Molchanov et al. 2017);
                   --criterion_option normalize=true for their layer-wise L2 normalisation
  nisp             importance propagated back from the final layer through |W| (Yu et al. 2018)
  neurons          whole InnerProduct neurons by the L2 norm of their row (matrix pruning)
  (and any other registered structured method; data criteria score 100 batches by default)
Without --weights (and no `weights` in the solver) a dense reference is trained first with the
solver as it is (not for snip).  --out DIR gets <name>_<method>_pruned.caffemodel (W * mask baked
into the net's own layers, two blobs each: BVLC Caffe loads it), report.txt / report.json (Table 4
per layer, multiply-adds kept, test error before pruning and after each step) and log.txt.

"""


def cmd_prune(args):
    """One pruning method on one schedule (npcaffe.pruning.prune), or a named recipe."""
    from .pruning import prune
    from .pruning.dnsify import parse_layers
    from .pruning import structured
    method = args.method
    if method is None and args.recipe:
        from .pruning.recipes import recipe
        method = recipe(args.recipe).method
    sparsity = prune.parse_layer_values(args.sparsity, "--sparsity")
    channel_sparsity = prune.parse_layer_values(args.channel_sparsity, "--channel_sparsity")
    keep_channels = prune.parse_layer_values(args.keep_channels, "--keep_channels")
    if structured.is_structured(method or ""):
        if sparsity is not None:
            raise NpcaffeError(f"--sparsity is the share of weights pruned; {method} removes whole channels: give "
                               "--channel_sparsity [LAYER=]share or --keep_channels LAYER=count")
        sparsity = channel_sparsity
    elif channel_sparsity is not None or keep_channels is not None or args.criterion_option:
        raise NpcaffeError(f"--channel_sparsity, --keep_channels and --criterion_option are for the structured "
                           f"methods ({', '.join(structured.METHODS)}), not {method or 'this run'}")
    options = {"sparsity": sparsity, "keep_channels": keep_channels,
               "criterion_options": prune.parse_criterion_options(args.criterion_option),
               "slim": args.slim,
               "quality": prune.parse_layer_values(args.quality, "--quality"),
               "global_": args.global_, "layers": parse_layers(args.layers), "schedule": args.schedule,
               "steps": args.steps, "retrain_iter": args.retrain_iter, "score_batches": args.score_batches,
               "bias": args.bias, "regularize": args.regularize_solver}

    def stop_on_signal(solver):
        return signal_actions(solver, args.sigint_effect)

    if args.recipe:
        if args.solver or args.method:
            raise NpcaffeError(f"--recipe {args.recipe} brings its own solver and method; give --solver and "
                               "--method without --recipe for other nets")
        prune.run_recipe(args.recipe, mnist=args.mnist, weights=args.weights, out=args.out, quiet=args.quiet,
                         solve_wrapper=stop_on_signal, **{k: v for k, v in options.items() if v not in (None, False)})
        return 0
    if not args.solver or not args.method:
        raise NpcaffeError("give --method and --solver S.prototxt, or --recipe NAME")
    if args.mnist:
        raise NpcaffeError("--mnist is for the recipes; with --solver the net's own data layers are read")
    prune.run(args.solver, args.method, weights=args.weights, out=args.out, quiet=args.quiet,
              solve_wrapper=stop_on_signal, **{**options, "schedule": options["schedule"] or "direct"})
    return 0


def cmd_prune_report(args):
    """The DNS paper's Table 4 for a net: per layer parameters, share kept, compression."""
    from .fileio.prototxt import read_net
    from .graph import replace_data_layers
    from .net import Net
    from .pruning.report import count_net, format_report
    from .synthetic import parse_data_shapes, with_label_shapes
    shapes = parse_data_shapes(args.data_shape)
    model = args.model
    if shapes:
        param = read_net(args.model)
        model = replace_data_layers(param, with_label_shapes(param, shapes))
    net = Net(model, _phase(args.phase))
    rows = count_net(net, args.weights)
    if not rows:
        raise NpcaffeError(f"{args.model}: no layer has parameters in phase {args.phase.upper()}; "
                           "there is nothing to count")
    print(format_report(rows))
    from .pruning import slim
    from .pruning.report import count_macs, format_macs_table
    if args.weights:
        slim.load_weights(net, args.weights)
    slim_macs = None
    if args.slim:
        from .synthetic import fill_inputs
        fill_inputs(net)
        plan = slim.plan(net, keep_unremovable=True)
        slim_macs = {name: macs for name, (_, macs) in slim.predicted_counts(net, plan).items()}
    print()
    print(format_macs_table(count_macs(net), slim_macs))
    return 0


def cmd_slim(args):
    """Rewrite a pruned net as a smaller plain Caffe net: channels whose filters are all zero (or masked off)
    or that no filter reads are removed (npcaffe.pruning.slim)."""
    from .pruning import slim
    from .synthetic import parse_data_shapes
    slim.run(args.model, args.weights, args.out_model, args.out_weights,
             data_shapes=parse_data_shapes(args.data_shape), keep_unremovable=args.keep_unremovable,
             report=args.report)
    return 0


def cmd_crosscheck(args):
    """Rerun an upstream DNS bundle and compare snapshots, losses and gate draws with upstream's."""
    from . import crosscheck
    report = crosscheck.run(args.bundle, args.workdir, echo_log=sys.stderr if args.verbose else None)
    print(report.text())
    if report.failures:
        print(f"crosscheck FAILED: {len(report.failures)} check(s) out of tolerance", file=sys.stderr)
        return 1
    print("crosscheck passed")
    return 0


def _solve_wrapper(args, **signal_kwargs):
    """The surgery stages' wrapper around each solver's training: --batch_split, then the signal actions."""
    def wrap(solver):
        solver.set_batch_split(args.batch_split)
        return signal_actions(solver, args.sigint_effect, **signal_kwargs)
    return wrap


def batch_split_flag(p):
    p.add_argument("--batch_split", "--batch-split", type=positive_int, metavar="K",
                   help="run each training iteration's forward and backward on K threads, the batch split in K "
                        "parts and their gradients averaged in a fixed order (npcaffe.solvers.batch_split; with "
                        "--threads 1 per part): faster on an idle machine with K cores; runs repeat to the bit "
                        "but differ from unsplit ones by rounding (default: unsplit)")


def cmd_surgery(args):
    """Dynamic network surgery on the net of any solver (--solver), or the named LeNet recipes."""
    from . import surgery
    general = {"--solver": args.solver, "--model": args.model, "--layers": args.layers, "--c_rate": args.c_rate,
               "--gamma": args.gamma, "--power": args.power, "--iter_stop": args.iter_stop,
               "--data_shape": args.data_shape, "--channels": args.channels or None,
               "--finetune_iter": args.finetune_iter, "--finetune_solver": args.finetune_solver}
    if args.net is not None:
        given = [flag for flag, value in general.items() if value is not None]
        if given:
            example = ("prototxt/lenet5/lenet5_dnscp_solver.prototxt --channels" if args.net in surgery.CP_RECIPES
                       else f"prototxt/{args.net}/{args.net}_solver.prototxt")
            raise NpcaffeError(f"{', '.join(given)}: the named recipe '{args.net}' fixes its net and settings; "
                               f"for other settings run the general command on its files, e.g. --solver "
                               f"{example} --weights ...")
        if args.net in surgery.CP_RECIPES:
            surgery.run_cp_recipe(args.net, args.out or os.path.join("runs", args.net), mnist=args.mnist,
                                  weights=args.weights, iterations=args.iterations, quiet=args.quiet,
                                  solve_wrapper=_solve_wrapper(args))
            return 0
        from .stages import RunStopped
        out = args.out or os.path.join("runs", args.net)
        try:
            surgery.run(args.net, out, mnist=args.mnist, weights=args.weights, iterations=args.iterations,
                        quiet=args.quiet, resume=args.resume,
                        resume_command=f"npcaffe surgery {args.net} --resume" + (f" --out {args.out}" if args.out else ""),
                        solve_wrapper=_solve_wrapper(args, sigterm_effect="stop"))
        except RunStopped as stopped:
            print(f"npcaffe surgery {args.net}: {stopped}", file=sys.stderr)
            return 130
        return 0
    if args.solver is None:
        raise NpcaffeError("give --solver S.prototxt (DNS on its net), or a named recipe: lenet5 or lenet300100")
    if args.mnist:
        raise NpcaffeError("--mnist is for the named recipes; with --solver the net's own data layers are read")
    if not args.channels and (args.finetune_iter is not None or args.finetune_solver):
        raise NpcaffeError("--finetune_iter / --finetune_solver fine-tune the tailored net of DNS-CP: add --channels")
    from .pruning.dnsify import parse_c_rates, parse_layers
    from .synthetic import parse_data_shapes
    default_rate, rates = parse_c_rates(args.c_rate)
    from .stages import RunStopped
    again = [a for a in args.argv if a != "--resume"] + ["--resume"]
    try:
        surgery.run_solver(args.solver, out=args.out, weights=args.weights, model=args.model,
                           layers=parse_layers(args.layers), c_rate=rates or None, default_c_rate=default_rate,
                           gamma=args.gamma, power=args.power, iter_stop=args.iter_stop, iterations=args.iterations,
                           data_shapes=parse_data_shapes(args.data_shape), quiet=args.quiet,
                           solve_wrapper=_solve_wrapper(args, sigterm_effect="stop"),
                           channels=args.channels, finetune_iter=args.finetune_iter,
                           finetune_solver=args.finetune_solver, resume=args.resume,
                           resume_command="npcaffe " + shlex.join(again))
    except RunStopped as stopped:
        print(f"npcaffe surgery: {stopped}", file=sys.stderr)
        return 130
    return 0


def cmd_dnsify(args):
    """Write a net with its Convolution / InnerProduct layers as DNS layers, as readable prototxt."""
    from .fileio.prototxt import read_net, read_solver
    from .pruning import dnsify as dz
    if not os.path.isfile(args.model):
        raise NpcaffeError(f"{args.model}: no such net file")
    iter_stop = args.iter_stop
    if iter_stop is None:
        if not args.solver:
            raise NpcaffeError("give --iter_stop N (the iteration from which the masks stay fixed), or --solver "
                               "S.prototxt to take 80% of its max_iter")
        if not os.path.isfile(args.solver):
            raise NpcaffeError(f"--solver: solver file '{args.solver}' not found")
        solver = read_solver(args.solver)
        if not solver.HasField("max_iter") or solver.max_iter <= 0:
            raise NpcaffeError(f"{args.solver}: field 'max_iter' is not set; give --iter_stop N")
        iter_stop = dz.default_iter_stop(solver.max_iter)
    default_rate, rates = dz.parse_c_rates(args.c_rate)
    settings = {"gamma": dz.GAMMA if args.gamma is None else args.gamma,
                "power": dz.POWER if args.power is None else args.power, "iter_stop": iter_stop}
    net, record = dz.dnsify(read_net(args.model), dz.parse_layers(args.layers), rates or None, where=args.model,
                            default_c_rate=default_rate, channels=args.channels, **settings)
    text = dz.converted_text(net, record, source=args.model, channels=args.channels, **settings)
    with open(args.out, "w") as f:
        f.write(text)
    print("\n".join(dz.describe(record, channels=args.channels, **settings)) + f"\nwrote {args.out}")
    return 0


def compressed_path(out, weights):
    """Where `npcaffe compress --out OUT` writes: OUT/<weights name>.npz for a directory, else OUT with
    .npz added if missing (as NumPy's savez would, so the path printed is the file written)."""
    if os.path.isdir(out):
        stem = os.path.basename(weights)
        for suffix in (".gz", ".caffemodel", ".h5", ".npz"):
            stem = stem[:-len(suffix)] if stem.endswith(suffix) else stem
        return os.path.join(out, stem + ".npz")
    return out if out.endswith(".npz") else out + ".npz"


def cmd_compress(args):
    """Store only the kept (nonzero, unmasked) weights of a model in an .npz (format: npcaffe.fileio.compressed)."""
    from .fileio import compressed
    out = compressed_path(args.out, args.weights)
    if args.model:
        from .net import Net
        net = Net(args.model, _phase("TEST"))
        net.copy_from(args.weights)
        layers = compressed.layers_from_net(net)
    else:
        from .fileio.caffemodel import read_caffemodel
        layers = compressed.layers_from_caffemodel(read_caffemodel(args.weights), args.weights)
    compressed.write_compressed(out, layers)
    total = sum(a.size for _, _, arrays in layers for a in arrays)
    kept = sum(int(np.count_nonzero(a)) for _, _, arrays in layers for a in arrays)
    print(f"kept {kept} of {total} parameters ({total / max(kept, 1):.2f}x fewer); "
          f"{os.path.getsize(args.weights)} bytes -> {os.path.getsize(out)} bytes in {out}")
    return 0


SENSITIVITY_HELP = """\
Sweeps against the pruning ratio (the share of a layer's weights set to zero, smallest |w| first;
biases kept), after the pruning survey's Figs. 11-14:

  npcaffe sensitivity --model M_train_test.prototxt --weights W.caffemodel [--ratios 0,0.5,0.9]

  (default)  each Convolution / InnerProduct layer (--layers) pruned alone at each ratio, and all
             together ("(all)"), tested on the net's TEST data with no retraining: which layer is
             most sensitive (Fig. 12).  --iterations N forward passes (default: one pass over its
             LMDB), --data LMDB instead of the Data layer's source, --metric (default: accuracy).
  --solver S direct vs iterative (Fig. 11): from --weights, every layer pruned to each ratio once
             and retrained --retrain_iter R, or in --steps k steps retrained R/k after each; tested
             on the solver's test net.  Retraining R per ratio and schedule: this is the long part.
  --storage  bytes of the dense .caffemodel, npcaffe's .npz, plain CSR and Deep Compression's
             relative-index CSR (--index_bits conv=8,fc=5, the paper's) per ratio (Fig. 13).
  --timing   ms per forward pass at --batch 1,64 on the dense path, the sparse kernels and npcaffe's
             own choice per ratio (Fig. 14); --data_shape TOP=N,C,H,W times generated data instead
             (then only --storage and --timing run: give --no_layers).
--out DIR (default runs/<model file stem>_sensitivity) gets report.txt, report.json, one CSV per
sweep and log.txt; --plot also a PNG per sweep (needs matplotlib: pip install npcaffe[plot]).

"""


def cmd_sensitivity(args):
    """Accuracy, storage and inference time against the pruning ratio (npcaffe.pruning.sensitivity)."""
    from .pruning import sensitivity
    from .pruning.dnsify import parse_layers
    from .synthetic import parse_data_shapes
    for flag, value, low in (("--iterations", args.iterations, 1), ("--retrain_iter", args.retrain_iter, 1),
                             ("--repeats", args.repeats, 1), ("--rounds", args.rounds, 1)):
        if value is not None and value < low:
            raise NpcaffeError(f"{flag} must be at least {low}, got {value}")
    if not args.tolerance >= 0:
        raise NpcaffeError(f"--tolerance must be >= 0 (in the metric's units), got {args.tolerance}")
    sensitivity.run(args.model, args.weights, layers=parse_layers(args.layers),
                    ratios=sensitivity.parse_ratios(args.ratios), iterations=args.iterations, data=args.data,
                    metric=args.metric, tolerance=args.tolerance, sweep_layers=not args.no_layers,
                    solver=args.solver, retrain_iter=args.retrain_iter, steps=args.steps, storage=args.storage,
                    index_bits=sensitivity.parse_index_bits(args.index_bits), timing=args.timing,
                    batches=sensitivity.parse_batches(args.batch), repeats=args.repeats, rounds=args.rounds,
                    data_shapes=parse_data_shapes(args.data_shape), out=args.out, plot=args.plot,
                    quiet=args.quiet, solve_wrapper=lambda solver: signal_actions(solver, "stop"))
    return 0


def cmd_explain(args):
    """One DNS layer at one iteration: Algorithm 1's quantities with their formulas and numbers."""
    from .explain import explain_run, explain_trace, format_explanation
    if args.trace:
        step = explain_trace(args.trace, args.layer, args.iteration, model=args.model)
    elif args.solver:
        glog.set_quiet(True)
        try:
            step = explain_run(args.solver, args.layer, args.iteration, weights=args.weights, k=args.nearest)
        finally:
            glog.set_quiet(False)
    else:
        raise NpcaffeError("give --solver (and --weights to start from) to train up to the iteration, "
                           "or --trace CSV (from npcaffe train --dns_trace)")
    print(format_explanation(step))
    return 0


def cmd_plot(args):
    """Teaching figures from a DNS trace, a glog log, or snapshots (needs matplotlib: pip install npcaffe[plot])."""
    from .plot import plot_command
    path = plot_command(args)
    print(f"wrote {path}")
    return 0


def cmd_pycaffe(args):
    if not os.path.isfile(args.script):
        raise NpcaffeError(f"{args.script}: no such script")
    from .pycaffe import run_script
    sys.path.insert(0, os.path.dirname(os.path.abspath(args.script)))  # as `python script.py` does
    run_script(args.script, args.args)
    return 0


SURGERY_DEFAULTS = """\
Defaults for the DNS layers (npcaffe/pruning/dnsify.py):
  --gamma 1e-4 --power 1   the surgery settings embedded in the DNS release's LeNet models, the
                           only ones published: the mask update gate opens with probability
                           1 / (1 + 1e-4 iter), always at first, half the time at iteration 10,000
  --c_rate 3               the DNS fork's own field default, for every layer not given one; the
                           threshold is mu + c_rate * std of |w| (the LeNets use 2 to 5 per layer)
  --iter_stop              80% of max_iter: the last fifth trains the kept weights with the masks
                           frozen (the release's LeNet recipes stop at 87.5% and 80%)
  mask fillers             constant 1: every weight starts kept
A layer with bias_term: false gets a constant 0 bias with mask 0 and lr_mult 0 (DNS layers need a
bias); the pruned model drops it again.
With --channels (DNS-CP, npcaffe/layerlib/dns_cp.py) the layers become CPConvolution /
CPInnerProduct: one mask entry per input channel, pruned when the channel's mean |w| is below
max(0, mu - c_rate std) and spliced back above max(0, mu + c_rate std) (mu, std of |w| over the
layer), behind the same gate; --c_rate defaults to 0.1 (the seed's), --layers to every
Convolution / InnerProduct not reading a data layer (the data's channels cannot be removed).
"""

SURGERY_HELP = """\
Dynamic network surgery (Guo, Yao & Chen, NIPS 2016) on any net:

  npcaffe surgery --solver S.prototxt --weights W.caffemodel [--layers conv1,ip1] [--c_rate ip1=4]

The solver's net may use plain Convolution / InnerProduct layers; the chosen ones (--layers,
default all) become CConvolution / CInnerProduct, the solver trains them from --weights, and --out
DIR gets <name>_dns_pruned.caffemodel (masks baked: two blobs per layer, the user's own layer
types and parameters, loads in BVLC Caffe and the user's deploy net), the final 4-blob snapshot
<name>_dns_iter_N.caffemodel + .solverstate with the converted <name>_dns_solver.prototxt and
<name>_dns_train_test.prototxt (resume: npcaffe train --solver ... --snapshot ...), report.txt /
report.json (the paper's Table 4 per layer, test error from the solver's test net) and log.txt.
<name> is the solver file's name without _solver.prototxt.

  npcaffe surgery lenet5|lenet300100|lenet5-cp [--mnist DIR] [--weights W]

are the named recipes: the paper's LeNet runs from prototxt/<net>/, with per-layer settings;
lenet5-cp is DNS-CP (below) on LeNet-5's conv2 and ip1 input channels.

  npcaffe surgery --solver S.prototxt --weights W.caffemodel --channels [--finetune_iter N]

is DNS-CP: masks on whole input channels; after the surgery the net is tailored (npcaffe slim:
the pruned channels and the filters feeding only them removed) into <name>_dnscp_tailored.prototxt
/ .caffemodel and fine-tuned (--finetune_iter, default the solver's max_iter; --finetune_solver,
default the same solver); the report lists the input channels kept per layer and the test error
after the surgery and after fine-tuning.

""" + SURGERY_DEFAULTS

DNSIFY_HELP = """\
Write the net with its Convolution / InnerProduct layers (--layers, default all) as DNS layers,
as readable prototxt, to read and edit before training it (npcaffe train).

""" + SURGERY_DEFAULTS


def dnsify_flags(p):
    p.add_argument("--channels", action="store_true",
                   help="DNS-CP: masks on whole input channels (CPConvolution / CPInnerProduct) instead of weights")
    p.add_argument("--layers", action="append", metavar="L1,L2",
                   help="Convolution / InnerProduct layers to convert (comma-separated, repeatable; default: all)")
    p.add_argument("--c_rate", "--c-rate", action="append", metavar="[LAYER=]X",
                   help="DNS threshold factor: LAYER=X for one layer, X for every other (repeatable; default 3, "
                        "with --channels 0.1)")
    p.add_argument("--gamma", type=non_negative_float, help="gate decay gamma (default 1e-4)")
    p.add_argument("--power", type=non_negative_float, help="gate power (default 1)")
    p.add_argument("--iter_stop", "--iter-stop", type=non_negative_int, metavar="N",
                   help="iteration from which the masks stay fixed (default: 80%% of the solver's max_iter)")


def version():
    """The installed package's version (its metadata), as `npcaffe --version` prints it."""
    from importlib import metadata
    try:
        return metadata.version("npcaffe")
    except metadata.PackageNotFoundError:
        return "unknown (run from a source tree that is not installed: pip install -e .)"


# Commands that compute little or nothing get no --threads (they still run as the others, one BLAS thread).
NO_THREADS_FLAG = ("compress", "convert-mnist", "dnsify", "fetch-model", "plot", "prepare-mnist", "prune-report")
# Commands that show progress bars (--progress / --no-progress), and those that save a log.txt (-v).
PROGRESS_COMMANDS = ("train", "test", "surgery", "prune", "sensitivity", "prepare-mnist", "crosscheck",
                     "fetch-model")
LOG_FILE_COMMANDS = ("surgery", "prune", "sensitivity")
# Flags (argparse dests) naming files or directories a command reads: main checks them before the command
# runs, so a wrong path is one line naming the flag, not an error from deep inside the run.
INPUT_FILES = ("model", "weights", "solver", "snapshot", "trace", "script", "images", "labels", "snapshots", "log")
INPUT_DIRS = ("bundle", "mnist")
_WHAT = {"model": "net file ", "solver": "solver file ", "bundle": "bundle directory ", "mnist": "directory "}


# Commands that build nets they train, as `caffe train` does, run a net's Python layers unless told
# otherwise; the others inspect nets, often downloaded ones, and run them only when asked (README, Trust).
PYTHON_LAYERS_BY_DEFAULT = ("train", "surgery", "prune", "pycaffe", "crosscheck")


def python_layers_flag(p, command):
    """--allow_python_layers[=M1,M2] on the commands that inspect nets; --no_python_layers on the others."""
    if command in PYTHON_LAYERS_BY_DEFAULT:
        p.set_defaults(allow_python_layers=True)
        p.add_argument("--no_python_layers", "--no-python-layers", dest="allow_python_layers",
                       action="store_const", const=False,
                       help="refuse the net's Python layers (python_param runs the module it names)")
    else:
        p.add_argument("--allow_python_layers", "--allow-python-layers", nargs="?", const=True, default=False,
                       metavar="M1,M2", type=lambda text: text.split(","),
                       help="build the net's Python layers (python_param imports and runs the module it names; "
                            "only for nets you trust), all or only those from modules M1, M2")


def with_python_layers_policy(func, modules):
    """func(args) run with npcaffe.layerlib.python_layer's policy set to `modules` (True: all)."""
    def run(args):
        with python_layers_allowed(modules):
            return func(args)
    return run


def threads_flag(p):
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="BLAS threads (default 1, or OPENBLAS_NUM_THREADS / OMP_NUM_THREADS / MKL_NUM_THREADS "
                        "if set); more threads help on an idle multi-core machine and slow a run down while "
                        "other programs compute")


def input_paths(p):
    """[(dest, flag as the user writes it, "file" or "dir")] of the parser's input-path arguments."""
    found = []
    for action in p._actions:
        if action.dest in INPUT_FILES + INPUT_DIRS:
            flag = action.option_strings[0] if action.option_strings else action.dest
            found.append((action.dest, flag, "file" if action.dest in INPUT_FILES else "dir"))
    return found


def check_input_paths(args):
    """NpcaffeError naming the flag and the path of the first input file or directory that is not there."""
    for dest, flag, kind in getattr(args, "input_paths", ()):
        value = getattr(args, dest, None)
        values = value if isinstance(value, list) else [value] if value else []
        if dest == "weights":
            values = [w for v in values for w in v.split(",") if w]
        for path in values:
            if os.path.isfile(path) if kind == "file" else os.path.isdir(path):
                continue
            if os.path.exists(path):
                other = ("directory, not a file" if os.path.isdir(path) else
                         "special file (a device or FIFO), not a regular file") if kind == "file" \
                    else "file, not a directory"
                raise NpcaffeError(f"{flag}: '{path}' is a {other}")
            hint = "" if os.path.isabs(path) else f" (relative paths start at the working directory, {os.getcwd()})"
            raise NpcaffeError(f"{flag}: {_WHAT.get(dest, '')}'{path}' not found{hint}")


def build_parser():
    parser = argparse.ArgumentParser(prog="npcaffe", description="Caffe rebuilt in NumPy + Numba.")
    parser.add_argument("--version", action="version", version=f"npcaffe {version()}",
                        help="print npcaffe's version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="one of the commands below; `npcaffe COMMAND --help` gives its flags")

    def net_flags(p, phase_default=None):
        p.add_argument("--model", required=True, help="net definition .prototxt")
        p.add_argument("--weights", help="trained .caffemodel (comma-separated list allowed for test)")
        p.add_argument("--iterations", type=positive_int, default=50,
                       help="batches to run (default 50, as Caffe)")
        p.add_argument("--level", type=int, default=0, help="net state level")
        p.add_argument("--stage", default="", help="comma-separated net state stages")
        if phase_default:
            p.add_argument("--phase", default=phase_default, choices=["TRAIN", "TEST", "train", "test"],
                           help=f"the net's phase (default {phase_default})")

    p = sub.add_parser("train", help="train or fine-tune a model from a solver definition")
    p.add_argument("--solver", required=True, help="solver .prototxt")
    p.add_argument("--weights", help="comma-separated .caffemodel files to fine-tune from")
    p.add_argument("--snapshot", help=".solverstate to resume training from")
    p.add_argument("--iterations", type=positive_int, help="override the solver's max_iter")
    p.add_argument("--level", type=int, default=0, help="train net state level")
    p.add_argument("--stage", default="", help="comma-separated train net state stages")
    p.add_argument("--sigint_effect", "--sigint-effect", default="stop", choices=["stop", "snapshot", "none"],
                   help="on SIGINT: stop (after a final snapshot), snapshot, or none")
    p.add_argument("--sighup_effect", "--sighup-effect", default="snapshot", choices=["stop", "snapshot", "none"],
                   help="on SIGHUP: snapshot (and go on), stop, or none")
    p.add_argument("--upstream_resume", "--upstream-resume", action="store_true",
                   help="with --snapshot: ignore npcaffe's sidecar and resume as a restarted upstream Caffe "
                        "does (fresh random streams, DNS statistics reset)")
    p.add_argument("--dns_trace", "--dns-trace", metavar="CSV",
                   help="write every DNS gate draw to CSV: one row per C-layer per TRAIN forward "
                        "(columns: npcaffe.dnstrace)")
    p.add_argument("--quiet", action="store_true", help="print warnings and errors only")
    p.add_argument("--mpi_check_interval", "--mpi-check-interval", type=non_negative_int, default=100, metavar="K",
                   help="under mpirun: compare every layer's weights and masks across the ranks (checksums) every "
                        "K iterations and at the last, stopping all ranks if they differ (default 100; 0: never)")
    p.add_argument("--debug_info", "--debug-info", action="store_true",
                   help="at each display iteration, print every layer's mean |value| forward, backward and "
                        "update (Caffe's debug_info; the solver's debug_info: true does the same)")
    batch_split_flag(p)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("test", help="score a model on its TEST-phase data")
    net_flags(p)
    p.set_defaults(func=cmd_test)
    p = sub.add_parser("time", help="time forward/backward per layer")
    net_flags(p, phase_default="TRAIN")
    p.add_argument("--data_shape", "--data-shape", action="append", metavar="TOP=N,C,H,W",
                   help="replace the net's data layers by generated data of this shape for top TOP (repeat "
                        "per top; a label top that a loss or Accuracy layer reads defaults to shape N, the "
                        "batch, and gets valid class indices)")
    p.set_defaults(func=cmd_time)
    p = sub.add_parser("compress", help="store only the kept weights of a pruned model (.npz)")
    p.add_argument("--weights", required=True, help=".caffemodel to compress")
    p.add_argument("--out", required=True, help="output .npz (.npz is added if missing; a directory: "
                                                "DIR/<weights name>.npz)")
    p.add_argument("--model", help="net .prototxt to load the weights through (else the caffemodel's own layers)")
    p.set_defaults(func=cmd_compress)
    p = sub.add_parser("convert-mnist", help="write MNIST IDX files into an LMDB as Caffe's convert_mnist_data")
    p.add_argument("images", help="IDX image file (.gz allowed)")
    p.add_argument("labels", help="IDX label file (.gz allowed)")
    p.add_argument("out", help="LMDB directory to create")
    p.set_defaults(func=cmd_convert_mnist)
    p = sub.add_parser("prune-report", help="parameters kept per layer and the compression rate (DNS paper Table 4)")
    p.add_argument("--model", required=True, help="net definition .prototxt")
    p.add_argument("--weights", help=".caffemodel (2-blob plain or 4-blob DNS snapshot); default: fresh initialisation")
    p.add_argument("--phase", default="TEST", choices=["TRAIN", "TEST", "train", "test"],
                   help="the net's phase (default TEST)")
    p.add_argument("--data_shape", "--data-shape", action="append", default=[], metavar="TOP=N,C,H,W",
                   help="replace the data layers by inputs of this shape (nets whose datasets are not here; "
                        "label tops default to the batch)")
    p.add_argument("--slim", action="store_true",
                   help="also the multiply-adds of the slim net (npcaffe slim's plan: the channels it would "
                        "remove, keeping those it cannot remove exactly); runs the net once on generated inputs")
    p.set_defaults(func=cmd_prune_report)
    p = sub.add_parser("slim", help="rewrite a pruned net as a smaller plain Caffe net: removes the channels "
                                    "whose filters are all zero or masked off, folding their constant outputs "
                                    "into the consumers' biases")
    p.add_argument("--model", required=True, help="net definition .prototxt (plain, DNS or DNS-CP layers)")
    p.add_argument("--weights", required=True, help="pruned .caffemodel (2-blob plain or 4-blob DNS snapshot)")
    p.add_argument("--out_model", "--out-model", required=True, help="slim net .prototxt to write")
    p.add_argument("--out_weights", "--out-weights", required=True, help="slim .caffemodel to write")
    p.add_argument("--data_shape", "--data-shape", action="append", default=[], metavar="TOP=N,C,H,W",
                   help="replace the data layers by generated inputs of this shape (needed when the net reads "
                        "a dataset; slimming runs the net once to find the constant outputs it folds)")
    p.add_argument("--keep_unremovable", "--keep-unremovable", action="store_true",
                   help="keep pruned channels that cannot be removed exactly (e.g. a padded convolution reads "
                        "their nonzero constant, or an LRN across channels reads them) instead of refusing")
    p.add_argument("--report", metavar="TXT",
                   help="report file (default OUT_MODEL with .report.txt; a .json beside it)")
    p.set_defaults(func=cmd_slim)
    p = sub.add_parser("sensitivity", help="accuracy, model size and inference time against the pruning ratio: "
                                           "per layer, direct vs iterative", description=SENSITIVITY_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="net .prototxt with TEST-phase data and an Accuracy or loss layer")
    p.add_argument("--weights", required=True, help="trained .caffemodel (or .npz) to prune")
    p.add_argument("--layers", action="append", metavar="L1,L2",
                   help="Convolution / InnerProduct layers to prune (comma-separated, repeatable; default: all)")
    p.add_argument("--ratios", metavar="R1,R2", help="pruning ratios in [0, 1] (default 0,0.1,...,0.9,0.95)")
    p.add_argument("--iterations", type=int, help="TEST forward passes per score (default: one pass over the LMDB)")
    p.add_argument("--data", metavar="LMDB", help="TEST data: this LMDB instead of the Data layer's source")
    p.add_argument("--metric", help="output ranking the layers (default: the Accuracy layer's, else the loss)")
    p.add_argument("--tolerance", type=float, default=0.01,
                   help="a layer tolerates a ratio while the metric stays this close to unpruned (default 0.01: "
                        "one point of accuracy)")
    p.add_argument("--no_layers", "--no-layers", action="store_true", help="skip the per-layer sweep")
    p.add_argument("--solver", help="also run direct and iterative pruning with retraining by this solver")
    p.add_argument("--retrain_iter", "--retrain-iter", type=int, metavar="R",
                   help="with --solver: retraining iterations per ratio and schedule (default: its max_iter)")
    p.add_argument("--steps", type=int, default=3, help="with --solver: steps of the iterative schedule (default 3)")
    p.add_argument("--storage", action="store_true", help="also the model size in each format per ratio")
    p.add_argument("--index_bits", "--index-bits", metavar="conv=B,fc=B",
                   help="relative CSR index width (default conv=8,fc=5, Deep Compression's)")
    p.add_argument("--timing", action="store_true", help="also the inference time, dense and sparse, per ratio")
    p.add_argument("--batch", metavar="B1,B2", help="with --timing: batch sizes (default 1,64)")
    p.add_argument("--repeats", type=int, default=20,
                   help="with --timing: forwards per measurement, x10 below 8 images (default 20)")
    p.add_argument("--rounds", type=int, default=5, help="with --timing: rounds over the three paths (default 5)")
    p.add_argument("--data_shape", "--data-shape", action="append", metavar="TOP=N,C,H,W",
                   help="with --storage / --timing only: generated data of this shape for top TOP (repeat per "
                        "top; N is replaced by each --batch)")
    p.add_argument("--out", metavar="DIR", help="output directory (default runs/<model file stem>_sensitivity)")
    p.add_argument("--plot", action="store_true", help="also write a PNG per sweep (needs matplotlib)")
    p.add_argument("--quiet", action="store_true", help="no log on the console, just the tables (DIR/log.txt "
                                                        "keeps the whole log)")
    p.set_defaults(func=cmd_sensitivity)
    p = sub.add_parser("surgery", help="dynamic network surgery on any net (--solver), or the LeNet recipes",
                       description=SURGERY_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("net", nargs="?", choices=["lenet5", "lenet300100", "lenet5-cp"],
                   help="a named recipe: LeNet-5 / LeNet-300-100 over MNIST with the DNS release's settings; "
                        "lenet5-cp: DNS-CP on LeNet-5's conv2 and ip1 input channels, tailored and fine-tuned")
    p.add_argument("--solver", help="solver .prototxt whose net (Convolution / InnerProduct layers) gets DNS")
    p.add_argument("--weights", help="trained .caffemodel to start from (default: train a dense reference first "
                                     "with the solver as it is)")
    p.add_argument("--model", help="with --solver: the train/test net .prototxt, instead of the solver's net field")
    dnsify_flags(p)
    p.add_argument("--finetune_iter", "--finetune-iter", type=non_negative_int, metavar="N",
                   help="with --channels: iterations fine-tuning the tailored net (default: the solver's max_iter, "
                        "or --iterations; 0: none)")
    p.add_argument("--finetune_solver", "--finetune-solver", metavar="S",
                   help="with --channels: solver .prototxt for the fine-tuning (its net is replaced by the tailored "
                        "one; default: the surgery's solver)")
    p.add_argument("--iterations", type=positive_int, help="override the solver's max_iter (for a quick try)")
    p.add_argument("--data_shape", "--data-shape", action="append", metavar="TOP=N,C,H,W",
                   help="with --solver: train on generated data, the data layers becoming DummyData of this "
                        "shape for top TOP (repeat per top; a label top defaults to shape N, the batch, and "
                        "gets valid class indices)")
    p.add_argument("--out", "--workdir", dest="out", metavar="DIR",
                   help="output directory (default: runs/<solver file stem>, runs/<net> for a named recipe)")
    p.add_argument("--mnist", help="named recipes: directory with the four MNIST .gz files "
                                   "(else $NPCAFFE_MNIST_DIR or download)")
    p.add_argument("--sigint_effect", "--sigint-effect", default="stop", choices=["stop", "snapshot", "none"],
                   help="on SIGINT: stop (after a snapshot; with --solver the report is still written; a named "
                        "recipe says how to --resume), snapshot, or none; SIGTERM always stops")
    p.add_argument("--resume", action="store_true",
                   help="go on with the run stopped in --out (default runs/<net>, runs/<solver file stem>) from its "
                        "snapshot, bit for bit as if it had not stopped (--solver: give the same flags again)")
    p.add_argument("--quiet", action="store_true", help="no training log on the console, just the report "
                                                        "(with --solver, DIR/log.txt keeps the whole log)")
    batch_split_flag(p)
    p.set_defaults(func=cmd_surgery)
    p = sub.add_parser("dnsify", help="write a net with its Convolution / InnerProduct layers as DNS layers",
                       description=DNSIFY_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="net .prototxt")
    p.add_argument("--out", required=True, help="converted net .prototxt to write")
    p.add_argument("--solver", help="solver .prototxt whose max_iter sets the default iter_stop (80%% of it)")
    dnsify_flags(p)
    p.set_defaults(func=cmd_dnsify)
    p = sub.add_parser("crosscheck", help="rerun an upstream DNS bundle and compare it number by number")
    p.add_argument("bundle", help="bundle directory, e.g. ../shared/crosscheck/lenet5-dns")
    p.add_argument("--workdir", help="scratch directory for our run (default: a new temporary directory)")
    p.add_argument("--verbose", action="store_true", help="also print our training log")
    p.set_defaults(func=cmd_crosscheck)
    p = sub.add_parser("explain", help="one DNS layer at one iteration: Algorithm 1 with the numbers plugged in")
    p.add_argument("--layer", required=True, help="a CConvolution / CInnerProduct layer")
    p.add_argument("--iteration", type=non_negative_int, required=True, help="the iteration to explain")
    p.add_argument("--solver", help="solver .prototxt: train up to --iteration, then explain it")
    p.add_argument("--weights", help="with --solver: .caffemodel(s) to start from (comma-separated)")
    p.add_argument("--trace", help="instead of training: a trace CSV from `npcaffe train --dns_trace`")
    p.add_argument("--model", help="with --trace: the net .prototxt, for c_rate, gamma, power and iter_stop")
    p.add_argument("--nearest", type=positive_int, default=3,
                   help="weights shown on each side of a and b (default 3)")
    p.set_defaults(func=cmd_explain)
    p = sub.add_parser("plot", help="DNS teaching figures (PNG/SVG) from a trace, a log or snapshots")
    from .plot import add_plot_arguments
    add_plot_arguments(p)
    p.set_defaults(func=cmd_plot)
    p = sub.add_parser("pycaffe", help="run a pycaffe script unchanged: its `import caffe` gives npcaffe")
    p.add_argument("script", help="the Python script")
    p.add_argument("args", nargs=argparse.REMAINDER, help="the script's own arguments")
    p.set_defaults(func=cmd_pycaffe)
    from .fetch import MODELS
    p = sub.add_parser("fetch-model", help="download a model the DNS release published (sha256-checked: "
                                           "dns-lenet5, dns-lenet300100, ...) or one of Caffe's model zoo "
                                           "(sha1-checked as its readme.md: bvlc_alexnet, bvlc_googlenet, ...)")
    p.add_argument("name", choices=[*MODELS, "list"], help="the model (list: print the names and URLs)")
    p.add_argument("--out", metavar="DIR", help="directory to write it to (default: $NPCAFFE_CACHE/models, "
                                                "else ~/.cache/npcaffe/models)")
    p.set_defaults(func=cmd_fetch_model)
    p = sub.add_parser("prepare-mnist", help="MNIST LMDBs for the nets in prototxt/ (data/mnist/ by default)")
    p.add_argument("--mnist", help="directory with the four MNIST .gz IDX files (else $NPCAFFE_MNIST_DIR or download)")
    p.add_argument("--out", default="data/mnist", help="output directory (default: data/mnist)")
    p.set_defaults(func=cmd_prepare_mnist)
    from .pruning.recipes import recipes_help
    p = sub.add_parser("prune", help="prune any net: magnitude (Han), OBD, L-OBS or SNIP, direct or iterative",
                       description=PRUNE_HELP + recipes_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    from .pruning import structured
    p.add_argument("--method", choices=["magnitude", "obd", "lobs", "snip", *structured.METHODS],
                   help="the criterion (see above)")
    p.add_argument("--solver", help="solver .prototxt: its net is pruned, and it retrains after each step")
    p.add_argument("--weights", help="trained .caffemodel to prune (default: the solver's weights, else train a "
                                     "dense reference first; snip: the solver's initialisation)")
    p.add_argument("--layers", action="append", metavar="L1,L2",
                   help="Convolution / InnerProduct layers to prune (comma-separated, repeatable; default: all)")
    p.add_argument("--sparsity", action="append", metavar="[LAYER=]X",
                   help="share of entries to prune: X for every layer, LAYER=X for one (repeatable)")
    p.add_argument("--quality", action="append", metavar="[LAYER=]Q",
                   help="magnitude only: prune |w| <= Q x std of the layer's weights (Han et al.)")
    p.add_argument("--global", dest="global_", action="store_true",
                   help="rank all layers together to one --sparsity (SNIP's top-k) instead of each layer to it")
    p.add_argument("--schedule", choices=["direct", "iterative"], help="one step, or --steps steps (default direct)")
    p.add_argument("--steps", type=positive_int, help="steps of an iterative schedule (default 3)")
    p.add_argument("--retrain_iter", "--retrain-iter", type=non_negative_int, metavar="N",
                   help="retraining iterations after each step (default: the solver's max_iter; 0: none)")
    p.add_argument("--score_batches", "--score-batches", type=positive_int, metavar="B",
                   help="forward passes the criterion scores over (default: obd, lobs 100; snip 1)")
    p.add_argument("--bias", action="store_true", help="prune biases too (ranked with the weights)")
    p.add_argument("--channel_sparsity", "--channel-sparsity", action="append", metavar="[LAYER=]X",
                   help="structured methods: share of each layer's channels (filters, neurons) removed, in [0, 1): "
                        "X for every layer it can prune, LAYER=X for one (repeatable, comma-separated)")
    p.add_argument("--keep_channels", "--keep-channels", action="append", metavar="LAYER=N",
                   help="structured methods: channels kept in a layer, instead of --channel_sparsity (repeatable)")
    p.add_argument("--criterion_option", "--criterion-option", action="append", metavar="NAME=VALUE",
                   help="structured methods: an option of the criterion (e.g. normalize=true for taylor, bins=50 "
                        "for entropy, norm=l1 for neurons; repeatable)")
    p.add_argument("--regularize_solver", "--regularize-solver", metavar="S",
                   help="train the net with this solver first, from --weights (without them, from its own "
                        "initialisation), and prune the result: SSL's group lasso or network slimming's L1 on "
                        "gamma (its structured_sparsity_param), e.g. prototxt/lenet5/lenet5_ssl_solver.prototxt")
    p.add_argument("--slim", action="store_true",
                   help="structured methods: also write the slim plain net (npcaffe slim: the removed channels "
                        "gone) as DIR/<name>_<method>_slim.prototxt and .caffemodel")
    p.add_argument("--out", metavar="DIR", help="output directory (default: runs/<solver file stem>, "
                                                "runs/<recipe> for a recipe)")
    p.add_argument("--recipe", help="a named recipe (see above)")
    p.add_argument("--mnist", help="recipes: directory with the four MNIST .gz files (else $NPCAFFE_MNIST_DIR "
                                   "or download)")
    p.add_argument("--sigint_effect", "--sigint-effect", default="stop", choices=["stop", "snapshot", "none"],
                   help="on SIGINT: stop after the current step's retraining (the pruned model and report are "
                        "still written), or none")
    p.add_argument("--quiet", action="store_true", help="no training log on the console, just the report "
                                                        "(DIR/log.txt keeps the whole log)")
    p.set_defaults(func=cmd_prune)
    for name, command in sub.choices.items():
        if name not in NO_THREADS_FLAG:
            threads_flag(command)
        python_layers_flag(command, name)
        if name in PROGRESS_COMMANDS:
            command.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                                 help="a progress bar on stderr (stage, iteration / total, rate, ETA, loss, DNS "
                                      "kept share; default: only when stderr is a terminal); never in a log")
        if name in LOG_FILE_COMMANDS:
            command.add_argument("-v", "--verbose", action="store_true",
                                 help="also print the solver's parameter dump on the console (the run's log.txt "
                                      "always has it)")
        command.set_defaults(input_paths=input_paths(command))
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed: a stopped run's resume command
    bars = progress.configure(getattr(args, "progress", None))
    glog.set_show_details(True if args.command in LOG_FILE_COMMANDS and args.verbose else None)
    try:
        if signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # started: Ctrl-C as each command says
            if _interrupted_while_starting_signals:
                return 130
        if distributed.check_command(args.command) and distributed.solver_rank() > 0:
            args.quiet = True  # rank 0 alone logs
        check_input_paths(args)
        # The DNS gate's rand() stream is process-wide, as the fork's C rand(): a command starts it where
        # a new process (upstream's caffe binary) does, whatever ran before in this one (a notebook, a
        # test suite, a second command); a resumed run then sets it from its snapshot.
        glibc_rand.reset()
        args.func = with_python_layers_policy(args.func, getattr(args, "allow_python_layers", False))
        if not hasattr(args, "threads"):
            return args.func(args)
        with blas.limited(args.threads) as threads:
            if not getattr(args, "quiet", False):
                glog.info(threads)
            return args.func(args)
    except NpcaffeError as e:
        print(f"npcaffe {args.command}{distributed.rank_label()}: error: {e}", file=sys.stderr)
        distributed.abort(1)  # under mpirun: end the other ranks too, which would wait for this one
        return 1
    except OSError as e:  # a file that cannot be read or written: one line, as for our own errors
        where = f"{e.filename}: " if e.filename else ""
        print(f"npcaffe {args.command}{distributed.rank_label()}: error: {where}{e.strerror or e}", file=sys.stderr)
        distributed.abort(1)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        progress.restore(bars)
        glog.set_show_details(None)


if __name__ == "__main__":
    sys.exit(main())
