"""Experiment 2: does a single decay per head limit the time scales a RotRNN layer can hold? (Dolga et al. 2024 §3:
A_h = γ_h P_h Θ_h P_hᵀ, so every mode of head h decays as γ_h^ℓ; several heads give several envelopes.)

The training runs are ordinary jobs of the suite: one task per head count on the same multi-scale data
(:mod:`rotrnn.data.multiscale`: leaky integrators or delayed copies at several scales), same total state size, so
that N = d_state / n_heads varies with n_heads. This command reads their checkpoints for the learned γ_h (and the initial ones, rebuilt with the run's seed)
and collects the test MSE.
"""
from __future__ import annotations

from typing import Any

from rotrnn.analysis.common import (AnalysisError, init_model, load_run, log_mlflow, result_path, run_status, timed,
                                    training_runs, usable, write_result)


def gammas(model) -> list[float]:
    from rotrnn.analysis.common import recurrent_layers

    return [float(g) for layer in recurrent_layers(model) for g in layer.gamma.detach()]


def run(params: dict[str, Any], suite: str, cfg: dict[str, Any], params_path: str = "params.yaml") -> dict[str, Any]:
    from rotrnn.pipeline import load_plan

    plan = load_plan(params_path, suite)
    tasks = {int(h): str(t) for h, t in (cfg.get("tasks") or {}).items()}
    if not tasks:
        raise AnalysisError(f"{params_path}: suites.{suite}.experiments.heads.tasks (n_heads -> task) is empty")
    rows = []
    with timed() as clock:
        for n_heads, task in sorted(tasks.items()):
            for t, model_name, seed in plan.jobs():
                if t != task or model_name != "rotrnn":
                    continue
                if run_status(plan.run_dir(task, model_name, seed)) == "diverged" and not usable(
                        plan.run_dir(task, model_name, seed), "best"):
                    rows.append({"n_heads": n_heads, "task": task, "seed": seed, "N": None, "gamma": [],
                                 "gamma_init": [], "diverged": True})
                    continue
                model, config, meta = load_run(plan.run_dir(task, model_name, seed), "best")
                if int(config["layer"]["n_heads"]) != n_heads:
                    raise AnalysisError(f"{params_path}: task {task} trains {config['layer']['n_heads']} heads, but "
                                        f"experiments.heads.tasks maps it to {n_heads}")
                rows.append({"n_heads": n_heads, "task": task, "seed": seed, "N": int(config["layer"]["d_state"])
                             // n_heads, "gamma": gammas(model), "gamma_init": gammas(init_model(config, meta))})
    runs = {(r["task"], r["seed"]): r for r in training_runs(plan, list(tasks.values())) if r["model"] == "rotrnn"}
    for r in rows:
        run_ = runs.get((r["task"], r["seed"]), {})
        r.update(test_mse=run_.get("test/loss"), val_mse=run_.get("val/loss"), train_wall_s=run_.get("wall_s"),
                 steps=run_.get("steps"))
    result = {"experiment": "heads", "suite": suite, "settings": cfg, "wall_s": clock["wall_s"],
              "train_wall_s": sum(r["train_wall_s"] or 0 for r in rows), "rows": rows}
    path = result_path(params, suite, "heads")
    write_result(path, result)
    metrics = {f"test_mse/h{r['n_heads']}/seed{r['seed']}": r["test_mse"] for r in rows if r["test_mse"] is not None}
    log_mlflow(params, suite, "heads", cfg, metrics | {"wall_s": clock["wall_s"]}, [path])
    return result




def report(ctx):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    from rotrnn.analysis.sections import Section, mean_std, save_figure, table_md, write_csv

    res = ctx.require("heads")
    every = pd.DataFrame(res["rows"])
    n_diverged = int(every["diverged"].fillna(False).astype(bool).sum()) if "diverged" in every else 0
    rows = every[every["N"].notna()].copy()  # runs that diverged before their first epoch have no parameters to read
    tasks = list(dict.fromkeys(every["task"]))
    from rotrnn.data.prepared import read_meta

    # what the runs trained on, as the generator recorded it (its arguments and the exact target variance)
    meta = read_meta(ctx.plan.prepared_dir(tasks[0]))
    data = meta["generator"]
    kernel, scales, var = data["kernel"], list(data["scales"]), float(meta["target_variance"])
    files = [write_csv(ctx.out / "heads.csv", every.drop(columns=["gamma", "gamma_init"]))]
    agg = rows.groupby("n_heads").agg(mse=("test_mse", "mean"), sd=("test_mse", "std"), n=("test_mse", "count"))
    table = pd.DataFrame([{
        "heads": h, "N per head": int(rows.loc[rows["n_heads"] == h, "N"].iloc[0]),
        "test MSE": mean_std(rows.loc[rows["n_heads"] == h, "test_mse"], "{:.4f}"),
        "unexplained variance": f"{agg.loc[h, 'mse'] / var:.3f}",
        "learned 1/(1−γ) range": _range(rows.loc[rows["n_heads"] == h, "gamma"]),
    } for h in agg.index])
    best, worst = agg["mse"].idxmin(), agg["mse"].idxmax()
    pooled = seed_sd(agg)
    one = agg.index.min()  # the single-head network: what more heads are measured against
    answer = (f"With {one} head(s) the test MSE was {agg.loc[one, 'mse']:.4f} ({agg.loc[one, 'mse'] / var:.1%} of the "
              f"target's variance); it was lowest with {best} head(s) ({agg.loc[best, 'mse']:.4f}, "
              f"{agg.loc[best, 'mse'] / var:.1%}) and highest with {worst} ({agg.loc[worst, 'mse']:.4f}, "
              f"{agg.loc[worst, 'mse'] / var:.1%}), against a seed standard deviation of about {pooled:.4f}; the "
              f"learned time scales 1/(1−γ) spanned {_range(rows.loc[rows['n_heads'] == one, 'gamma'])} steps with "
              f"{one} head(s) and {_range(rows.loc[rows['n_heads'] == agg.index.max(), 'gamma'])} with "
              f"{agg.index.max()} (the task's scales: {', '.join(map(str, scales))})"
              + (f"; {n_diverged} run(s) diverged before their first epoch ended." if n_diverged else "."))

    hs = sorted(rows["n_heads"].unique())
    fig, axes = plt.subplots(1, len(hs), figsize=(3.2 * len(hs), 3), squeeze=False, layout="constrained")
    bins = np.geomspace(1, 1e5, 41)
    for ax, h in zip(axes[0], hs):
        sel = rows[rows["n_heads"] == h]
        learned = 1 / (1 - np.concatenate([np.asarray(g) for g in sel["gamma"]]))
        init = 1 / (1 - np.concatenate([np.asarray(g) for g in sel["gamma_init"]]))
        ax.hist(np.clip(init, 1, 1e5), bins=bins, histtype="step", color="grey", label="initial")
        ax.hist(np.clip(learned, 1, 1e5), bins=bins, alpha=0.7, color="tab:blue", label="learned")
        for scale in scales:
            ax.axvline(scale, color="tab:red", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_title(f"{h} head(s), N = {int(sel['N'].iloc[0])}", fontsize=9)
        ax.set_xlabel("time scale 1/(1−γ) (steps)")
    axes[0][0].set_ylabel("heads (all seeds)")
    axes[0][0].legend(fontsize=7, frameon=False)
    files.append(save_figure(fig, ctx.figures / "heads_gamma.png"))
    target = ("delayed copies, y_t = Σ_k x_(t−s_k)" if kernel == "delay" else
              "unit-variance leaky integrators of white noise, y_t = Σ_k h^k_t, h^k_t = a_k h^k_(t−1) + √(1−a_k²) x_t, "
              "a_k = exp(−1/s_k)")
    setup = (f"Tasks {', '.join(tasks)}: the multi-scale regression on {target}, scales s = "
             f"{scales}, length {data['length']}, {meta['splits']['train']} training sequences, scored for t ≥ "
             f"{max(scales)} where the mean of y² is {var:.3f}; one RotRNN layer, total real state "
             f"{int(rows['N'].iloc[0] * rows['n_heads'].iloc[0])}, {int(rows['steps'].dropna().iloc[0]) if rows['steps'].notna().any() else '?'} "
             "training steps; test MSE at the best validation epoch.")
    body = ["## Test MSE against the number of heads", table_md(table),
            "Unexplained variance = test MSE / mean y² (the MSE of predicting zero). Learned 1/(1−γ): min–max over heads and seeds.",
            "## Learned decays", "![learned gamma per head](figures/heads_gamma.png)",
            "Grey: the initial time scales; blue: the learned ones; red dotted lines: the task's scales."]
    seeds = sorted(int(s) for s in rows["seed"].unique())
    return Section("heads", setup, f"{seeds} per head count", answer, body, train_tasks=tasks,
                   command_s=res["wall_s"], files=files)


def _range(gammas) -> str:
    import numpy as np

    g = np.concatenate([np.asarray(x) for x in gammas]) if len(gammas) else np.array([])
    if g.size == 0:
        return "–"
    s = 1 / (1 - g)
    return f"{s.min():.3g}–{s.max():.3g}"


def seed_sd(agg) -> float:
    """The typical seed standard deviation (root mean of the per-head-count variances)."""
    import numpy as np

    v = agg["sd"].dropna().to_numpy()
    return float(np.sqrt(np.mean(v**2))) if v.size else float("nan")
