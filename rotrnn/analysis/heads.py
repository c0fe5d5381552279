"""Experiment 2: does a single decay per head limit the time scales a RotRNN layer can hold? (Dolga et al. 2024 §3:
A_h = γ_h P_h Θ_h P_hᵀ, so every mode of head h decays as γ_h^ℓ; several heads give several envelopes.)

The training runs are ordinary jobs of the suite, all with the same total state size (N = d_state / n_heads): one
task per head count on the multi-scale data (:mod:`rotrnn.data.multiscale`, leaky integrators with several time
constants) and, as the control, 1 and 64 heads on a single-scale task made by the same generator (one time constant,
same length, unit target variance and scored positions). The claim "heads help when, and only when, the task needs
several time scales" is a difference of differences of the unexplained variance u = test MSE / E[y²]:

    DiD = (ū_1 − ū_64)_multi − (ū_1 − ū_64)_single,

with a Welch interval over the four independent groups of seeds (``stats.welch_contrast``). Runs that diverged or
left more than ``failed_above`` of the variance unexplained are counted as failed and kept out of the intervals.
This command reads each run's checkpoint for the learned γ_h (and the initial ones, rebuilt with the run's seed) and
collects the test MSE.
"""
from __future__ import annotations

import math
from typing import Any

from rotrnn.analysis.common import (AnalysisError, init_model, load_run, log_mlflow, result_path, run_status, timed,
                                    training_runs, usable, write_result)
from rotrnn.analysis.stats import Estimate, welch_contrast

KINDS = ("multi", "single")  # the multi-scale task (experiments.heads.tasks) and its control (.control)


def gammas(model) -> list[float]:
    from rotrnn.analysis.common import recurrent_layers

    return [float(g) for layer in recurrent_layers(model) for g in layer.gamma.detach()]


def verdict_of(gap_multi: Estimate, did: Estimate, smallest_effect: float) -> str:
    """supports: the DiD interval lies above the boundary and the multi-scale gap's above 0; contradicts: either lies
    below; cannot tell otherwise (stats.combine)."""
    from rotrnn.analysis.stats import above, combine

    return combine([above(did, smallest_effect), above(gap_multi, 0.0)])


def _settings(cfg: dict[str, Any], params_path: str, suite: str) -> dict[str, dict[int, str]]:
    where = f"{params_path}: suites.{suite}.experiments.heads"
    tasks = {kind: {int(h): str(t) for h, t in (cfg.get(key) or {}).items()}
             for kind, key in zip(KINDS, ("tasks", "control"))}
    for kind, key in zip(KINDS, ("tasks", "control")):
        if not tasks[kind]:
            raise AnalysisError(f"{where}.{key} (n_heads -> task) is empty")
    compare = [int(h) for h in cfg.get("compare") or []]
    if len(compare) != 2 or any(h not in tasks[k] for h in compare for k in KINDS):
        raise AnalysisError(f"{where}.compare must name two head counts that both tasks and control map, got "
                            f"{cfg.get('compare')}")
    for key in ("smallest_effect", "failed_above"):
        if not isinstance(cfg.get(key), (int, float)):
            raise AnalysisError(f"{where}.{key} must be a number, got {cfg.get(key)!r}")
    return tasks


