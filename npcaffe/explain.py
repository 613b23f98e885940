"""`npcaffe explain`: one DNS layer at one step, Algorithm 1 with the numbers plugged in.

Guo, Yao & Chen (NIPS 2016), Algorithm 1, as the fork computes it
(npcaffe.layerlib.dns):

    mu    = sum|x| / n                 over weights and biases, n = nonzero x,
    sigma = sqrt(sum x^2 / n - mu^2)   taken once, at iteration 0
    T     = max(mu + c_rate * sigma, 0)
    a = 0.9 T, b = 1.1 T               prune |w| <= a, splice |w| > b
    r     = rand() / RAND_MAX          one draw per layer per TRAIN forward
    sigma(iter) = (1 + gamma iter)^-power
    the masks are updated iff sigma(iter) > r and iter < iter_stop

From a solver (`explain_run`): train from the given weights up to the
iteration, keep the weights and masks the layer sees, run that iteration and
report what it did, with the weights nearest a and b.  From a trace CSV
(`explain_trace`): the same quantities from the trace row (no weights).
"""
import numpy as np

from . import rng
from .errors import NpcaffeError
from .layerlib.dns import dns_layers
from .masks import mask_arrays, mask_blobs

RAND_MAX = 2 ** 31 - 1


def _g(x):
    return f"{float(x):.9g}"


def _lines(s):
    """Algorithm 1 as numbered lines: (symbol, formula, numbers plugged in, value)."""
    rows = []
    if s.get("sums"):
        n, s1, s2 = s["sums"]
        rows.append(("μ", "Σ|x| / n", f"{s1:.9g} / {n}", _g(s["mu"])))
        rows.append(("σ", "sqrt(Σx² / n − μ²)", f"sqrt({s2:.9g} / {n} − {_g(s['mu'])}²)", _g(s["std"])))
    else:
        rows.append(("μ", "Σ|x| / n", "(from the trace)", _g(s["mu"])))
        rows.append(("σ", "sqrt(Σx² / n − μ²)", "(from the trace)", _g(s["std"])))
    c = s.get("c_rate")
    T = s["T"]
    if c is not None:
        rows.append(("c_rate", "from the layer definition", "", _g(c)))
        rows.append(("T", "max(μ + c_rate·σ, 0)", f"max({_g(s['mu'])} + {_g(c)}·{_g(s['std'])}, 0)", _g(T)))
    else:
        rows.append(("c_rate", "(T − μ) / σ", f"({_g(T)} − {_g(s['mu'])}) / {_g(s['std'])}",
                     f"{(T - s['mu']) / s['std']:.6g}" if s["std"] else "nan"))
        rows.append(("T", "threshold_low / 0.9", f"{s['a']!r} / 0.9", _g(T)))
    rows.append(("a", "0.9·T   (prune: mask 1→0 where |w| ≤ a)", f"0.9 × {_g(T)}", repr(s["a"])))
    rows.append(("b", "1.1·T   (splice: mask 0→1 where |w| > b)", f"1.1 × {_g(T)}", repr(s["b"])))
    rows.append(("r", "rand() / RAND_MAX   (float32)", f"{s['rand']} / {RAND_MAX + 1}", _g(s["r"])))
    if s.get("gamma") is not None:
        rows.append(("σ(iter)", "(1 + γ·iter)^−power   (float32)",
                     f"(1 + {_g(s['gamma'])}·{s['iteration']})^−{_g(s['power'])}", _g(s["p"])))
    else:
        rows.append(("σ(iter)", "(1 + γ·iter)^−power   (float32)", "(from the trace)", _g(s["p"])))
    stop = s.get("iter_stop")
    cond = f"{_g(s['p'])} {'>' if s['gate_open'] else '≤'} {_g(s['r'])}"
    if stop is not None:
        cond += f" and {s['iteration']} {'<' if s['iteration'] < stop else '≥'} {stop}"
    decision = "open: masks updated" if s["mask_update"] else \
        ("open but iter ≥ iter_stop: masks unchanged" if s["gate_open"] else "closed: masks unchanged")
    rows.append(("gate", "σ(iter) > r  and  iter < iter_stop", cond, decision))
    rows.append(("pruned", "mask 1→0 (weights and biases)", "", str(s["pruned"])))
    rows.append(("spliced", "mask 0→1 (weights and biases)", "", str(s["spliced"])))
    kept = f"{s['kept_weights']} weights + {s['kept_biases']} biases"
    if s.get("total_weights"):
        total = s["total_weights"] + s["total_biases"]
        k = s["kept_weights"] + s["kept_biases"]
        kept += f" = {k} of {total} ({100 * k / total:.2f}%)"
    rows.append(("kept", "mask entries 1 after this step", "", kept))
    return rows


