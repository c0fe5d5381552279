"""Experiment 1: is the hidden state's norm constant over time, depth and training? RotRNN against the LRU.

For a layer h_t = λ ⊙ h_{t−1} + W u_t in its eigenbasis (RotRNN: W = ξ Pᵀ B per head; LRU: W = diag(γ) B), the
quantity measured is the squared state norm per normalisation unit,

    n_t = E ‖h_t‖² / U,     U = number of heads (RotRNN, each head normalised to 1) or of complex states (LRU),

averaged over a batch. For inputs with E u uᵀ = I and no correlation in time (white noise) it has the closed form

    n_t = (1/U) Σ_j ‖W_j‖² (1 − |λ_j|^{2t}) / (1 − |λ_j|²),

which is 1 − mean_h γ_h^{2t} for RotRNN (ξ makes ‖W_h‖_F² = 1 − γ_h², Dolga et al. 2024 §3) and tends to
mean_j |γ_j|² ‖B_j‖² / (1 − |λ_j|²) for the LRU (Orvieto et al. 2023 §3.3: 1 only if γ_j = sqrt(1 − |λ_j|²) still
holds after training and the rows of B have unit norm). Every synthetic input kind has unit second moment per
feature, so departures from the white-noise curve come from the input's temporal structure alone: AR(1) correlation,
a non-zero mean, heavy (Student-t) tails. "Real" inputs are each layer's actual inputs in the network on ListOps.

Views: (1) each recurrent layer fed the synthetic inputs directly (the normalisation procedure on its own, with that
layer's initial or trained parameters), (2) the real activations of the network on ListOps test sequences, (3) the
norms the training loop logged every epoch (`state_norm/layer_i`), divided by U.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rotrnn.analysis.common import (AnalysisError, init_model, load_run, log_mlflow, recurrent_layers, result_path,
                                    results_dir, timed, write_result)

KINDS = ("white", "ar0.9", "ar0.99", "mean", "student_t3")


# -- inputs with unit second moment per feature -----------------------------------------------------------------
def make_input(kind: str, batch: int, length: int, d: int, generator: torch.Generator) -> torch.Tensor:
    """(batch, length, d), E u² = 1 per feature: white N(0,1); arRHO stationary AR(1) u_t = ρ u_{t−1} + sqrt(1−ρ²) ε_t;
    mean (1 + ε)/√2 (mean 1/√2 per feature); student_tNU Student-t with ν > 2 degrees of freedom scaled by
    sqrt((ν−2)/ν)."""
    eps = torch.randn(batch, length, d, generator=generator, dtype=torch.float64)
    if kind == "white":
        return eps
    if kind.startswith("ar"):
        rho = float(kind[2:])
        if not 0 <= rho < 1:
            raise AnalysisError(f"AR(1) input needs 0 <= rho < 1, got {kind!r}")
        out = torch.empty_like(eps)
        out[:, 0] = eps[:, 0]  # stationary start
        c = math.sqrt(1 - rho * rho)
        for t in range(1, length):
            out[:, t] = rho * out[:, t - 1] + c * eps[:, t]
        return out
    if kind == "mean":
        return (1 + eps) / math.sqrt(2)
    if kind.startswith("student_t"):
        nu = float(kind[len("student_t"):])
        if nu <= 2:
            raise AnalysisError(f"Student-t input needs more than 2 degrees of freedom (finite variance), got {kind!r}")
        chi2 = torch.distributions.Chi2(torch.tensor(nu, dtype=torch.float64)).sample((batch, length, d))
        return eps / torch.sqrt(chi2 / nu) * math.sqrt((nu - 2) / nu)
    raise AnalysisError(f"unknown input kind {kind!r}; known: white, ar<rho>, mean, student_t<nu>")


# -- the measured and the predicted norm ------------------------------------------------------------------------
def units(layer) -> int:
    """U: RotRNN normalises each head to 1, the LRU each complex state."""
    if hasattr(layer, "n_heads"):
        return int(layer.n_heads)
    if type(layer).__name__ == "LRU":
        return int(layer.d_state)
    raise AnalysisError(f"state norms are defined here for RotRNN and LRU layers, not {type(layer).__name__}")


@torch.no_grad()
def norm_curve(layer, u: torch.Tensor, valid: int | None = None) -> np.ndarray:
    """(L,) n_t = mean over the batch of ‖h_t‖² / U, t = 1..L (h_t after t inputs); the first ``valid`` steps only
    when given."""
    h = layer.eigen_states(u.to(next(layer.parameters()).dtype))
    n = h.abs().pow(2).sum(-1).double().mean(0) / units(layer)
    return n[:valid].numpy() if valid else n.numpy()


@torch.no_grad()
def white_noise_theory(layer, length: int) -> np.ndarray:
    """(length,) the closed form of n_t for unit white noise, from the layer's own λ and input map."""
    d = layer.d_model
    p = next(layer.parameters())
    W = layer.encode(torch.eye(d, dtype=p.dtype)[None])[0]  # (d, C): column j is W_j
    w2 = W.abs().pow(2).sum(0).double()
    r2 = torch.exp(2 * layer.log_lambda().real.double())
    t = torch.arange(1, length + 1, dtype=torch.float64)[:, None]
    return ((w2 * (1 - r2**t) / (1 - r2)).sum(-1) / units(layer)).numpy()