def run(params: dict[str, Any], suite: str, cfg: dict[str, Any], params_path: str = "params.yaml") -> dict[str, Any]:
    from rotrnn.data.prepared import read_meta
    from rotrnn.pipeline import load_plan

    plan = load_plan(params_path, suite)
    tasks = _settings(cfg, params_path, suite)
    every = [(kind, h, t) for kind in KINDS for h, t in sorted(tasks[kind].items())]
    rows = []
    with timed() as clock:
        for kind, n_heads, task in every:
            var = float(read_meta(plan.prepared_dir(task))["target_variance"])
            for t, model_name, seed in plan.jobs():
                if t != task or model_name != "rotrnn":
                    continue
                base = {"scales": kind, "n_heads": n_heads, "task": task, "seed": seed, "target_variance": var}
                if run_status(plan.run_dir(task, model_name, seed)) == "diverged" and not usable(
                        plan.run_dir(task, model_name, seed), "best"):
                    rows.append(base | {"N": None, "gamma": [], "gamma_init": [], "diverged": True})
                    continue
                model, config, meta = load_run(plan.run_dir(task, model_name, seed), "best")
                if int(config["layer"]["n_heads"]) != n_heads:
                    raise AnalysisError(f"{params_path}: task {task} trains {config['layer']['n_heads']} heads, but "
                                        f"experiments.heads maps it to {n_heads}")
                rows.append(base | {"N": int(config["layer"]["d_state"]) // n_heads, "gamma": gammas(model),
                                    "gamma_init": gammas(init_model(config, meta)), "diverged": False})
    runs = {(r["task"], r["seed"]): r for r in training_runs(plan, [t for _, _, t in every]) if r["model"] == "rotrnn"}
    for r in rows:
        run_ = runs.get((r["task"], r["seed"]), {})
        r.update(test_mse=run_.get("test/loss"), val_mse=run_.get("val/loss"), train_wall_s=run_.get("wall_s"),
                 steps=run_.get("steps"))
    result = {"experiment": "heads", "suite": suite, "settings": cfg, "wall_s": clock["wall_s"],
              "train_wall_s": sum(r["train_wall_s"] or 0 for r in rows), "rows": rows}
    path = result_path(params, suite, "heads")
    write_result(path, result)
    metrics = {f"test_mse/{r['task']}/seed{r['seed']}": r["test_mse"] for r in rows if r["test_mse"] is not None}
    log_mlflow(params, suite, "heads", cfg, metrics | {"wall_s": clock["wall_s"]}, [path])
    return result


def table(res: dict[str, Any]):
    """One row per run: the unexplained variance u = test MSE / E[y²] and whether the run failed (diverged, or
    u > failed_above)."""
    import pandas as pd

    every = pd.DataFrame(res["rows"])
    every["diverged"] = every["diverged"].fillna(False).astype(bool)
    every["unexplained"] = every["test_mse"] / every["target_variance"]
    limit = float(res["settings"]["failed_above"])
    every["failed"] = every["diverged"] | every["unexplained"].isna() | (every["unexplained"] > limit)
    return every


def estimates(every, compare) -> dict[str, Estimate]:
    """gap_multi, gap_single (ū_a − ū_b on each task, Welch) and did (their difference), over the runs that did not
    fail."""
    a, b = compare
    ok = every[~every["failed"]]

    def u(kind, h):
        return ok.loc[(ok["scales"] == kind) & (ok["n_heads"] == h), "unexplained"].tolist()

    return {"gap_multi": welch_contrast([u("multi", a), u("multi", b)], [1, -1]),
            "gap_single": welch_contrast([u("single", a), u("single", b)], [1, -1]),
            "did": welch_contrast([u("multi", a), u("multi", b), u("single", a), u("single", b)], [1, -1, -1, 1])}