def format_explanation(s):
    """The text `npcaffe explain` prints for a step dict (see explain_run / explain_trace)."""
    head = f"Layer {s['layer']}"
    if s.get("type"):
        head += f" ({s['type']})"
    head += f", iteration {s['iteration']}"
    if s.get("forward") is not None:
        head += f" (TRAIN forward #{s['forward']})"
    out = [head + " — Algorithm 1 of Dynamic Network Surgery (Guo, Yao & Chen, 2016)", ""]
    rows = _lines(s)
    w_sym = max(len(r[0]) for r in rows)
    w_formula = max(len(r[1]) for r in rows)
    for i, (sym, formula, numbers, value) in enumerate(rows, 1):
        plugged = f"= {numbers} " if numbers else ""
        out.append(f"{i:2d}. {sym:<{w_sym}} = {formula:<{w_formula}}  {plugged}= {value}")
    if s.get("stats_note"):
        out += ["", s["stats_note"]]
    near = s.get("nearest")
    if near:
        out += ["", "Weights nearest the thresholds (|w|, where, mask before → after this step):"]
        for label, bound, entries in near:
            out.append(f"  {label} = {bound!r}:")
            for value, where, before, after in entries:
                side = "≤" if value <= bound else ">"
                flag = {(1, 0): "  pruned", (0, 1): "  spliced"}.get((before, after), "")
                out.append(f"    |w| = {value:<12.9g} {side} {label}   {where:<12} {before:g} → {after:g}{flag}")
    elif near is None and not s.get("sums"):
        out += ["", "(A trace has no weights; run with --solver/--weights to see the weights near a and b.)"]
    return "\n".join(out)


def nearest(weights, before, after, bound, k=3, shape=None):
    """The k entries with |w| at or just below `bound` and the k just above: (|w|, index text, before, after)."""
    a = np.abs(weights.astype(np.float64))
    order = np.argsort(a, kind="stable")
    cut = int(np.searchsorted(a[order], bound, side="right"))
    picked = list(order[max(cut - k, 0):cut]) + list(order[cut:cut + k])
    out = []
    for i in picked:
        where = str(tuple(int(j) for j in np.unravel_index(i, shape))) if shape is not None else str(int(i))
        out.append((float(a[i]), f"[{where.strip('()').rstrip(',')}]", float(before[i]), float(after[i])))
    return out


def _c_layers(net):
    return dict(dns_layers(net))


def _statistics_sums(layer):
    """(n, Σ|x|, Σx²) in float64 over the layer's current weights and biases, x as its statistics take it."""
    w = np.concatenate([layer.blobs[0].flat_data, layer.blobs[1].flat_data]).astype(np.float64)
    x = w
    if layer.masked_statistics:
        x = w * np.concatenate(mask_arrays(layer))
    return int(np.count_nonzero(x)), float(np.abs(x).sum()), float((x * w).sum())


