"""Experiment 1: does RotRNN keep the expected state norm per head at its closed form through time, depth and
training, and more steadily than the LRU?

For a layer h_t = λ ⊙ h_{t−1} + W u_t in its eigenbasis (RotRNN: W = ξ Pᵀ B per head; LRU: W = diag(γ) B), the
measured quantity is the squared state norm per normalisation unit, averaged over a batch,

    n_t = E ‖h_t‖² / U,     U = number of heads (RotRNN) or of complex states (LRU).

For unit white-noise inputs (E u uᵀ = I, independent in time) from a zero state, RotRNN's ξ gives
E ‖h_{h,t}‖² = 1 − γ_h^{2t} per head (Dolga et al. 2024 §3), and the LRU's γ_j = sqrt(1 − |λ_j|²) with unit-norm
rows of B gives 1 − |λ_j|^{2t} per state (Orvieto et al. 2023 §3.3). The closed form each model aims at is thus

    c_t = (1/U) Σ_u (1 − r_u^{2t}),    r_u = γ_h (RotRNN head) or |λ_j| (LRU state),

from the layer's current decays. The statistic is the **level ratio** of a layer: mean_t n_t / mean_t c_t over
t ∈ [t_from, length] (past the warm-up; c_t → 1), and its **drift** |log(ratio_trained / ratio_init)| from a run's
initialisation to its trained network. Two inputs: unit white noise fed to each layer directly (the theorem's
condition, with that layer's parameters), and the real activations of layer ℓ inside ONE network fed by the layers
below, on ListOps sequences longer than the training ones (the generator's LRA settings, cut to ``length`` tokens).

Seeds: ``init_seeds`` untrained networks per model (built as `rotrnn train` builds them; no training), and the suite's
training seeds, whose trained networks are paired with their own initialisation for the drift. The two models draw
their decays from the same distribution (log(−log r) uniform on [r_min, r_max]: params.yaml gives the LRU
``radius_init: double_exponential``). An untrained network's BatchNorm in eval mode is the identity (running mean 0,
variance 1), so its statistics are calibrated first: forward passes in train mode without gradients over a separate
calibration batch, with a cumulative average (momentum None); trained networks use their trained statistics.
"""
from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rotrnn.analysis import stats
from rotrnn.analysis.common import (AnalysisError, init_model, load_run, log_mlflow, recurrent_layers, result_path,
                                    results_dir, timed, usable, write_result)
from rotrnn.analysis.sections import MODEL_NAMES

INPUTS = ("white", "real")


# -- the measured norm and its closed form -------------------------------------------------------------------------
def units(layer) -> int:
    """U: RotRNN normalises each head to 1, the LRU each complex state."""
    if hasattr(layer, "n_heads"):
        return int(layer.n_heads)
    if type(layer).__name__ == "LRU":
        return int(layer.d_state)
    raise AnalysisError(f"state norms are defined here for RotRNN and LRU layers, not {type(layer).__name__}")


@torch.no_grad()
def norm_curve(layer, u: torch.Tensor) -> np.ndarray:
    """(L,) n_t = mean over the batch of ‖h_t‖² / U, t = 1..L (h_t after t inputs from a zero state)."""
    h = layer.eigen_states(u.to(next(layer.parameters()).dtype))
    return (h.abs().pow(2).sum(-1).double().mean(0) / units(layer)).numpy()


@torch.no_grad()
def unit_decays(layer) -> np.ndarray:
    """(U,) r_u: γ_h per RotRNN head, |λ_j| per LRU state."""
    if hasattr(layer, "n_heads"):
        return layer.gamma.double().numpy()
    return torch.exp(layer.log_lambda().real.double()).numpy()


def closed_form(decays: np.ndarray, length: int) -> np.ndarray:
    """(length,) c_t = mean_u (1 − r_u^{2t}), t = 1..length: the norm per unit the normalisation aims at."""
    t = np.arange(1, length + 1, dtype=float)[:, None]
    return (1 - np.asarray(decays, dtype=float)[None, :] ** (2 * t)).mean(-1)


