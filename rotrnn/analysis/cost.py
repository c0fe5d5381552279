"""Experiment 5: time and memory of one layer against sequence length, per scan backend, against the memory-bound
floor; the verdict on the paper's claim that the RotRNN layer is efficient (time linear in L, near the floor).

At the paper's Path-X layer size (d_model 128, state 256: RotRNN 32 heads, LRU 128 complex states, DLR 64 complex
states per feature), for each length L and each layer with every scan backend that runs on the device (DLR convolves
by FFT as DLR runs, so it has one row, backend ``fft``): forward time (median of repeats), and forward+backward time
**paired with the floor in the same repeat** (floor, then layer, back to back, as `rotrnn bench layer` does), so
that a ratio layer / floor sees the same machine load. The floor (:func:`layer_floor`) is what any layer of this size
must do at the least: the six matmuls of its input and output projections (forward: B·u and C·x; backward: the two
weight gradients and the two input gradients) and one pass that reads and writes the (B, L, state) tensor (the scan
must at least produce the state sequence). Memory: the peak CUDA allocation on a GPU; on CPU, the bytes autograd
saves for backward. The sequential ``naive`` backend runs only up to ``reference_max_length``.

The claim is decided for RotRNN's fastest backend at the largest length (:func:`decide`): the exponent k of
time ∝ L^k, fitted by least squares in log-log on L ≥ ``fit_min_length`` once per repeat (repeat r's times at every
length), lies in ``exponent_band`` (mean of the per-repeat k with its Student-t interval over repeats); and the
layer runs within ``floor_factor`` × the floor at the largest L (geometric mean of the per-repeat ratios with its
interval, paired by repeat). LRU and DLR get the same statistics as context.

Resumable: each measurement is kept in ``cost_partial.json`` as soon as it is taken (keyed by layer, backend,
length, machine and protocol), and a rerun measures only what is missing; the time budget stops the sweep early,
recording what was skipped.
"""
from __future__ import annotations

import os
import statistics
import time
from typing import Any, Callable

from rotrnn.analysis.common import (AnalysisError, OtherLoad, log_mlflow, read_result, result_path, results_dir,
                                    write_result)
from rotrnn.machine import machine
from rotrnn.analysis.stats import Estimate, Verdict, below, combine, mean_interval, paired_difference, within

# what a measurement in cost_partial.json means: a partial file of another protocol is discarded, not mixed in
PROTOCOL = "paired floor (6 matmuls + 1 state read/write), per-repeat times"
DEFAULTS = {"batch": 8, "d_model": 128, "d_state": 256, "n_heads": 32, "dlr_state": 64, "repeats": 7,
            "reference_max_length": 2048, "fit_min_length": 2048, "exponent_band": [0.9, 1.1], "floor_factor": 2.0,
            "budget_minutes": 8}


def layer_floor(tokens: int, d: int, S: int, device, autocast) -> Callable[[], object]:
    """The floor under any layer of this size, forward+backward, as one call: the six matmuls of (tokens × d) and
    (d × S) shapes of the input and output projections (`rotrnn.bench.layer.matmul_floor`), and one copy of a
    (tokens × S) float32 tensor, which reads and writes the state sequence once (a scan must at least do that)."""
    import torch

    from rotrnn.bench.layer import matmul_floor

    matmuls = matmul_floor(tokens, d, S, device, autocast)
    x = torch.randn(tokens, S, device=device)
    out = torch.empty_like(x)

    def floor():
        matmuls()
        out.copy_(x)

    return floor