@torch.no_grad()
def real_curves(model, batch: dict[str, torch.Tensor], valid: int) -> list[np.ndarray]:
    """n_t of every recurrent layer on its actual inputs in ``model`` (eval mode), first ``valid`` steps."""
    from rotrnn.train.loop import forward

    layers = recurrent_layers(model)
    inputs: list[torch.Tensor] = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: inputs.append(args[0].detach())) for m in layers]
    try:
        forward(model.eval(), batch)
    finally:
        for h in hooks:
            h.remove()
    return [norm_curve(layer, u, valid) for layer, u in zip(layers, inputs)]


def sample_points(length: int, n: int = 96) -> np.ndarray:
    """Log-spaced time indices (0-based) for the stored curves; the summary statistics use every step."""
    return np.unique(np.geomspace(1, length, n).round().astype(int)) - 1


def spread(curves: list[np.ndarray], start_frac: float) -> tuple[float, float, float]:
    """(max/min ratio, min, max) of n_t over layers and t ≥ start_frac·L."""
    vals = np.concatenate([c[int(start_frac * len(c)):] for c in curves])
    lo, hi = float(vals.min()), float(vals.max())
    return (hi / lo if lo > 0 else math.inf), lo, hi


# -- the experiment ------------------------------------------------------------------------------------------------
def real_batch(data_dir: Path, min_length: int, n: int) -> tuple[dict[str, torch.Tensor], int]:
    """Up to n test examples at least ``min_length`` long (all valid over the measured steps)."""
    from rotrnn.data import load_dataset

    ds = load_dataset(data_dir, "test")
    lengths = np.load(data_dir / "test.lengths.npy", mmap_mode="r")
    idx = [int(i) for i in np.flatnonzero(lengths >= min_length)[:n]]
    if not idx:
        raise AnalysisError(f"{data_dir}: no test sequence of length >= {min_length} (settings: real_length)")
    return ds.collate([ds[i] for i in idx]), min_length


def training_history(uri: str, run_id: str, layers: list) -> list[dict[str, Any]]:
    from rotrnn.report.runs import history

    rows = []
    for i, layer in enumerate(layers):
        for step, value in history(uri, run_id, f"state_norm/layer_{i}"):
            rows.append({"layer": i, "step": step, "norm": value / units(layer)})
    return rows


