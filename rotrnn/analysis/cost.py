"""Experiment 5: time and memory of one layer against sequence length, per scan backend, with the matmul floor.

At the paper's Path-X layer size (d_model 128, state 256: RotRNN 32 heads, LRU 128 complex states, DLR 64 complex
states per feature), for each length L: forward and forward+backward time (median of repeats) of RotRNN, LRU and DLR
with every scan backend that runs on the device (DLR convolves by FFT as DLR runs, so it has one row, backend
``fft``), and the time of the six plain matmuls of the input and output projections (forward and backward) at that
L, the floor under any layer of this size (`rotrnn bench layer`'s floor). Memory: the peak CUDA allocation on a GPU;
on CPU, the bytes autograd saves for backward (the activation memory a training step holds, a lower bound on its
peak). The sequential ``naive`` backend runs only up to ``reference_max_length``.

Resumable: each measurement is kept in ``cost_partial.json`` as soon as it is taken (keyed by layer, backend,
length and machine), and a rerun measures only what is missing; the time budget stops the sweep early, recording
what was skipped.
"""
from __future__ import annotations

import os
import time
from typing import Any

from rotrnn.analysis.common import OtherLoad, log_mlflow, read_result, result_path, results_dir, write_result
from rotrnn.machine import machine


def measure(layer_name: str, backend: str, L: int, cfg: dict[str, Any], device, repeats: int) -> dict[str, float]:
    import torch

    from rotrnn.bench.layer import _saved_bytes, _timeit
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

    t_f = _timeit(fwd, repeats, sync)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    t_fb = _timeit(fwd_bwd, repeats, sync)
    mem = torch.cuda.max_memory_allocated(device) if cuda else _saved_bytes(lambda: layer(u))
    return {"fwd_s": t_f, "fwd_bwd_s": t_fb, "memory_mb": mem / 2**20,
            "memory_kind": "peak CUDA allocation" if cuda else "saved for backward"}


def run(params: dict[str, Any], suite: str, cfg: dict[str, Any], device: str | None = None) -> dict[str, Any]:
    import pandas as pd
    import torch

    from rotrnn import atomic
    from rotrnn.bench.layer import _timeit, matmul_floor
    from rotrnn.ops.scan import available_backends

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if cfg.get("threads"):  # the pipeline gives this rule the whole machine: timings with the stated thread count
        torch.set_num_threads(int(cfg["threads"]))
    lengths = [int(x) for x in cfg.get("lengths", [256, 1024, 4096, 16384])]
    layers = list(cfg.get("layers", ["rotrnn", "lru", "dlr"]))
    repeats = int(cfg.get("repeats", 3))
    ref_max = int(cfg.get("reference_max_length", 4096))
    budget = float(cfg.get("budget_minutes", 10)) * 60
    cfg = {"batch": 8, "d_model": 128, "d_state": 256, "n_heads": 32, "dlr_state": 64} | cfg
    backends = available_backends(dev)
    where = machine(dev)
    out = results_dir(params, suite)
    out.mkdir(parents=True, exist_ok=True)
    partial_path = out / "cost_partial.json"
    partial = read_result(partial_path) if partial_path.is_file() else {}
    if partial.get("machine") != where or partial.get("shape") != [cfg[k] for k in ("batch", "d_model", "d_state")]:
        partial = {"machine": where, "shape": [cfg[k] for k in ("batch", "d_model", "d_state")], "rows": {}}
    t0 = time.perf_counter()
    skipped = []
    autocast = torch.autocast(dev.type, enabled=False)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for L in lengths:
        jobs = [("floor", "matmul")] + [(n, b) for n in layers for b in (["fft"] if n == "dlr" else backends)]
        for name, backend in jobs:
            key = f"{name}/{backend}/{L}"
            if key in partial["rows"]:
                continue
            if backend == "naive" and L > ref_max:  # the sequential loop: seconds per call at long lengths
                skipped.append({"key": key, "why": f"naive backend beyond {ref_max}"})
                continue
            if time.perf_counter() - t0 > budget:
                skipped.append({"key": key, "why": "time budget spent"})
                continue
            t_row, others = time.perf_counter(), OtherLoad()
            if name == "floor":
                floor = matmul_floor(int(cfg["batch"]) * L, int(cfg["d_model"]), int(cfg["d_state"]), dev, autocast)
                row = {"fwd_bwd_s": _timeit(floor, repeats, sync)}
            else:
                row = measure(name, backend, L, cfg, dev, repeats)
            partial["rows"][key] = {"layer": name, "backend": backend, "length": L, **row,
                                    "other_cores": others.cores()}
            partial["wall_s"] = partial.get("wall_s", 0.0) + time.perf_counter() - t_row
            atomic.write_json(partial_path, partial)
    rows = [r for r in partial["rows"].values() if r["length"] in lengths]
    table = pd.DataFrame(rows).sort_values(["layer", "backend", "length"])
    atomic.write_text(out / "cost.csv", table.to_csv(index=False, float_format="%.6g"))
    wall = float(partial.get("wall_s", time.perf_counter() - t0))  # all invocations' measuring time together
    result = {"experiment": "cost", "suite": suite,
              "settings": cfg | {"lengths": lengths, "layers": layers, "threads": torch.get_num_threads()},
              "machine": where, "device": str(dev), "wall_s": wall, "rows": rows, "skipped": skipped,
              "cpu_count": os.cpu_count(),
              "files": {"table": "cost.csv"}}
    path = result_path(params, suite, "cost")
    write_result(path, result)
    metrics = {f"{r['layer']}/{r['backend']}/L{r['length']}/fwd_bwd_s": r["fwd_bwd_s"] for r in rows}
    log_mlflow(params, suite, "cost", result["settings"], metrics | {"wall_s": wall}, [path, out / "cost.csv"])
    return result


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


