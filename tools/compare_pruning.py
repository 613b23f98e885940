#!/usr/bin/env python3
"""Every pruning method on LeNet-5 and LeNet-300-100, the same data order and solvers, one table.

    python tools/compare_pruning.py [--quick] [--nets lenet5,lenet300100] [--methods dns,han-iterative,...]
                                    [--seeds 0,1,2] [--jobs 2] [--mnist DIR] [--weights_dir DIR]
                                    [--timing] [--doc]

Runs each (net, method, seed) cell not yet in the results file (docs/pruning-compare.json;
--quick: runs/compare-quick/results.json), each in a fresh process, `--jobs` at a time, saving
every cell as it finishes (interrupt it and run it again to go on), then writes the comparison
into docs/pruning.md and README.md between their `compare` markers, with a figure per net in
docs/figures/.  What the runs are and what a seed changes: npcaffe/pruning/compare.py.  The
full comparison takes hours on a 2-core machine (LeNet-5's SNIP alone ~20 min a seed);
--quick runs every cell with a few hundred iterations in minutes, to check the pipeline
(its tables go to runs/compare-quick/, never into docs/).

--timing measures the forward time of the finished cells' pruned nets (seed 0; structured methods:
their slim nets) and refuses
while the 1-minute load average is above 0.5: a time taken on a busy machine is no result.
--doc only rewrites the tables from the results file.
"""
import argparse
import concurrent.futures
import multiprocessing
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from npcaffe import progress  # noqa: E402
from npcaffe.errors import NpcaffeError  # noqa: E402
from npcaffe.pruning import compare  # noqa: E402


def _names(text):
    return [part for part in text.split(",") if part]


def _seeds(text):
    try:
        seeds = [int(part) for part in text.split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}': expected seeds like 0,1,2") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"'{text}': expected distinct seeds >= 0, e.g. 0,1,2")
    return seeds


def _jobs(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"'{text}': expected a number of processes, at least 1")
    return value


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--quick", action="store_true",
                   help="tiny budgets (a few hundred iterations per run, 1,000 test images for the prune methods): "
                        "checks the pipeline in minutes; results go to runs/compare-quick/")
    p.add_argument("--nets", type=_names, default=None, help="nets to run, comma-separated (default: lenet5,lenet300100)")
    p.add_argument("--methods", type=_names, default=None,
                   help="methods to run, comma-separated (default: all: " +
                        ", ".join(sorted({m.name for m in compare.METHODS})) + ")")
    p.add_argument("--seeds", type=_seeds, default=list(compare.DEFAULT_SEEDS),
                   help="seeds (data orders) to run, comma-separated (default: 0,1,2; 0 is MNIST's own order)")
    p.add_argument("--jobs", type=_jobs, default=min(2, os.cpu_count() or 1),
                   help="runs at a time, one BLAS thread each (default: 2, or fewer cores)")
    p.add_argument("--mnist", default=None,
                   help="directory with the four MNIST IDX files (default: $NPCAFFE_MNIST_DIR, else a download)")
    p.add_argument("--weights_dir", "--weights-dir", default=os.path.join(ROOT, "..", "shared", "upstream-dns"),
                   help="directory with the DNS release's caffe_lenet5_original.caffemodel and "
                        "caffe_lenet300100_original.caffemodel (default: ../shared/upstream-dns)")
    p.add_argument("--work", default=None,
                   help="where the runs and their LMDBs go (default: runs/compare, --quick: runs/compare-quick)")
    p.add_argument("--results", default=None,
                   help="the results file (default: docs/pruning-compare.json, --quick: <work>/results.json)")
    p.add_argument("--rerun", action="store_true", help="run the chosen cells again even if the results file has them")
    p.add_argument("--timing", action="store_true",
                   help="measure the forward time of the finished seed-0 pruned nets (only on an idle machine)")
    p.add_argument("--doc", action="store_true", help="run nothing: rewrite the tables from the results file")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="a bar on stderr: runs done / total, rate, ETA, and each running cell's stage and "
                        "iteration (default: on when stderr is a terminal)")
    return p.parse_args(argv)