def explain_run(solver_source, layer_name, iteration, weights=None, k=3):
    """Train `solver_source` (a solver .prototxt or SolverParameter) up to `iteration`, run it, explain `layer_name`.

    As a fresh process would: glibc rand() from its default seed; snapshots
    and testing are switched off.  Returns the step dict (format_explanation).
    """
    from .kernels import glibc_rand
    from .solvers import get_solver, load_solver_param
    param, _ = load_solver_param(solver_source)
    param.snapshot = 0
    param.snapshot_after_train = False
    param.test_interval = 0
    param.test_initialization = False
    param.display = 0
    glibc_rand.reset()
    rng.set_random_seed(param.random_seed if param.random_seed >= 0 else 0)
    solver = get_solver(param)
    if weights:
        for w in weights.split(","):
            solver.copy_weights(w)
    layers = _c_layers(solver.net)
    if layer_name not in layers:
        raise NpcaffeError(f"layer '{layer_name}' is not a DNS layer (CConvolution/CInnerProduct) of the train "
                           f"net; its DNS layers: {', '.join(layers) or 'none'}")
    layer = layers[layer_name]
    sums = _statistics_sums(layer)  # the statistics are taken at the first forward, from these values
    solver.step(iteration)
    weight_mask, bias_mask = mask_blobs(layer)
    w_before = layer.blobs[0].data.copy()
    m_before = weight_mask.data.copy()
    b_before = layer.blobs[1].flat_data.copy()
    bm_before = bias_mask.flat_data.copy()
    captured = {}

    def keep(net):
        if not captured:
            captured["mask"] = weight_mask.data.copy()
            captured["bias_mask"] = bias_mask.flat_data.copy()
            captured["update"] = layer.last_update

    solver.net.forward_hooks.append(keep)
    try:
        solver.step(1)
    finally:
        solver.net.forward_hooks.remove(keep)
    u = captured["update"]
    threshold = np.float64(np.float32(u.threshold))
    a, b = float(0.9 * threshold), float(1.1 * threshold)
    flat_w, flat_before, flat_after = w_before.ravel(), m_before.ravel(), captured["mask"].ravel()
    step = {
        "layer": layer_name, "type": layer.type, "iteration": int(u.iter), "forward": None,
        "mu": float(layer.mu), "std": float(layer.std), "c_rate": float(layer.c_rate),
        "gamma": float(layer.gamma), "power": float(layer.power), "iter_stop": int(layer.iter_stop),
        "T": float(np.float32(u.threshold)), "a": a, "b": b,
        "rand": int(u.rand), "r": u.r, "p": u.p, "gate_open": bool(u.gate_open), "mask_update": bool(u.mask_update),
        "pruned": u.pruned + u.bias_pruned, "spliced": u.spliced + u.bias_spliced,
        "kept_weights": int(np.count_nonzero(flat_after)), "kept_biases": int(np.count_nonzero(captured["bias_mask"])),
        "total_weights": int(flat_after.size), "total_biases": int(b_before.size),
        "sums": sums,
        "stats_note": (f"μ and σ were taken at iteration 0 from the starting values, x = "
                       f"{'mask·w' if layer.masked_statistics else 'w (the masks are ignored)'} over "
                       f"{layer.blobs[0].count} weights and {layer.blobs[1].count} biases, float32 sums "
                       "in index order (the Σ above are float64)."),
        "nearest": [("a", a, nearest(flat_w, flat_before, flat_after, a, k, w_before.shape)),
                    ("b", b, nearest(flat_w, flat_before, flat_after, b, k, w_before.shape))],
        "weights": flat_w, "mask_before": flat_before, "mask_after": flat_after,
        "bias": b_before, "bias_mask_before": bm_before,
    }
    return step


def _layer_params(model, layer_name):
    """gamma, power, c_rate, iter_stop of a layer in a net .prototxt (None when not given)."""
    from .fileio.prototxt import read_net
    from .layerlib.dns import _c_float_to_int
    for layer in read_net(model).layer:
        if layer.name == layer_name:
            for field in ("cconvolution_param", "cinner_product_param"):
                if layer.HasField(field):
                    c = getattr(layer, field)
                    return {"gamma": float(np.float32(c.gamma)), "power": float(np.float32(c.power)),
                            "c_rate": float(np.float32(c.c_rate)), "iter_stop": _c_float_to_int(c.iter_stop)}
    raise NpcaffeError(f"{model}: no DNS layer named '{layer_name}'")


def explain_trace(trace_path, layer_name, iteration, model=None):
    """The step dict of a trace row (the first forward of `iteration` for `layer_name`)."""
    from .dnstrace import read_trace
    rows = [r for r in read_trace(trace_path) if r["layer"] == layer_name]
    if not rows:
        raise NpcaffeError(f"{trace_path}: no rows for layer '{layer_name}'")
    match = [r for r in rows if r["iteration"] == iteration]
    if not match:
        raise NpcaffeError(f"{trace_path}: layer '{layer_name}' has no row at iteration {iteration} "
                           f"(iterations {rows[0]['iteration']}..{rows[-1]['iteration']})")
    row = match[0]
    if "mu" not in row:
        raise NpcaffeError(f"{trace_path}: an upstream gate trace (8 columns) has no statistics; "
                           "use a trace written by `npcaffe train --dns_trace`")
    step = {k: row[k] for k in ("iteration", "forward", "rand", "mask_update", "pruned", "spliced",
                                "kept_weights", "kept_biases", "mu", "std")}
    step.update({"layer": layer_name, "type": None, "r": row["r_float32"], "p": row["p_float32"],
                 "gate_open": bool(row["gate_open"]), "mask_update": bool(row["mask_update"]),
                 "a": row["threshold_low"], "b": row["threshold_high"],
                 "T": float(np.float32(row["threshold_low"] / 0.9)), "sums": None, "nearest": None})
    if model:
        step.update(_layer_params(model, layer_name))
    if step.get("c_rate") is not None:
        from .kernels.dns import dns_threshold
        step["T"] = float(dns_threshold(step["mu"], step["std"], step["c_rate"]))
    return step