def level_ratio(curve: np.ndarray, closed: np.ndarray, t_from: int) -> tuple[float, float, float]:
    """(level, closed-form level, ratio): mean of n_t and of c_t over t ∈ [t_from, L], and their ratio."""
    level, ref = float(np.mean(curve[t_from - 1:])), float(np.mean(closed[t_from - 1:]))
    return level, ref, level / ref


# -- the networks and their inputs ------------------------------------------------------------------------------------
def long_listops(meta: dict[str, Any], n: int, length: int, seed: int) -> torch.Tensor:
    """(n, length) token ids of ListOps expressions at least ``length`` tokens long (the LRA generator's settings:
    depth ≤ 10, ≤ 10 arguments), cut to their first ``length`` tokens, in the trained network's vocabulary."""
    from rotrnn.data.listops import generate, tokenize
    from rotrnn.data.vocab import Vocab

    vocab = Vocab(meta["vocab"])
    rows: list[np.ndarray] = []
    rng = random.Random(seed)
    while len(rows) < n:
        for src, _ in generate(n, rng, min_length=length, max_length=8 * length, max_depth=10, max_args=10):
            ids = vocab.encode(tokenize(src))
            if len(ids) >= length and len(rows) < n:
                rows.append(ids[:length])
    return torch.from_numpy(np.stack(rows))


def forward_tokens(model, tokens: torch.Tensor):
    """The network on a batch of equal-length sequences (no padding: BatchNorm statistics over real tokens only)."""
    from rotrnn.train.loop import forward

    lengths = torch.full((tokens.shape[0],), tokens.shape[1], dtype=torch.long)
    return forward(model, {"inputs": tokens, "lengths": lengths})


@torch.no_grad()
def calibrate_batchnorm(model, tokens: torch.Tensor, chunk: int) -> int:
    """Set every BatchNorm's running statistics to the cumulative average over forward passes on ``tokens`` (train
    mode for the BatchNorms only, no gradients; dropout stays off). Returns the number of BatchNorms."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    model.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average over the calibration passes
        bn.train()
    for i in range(0, tokens.shape[0], chunk):
        forward_tokens(model, tokens[i:i + chunk])
    model.eval()
    return len(bns)


@torch.no_grad()
def real_inputs(model, tokens: torch.Tensor) -> list[torch.Tensor]:
    """Each recurrent layer's actual input in ``model`` (eval mode): layer ℓ fed by the layers below."""
    layers = recurrent_layers(model)
    inputs: list[torch.Tensor] = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: inputs.append(args[0].detach())) for m in layers]
    try:
        forward_tokens(model.eval(), tokens)
    finally:
        for h in hooks:
            h.remove()
    return inputs


def sample_points(length: int, n: int = 80) -> np.ndarray:
    """Log-spaced time indices (0-based) for the stored curves; the levels use every step."""
    return np.unique(np.geomspace(1, length, n).round().astype(int)) - 1