def report(ctx):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    from rotrnn.analysis.sections import Section, save_figure, table_md, write_csv
    from rotrnn.analysis.stats import Verdict, mean_interval
    from rotrnn.data.prepared import read_meta

    res = ctx.require("heads")
    cfg = res["settings"]
    every = table(res)
    compare = [int(h) for h in cfg["compare"]]
    a, b = compare
    boundary, limit = float(cfg["smallest_effect"]), float(cfg["failed_above"])
    files = [write_csv(ctx.out / "heads.csv", every.drop(columns=["gamma", "gamma_init"]))]
    task_of = {(r.scales, r.n_heads): r.task for r in every.itertuples()}
    gen = {kind: read_meta(ctx.plan.prepared_dir(task_of[(kind, a)]))["generator"] for kind in KINDS}
    ok = every[~every["failed"]]

    def med(kind, h):
        return float(ok.loc[(ok["scales"] == kind) & (ok["n_heads"] == h), "unexplained"].median())

    def failed(kind, h):
        sel = every[(every["scales"] == kind) & (every["n_heads"] == h)]
        return int(sel["failed"].sum()), len(sel)

    rows = []
    for kind in KINDS:
        for h in sorted(every.loc[every["scales"] == kind, "n_heads"].unique()):
            sel = ok[(ok["scales"] == kind) & (ok["n_heads"] == h)]
            k, n = failed(kind, h)
            rows.append({"task": f"{task_of[(kind, h)]} ({kind}-scale)", "heads": int(h),
                         "N per head": int(every.loc[(every["scales"] == kind) & (every["n_heads"] == h), "N"].dropna().iloc[0])
                         if every.loc[(every["scales"] == kind) & (every["n_heads"] == h), "N"].notna().any() else "–",
                         "median u": f"{med(kind, h):.4f}",
                         "mean u [95% CI]": mean_interval(sel["unexplained"]).text("{:.4f}"),
                         "min–max u": f"{sel['unexplained'].min():.4f}–{sel['unexplained'].max():.4f}" if len(sel) else "–",
                         "failed": f"{k} of {n}",
                         "learned 1/(1−γ) range": _range(sel["gamma"].tolist())})
    est = estimates(every, compare)
    verdict = verdict_of(est["gap_multi"], est["did"], boundary)
    multi = every[every["scales"] == "multi"]
    medians = {int(h): med("multi", h) for h in sorted(multi["n_heads"].unique())}
    finite = [h for h in medians if math.isfinite(medians[h])]
    shape = (f"On the multi-scale task the median was lowest with {min(finite, key=medians.get)} head(s) "
             f"({min(medians[h] for h in finite):.2%}) and highest with {max(finite, key=medians.get)} "
             f"({max(medians[h] for h in finite):.2%}). " if finite else "No multi-scale run succeeded. ")
    n_failed, n_runs = int(every["failed"].sum()), len(every)
    n_diverged = int(every["diverged"].sum())
    fail_list = ", ".join(f"{r.task} seed {r.seed} ({'diverged' if r.diverged else f'u = {r.unexplained:.3f}'})"
                          for r in every[every["failed"]].itertuples())
    scales = {kind: ", ".join(map(str, gen[kind]["scales"])) for kind in KINDS}
    answer = (f"On the multi-scale task (time constants {scales['multi']}) {a} head(s) left a median "
              f"{med('multi', a):.2%} of the target's variance unexplained and {b} heads {med('multi', b):.2%}: "
              f"u_{a} − u_{b} = {est['gap_multi'].text('{:.4f}')}. On the single-scale control (time constant "
              f"{scales['single']}) the medians were {med('single', a):.2%} and {med('single', b):.2%}: "
              f"u_{a} − u_{b} = {est['gap_single'].text('{:.4f}')}. The difference of differences is "
              f"{est['did'].text('{:.4f}')} against the declared boundary {boundary:g}: the data {verdict}"
              f"{'' if verdict == 'cannot tell' else ' the claim'}. {shape}"
              f"{n_failed} of {n_runs} runs failed (u > {limit:g} or diverged) and are left out of the intervals"
              + (f": {fail_list}" if n_failed else "")
              + (f"; {n_diverged} run(s) diverged before their first epoch ended." if n_diverged else "."))
    claim = (f"Splitting the state into more heads (one decay γ per head) helps when, and only when, the task needs "
             f"several time scales: the unexplained-variance gap between {a} and {b} heads is larger on the "
             f"multi-scale task than on the single-scale one by more than {boundary:g} (difference of differences), "
             f"and positive on the multi-scale task.")
    effect = (f"difference of differences {est['did'].text('{:.4f}')}; multi-scale gap "
              f"{est['gap_multi'].text('{:.4f}')}, single-scale gap {est['gap_single'].text('{:.4f}')} "
              f"(u = test MSE / E[y²], Welch over seeds, {n_failed} failed run(s) left out)")
    undecided = (f"Whether the help grows steadily with the head count (the intermediate head counts have fewer seeds "
                 f"and are only described), and whether it holds for other scale spreads, longer training or deeper "
                 f"networks, is not decided at this budget.")

    kinds = [(kind, h) for kind in KINDS for h in sorted(ok.loc[ok["scales"] == kind, "n_heads"].unique())]
    fig, axes = plt.subplots(1, len(kinds), figsize=(2.8 * len(kinds), 3), squeeze=False, layout="constrained")
    bins = np.geomspace(1, 1e5, 41)
    for ax, (kind, h) in zip(axes[0], kinds):
        sel = ok[(ok["scales"] == kind) & (ok["n_heads"] == h)]
        learned = 1 / (1 - np.concatenate([np.asarray(g) for g in sel["gamma"]]))
        init = 1 / (1 - np.concatenate([np.asarray(g) for g in sel["gamma_init"]]))
        ax.hist(np.clip(init, 1, 1e5), bins=bins, histtype="step", color="grey", label="initial")
        ax.hist(np.clip(learned, 1, 1e5), bins=bins, alpha=0.7, color="tab:blue", label="learned")
        for scale in gen[kind]["scales"]:
            ax.axvline(scale, color="tab:red", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_title(f"{kind}-scale, {h} head(s)", fontsize=9)
        ax.set_xlabel("1/(1−γ) (steps)")
    axes[0][0].set_ylabel("heads (all seeds)")
    axes[0][0].legend(fontsize=7, frameon=False)
    files.append(save_figure(fig, ctx.figures / "heads_gamma.png"))
    first = ok.iloc[0] if len(ok) else every.iloc[0]
    steps = every["steps"].dropna()
    g = gen["multi"]
    setup = (f"Tasks {', '.join(dict.fromkeys(every['task']))}. Multi-scale: y_t = Σ_k h^k_t, h^k_t = a_k h^k_(t−1) + "
             f"√(1−a_k²) x_t, a_k = exp(−1/s_k), x white noise, time constants s = {scales['multi']}; single-scale "
             f"control: the same generator with s = {scales['single']}. Both: length {g['length']}, y scaled to unit "
             f"variance and scored for t ≥ {g['score_from']}; one RotRNN layer, total real state "
             f"{int(first['N'] * first['n_heads']) if pd.notna(first['N']) else '?'}, "
             f"{int(steps.iloc[0]) if len(steps) else '?'} training steps; test MSE at the best validation epoch. "
             f"u = test MSE / E[y²] (the MSE of predicting zero); a run with u > {limit:g} or that diverged failed.")
    body = ["## Unexplained variance against the number of heads", table_md(pd.DataFrame(rows)),
            f"u = test MSE / E[y²] over the scored positions; median, mean with its 95% t interval and range over the "
            f"runs that did not fail. Learned 1/(1−γ): min–max over heads and seeds.",
            "## The verdict's contrast",
            f"- multi-scale gap u_{a} − u_{b}: {est['gap_multi'].text('{:.4f}')}\n"
            f"- single-scale gap u_{a} − u_{b}: {est['gap_single'].text('{:.4f}')}\n"
            f"- difference of differences: {est['did'].text('{:.4f}')}; boundary {boundary:g}: **{verdict}**",
            "## Learned decays", "![learned gamma per head](figures/heads_gamma.png)",
            "Grey: the initial time scales; blue: the learned ones; red dotted lines: the task's time constants."]
    seeds = {(kind, h): sorted(int(s) for s in every.loc[(every["scales"] == kind) & (every["n_heads"] == h), "seed"])
             for kind in KINDS for h in sorted(every.loc[every["scales"] == kind, "n_heads"].unique())}
    seed_text = "; ".join(f"{kind}-scale, {h} head(s): {s}" for (kind, h), s in seeds.items())
    return Section("heads", setup, seed_text, answer, body, train_tasks=list(dict.fromkeys(every["task"])),
                   command_s=res["wall_s"], files=files,
                   verdict=Verdict(claim, verdict, effect, undecided))


def _range(gammas) -> str:
    import numpy as np

    g = np.concatenate([np.asarray(x) for x in gammas]) if len(gammas) else np.array([])
    if g.size == 0:
        return "–"
    s = 1 / (1 - g)
    return f"{s.min():.3g}–{s.max():.3g}"