def run_cells(args, methods, results, results_path, work):
    todo = [(m, s) for s in args.seeds for m in methods
            if args.rerun or compare.cell_key(m, s) not in results["cells"]]
    if not todo:
        print(f"compare: all {len(methods) * len(args.seeds)} runs are in {results_path}")
        return 0
    for path in {os.path.join(args.weights_dir, f"caffe_{m.net}_original.caffemodel") for m, _ in todo}:
        if not os.path.isfile(path):
            raise NpcaffeError(f"--weights_dir: '{path}' not found (the DNS release's dense models; give the "
                               "directory that holds them)")
    lmdbs = {}
    for seed in sorted({s for _, s in todo}):
        print(f"compare: MNIST LMDBs for seed {seed} ...", flush=True)
        lmdbs[seed] = compare.seed_lmdbs(work, seed, args.mnist)
    print(f"compare: {len(todo)} run(s), {args.jobs} at a time; results saved to {results_path} as each ends",
          flush=True)
    failures = 0
    started = time.time()
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, progress.bar("compare", len(todo), unit="run") as shown, \
            concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context, max_tasks_per_child=1) as pool:
        status = manager.dict()  # cell key -> (stage, iteration, max_iter), from the workers' solvers
        futures = {}
        for method, seed in todo:
            out = os.path.join(work, method.net, method.name, f"seed{seed}")
            futures[pool.submit(compare.run_cell, method, seed, lmdbs[seed], out, args.weights_dir, args.quick,
                                status)] = (method, seed, out)
        pending, done, postfix = set(futures), 0, None
        while pending:
            finished, pending = concurrent.futures.wait(pending, timeout=1.0,
                                                        return_when=concurrent.futures.FIRST_COMPLETED)
            for future in finished:
                done += 1
                failures += _record_cell(futures[future], future, done, len(todo), results, results_path, started)
                shown.update(1)
            running = _running(status, futures, pending)
            if running != postfix:  # redraw (the bar moves only when a run ends)
                shown.set_postfix_str(postfix := running)
    return failures


def _record_cell(cell, future, done, total, results, results_path, started):
    """Save a finished run's record (1 if it failed, else 0), with a line above the bar."""
    method, seed, out = cell
    key = compare.cell_key(method, seed)
    try:
        record = future.result()
    except Exception as e:  # one failed run must not lose the others: report it, go on
        _say(f"compare: [{done}/{total}] {key} FAILED: {type(e).__name__}: {e} "
             f"(its log: {os.path.join(out, 'log.txt')})")
        return 1
    record["revision"] = compare.git_revision(ROOT)
    for field in ("pruned_model", "slim_model", "slim_weights"):
        if record.get(field):
            record[field] = os.path.relpath(record[field], ROOT)
    results["cells"][key] = record
    compare.save_results(results_path, results)
    _say(f"compare: [{done}/{total}] {key}: {record['compression']:.1f}x, "
         f"{record['test_error_pct']:.2f}% error, {record['seconds'] / 60:.1f} min "
         f"(elapsed {(time.time() - started) / 60:.1f} min)")
    return 0


def _running(status, futures, pending):
    """The bar's postfix: each running cell's stage and iteration, e.g.
    'lenet5/han-iterative/seed0 prune step 2/5 1200/10000'."""
    parts = []
    for future in pending:
        key = compare.cell_key(*futures[future][:2])
        if key in status:
            stage, iteration, total = status[key]
            parts.append(f"{key} {stage} {iteration}/{total}")
    return "; ".join(sorted(parts))


def _say(line):
    """A line on stdout, above the bar when one is shown."""
    if progress.enabled():
        from tqdm import tqdm
        tqdm.write(line, file=sys.stdout)
        sys.stdout.flush()
    else:
        print(line, flush=True)


def _files_on_disk(weights, model):
    """Whether the weights that --timing runs are there, and the cell's own prototxt if it has one."""
    if not weights or not os.path.isfile(os.path.join(ROOT, weights)):
        return False
    return model is None or os.path.isfile(os.path.join(ROOT, model))