def _fmt(x: float) -> str:
    return "–" if x != x else f"{x:.2f}"


def slope(lengths, times) -> float:
    """Exponent k of time ∝ L^k, least squares in log-log."""
    import numpy as np

    x, y = np.log(np.asarray(lengths, float)), np.log(np.asarray(times, float))
    return float(np.polyfit(x, y, 1)[0]) if len(set(x)) >= 2 else float("nan")


def report(ctx):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from rotrnn.analysis.sections import Section, save_figure, table_md, write_csv

    res = ctx.require("cost")
    df = pd.DataFrame(res["rows"])
    files = [write_csv(ctx.out / "cost.csv", df)]
    lengths = sorted(int(x) for x in df["length"].unique())
    keyed = df.assign(row=df["layer"] + " / " + df["backend"])
    floor = df[df["layer"] == "floor"].set_index("length")["fwd_bwd_s"]
    layer_rows = keyed[keyed["layer"] != "floor"]
    table = []
    for row, g in layer_rows.groupby("row", sort=False):
        g = g.set_index("length")
        table.append({"layer / backend": row, **{f"L={L}": (f"{1e3 * g.loc[L, 'fwd_s']:.3g} / "
                                                           f"{1e3 * g.loc[L, 'fwd_bwd_s']:.3g}") if L in g.index
                                                else "–" for L in lengths},
                      "slope (fwd+bwd)": _fmt(slope(g.index, g["fwd_bwd_s"]))})
    table.append({"layer / backend": "six-matmul floor", **{f"L={L}": (f"– / {1e3 * floor[L]:.3g}" if L in floor.index
                                                                    else "–") for L in lengths},
                  "slope (fwd+bwd)": _fmt(slope(floor.index, floor.values))})
    mem = layer_rows.pivot_table(index="row", columns="length", values="memory_mb").reset_index()
    mem.columns = ["layer / backend"] + [f"L={L}" for L in mem.columns[1:]]
    L_top = max(layer_rows["length"]) if len(layer_rows) else None
    at = layer_rows[layer_rows["length"] == L_top].sort_values("fwd_bwd_s")
    fastest = at.iloc[0] if len(at) else None
    answer = ("No layer measurement." if fastest is None else
              f"At L = {L_top} the fastest forward+backward was {fastest['row']} at {1e3 * fastest['fwd_bwd_s']:.0f} ms, "
              f"{fastest['fwd_bwd_s'] / floor.get(L_top, float('nan')):.2f}× the six-matmul floor; fitted growth "
              "exponents (time ∝ L^k) were " + ", ".join(f"{r['layer / backend']} {r['slope (fwd+bwd)']}"
                                                       for r in table) + ".")
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for row, g in layer_rows.groupby("row", sort=False):
        ax.plot(g["length"], g["fwd_bwd_s"] * 1e3, marker="o", ms=3, label=row)
        ax2.plot(g["length"], g["memory_mb"], marker="o", ms=3, label=row)
    ax.plot(floor.index, floor.values * 1e3, "k--", label="six-matmul floor")
    for a, lab in ((ax, "forward+backward (ms)"), (ax2, f"memory (MB, {df['memory_kind'].dropna().iloc[0]})"
                                                   if df["memory_kind"].notna().any() else "memory (MB)")):
        a.set_xscale("log", base=2)
        a.set_yscale("log")
        a.set_xlabel("sequence length L")
        a.set_ylabel(lab)
    ax.legend(fontsize=7, frameon=False)
    s = res["settings"]
    fig.suptitle(f"batch {s['batch']}, d_model {s['d_model']}, state {s['d_state']}; machine: {res['machine']}; "
                 f"{_load_text(res)}", fontsize=8)
    files.append(save_figure(fig, ctx.figures / "cost.png"))
    setup = (f"Layers at the paper's Path-X size (batch {s['batch']}, d_model {s['d_model']}, RotRNN {s['d_state']} "
             f"real states in {s['n_heads']} heads, LRU {s['d_state'] // 2} complex states, DLR {s['dlr_state']} "
             f"complex states per feature, FFT convolution), lengths {lengths}, median of {s.get('repeats', 3)} "
             f"repeats, on {res['device']}: {res['machine']}. The sequential reference scan only up to "
             f"L = {s.get('reference_max_length')}. {_load_text(res)}." + (f" Skipped: {len(res['skipped'])} measurements "
                                                         "(see cost.json)." if res["skipped"] else ""))
    body = ["## Forward / forward+backward time (ms)", table_md(pd.DataFrame(table)),
            f"## Memory (MB, {df['memory_kind'].dropna().iloc[0] if df['memory_kind'].notna().any() else '–'})",
            table_md(mem.round(1)), "![cost vs length](figures/cost.png)"]
    return Section("cost", setup, "none (timings; inputs drawn with seed 0)", answer, body, command_s=res["wall_s"],
                   command_threads=int(s.get("threads", 2)), files=files)