def measure(model, tokens: torch.Tensor, white: torch.Tensor, t_from: int) -> list[dict[str, Any]]:
    """Per layer and input: the curve n_t, its closed form c_t and the level ratio over t ≥ t_from."""
    layers = recurrent_layers(model)
    length = tokens.shape[1]
    out = []
    for inp, us in (("white", [white] * len(layers)), ("real", real_inputs(model, tokens))):
        for i, (layer, u) in enumerate(zip(layers, us)):
            curve = norm_curve(layer, u)
            closed = closed_form(unit_decays(layer), length)
            level, ref, ratio = level_ratio(curve, closed, t_from)
            # the input's second moment per feature over the measured window (1 for the theorem's unit inputs)
            u2 = float(u[:, t_from - 1:].double().pow(2).mean())
            out.append({"input": inp, "layer": i, "level": level, "closed": ref, "ratio": ratio, "u2": u2,
                        "curve": curve, "closed_curve": closed})
    return out


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

    from rotrnn import atomic
    from rotrnn.config import suite_tracking
    from rotrnn.pipeline import load_plan
    from rotrnn.train.tracking import tracking_uri

    key = f"{params_path}: suites.{suite}.experiments.norms"
    plan = load_plan(params_path, suite)
    nets = dict(cfg.get("networks") or {})  # label -> task (single: listops1, deep: listops)
    if not nets:
        raise AnalysisError(f"{key}.networks is empty")
    models = list(cfg.get("models", ["rotrnn", "lru"]))
    length, t_from = int(cfg["length"]), int(cfg["t_from"])
    if not 1 <= t_from <= length:
        raise AnalysisError(f"{key}: need 1 <= t_from <= length, got t_from={t_from}, length={length}")
    n_init, batch, calib = int(cfg["init_seeds"]), int(cfg["batch"]), int(cfg["calibration_batch"])
    if n_init < 2:
        raise AnalysisError(f"{key}.init_seeds: need at least 2 seeds for an interval, got {n_init}")
    data_seed = int(cfg.get("data_seed", 0))
    out = results_dir(params, suite)
    out.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri(suite_tracking(params, suite).get("uri"))
    points = sample_points(length)
    levels, curves, hist = [], [], []
    trained_steps: dict[str, int] = {}
    with timed() as clock:
        for net, task in nets.items():
            for model_name in models:
                seeds = sorted({s for t, m, s in plan.jobs() if t == task and m == model_name})
                if not seeds:
                    raise AnalysisError(f"{key}: the suite has no training job of {task}/{model_name}")
                runs = {s: Path(plan.run_dir(task, model_name, s)) for s in seeds}
                for s, d in runs.items():
                    if not usable(d, "last"):
                        raise AnalysisError(f"{d}: training run not finished; train it first (snakemake)")
                _, config, meta = load_run(runs[seeds[0]], "last")
                g = torch.Generator().manual_seed(data_seed)
                white = torch.randn(batch, length, int(config["net"]["d_model"]), generator=g)
                tokens = long_listops(meta, batch + calib, length, data_seed)
                real, calibration = tokens[:batch], tokens[batch:]
                # untrained networks: init seeds 0..n-1 and every training seed (its own initialisation)
                for s in sorted(set(range(n_init)) | set(seeds)):
                    model = init_model({**config, "seed": s}, meta)
                    calibrate_batchnorm(model, calibration, batch)
                    _collect(levels, curves, points, measure(model, real, white, t_from),
                             network=net, model=model_name, stage="init", seed=s, trained=s in seeds)
                for s, d in runs.items():
                    model, _, _ = load_run(d, "last")
                    from rotrnn.train import checkpoint as ckpt

                    trained_steps[f"{net}/{model_name}/{s}"] = int(
                        ckpt.load(d / "checkpoints" / "last.pt")["state"]["global_step"])
                    _collect(levels, curves, points, measure(model, real, white, t_from),
                             network=net, model=model_name, stage="trained", seed=s, trained=True)
                    metrics = json.loads((d / "metrics.json").read_text())
                    for row in training_history(uri, metrics["mlflow_run_id"], recurrent_layers(model)):
                        hist.append({"network": net, "model": model_name, "seed": s, **row})
    result = {
        "experiment": "norms", "suite": suite, "settings": cfg, "wall_s": clock["wall_s"],
        "trained_steps": trained_steps, "networks": nets,
        "files": {"levels": "norms_levels.csv", "curves": "norms_curves.csv", "training": "norms_training.csv"},
    }
    atomic.write_text(out / "norms_levels.csv", pd.DataFrame(levels).to_csv(index=False, float_format="%.6g"))
    atomic.write_text(out / "norms_curves.csv", pd.DataFrame(curves).to_csv(index=False, float_format="%.6g"))
    atomic.write_text(out / "norms_training.csv", pd.DataFrame(hist).to_csv(index=False, float_format="%.6g"))
    path = result_path(params, suite, "norms")
    write_result(path, result)
    lv = pd.DataFrame(levels)
    mean = lv.groupby(["network", "model", "stage", "input"])["ratio"].mean()
    metrics = {f"ratio/{'/'.join(k)}": float(v) for k, v in mean.items() if math.isfinite(v)}
    log_mlflow(params, suite, "norms", cfg, metrics | {"wall_s": clock["wall_s"]},
               [path] + [out / f for f in result["files"].values()])
    return result


def _collect(levels: list, curves: list, points: np.ndarray, rows: list[dict[str, Any]], **tags: Any) -> None:
    for r in rows:
        levels.append({**tags, "input": r["input"], "layer": r["layer"], "level": r["level"], "closed": r["closed"],
                       "ratio": r["ratio"], "u2": r["u2"]})
        curves += [{**tags, "input": r["input"], "layer": r["layer"], "t": int(t) + 1, "norm": float(r["curve"][t]),
                    "closed": float(r["closed_curve"][t])} for t in points]