def measure(layer_name: str, backend: str, L: int, cfg: dict[str, Any], device, repeats: int,
            floor: Callable[[], object]) -> dict[str, Any]:
    """One (layer, backend, L): forward time (median), forward+backward and floor times per repeat (paired), and
    memory."""
    import torch

    from rotrnn.bench.layer import _paired, _saved_bytes, _timeit
    from rotrnn.nn import DLR, LRU, RotRNN

    B, d, S = int(cfg["batch"]), int(cfg["d_model"]), int(cfg["d_state"])
    cuda = torch.device(device).type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch.manual_seed(0)
    layer = {"rotrnn": lambda: RotRNN(d, S, int(cfg["n_heads"])), "lru": lambda: LRU(d, S // 2),
             "dlr": lambda: DLR(d, int(cfg["dlr_state"]))}[layer_name]().to(device)
    if backend != "fft":
        layer.backend = backend
    u = torch.randn(B, L, d, device=device, requires_grad=True)
    g = torch.randn(B, L, d, device=device)

    def fwd():
        with torch.no_grad():
            layer(u)

    def fwd_bwd():
        layer(u).backward(g)
        layer.zero_grad(set_to_none=True)
        u.grad = None

    t_f = _timeit(fwd, repeats, sync)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    pairs = _paired(floor, fwd_bwd, repeats, sync)
    mem = torch.cuda.max_memory_allocated(device) if cuda else _saved_bytes(lambda: layer(u))
    layer_s, floor_s = [t for _, t in pairs], [f for f, _ in pairs]
    return {"fwd_s": t_f, "fwd_bwd_s": statistics.median(layer_s), "floor_s": statistics.median(floor_s),
            "layer_repeats": layer_s, "floor_repeats": floor_s, "memory_mb": mem / 2**20,
            "memory_kind": "peak CUDA allocation" if cuda else "saved for backward"}


def run(params: dict[str, Any], suite: str, cfg: dict[str, Any], device: str | None = None) -> dict[str, Any]:
    import torch

    from rotrnn import atomic
    from rotrnn.ops.scan import available_backends

    t_cmd = time.perf_counter()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if cfg.get("threads"):  # the pipeline gives this rule the whole machine: timings with the stated thread count
        torch.set_num_threads(int(cfg["threads"]))
    cfg = DEFAULTS | cfg
    lengths = [int(x) for x in cfg.get("lengths", [256, 1024, 2048, 4096, 8192, 16384])]
    layers = list(cfg.get("layers", ["rotrnn", "lru", "dlr"]))
    repeats, ref_max = int(cfg["repeats"]), int(cfg["reference_max_length"])
    if repeats < 2:
        raise AnalysisError(f"suites.{suite}.experiments.cost.repeats: {repeats}; the intervals need at least 2")
    budget = float(cfg["budget_minutes"]) * 60
    backends = available_backends(dev)
    where = machine(dev)
    out = results_dir(params, suite)
    out.mkdir(parents=True, exist_ok=True)
    partial_path = out / "cost_partial.json"
    partial = read_result(partial_path) if partial_path.is_file() else {}
    ident = {"machine": where, "shape": [cfg[k] for k in ("batch", "d_model", "d_state")], "repeats": repeats,
             "protocol": PROTOCOL}
    if any(partial.get(k) != v for k, v in ident.items()):
        partial = ident | {"rows": {}}
    wall_before = float(partial.get("wall_s", 0.0))  # earlier invocations' command time
    skipped = []
    autocast = torch.autocast(dev.type, enabled=False)
    for L in lengths:
        floor = None  # built once per length, only if something at this length is measured
        jobs = [(n, b) for n in layers for b in (["fft"] if n == "dlr" else backends)]
        for name, backend in jobs:
            key = f"{name}/{backend}/{L}"
            if key in partial["rows"]:
                continue
            if backend == "naive" and L > ref_max:  # the sequential loop: seconds per call at long lengths
                skipped.append({"key": key, "why": f"naive backend beyond {ref_max}"})
                continue
            if time.perf_counter() - t_cmd + wall_before > budget:
                skipped.append({"key": key, "why": "time budget spent"})
                continue
            if floor is None:
                floor = layer_floor(int(cfg["batch"]) * L, int(cfg["d_model"]), int(cfg["d_state"]), dev, autocast)
            others = OtherLoad()
            row = measure(name, backend, L, cfg, dev, repeats, floor)
            partial["rows"][key] = {"layer": name, "backend": backend, "length": L, **row,
                                    "other_cores": others.cores()}
            partial["wall_s"] = wall_before + time.perf_counter() - t_cmd
            atomic.write_json(partial_path, partial)
    rows = [r for r in partial["rows"].values() if r["length"] in lengths and r["layer"] in layers]
    atomic.write_text(out / "cost.csv", summary_table(rows).to_csv(index=False, float_format="%.6g"))
    wall = wall_before + time.perf_counter() - t_cmd  # every invocation's command time together
    partial["wall_s"] = wall
    atomic.write_json(partial_path, partial)
    result = {"experiment": "cost", "suite": suite,
              "settings": cfg | {"lengths": lengths, "layers": layers, "threads": torch.get_num_threads()},
              "machine": where, "device": str(dev), "wall_s": wall, "rows": rows, "skipped": skipped,
              "cpu_count": os.cpu_count(), "protocol": PROTOCOL, "files": {"table": "cost.csv"}}
    path = result_path(params, suite, "cost")
    write_result(path, result)
    metrics = {f"{r['layer']}/{r['backend']}/L{r['length']}/fwd_bwd_s": r["fwd_bwd_s"] for r in rows}
    log_mlflow(params, suite, "cost", result["settings"], metrics | {"wall_s": wall}, [path, out / "cost.csv"])
    return result


def summary_table(rows: list[dict[str, Any]]):
    """One row per (layer, backend, length): medians, the median paired ratio, memory and the others' load."""
    import pandas as pd

    cols = ["layer", "backend", "length", "fwd_s", "fwd_bwd_s", "floor_s", "ratio_median", "memory_mb",
            "memory_kind", "other_cores"]
    table = pd.DataFrame([{**{k: r.get(k) for k in cols},
                           "ratio_median": statistics.median(a / b for a, b in zip(r["layer_repeats"],
                                                                                   r["floor_repeats"]))}
                          for r in rows], columns=cols)
    return table.sort_values(["layer", "backend", "length"]).reset_index(drop=True)


def repeats_table(rows: list[dict[str, Any]]):
    """Every timed repeat: (layer, backend, length, repeat, layer_s, floor_s), the floor from the same repeat."""
    import pandas as pd

    out = [{"layer": r["layer"], "backend": r["backend"], "length": r["length"], "repeat": i, "layer_s": a,
            "floor_s": b} for r in rows for i, (a, b) in enumerate(zip(r["layer_repeats"], r["floor_repeats"]))]
    return pd.DataFrame(out, columns=["layer", "backend", "length", "repeat", "layer_s", "floor_s"])


def slope(lengths, times) -> float:
    """Exponent k of time ∝ L^k, least squares in log-log."""
    import numpy as np

    x, y = np.log(np.asarray(lengths, float)), np.log(np.asarray(times, float))
    return float(np.polyfit(x, y, 1)[0]) if len(set(x)) >= 2 else float("nan")


def exponent(reps, fit_min_length: int, column: str = "layer_s") -> tuple[Estimate, list[int]]:
    """k of time ∝ L^k for one (layer, backend) from its repeats table: fitted once per repeat on the lengths
    L ≥ ``fit_min_length`` (short lengths carry per-call overhead, which flattens the slope), then the mean of the
    per-repeat k with its t interval over repeats. Also returns the lengths fitted."""
    fit = reps[reps["length"] >= fit_min_length]
    lengths = sorted(int(x) for x in fit["length"].unique())
    if len(lengths) < 2:
        return Estimate(float("nan"), float("nan"), float("nan"), 0), lengths
    wide = fit.pivot_table(index="repeat", columns="length", values=column).dropna()
    ks = [slope(wide.columns, wide.loc[r].values) for r in wide.index]
    return mean_interval(ks), lengths


def floor_ratio(reps, length: int) -> Estimate:
    """Layer / floor at one length for one (layer, backend): geometric mean of the per-repeat ratios with its
    interval (paired by repeat: both timed back to back, under the same load)."""
    at = reps[reps["length"] == length].sort_values("repeat")
    return paired_difference(at["layer_s"], at["floor_s"], log=True)


def decide(reps, cfg: dict[str, Any]) -> dict[str, Any]:
    """The verdict on RotRNN's efficiency, for its fastest backend (lowest median forward+backward time) at the
    largest length any RotRNN backend reached, among those measured at ≥ 2 lengths L ≥ ``fit_min_length``:
    ``combine([within(k, *exponent_band), below(ratio, floor_factor)])``."""
    fit_min, (lo, hi), factor = int(cfg["fit_min_length"]), cfg["exponent_band"], float(cfg["floor_factor"])
    rot = reps[(reps["layer"] == "rotrnn") & (reps["length"] >= fit_min)]
    fitted = rot.groupby("backend")["length"].nunique()
    rot = rot[rot["backend"].isin(fitted[fitted >= 2].index)]
    if rot.empty:
        return {"backend": None, "length": None, "k": None, "ratio": None, "lengths": [], "verdict": "cannot tell"}
    L_top = int(rot["length"].max())
    backend = rot[rot["length"] == L_top].groupby("backend")["layer_s"].median().idxmin()
    mine = reps[(reps["layer"] == "rotrnn") & (reps["backend"] == backend)]
    k, lengths = exponent(mine, fit_min)
    ratio = floor_ratio(mine, L_top)
    verdict = combine([within(k, float(lo), float(hi)), below(ratio, factor)])
    return {"backend": backend, "length": L_top, "k": k, "ratio": ratio, "lengths": lengths, "verdict": verdict,
            "parts": {"exponent": within(k, float(lo), float(hi)), "floor": below(ratio, factor)}}


CONTENDED_CORES = 0.2  # other processes' average use of the cores during a measurement above which it is flagged


def _load_text(res: dict[str, Any]) -> str:
    """What other processes took from the machine while each row was measured (:class:`OtherLoad`)."""
    other = [r["other_cores"] for r in res.get("rows", []) if r.get("other_cores") is not None]
    if not other:
        return "other processes' load not recorded"
    busy = [x for x in other if x > CONTENDED_CORES]
    text = (f"Other processes used {sum(other) / len(other):.2f} of {res.get('cpu_count')} cores on average while "
            f"measuring (at most {max(other):.2f} during one row)")
    return text + (f"; {len(busy)} of {len(other)} rows measured while others used more than {CONTENDED_CORES} "
                   "cores (contended: those timings are inflated)" if busy else "")


def _fmt(est: Estimate | None, fmt: str = "{:.2f}") -> str:
    if est is None or est.n == 0 or est.value != est.value:
        return "–"
    return est.text(fmt)


def report(ctx):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from rotrnn.analysis.sections import Section, save_figure, table_md, write_csv

    res = ctx.require("cost")
    s = DEFAULTS | res["settings"]
    fit_min, (lo, hi), factor = int(s["fit_min_length"]), s["exponent_band"], float(s["floor_factor"])
    files = [write_csv(ctx.out / "cost.csv", summary_table(res["rows"])),
             write_csv(ctx.out / "cost_repeats.csv", repeats_table(res["rows"]))]
    df, reps = (pd.read_csv(f) for f in files)  # every number below recomputes from the CSVs as written
    lengths = sorted(int(x) for x in df["length"].unique())
    keyed = df.assign(row=df["layer"] + " / " + df["backend"])
    table = []
    for row, g in keyed.groupby("row", sort=False):
        g = g.set_index("length")
        r = reps[(reps["layer"] + " / " + reps["backend"]) == row]
        k, _ = exponent(r, fit_min)
        top = int(g.index.max())
        table.append({"layer / backend": row, **{f"L={L}": (f"{1e3 * g.loc[L, 'fwd_s']:.3g} / "
                                                           f"{1e3 * g.loc[L, 'fwd_bwd_s']:.3g}") if L in g.index
                                                else "–" for L in lengths},
                      f"k (L ≥ {fit_min})": _fmt(k),
                      "× floor at largest L": f"{_fmt(floor_ratio(r, top))} (L={top})"})
    floor_med = reps.groupby("length")["floor_s"].median()
    k_floor, _ = exponent(reps.groupby(["length", "repeat"], as_index=False)["floor_s"].median(), fit_min, "floor_s")
    table.append({"layer / backend": "floor (6 matmuls + state read/write)",
                  **{f"L={L}": (f"– / {1e3 * floor_med[L]:.3g}" if L in floor_med.index else "–") for L in lengths},
                  f"k (L ≥ {fit_min})": _fmt(k_floor), "× floor at largest L": "1"})
    mem = keyed.pivot_table(index="row", columns="length", values="memory_mb").reset_index()
    mem.columns = ["layer / backend"] + [f"L={L}" for L in mem.columns[1:]]

    d = decide(reps, s)
    claim = (f"RotRNN's layer is efficient: its forward+backward time grows linearly with L (exponent k of "
             f"time ∝ L^k, fitted on L ≥ {fit_min}, within [{lo:g}, {hi:g}]) and stays within {factor:g}× the "
             "memory-bound floor (the projections' six matmuls plus one read and write of the state sequence) at "
             "the largest L, for its fastest scan backend.")
    undecided = ("One machine and thread count: the intervals cover the noise between repeats, not other CPUs, "
                 f"GPUs (other scan backends) or lengths beyond L = {d['length'] or max(lengths)}.")
    if d["backend"] is None:
        answer = (f"No RotRNN backend was measured at two lengths L ≥ {fit_min} (see Skipped), so neither the "
                  "exponent nor the ratio to the floor can be read: cannot tell.")
        verdict = Verdict(claim, "cannot tell", "no RotRNN measurement at two lengths ≥ "
                          f"{fit_min}", undecided)
    else:
        best = df[(df["layer"] == "rotrnn") & (df["backend"] == d["backend"]) & (df["length"] == d["length"])].iloc[0]
        context = []
        for name in ("lru", "dlr"):
            other = df[(df["layer"] == name) & (df["length"] == d["length"])]
            if len(other):
                ob = other.sort_values("fwd_bwd_s").iloc[0]
                r = reps[(reps["layer"] == name) & (reps["backend"] == ob["backend"])]
                context.append(f"{name.upper()}'s fastest ({ob['backend']}) {1e3 * ob['fwd_bwd_s']:.3g} ms, "
                               f"k = {_fmt(exponent(r, fit_min)[0])}, layer / floor = "
                               f"{_fmt(floor_ratio(r, d['length']))}")
        effect = (f"k = {d['k'].text('{:.2f}')}; layer / floor at L = {d['length']}: "
                  f"{d['ratio'].text('{:.2f}')} ({d['backend']})")
        low = reps[reps["layer_s"] < reps["floor_s"]]
        answer = (f"Verdict: **{d['verdict']}** (exponent: {d['parts']['exponent']}; floor: {d['parts']['floor']}). "
                  f"At L = {d['length']}, RotRNN's fastest backend ({d['backend']}) took "
                  f"{1e3 * best['fwd_bwd_s']:.3g} ms per forward+backward at batch {s['batch']} against a floor of "
                  f"{1e3 * best['floor_s']:.3g} ms: layer / floor = {d['ratio'].text('{:.2f}')} (geometric mean of "
                  f"the ratios paired by repeat; boundary {factor:g}×). Its time grew as L^k with "
                  f"k = {d['k'].text('{:.2f}')} (fitted per repeat on L = {', '.join(map(str, d['lengths']))}; "
                  f"band [{lo:g}, {hi:g}]). "
                  + (("Context at the same length: " + "; ".join(context) + ". ") if context else "")
                  + (f"In {len(low)} of {len(reps)} paired repeats (at L = "
                     f"{', '.join(map(str, sorted(set(low['length']))))}) a layer ran faster than its floor: there "
                     "the floor is not a lower bound." if len(low) else
                     f"No layer ran faster than its floor in any of the {len(reps)} paired repeats."))
        verdict = Verdict(claim, d["verdict"], effect, undecided)

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for row, g in keyed.groupby("row", sort=False):
        ax.plot(g["length"], g["fwd_bwd_s"] * 1e3, marker="o", ms=3, label=row)
        ax2.plot(g["length"], g["memory_mb"], marker="o", ms=3, label=row)
    ax.plot(floor_med.index, floor_med.values * 1e3, "k--", label="floor")
    ax.axvline(fit_min, color="0.7", lw=0.8, ls=":")
    for a, lab in ((ax, "forward+backward (ms, median)"), (ax2, f"memory (MB, {df['memory_kind'].dropna().iloc[0]})"
                                                           if df["memory_kind"].notna().any() else "memory (MB)")):
        a.set_xscale("log", base=2)
        a.set_yscale("log")
        a.set_xlabel("sequence length L")
        a.set_ylabel(lab)
    ax.legend(fontsize=7, frameon=False)
    fig.suptitle(f"batch {s['batch']}, d_model {s['d_model']}, state {s['d_state']}; machine: {res['machine']}; "
                 f"{_load_text(res)}", fontsize=8)
    files.append(save_figure(fig, ctx.figures / "cost.png"))
    setup = (f"Layers at the paper's Path-X size (batch {s['batch']}, d_model {s['d_model']}, RotRNN {s['d_state']} "
             f"real states in {s['n_heads']} heads, LRU {s['d_state'] // 2} complex states, DLR {s['dlr_state']} "
             f"complex states per feature, FFT convolution), lengths {lengths}, {s['repeats']} repeats on "
             f"{res['device']}: {res['machine']}. Each forward+backward is timed right after the floor in the same "
             "repeat (the floor: the six matmuls of the input and output projections, forward and backward, plus one "
             "read and write of the (B, L, state) tensor, which any layer producing the state sequence must do). "
             f"The exponent is fitted on L ≥ {fit_min} per repeat; forward times are medians. The sequential "
             f"reference scan only up to L = {s['reference_max_length']}. {_load_text(res)}."
             + (f" Skipped: {len(res['skipped'])} measurements (see cost.json)." if res["skipped"] else ""))
    body = ["## Forward / forward+backward time (ms, medians), exponent and ratio to the floor (95% CI over repeats)",
            table_md(pd.DataFrame(table)),
            f"## Memory (MB, {df['memory_kind'].dropna().iloc[0] if df['memory_kind'].notna().any() else '–'})",
            # lengths a backend was not run at (the sequential reference stops early) read "–", not nan
            table_md(mem.round(1).astype(object).where(mem.notna(), "–")), "![cost vs length](figures/cost.png)"]
    return Section("cost", setup, f"none (timings; inputs drawn with seed 0; {s['repeats']} repeats per "
                   "measurement)", answer, body, command_s=res["wall_s"],
                   command_threads=int(s.get("threads", 2)), files=files, verdict=verdict)