def run_timing(args, methods, results, results_path):
    from npcaffe import glog
    glog.set_quiet(True)  # the nets' loading lines ("Ignoring source layer ...") would bury the results
    measured = 0
    for method in methods:
        # The lowest seed whose net is still on disk (the pruned model, or a structured method's slim net;
        # a seed's net has the same layers and about the same kept weights as another's; the table says
        # which seed was timed).
        on_disk = [(seed, results["cells"][compare.cell_key(method, seed)]) for seed in sorted(args.seeds)
                   if compare.cell_key(method, seed) in results["cells"]]
        on_disk = [(seed, r) for seed, r in on_disk if _files_on_disk(*compare.timed_files(r))]
        if not on_disk:
            print(f"compare: --timing: {compare.cell_key(method, 0).rsplit('/', 1)[0]} has no "
                  f"{'slim net' if method.structured else 'pruned model'} on disk for any seed (run a seed again "
                  "with --rerun)")
            continue
        key = compare.cell_key(method, on_disk[0][0])
        record = on_disk[0][1]
        weights, model = compare.timed_files(record)
        timing = compare.time_cell(record, os.path.join(ROOT, weights), model and os.path.join(ROOT, model))
        if timing is None:
            print(f"compare: --timing: load average {os.getloadavg()[0]:.2f} is above {compare.MAX_TIMING_LOAD}: "
                  "not measuring (stop the other work and run --timing again)")
            return measured
        record["timing"] = timing
        compare.save_results(results_path, results)
        measured += 1
        print(f"compare: --timing {key}: " + ", ".join(f"batch {b}: {v['auto']:.3g} ms (dense path {v['dense']:.3g})"
                                                        for b, v in timing["batches"].items()))
    return measured


def write_docs(args, methods, results, results_path, work):
    # The full tables: every method and the default seeds with any others asked for, whichever cells
    # this invocation ran (a run of one seed, to fill a gap, must not shrink the table to that seed).
    seeds = args.seeds if args.quick else sorted(set(compare.DEFAULT_SEEDS) | set(args.seeds))
    results["source"] = os.path.relpath(results_path, ROOT)
    if args.quick:
        os.makedirs(os.path.join(work, "figures"), exist_ok=True)
        figures = compare.plot(results, methods, seeds, os.path.join(work, "figures"))
        path = os.path.join(work, "pruning.md")
        with open(path, "w") as f:
            f.write("# Quick comparison (tiny budgets: these numbers are not results)\n\n" +
                    compare.format_doc(results, methods, seeds, figures))
        print(f"compare: the quick tables are in {path}")
        return
    every = compare.methods_for()
    figures = compare.plot(results, every, seeds, os.path.join(ROOT, "docs", "figures"))
    for path, name, body in ((os.path.join(ROOT, "docs", "pruning.md"), "compare",
                              compare.format_doc(results, every, seeds, figures)),
                             (os.path.join(ROOT, "README.md"), "compare-headline",
                              compare.format_headline(results, every, seeds))):
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(compare.replace_between(text, name, body, path))
        print(f"compare: wrote the {name} table into {path}")


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    progress.configure(args.progress)
    try:
        methods = compare.methods_for(args.nets, args.methods)
        work = os.path.abspath(args.work or os.path.join(ROOT, "runs", "compare-quick" if args.quick else "compare"))
        results_path = args.results or (os.path.join(work, "results.json") if args.quick
                                        else os.path.join(ROOT, "docs", "pruning-compare.json"))
        results = compare.load_results(results_path)
        failures = 0
        if not args.doc:
            if args.timing:
                run_timing(args, methods, results, results_path)
            else:
                failures = run_cells(args, methods, results, results_path, work)
        write_docs(args, methods, results, results_path, work)
    except NpcaffeError as e:
        print(f"compare_pruning: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("compare_pruning: interrupted; the finished runs are saved, run the same command again to go on",
              file=sys.stderr)
        return 130
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