# -- the verdict ---------------------------------------------------------------------------------------------------
def seed_ratios(levels, network: str, model: str, stage: str, inp: str, layer: int | None = None):
    """Per seed: the level ratio of one layer, or (layer None) the geometric mean over the network's layers."""
    sel = levels[(levels["network"] == network) & (levels["model"] == model) & (levels["stage"] == stage)
                 & (levels["input"] == inp)]
    if layer is not None:
        return sel[sel["layer"] == layer].set_index("seed")["ratio"].sort_index()
    return np.exp(np.log(sel["ratio"]).groupby(sel["seed"]).mean()).sort_index()


def drifts(levels, network: str, model: str, inp: str):
    """Per training seed: mean over layers of |log(ratio_trained / ratio_init)|, init being that run's own."""
    sel = levels[(levels["network"] == network) & (levels["model"] == model) & (levels["input"] == inp)
                 & levels["trained"].astype(bool)]
    wide = sel.pivot_table(index=["seed", "layer"], columns="stage", values="ratio")
    d = np.abs(np.log(wide["trained"] / wide["init"]))
    return d.groupby(level="seed").mean().sort_index()


def verdict_parts(levels, networks: list[str], band: tuple[float, float]) -> list[dict[str, Any]]:
    """Every part of the claim with its estimate and verdict:

    - level (RotRNN): ratio within ``band`` — white noise per network (geometric mean over layers per seed), real
      activations per layer ℓ; at init (init seeds) and after training (training seeds); Student-t interval;
    - drift: RotRNN's drift minus the LRU's below 0, per network and input (Welch over training seeds)."""
    parts = []
    lo, hi = band
    for net in networks:
        for stage in ("init", "trained"):
            est = stats.mean_interval(seed_ratios(levels, net, "rotrnn", stage, "white"), log=True)
            parts.append({"part": "level", "network": net, "stage": stage, "input": "white", "layer": "all",
                          "est": est, "verdict": stats.within(est, lo, hi)})
            n_layers = int(levels[levels["network"] == net]["layer"].max()) + 1
            for ell in range(n_layers):
                est = stats.mean_interval(seed_ratios(levels, net, "rotrnn", stage, "real", ell), log=True)
                parts.append({"part": "level", "network": net, "stage": stage, "input": "real", "layer": str(ell),
                              "est": est, "verdict": stats.within(est, lo, hi)})
        for inp in INPUTS:
            est = stats.welch_difference(drifts(levels, net, "rotrnn", inp), drifts(levels, net, "lru", inp))
            parts.append({"part": "drift", "network": net, "stage": "init→trained", "input": inp, "layer": "all",
                          "est": est, "verdict": stats.below(est, 0.0)})
    return parts


def parts_frame(parts: list[dict[str, Any]]):
    import pandas as pd

    return pd.DataFrame([{k: v for k, v in p.items() if k != "est"} | {
        "value": p["est"].value, "lo": p["est"].lo, "hi": p["est"].hi, "n": p["est"].n} for p in parts])


# -- report ----------------------------------------------------------------------------------------------------
NAMES = {m: MODEL_NAMES[m] for m in ("rotrnn", "lru")}  # the two models this experiment compares
INPUT_LABELS = {"white": "white noise", "real": "real activations (ListOps)"}


