"""Experiment 4 (DLR's synthetic tasks at CPU scale): one test example per task and model, prediction against target.

The test MSE table comes from the training runs themselves; this command reads each task's best checkpoint of the
first seed and keeps, for the first test example, the target and the model's output at the scored positions (the
``label_mask``), first output channel, for the figure.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rotrnn.analysis.common import AnalysisError, load_run, log_mlflow, result_path, timed, usable, write_result


def prediction(model, data_dir: Path, index: int = 0) -> dict[str, list[float]]:
    import torch

    from rotrnn.data import load_dataset
    from rotrnn.train.loop import forward

    ds = load_dataset(data_dir, "test")
    batch = ds.collate([ds[index]])
    with torch.no_grad():
        out = forward(model.eval(), batch)[0, :, 0].double()
    mask = batch["label_mask"][0] if "label_mask" in batch else torch.ones(out.shape[0], dtype=torch.bool)
    pos = torch.nonzero(mask[: out.shape[0]]).flatten()
    return {"position": pos.tolist(), "target": batch["labels"][0, pos, 0].double().tolist(),
            "output": out[pos].tolist()}


def run(params: dict[str, Any], suite: str, cfg: dict[str, Any], params_path: str = "params.yaml") -> dict[str, Any]:
    import pandas as pd

    from rotrnn import atomic
    from rotrnn.analysis.common import results_dir
    from rotrnn.pipeline import load_plan

    plan = load_plan(params_path, suite)
    tasks = [str(t) for t in cfg.get("tasks") or []]
    missing = [t for t in tasks if t not in plan.tasks]
    if not tasks or missing:
        raise AnalysisError(f"{params_path}: suites.{suite}.experiments.synthetic.tasks must list tasks of the suite "
                            f"(missing: {missing})")
    rows = []
    with timed() as clock:
        for task in tasks:
            jobs = [(m, s) for t, m, s in plan.jobs() if t == task]
            if not jobs:
                continue
            for model_name in dict.fromkeys(m for m, _ in jobs):
                # the first seed whose run can be read (a run that diverged before its first epoch cannot)
                seeds = [s for m, s in jobs if m == model_name and usable(plan.run_dir(task, m, s), "best")]
                if not seeds:
                    continue
                seed = min(seeds)
                model, _, _ = load_run(plan.run_dir(task, model_name, seed), "best")
                p = prediction(model, Path(plan.prepared_dir(task)))
                rows += [{"task": task, "model": model_name, "seed": seed, "position": i, "target": y, "output": o}
                         for i, y, o in zip(p["position"], p["target"], p["output"])]
    out = results_dir(params, suite)
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out / "synthetic_predictions.csv", pd.DataFrame(rows).to_csv(index=False, float_format="%.5g"))
    result = {"experiment": "synthetic", "suite": suite, "settings": cfg, "wall_s": clock["wall_s"],
              "files": {"predictions": "synthetic_predictions.csv"}}
    path = result_path(params, suite, "synthetic")
    write_result(path, result)
    log_mlflow(params, suite, "synthetic", cfg, {"wall_s": clock["wall_s"]}, [path, out / "synthetic_predictions.csv"])
    return result


def still_improving(history: list[dict[str, Any]], key: str = "val/loss", tol: float = 0.05) -> bool:
    """Whether the last epoch lowered the validation loss by more than ``tol`` (relative): not converged."""
    vals = [h[key] for h in history if key in h]
    return len(vals) >= 2 and vals[-1] < (1 - tol) * min(vals[:-1])


LEARNED = 0.9  # a task counts as learned when the best mean test MSE is below this share of the mean predictor's


def mean_predictor_mse(prepared: Path, split: str = "test") -> float:
    """The test MSE of predicting each output channel's mean over the scored positions (the loop's objective: the
    squared error averaged over channels, then over scored positions): what a model that learned nothing scores."""
    import numpy as np

    y = np.load(prepared / f"{split}.labels.npy").astype(np.float64)
    mask_path = prepared / f"{split}.label_mask.npy"
    mask = np.load(mask_path) if mask_path.is_file() else np.ones(y.shape[:2], bool)
    if y.ndim == 2:
        y = y[..., None]
    scored = y[mask]  # (positions, channels)
    return float(((scored - scored.mean(0)) ** 2).mean(-1).mean())


def report(ctx):
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from rotrnn.analysis.common import training_runs
    from rotrnn.analysis.sections import Section, mean_std, save_figure, table_md, write_csv

    res = ctx.require("synthetic")
    tasks = [str(t) for t in res["settings"]["tasks"]]
    runs = pd.DataFrame(training_runs(ctx.plan, tasks))
    improving = []
    for t, m, s in ctx.plan.jobs():
        p = Path(ctx.plan.metrics_path(t, m, s))
        if t in tasks and p.is_file():
            improving.append({"task": t, "model": m, "seed": s,
                              "still_improving": still_improving(json.loads(p.read_text()).get("history", []))})
    runs = runs.merge(pd.DataFrame(improving), on=["task", "model", "seed"], how="left")
    files = [write_csv(ctx.out / "dlr_tasks.csv", runs)]
    names = {"rotrnn": "RotRNN", "lru": "LRU", "dlr": "DLR"}
    models = list(dict.fromkeys(runs["model"]))
    table = pd.DataFrame([{"model": names.get(m, m), **{t: mean_std(runs.loc[(runs["model"] == m) &
                                                                              (runs["task"] == t), "test/loss"],
                                                                     "{:.3g}") for t in tasks}} for m in models])
    means = runs.groupby(["task", "model"])["test/loss"].mean().unstack()
    stds = runs.groupby(["task", "model"])["test/loss"].std().unstack()
    baseline = {t: mean_predictor_mse(Path(ctx.plan.prepared_dir(t))) for t in tasks}
    table["model"] = table["model"].astype(str)
    table = pd.concat([table, pd.DataFrame([{"model": "predict the mean (baseline)",
                                             **{t: f"{baseline[t]:.3g}" for t in tasks}}])], ignore_index=True)
    learned, not_learned, clear = [], [], []
    for t in tasks:
        if t not in means.index:
            continue
        order = means.loc[t].sort_values()
        best_m = order.index[0]
        if order.iloc[0] >= LEARNED * baseline[t]:
            not_learned.append(f"{t} (best {order.iloc[0] / baseline[t]:.0%} of the baseline)")
            continue
        learned.append(f"{t} (best {names.get(best_m, best_m)} {order.iloc[0]:.3g} against {baseline[t]:.3g})")
        if len(order) > 1 and order.iloc[1] - order.iloc[0] > max(stds.loc[t].fillna(0)[order.index[:2]]):
            clear.append(f"{t}: {names.get(best_m, best_m)}")
    n_improving = int(runs["still_improving"].fillna(False).astype(bool).sum())
    n_diverged = int((runs["status"] == "diverged").sum()) if "status" in runs else 0
    answer = (f"Learned (test MSE below {LEARNED:.0%} of predicting the mean): "
              + (", ".join(learned) or "none")
              + "; not learned by any model at this budget: " + (", ".join(not_learned) or "none")
              + "; among the learned, a best model ahead of the second by more than the seeds' std: " + (", ".join(clear) or "none")
              + f". {n_improving} of {len(runs)} runs still lowered their validation loss by more than 5% in the "
              "last epoch (not converged at this budget)"
              + (f"; {n_diverged} run(s) diverged (kept with their last finite checkpoint)." if n_diverged else "."))
    preds = pd.read_csv(ctx.results / res["files"]["predictions"])
    fig, axes = plt.subplots(len(tasks), 1, figsize=(9, 1.9 * len(tasks)), squeeze=False, layout="constrained")
    for ax, t in zip(axes[:, 0], tasks):
        p = preds[preds["task"] == t]
        first = p[p["model"] == p["model"].iloc[0]] if len(p) else p
        ax.plot(first["position"], first["target"], color="k", lw=1.2, label="target")
        for m, colour in (("rotrnn", "tab:blue"), ("lru", "tab:orange"), ("dlr", "tab:green")):
            pm = p[p["model"] == m]
            if len(pm):
                ax.plot(pm["position"], pm["output"], color=colour, lw=0.8, alpha=0.8, label=names[m])
        ax.set_title(t, fontsize=9)
        ax.set_ylabel("channel 0")
    axes[0][0].legend(fontsize=7, ncol=4, frameon=False)
    axes[-1][0].set_xlabel("position (scored positions only)")
    files.append(save_figure(fig, ctx.figures / "dlr_tasks_predictions.png"))
    data = ctx.plan.data(tasks[0])
    steps = sorted(set(int(s) for s in runs["steps"].dropna()))
    setup = (f"DLR's tasks {', '.join(tasks)} (rotrnn.data.synthetic, DLR's definitions) at L = {data.get('length')}, "
             f"{data.get('n_train')} training sequences; one layer per model (d_model and state sizes in params.yaml, "
             f"suites.{ctx.suite}.tasks), {steps} training steps; test MSE at the best validation epoch.")
    body = ["## Test MSE", table_md(table), "Cells: mean ± std over seeds (runs).",
            "What one layer can express: its output at position t is d_model fixed causal filters of the input "
            "(the positional channels enter them additively), followed by maps applied position by position. A "
            "target that copies the input from a lag set by the position (reverse: the lag grows by 2 per output) or by "
            "the content (context_shift, masked_select) asks those d_model filters to hold every such lag at once. "
            "The experiment keeps DLR's one-layer setting for all six tasks.",
            "![prediction vs target](figures/dlr_tasks_predictions.png)",
            "Figure: the first test example, first output channel, at the scored positions, seed "
            f"{int(preds['seed'].min()) if len(preds) else '–'}."]
    seeds = sorted(int(s) for s in runs["seed"].unique())
    return Section("synthetic", setup, f"{seeds} per task and model", answer, body, train_tasks=tasks,
                   command_s=res["wall_s"], files=files)