def run(params: dict[str, Any], suite: str, cfg: dict[str, Any], params_path: str = "params.yaml") -> dict[str, Any]:
    import json

    import pandas as pd

    from rotrnn.pipeline import load_plan
    from rotrnn.config import suite_tracking
    from rotrnn.train.tracking import tracking_uri

    plan = load_plan(params_path, suite)
    kinds = list(cfg.get("kinds", KINDS))
    length, batch = int(cfg.get("length", 1024)), int(cfg.get("batch", 32))
    seed = int(cfg.get("seed", 0))
    start_frac = float(cfg.get("start_frac", 0.5))
    nets = dict(cfg.get("networks") or {})  # label -> task (e.g. single: listops1, deep: listops)
    models = list(cfg.get("models", ["rotrnn", "lru"]))
    if not nets:
        raise AnalysisError(f"{params_path}: suites.{suite}.experiments.norms.networks is empty")
    out = results_dir(params, suite)
    out.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri(suite_tracking(params, suite).get("uri"))
    points = sample_points(length)
    curves, summary, hist = [], [], []
    trained_steps: dict[str, int] = {}
    with timed() as clock:
        for net, task in nets.items():
            for model_name in models:
                run_dir = Path(plan.run_dir(task, model_name, seed))
                trained, config, meta = load_run(run_dir, "last")
                from rotrnn.train import checkpoint as ckpt

                trained_steps[f"{net}/{model_name}"] = int(ckpt.load(run_dir / "checkpoints" / "last.pt")["state"]
                                                           ["global_step"])
                initial = init_model(config, meta)
                rb, valid = real_batch(Path(plan.prepared_dir(task)), int(cfg.get("real_length", 64)),
                                       int(cfg.get("real_batch", 64)))
                for stage, model in (("init", initial), ("trained", trained)):
                    layers = recurrent_layers(model)
                    g = torch.Generator().manual_seed(seed)
                    per_kind: dict[str, list[np.ndarray]] = {}
                    for kind in kinds:
                        u = make_input(kind, batch, length, layers[0].d_model, g).float()
                        per_kind[kind] = [norm_curve(layer, u) for layer in layers]
                    per_kind["white_theory"] = [white_noise_theory(layer, length) for layer in layers]
                    per_kind["real"] = real_curves(model, rb, valid)
                    for kind, cs in per_kind.items():
                        ratio, lo, hi = spread(cs, start_frac)
                        summary.append({"network": net, "model": model_name, "stage": stage, "input": kind,
                                        "layers": len(cs), "t_from": int(start_frac * len(cs[0])) + 1,
                                        "t_to": len(cs[0]), "ratio": ratio, "min": lo, "max": hi,
                                        "final_mean": float(np.mean([c[-1] for c in cs]))})
                        for i, c in enumerate(cs):
                            pts = points[points < len(c)]
                            curves += [{"network": net, "model": model_name, "stage": stage, "input": kind,
                                        "layer": i, "t": int(t) + 1, "norm": float(c[t])} for t in pts]
                metrics = json.loads((run_dir / "metrics.json").read_text())
                for row in training_history(uri, metrics["mlflow_run_id"], recurrent_layers(trained)):
                    hist.append({"network": net, "model": model_name, **row})
    result = {
        "experiment": "norms", "suite": suite, "settings": cfg, "seed": seed, "wall_s": clock["wall_s"],
        "trained_steps": trained_steps, "networks": nets, "summary": summary,
        "files": {"curves": "norms_curves.csv", "training": "norms_training.csv"},
    }
    from rotrnn import atomic

    atomic.write_text(out / "norms_curves.csv", pd.DataFrame(curves).to_csv(index=False, float_format="%.6g"))
    atomic.write_text(out / "norms_training.csv", pd.DataFrame(hist).to_csv(index=False, float_format="%.6g"))
    path = result_path(params, suite, "norms")
    write_result(path, result)
    metrics = {f"ratio/{r['network']}/{r['model']}/{r['stage']}/{r['input']}": r["ratio"] for r in summary
               if math.isfinite(r["ratio"])}
    log_mlflow(params, suite, "norms", cfg, metrics | {"wall_s": clock["wall_s"]},
               [path, out / "norms_curves.csv", out / "norms_training.csv"])
    return result


# -- report ----------------------------------------------------------------------------------------------------
NAMES = {"rotrnn": "RotRNN", "lru": "LRU"}
KIND_LABELS = {"white": "white noise", "ar0.9": "AR(1) ρ=0.9", "ar0.99": "AR(1) ρ=0.99", "mean": "non-zero mean",
               "student_t3": "Student-t, 3 d.o.f.", "real": "real activations (ListOps)",
               "white_theory": "white noise, closed form"}