def report(ctx):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from rotrnn.analysis.sections import Section, save_figure, table_md, write_csv

    res = ctx.require("norms")
    cfg = res["settings"]
    levels = pd.read_csv(ctx.results / res["files"]["levels"])
    curves = pd.read_csv(ctx.results / res["files"]["curves"])
    hist = pd.read_csv(ctx.results / res["files"]["training"])
    nets = list(res["networks"])
    band = tuple(float(b) for b in cfg["band"])
    length, t_from = int(cfg["length"]), int(cfg["t_from"])

    # the level table: both models, every (network, stage, input, layer), mean ratio with its interval over seeds
    rows = []
    for (net, model, stage, inp, layer), g in levels.groupby(["network", "model", "stage", "input", "layer"]):
        r, lv = stats.mean_interval(g["ratio"], log=True), stats.mean_interval(g["level"])
        rows.append({"network": net, "model": model, "stage": stage, "input": inp, "layer": layer,
                     "ratio": r.value, "ratio_lo": r.lo, "ratio_hi": r.hi, "level": lv.value, "level_lo": lv.lo,
                     "level_hi": lv.hi, "closed": float(g["closed"].mean()), "n": r.n})
    table = pd.DataFrame(rows)
    parts = verdict_parts(levels, nets, band)
    pf = parts_frame(parts)
    verdict = stats.combine([p["verdict"] for p in parts])
    files = [write_csv(ctx.out / "norms_ratio.csv", table), write_csv(ctx.out / "norms_verdict.csv", pf)]

    def part(kind, net, stage, inp, layer="all"):
        return next(p for p in parts if (p["part"], p["network"], p["stage"], p["input"], p["layer"])
                    == (kind, net, stage, inp, str(layer)))

    deep = "deep" if "deep" in nets else nets[-1]
    real_rot = [p for p in parts if p["part"] == "level" and p["input"] == "real"]
    worst = max(real_rot, key=lambda p: abs(math.log(p["est"].value)))
    failed = [p for p in parts if p["verdict"] != "supports"]
    fmt = "{:.3g}"

    def lvl(model, stage, inp="white", net=deep):
        g = levels[(levels["network"] == net) & (levels["model"] == model) & (levels["stage"] == stage)
                   & (levels["input"] == inp) & levels["trained"].astype(bool)]
        return stats.mean_interval(g.groupby("seed")["level"].mean())

    wsel = levels[(levels["network"] == worst["network"]) & (levels["model"] == "rotrnn")
                  & (levels["stage"] == worst["stage"]) & (levels["input"] == "real")
                  & (levels["layer"] == int(worst["layer"]))]
    worst_u2 = stats.mean_interval(wsel["u2"]) if "u2" in wsel else stats.Estimate(math.nan, math.nan, math.nan, 0)
    dw = part("drift", deep, "init→trained", "white")
    dr = part("drift", deep, "init→trained", "real")
    effect = (f"RotRNN's level/closed-form ratio on white noise ({deep} network, trained) "
              f"{part('level', deep, 'trained', 'white')['est'].text(fmt)}; on real activations its farthest layer "
              f"from the band is layer {worst['layer']} of the {worst['network']} network ({worst['stage']}): "
              f"{worst['est'].text(fmt)}; drift from init to trained, RotRNN minus LRU, {deep} network: white noise "
              f"{dw['est'].text(fmt)}, real activations {dr['est'].text(fmt)}")
    claim = (f"RotRNN keeps the state norm per head at its closed form 1 − γ^(2t): at t ∈ [{t_from}, {length}] its "
             f"level/closed-form ratio lies within [{band[0]:g}, {band[1]:g}] on white noise and on the real "
             "activations of every layer, at init and after training, and it drifts less from init to trained than "
             "the LRU's (drift difference below 0)")
    n_train = int(levels[levels["stage"] == "trained"]["seed"].nunique())
    steps = sorted(set(res["trained_steps"].values()))
    undecided = (f"{n_train} training seeds of {'/'.join(map(str, steps))} steps at length ≤ 256 (the paper trains "
                 "40 epochs of 96k sequences): drift over a full run, and levels of networks trained on long "
                 "sequences, are not measured.")
    lw0, lw1 = lvl("lru", "init"), lvl("lru", "trained")
    rw0, rw1 = lvl("rotrnn", "init"), lvl("rotrnn", "trained")
    answer = (
        f"**{verdict}** ({len(parts) - len(failed)} of {len(parts)} parts of the claim supported"
        + (f"; not supported: " + "; ".join(
            f"{p['part']} {p['network']} {p['stage']} {p['input']}"
            + (f" layer {p['layer']}" if p['layer'] != 'all' else "") + f" ({p['verdict']})" for p in failed[:6])
           + (" …" if len(failed) > 6 else "") if failed else "")
        + f"). On white noise the {deep} network's norm per unit at t ∈ [{t_from}, {length}] (mean over layers, "
        f"training seeds) went from {rw0.text(fmt)} to {rw1.text(fmt)} for RotRNN and from {lw0.text(fmt)} to "
        f"{lw1.text(fmt)} for the LRU; {effect}. The input of that farthest layer had second moment "
        f"{worst_u2.text(fmt)} per feature where the closed form assumes 1 (trained networks keep the BatchNorm "
        "statistics of their ≤ 256-token training data); the ratio divided by it, "
        f"{worst['est'].value / worst_u2.value:{fmt[2:-1]}}, is what the input's correlation in time adds.")

    colours = {"rotrnn": "tab:blue", "lru": "tab:orange"}

    # figure 1: n_t against t with its closed form, seed band (min–max over seeds), first and last layer of the deep
    # network, white noise and real activations, init and trained
    n_deep = int(levels[levels["network"] == deep]["layer"].max()) + 1
    fig, axes = plt.subplots(2, 4, figsize=(15, 7), sharex=True, layout="constrained")
    for col, (inp, ell) in enumerate([(i, l) for i in INPUTS for l in (0, n_deep - 1)]):
        for row, stage in enumerate(("init", "trained")):
            ax = axes[row, col]
            for model in NAMES:
                c = curves[(curves["network"] == deep) & (curves["model"] == model) & (curves["stage"] == stage)
                           & (curves["input"] == inp) & (curves["layer"] == ell)]
                if c.empty:
                    continue
                q = c.groupby("t")["norm"].agg(["mean", "min", "max"])
                ax.plot(q.index, q["mean"], color=colours[model], label=f"{NAMES[model]} (mean over seeds)")
                ax.fill_between(q.index, q["min"], q["max"], color=colours[model], alpha=0.25, lw=0)
                cf = c.groupby("t")["closed"].mean()
                ax.plot(cf.index, cf.values, ":", color=colours[model], lw=1, label=f"{NAMES[model]} closed form")
            ax.axvspan(t_from, length, color="0.9", zorder=0)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{INPUT_LABELS[inp]}, layer {ell}, {stage}", fontsize=9)
            ax.set_xlabel("t")
    for ax in axes[:, 0]:
        ax.set_ylabel("‖h_t‖² per unit")
    axes[0, 0].legend(fontsize=7, frameon=False)
    fig.suptitle(f"{deep} network: state norm per head (RotRNN) / per state (LRU) against t; band: min–max over "
                 f"seeds; grey: the measured window t ∈ [{t_from}, {length}]")
    files.append(save_figure(fig, ctx.figures / "norms_vs_time.png"))

    # figure 2: level ratio against layer ℓ of one network, with 95% intervals over seeds
    fig, axes = plt.subplots(len(nets), 2, figsize=(11, 3.4 * len(nets)), squeeze=False, layout="constrained")
    for r, net in enumerate(nets):
        for c, inp in enumerate(INPUTS):
            ax = axes[r, c]
            for model in NAMES:
                for stage, style, shift in (("init", "-o", -0.1), ("trained", "--s", 0.1)):
                    t = table[(table["network"] == net) & (table["model"] == model) & (table["stage"] == stage)
                              & (table["input"] == inp)].sort_values("layer")
                    if t.empty:
                        continue
                    ax.errorbar(t["layer"] + shift, t["ratio"], yerr=[t["ratio"] - t["ratio_lo"],
                                                                      t["ratio_hi"] - t["ratio"]],
                                fmt=style, color=colours[model], ms=3, capsize=2,
                                label=f"{NAMES[model]} {stage}")
            ax.axhspan(*band, color="0.9", zorder=0)
            ax.axhline(1, color="k", lw=0.6)
            ax.set_yscale("log")
            ax.set_xlabel("layer ℓ")
            ax.set_ylabel("level / closed form")
            ax.set_title(f"{net} network, {INPUT_LABELS[inp]}", fontsize=9)
    axes[0, 0].legend(fontsize=7, frameon=False)
    fig.suptitle(f"Level ratio at t ∈ [{t_from}, {length}] per layer (95% intervals over seeds; grey: the band)")
    files.append(save_figure(fig, ctx.figures / "norms_vs_depth.png"))

    # figure 3: along training (the loop's per-epoch log), one line per seed, mean over layers
    fig, axes = plt.subplots(1, max(1, len(nets)), figsize=(10, 3.4), squeeze=False, layout="constrained")
    for ax, net in zip(axes[0], nets):
        h = hist[hist["network"] == net] if len(hist) else hist
        for model in NAMES:
            hm = h[h["model"] == model] if len(h) else h
            for k, (seed, hs) in enumerate(hm.groupby("seed") if len(hm) else []):
                m = hs.groupby("step")["norm"].mean()
                ax.plot(m.index, m.values, color=colours[model], alpha=0.7, label=NAMES[model] if k == 0 else None)
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel("‖h_t‖² per unit, mean over layers")
        ax.set_title(f"{net} network (one line per training seed)", fontsize=9)
        ax.legend(fontsize=7, frameon=False)
    files.append(save_figure(fig, ctx.figures / "norms_training.png"))

    shown = table.copy()
    shown["ratio"] = [f"{v:.3g} [{a:.3g}, {b:.3g}]" for v, a, b in zip(table["ratio"], table["ratio_lo"],
                                                                         table["ratio_hi"])]
    shown["level"] = [f"{v:.3g} [{a:.3g}, {b:.3g}]" for v, a, b in zip(table["level"], table["level_lo"],
                                                                         table["level_hi"])]
    shown["closed"] = table["closed"].map(lambda v: f"{v:.3g}")
    shown["model"] = shown["model"].map(NAMES)
    shown = shown[["network", "model", "stage", "input", "layer", "level", "closed", "ratio", "n"]]
    vt = pf.assign(estimate=[p["est"].text(fmt) for p in parts])[["part", "network", "stage", "input", "layer",
                                                                   "estimate", "verdict"]]
    n_init = int(levels[levels["stage"] == "init"]["seed"].nunique())
    setup = (f"Networks {res['networks']} (suite tasks: d_model 128, RotRNN 256 real states in 32 heads, LRU 128 "
             f"complex states; decays in [0.9, 0.999] drawn with log(−log r) uniform for both, the LRU through "
             f"`radius_init: double_exponential`), trained on generated ListOps (length ≤ 256) with "
             f"{n_train} seeds per model. Untrained: {n_init} initialisations per model, their BatchNorm "
             f"statistics calibrated by forward passes in train mode without gradients on "
             f"{cfg['calibration_batch']} separate sequences; trained: the trained statistics. Inputs: "
             f"{cfg['batch']} sequences of {length} steps — unit white noise fed to each recurrent layer directly, "
             f"and each layer's actual inputs in its network on ListOps expressions of at least {length} tokens "
             "(LRA generator settings, depth ≤ 10, ≤ 10 arguments) cut to their first "
             f"{length} tokens. Level: mean of ‖h_t‖²/U over t ∈ [{t_from}, {length}] (U heads or complex states); "
             "closed form: mean over units of 1 − r^(2t) with each unit's current decay r; ratio = level / closed "
             "form. Drift: mean over layers of |log(ratio_trained / ratio_init)|, each trained network against its "
             "own initialisation.")
    # claim, verdict, effect and what is undecided head the page (report.py, from the Section's Verdict)
    body = ["## The parts of the claim", table_md(vt),
            "Level parts: 95% interval of the geometric-mean ratio over seeds, inside the band = supports, outside "
            "= contradicts. Drift parts: Welch interval of RotRNN's drift minus the LRU's over training seeds, "
            "below 0 = supports.",
            "## Level, closed form and their ratio per layer (95% intervals over seeds)", table_md(shown),
            "## Figures", "![norm vs t](figures/norms_vs_time.png)", "![ratio vs depth](figures/norms_vs_depth.png)",
            "![norm along training](figures/norms_training.png)",
            "Along training: the norm the training loop logs every epoch on a validation batch (mean over batch "
            "and all positions of sequences ≤ 256 long, inside the warm-up), divided by the number of units."]
    return Section("norms", setup, f"{n_init} initialisation seeds and {n_train} training seeds per model", answer,
                   body, train_tasks=list(res["networks"].values()), command_s=res["wall_s"], files=files,
                   verdict=stats.Verdict(claim, verdict, effect, undecided))