def report(ctx):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from rotrnn.analysis.sections import Section, save_figure, table_md, write_csv

    res = ctx.require("norms")
    summ = pd.DataFrame(res["summary"])
    curves = pd.read_csv(ctx.results / res["files"]["curves"])
    hist = pd.read_csv(ctx.results / res["files"]["training"])
    files = [write_csv(ctx.out / "norms_ratio.csv", summ)]

    # the table: max/min ratio per (network, stage, input), RotRNN and LRU side by side
    wide = summ.pivot_table(index=["network", "stage", "input"], columns="model", values="ratio").reset_index()
    cmp = wide.dropna(subset=["rotrnn", "lru"])
    cmp = cmp[cmp["input"] != "white_theory"]
    steadier = int((cmp["rotrnn"] < cmp["lru"]).sum())
    table = wide.assign(**{NAMES[m]: wide[m].map(lambda v: f"{v:.3g}") for m in ("rotrnn", "lru") if m in wide})
    table = table[["network", "stage", "input"] + [NAMES[m] for m in ("rotrnn", "lru") if m in wide]]
    table["input"] = table["input"].map(lambda k: KIND_LABELS.get(k, k))

    def level(net, model, stage, kind):
        sel = summ[(summ["network"] == net) & (summ["model"] == model) & (summ["stage"] == stage)
                   & (summ["input"] == kind)]
        return float(sel["final_mean"].iloc[0]) if len(sel) else float("nan")

    deep = "deep" if "deep" in res["networks"] else next(iter(res["networks"]))
    worst = summ[(summ["model"] == "rotrnn") & (summ["input"] != "white_theory")].sort_values("ratio").iloc[-1]
    worst_lru = summ[(summ["model"] == "lru") & (summ["input"] != "white_theory")].sort_values("ratio").iloc[-1]
    answer = (
        f"Over layers and the second half of the sequence, RotRNN's state norm varied less than the LRU's in "
        f"{steadier} of {len(cmp)} (network, stage, input) cases; on white noise after training the {deep} network's "
        f"norm per unit at t = {res['settings'].get('length', 1024)} averaged {level(deep, 'rotrnn', 'trained', 'white'):.3g} "
        f"per head (RotRNN) and {level(deep, 'lru', 'trained', 'white'):.3g} per state (LRU) against "
        f"{level(deep, 'rotrnn', 'init', 'white'):.3g} and {level(deep, 'lru', 'init', 'white'):.3g} at initialisation; "
        f"the largest max/min ratio was {worst['ratio']:.3g} for RotRNN ({KIND_LABELS.get(worst['input'])}, "
        f"{worst['network']}, {worst['stage']}) and {worst_lru['ratio']:.3g} for the LRU "
        f"({KIND_LABELS.get(worst_lru['input'])}, {worst_lru['network']}, {worst_lru['stage']}).")

    # figure 1: norm against t per input kind, single network, layer 0
    single = "single" if "single" in res["networks"] else deep
    kinds = [k for k in ["white", "ar0.9", "ar0.99", "mean", "student_t3", "real"] if k in set(curves["input"])]
    fig, axes = plt.subplots(2, 3, figsize=(12, 7), layout="constrained")
    for ax, kind in zip(axes.flat, kinds):
        for model, colour in (("rotrnn", "tab:blue"), ("lru", "tab:orange")):
            for stage, style in (("init", "-"), ("trained", "--")):
                c = curves[(curves["network"] == single) & (curves["model"] == model) & (curves["stage"] == stage)
                           & (curves["input"] == kind) & (curves["layer"] == 0)]
                ax.plot(c["t"], c["norm"], style, color=colour, label=f"{NAMES[model]} {stage}")
                if kind == "white":
                    th = curves[(curves["network"] == single) & (curves["model"] == model) & (curves["stage"] == stage)
                                & (curves["input"] == "white_theory") & (curves["layer"] == 0)]
                    ax.plot(th["t"], th["norm"], ":", color="k", lw=0.8,
                            label="closed form" if (model, stage) == ("rotrnn", "init") else None)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(KIND_LABELS[kind], fontsize=9)
        ax.set_xlabel("t")
        ax.set_ylabel("‖h_t‖² per unit")
    axes.flat[0].legend(fontsize=7, frameon=False)
    for ax in list(axes.flat)[len(kinds):]:
        ax.set_visible(False)
    fig.suptitle(f"State norm per head (RotRNN) / per state (LRU) against t, {single} network, layer 0")
    files.append(save_figure(fig, ctx.figures / "norms_vs_time.png"))

    # figure 2: norm against depth (mean over the measured second half), deep network, init and trained
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True, layout="constrained")
    start = float(res["settings"].get("start_frac", 0.5))
    for ax, stage in zip(axes, ("init", "trained")):
        for kind, colour in zip(kinds, plt.rcParams["axes.prop_cycle"].by_key()["color"]):
            for model, style in (("rotrnn", "-o"), ("lru", "--s")):
                c = curves[(curves["network"] == deep) & (curves["model"] == model) & (curves["stage"] == stage)
                           & (curves["input"] == kind)]
                if c.empty:
                    continue
                t_max = c["t"].max()
                m = c[c["t"] > start * t_max].groupby("layer")["norm"].mean()
                ax.plot(m.index, m.values, style, color=colour, ms=3,
                        label=f"{NAMES[model]}, {KIND_LABELS[kind]}" if stage == "init" else None)
        ax.set_yscale("log")
        ax.set_xlabel("layer")
        ax.set_title(f"{deep} network, {stage}")
    axes[0].set_ylabel("mean ‖h_t‖² per unit, 2nd half of t")
    fig.legend(fontsize=6, ncol=4, loc="outside lower center", frameon=False)
    files.append(save_figure(fig, ctx.figures / "norms_vs_depth.png"))

    # figure 3: along training (the loop's per-epoch log)
    fig, axes = plt.subplots(1, max(1, hist["network"].nunique()) if len(hist) else 1, figsize=(10, 3.4),
                             squeeze=False, layout="constrained")
    for ax, (net, h) in zip(axes[0], hist.groupby("network") if len(hist) else []):
        for model, colour in (("rotrnn", "tab:blue"), ("lru", "tab:orange")):
            hm = h[h["model"] == model]
            n_layers = hm["layer"].nunique()
            for layer, hl in hm.groupby("layer"):
                ax.plot(hl["step"], hl["norm"], color=colour, alpha=0.3 + 0.7 * (layer + 1) / n_layers,
                        label=NAMES[model] if layer == 0 else None)
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel("mean ‖h_t‖² per unit")
        ax.set_title(f"{net} network (one line per layer, darker = deeper)", fontsize=9)
        ax.legend(fontsize=7, frameon=False)
    files.append(save_figure(fig, ctx.figures / "norms_training.png"))

    steps = ", ".join(f"{k}: {v}" for k, v in res["trained_steps"].items())
    setup = (f"Networks {res['networks']} (suite tasks; the ListOps architecture of params.yaml: d_model 128, "
             "RotRNN 256 real states in 32 heads, LRU 128 complex states, both with decays in [0.9, 0.999]), trained "
             f"on generated ListOps for {steps} steps. Synthetic inputs: {res['settings'].get('batch')} sequences of "
             f"length {res['settings'].get('length')}, unit second moment per feature, fed directly to every "
             "recurrent layer (its initial or trained parameters); real activations: each layer's actual inputs on "
             f"ListOps test sequences (first {res['settings'].get('real_length')} steps). Unit: the norm is "
             "‖h_t‖² summed over a head (RotRNN) or one complex state (LRU), averaged over units and the batch; the "
             "closed form for white noise is (1/U) Σ_j ‖W_j‖² (1 − |λ_j|^{2t})/(1 − |λ_j|²).")
    body = ["## Max/min ratio of the norm across layers and time (t in the second half of the sequence)",
            table_md(table), "Columns: max/min over all layers and t; 1 = perfectly constant. `white noise, closed "
            "form` is the expectation the normalisation predicts for the same layers.",
            "## Figures", "![norm vs t](figures/norms_vs_time.png)", "![norm vs depth](figures/norms_vs_depth.png)",
            "![norm along training](figures/norms_training.png)",
            "Along training: the norm the training loop logs every epoch on a validation batch (mean over batch "
            "and all positions, padding included), divided by the number of units."]
    return Section("norms", setup, f"seed {res['seed']} (one network per model and depth)", answer, body,
                   train_tasks=list(res["networks"].values()), command_s=res["wall_s"], files=files)
