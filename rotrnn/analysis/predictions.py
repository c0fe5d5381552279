"""Experiment 4 (DLR's synthetic tasks at CPU scale): is RotRNN competitive with LRU and DLR at matched state size?

The test MSE of each (task, model, seed) comes from the training runs themselves. The report scores each against the
per-position baseline (predicting, at every scored position and output channel, the training split's mean there:
the inputs carry positional channels, so a model gets that much for free), calls a task learned when some model's
geometric-mean MSE over seeds lies below a declared share of it with its whole 95% interval, and on each learned task
compares RotRNN with the better of LRU and DLR (ratio of geometric means, Welch interval on log MSE) against the
declared boundary. Every model has the same number of real state variables per layer (``real_state``).

This command reads each task's best checkpoint of the first seed and keeps, for the first test example, the target
and the model's output at the scored positions (the ``label_mask``) for the figure, on the output channel
``plot_channels[task]`` (shift: a channel whose lag is not zero).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rotrnn.analysis.common import AnalysisError, load_run, log_mlflow, result_path, timed, usable, write_result
from rotrnn.analysis.sections import MODEL_NAMES


def prediction(model, data_dir: Path, index: int = 0, channel: int = 0) -> dict[str, list[float]]:
    import torch

    from rotrnn.data import load_dataset
    from rotrnn.train.loop import forward

    ds = load_dataset(data_dir, "test")
    batch = ds.collate([ds[index]])
    with torch.no_grad():
        out = forward(model.eval(), batch)[0, :, channel].double()
    mask = batch["label_mask"][0] if "label_mask" in batch else torch.ones(out.shape[0], dtype=torch.bool)
    pos = torch.nonzero(mask[: out.shape[0]]).flatten()
    return {"position": pos.tolist(), "target": batch["labels"][0, pos, channel].double().tolist(),
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
    for task in tasks:
        matched_state(plan, task, params_path, suite)
    channels = {str(t): int(c) for t, c in (cfg.get("plot_channels") or {}).items()}
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
                c = channels.get(task, 0)
                p = prediction(model, Path(plan.prepared_dir(task)), channel=c)
                rows += [{"task": task, "model": model_name, "seed": seed, "channel": c, "position": i, "target": y,
                          "output": o}
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


def real_state(model: str, config: dict[str, Any]) -> int:
    """Real state variables per layer: RotRNN's d_state is already real (heads × N); the LRU keeps d_state complex
    states; DLR keeps d_state complex states for each of the d_model features (its λ are shared, its states not)."""
    d = int(config["layer"]["d_state"])
    if model == "rotrnn":
        return d
    if model == "lru":
        return 2 * d
    if model == "dlr":
        return 2 * int(config["net"]["d_model"]) * d
    raise AnalysisError(f"no state-size rule for model {model!r}")


def matched_state(plan, task: str, params_path: str, suite: str) -> int:
    """The task's common real state size per layer; AnalysisError naming the params key when the models differ."""
    sizes = {m: real_state(m, plan.config(task, m, plan.task_seeds(task)[0])) for m in plan.task_models(task)}
    if len(set(sizes.values())) != 1:
        raise AnalysisError(f"{params_path}: suites.{suite}.tasks.{task}.layers: experiment synthetic compares the "
                            f"models at matched state size, got real state per layer {sizes}")
    return next(iter(sizes.values()))


def position_mean_mse(prepared: Path, fit: str = "train", split: str = "test") -> float:
    """The ``split`` MSE of predicting, at each position and output channel, the mean of the ``fit`` split's targets
    there (over the examples scoring that position): what a model that reads only the positional channels can reach.
    Same reduction as the loop's objective (squared error averaged over channels, then over scored positions)."""
    import numpy as np

    def load(s: str):
        y = np.load(prepared / f"{s}.labels.npy").astype(np.float64)
        mask_path = prepared / f"{s}.label_mask.npy"
        mask = np.load(mask_path) if mask_path.is_file() else np.ones(y.shape[:2], bool)
        return (y if y.ndim == 3 else y[..., None]), mask

    y_fit, m_fit = load(fit)
    y, mask = load(split)
    T = min(y_fit.shape[1], y.shape[1])
    w = m_fit[:, :T, None]
    mu = (y_fit[:, :T] * w).sum(0) / np.maximum(w.sum(0), 1)  # (T, channels); 0 where the fit split scores nothing
    err = ((y[:, :T] - mu) ** 2).mean(-1)
    return float(err[mask[:, :T]].mean())


def best_at_last(history: list[dict[str, Any]], key: str = "val/loss") -> tuple[bool, float]:
    """(whether the best validation epoch is the last one, the last epoch's relative gain over the best before it:
    0 when it did not improve). A run whose best epoch is the last may still have been improving."""
    vals = [h[key] for h in history if key in h]
    if len(vals) < 2:
        return True, float("nan")
    before = min(vals[:-1])
    return bool(vals[-1] < before), max(0.0, 1 - vals[-1] / before)


def decide(runs, baseline: dict[str, float], learned_below: float, boundary: float, tasks: list[str]):
    """Per task: each model's geometric-mean MSE relative to the per-position baseline (95% interval over seeds);
    learned when some model's whole interval lies below ``learned_below``. On each learned task, RotRNN against the
    better (lower geometric mean) of the other models: ratio of geometric means with Welch's interval on log MSE,
    verdict ``below(ratio, boundary)`` on "RotRNN's MSE is at most boundary × theirs"; the task verdicts combine
    (contradicted if any task contradicts). Returns (rows, comparisons, verdict)."""
    from rotrnn.analysis.stats import below, combine, mean_interval, welch_difference

    rows, comparisons = [], []
    for t in tasks:
        sub = runs[runs["task"] == t]
        if sub.empty:
            continue
        rel = {m: mean_interval(g["test/loss"] / baseline[t], log=True) for m, g in sub.groupby("model", sort=False)}
        learned = [m for m, e in rel.items() if e.n >= 2 and e.hi < learned_below]
        rows.append({"task": t, "baseline": baseline[t], "relative": rel, "learned_by": learned})
        others = [m for m in rel if m != "rotrnn"]
        if not learned or "rotrnn" not in rel or not others:
            continue
        rival = min(others, key=lambda m: rel[m].value)
        est = welch_difference(sub.loc[sub["model"] == "rotrnn", "test/loss"],
                               sub.loc[sub["model"] == rival, "test/loss"], log=True)
        comparisons.append({"task": t, "rival": rival, "ratio": est, "verdict": below(est, boundary)})
    verdict = combine([c["verdict"] for c in comparisons]) if comparisons else "cannot tell"
    return rows, comparisons, verdict


def report(ctx):
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from rotrnn.analysis.common import training_runs
    from rotrnn.analysis.sections import Section, save_figure, table_md, write_csv
    from rotrnn.analysis.stats import Verdict, mean_interval
    from rotrnn.data.synthetic import shifts

    res = ctx.require("synthetic")
    cfg = res["settings"]
    tasks = [str(t) for t in cfg["tasks"]]
    learned_below, boundary = float(cfg["learned_below"]), float(cfg["boundary"])
    runs = pd.DataFrame(training_runs(ctx.plan, tasks))
    extra = []
    for t, m, s in ctx.plan.jobs():
        p = Path(ctx.plan.metrics_path(t, m, s))
        if t in tasks and p.is_file():
            last, gain = best_at_last(json.loads(p.read_text()).get("history", []))
            extra.append({"task": t, "model": m, "seed": s, "best_at_last": last, "last_epoch_gain": gain})
    runs = runs.merge(pd.DataFrame(extra), on=["task", "model", "seed"], how="left")
    baseline = {t: position_mean_mse(Path(ctx.plan.prepared_dir(t))) for t in tasks}
    state = {t: matched_state(ctx.plan, t, ctx.params_path, ctx.suite) for t in tasks}
    runs["baseline"] = runs["task"].map(baseline)
    runs["relative_mse"] = runs["test/loss"] / runs["baseline"]
    runs["real_state"] = runs["task"].map(state)
    files = [write_csv(ctx.out / "dlr_tasks.csv", runs)]
    rows, comparisons, verdict = decide(runs, baseline, learned_below, boundary, tasks)
    models = list(dict.fromkeys(runs["model"]))

    def gm(t: str, m: str) -> str:
        e = mean_interval(runs.loc[(runs["task"] == t) & (runs["model"] == m), "test/loss"], log=True)
        return "–" if e.n == 0 else (f"{e.value:.3g} [{e.lo:.3g}, {e.hi:.3g}]" if e.n > 1 else f"{e.value:.3g}")

    table = pd.DataFrame([{"model": MODEL_NAMES.get(m, m), **{t: gm(t, m) for t in tasks}} for m in models]
                         + [{"model": "per-position mean (baseline)", **{t: f"{baseline[t]:.3g}" for t in tasks}}])
    rel = pd.DataFrame([{"task": r["task"], **{MODEL_NAMES.get(m, m): e.text("{:.2f}").replace("×", "")
                                                for m, e in r["relative"].items()},
                         "learned by": ", ".join(MODEL_NAMES.get(m, m) for m in r["learned_by"]) or "none"} for r in rows]
                       ).fillna("–")
    cmp = pd.DataFrame([{"task": c["task"], "better of the others": MODEL_NAMES.get(c["rival"], c["rival"]),
                         "RotRNN / it": c["ratio"].text("{:.2f}"), f"at most {boundary:g}×": c["verdict"]}
                        for c in comparisons])
    learned = [r["task"] for r in rows if r["learned_by"]]
    not_learned = [f"{r['task']} (best {min(e.value for e in r['relative'].values()):.0%} of the baseline)"
                   for r in rows if not r["learned_by"]]
    dropped = {str(k): str(v) for k, v in (cfg.get("dropped") or {}).items()}
    n_last = int(runs["best_at_last"].fillna(True).astype(bool).sum())
    late = runs.loc[runs["task"].isin(learned)]
    n_last_learned = int(late["best_at_last"].fillna(True).astype(bool).sum())
    gain = float(runs["last_epoch_gain"].max()) if runs["last_epoch_gain"].notna().any() else float("nan")
    n_diverged = int((runs["status"] == "diverged").sum()) if "status" in runs else 0
    effect = "; ".join(f"{c['task']}: RotRNN / {MODEL_NAMES.get(c['rival'], c['rival'])} = {c['ratio'].text('{:.2f}')} "
                       f"({c['verdict']})" for c in comparisons) or "no task learned by any model: no comparison"
    state_text = ", ".join(sorted({f"{v}" for v in state.values()}))
    claim = (f"RotRNN is competitive with state-of-the-art linear recurrent models: on every DLR task that some model "
             f"learns, at matched state size ({state_text} real state variables per layer), RotRNN's test MSE is at "
             f"most {boundary:g}× that of the better of LRU and DLR (ratio of geometric means over seeds).")
    undecided = ("Whether the order holds at DLR's length (L = 4096), with DLR's own state (d_state complex states "
                 "per feature, far above the matched size) or in deeper networks; "
                 + ("the tasks left out (" + ", ".join(dropped) + "; reasons in the report)"
                    if dropped else "every task of DLR's list here was run")
                 + (("; not learned here: " + ", ".join(not_learned)) if not_learned else "") + ".")
    answer = (f"**{verdict}.** Learned (some model's geometric-mean test MSE below {learned_below:.0%} of the "
              "per-position baseline, whole 95% interval): " + (", ".join(learned) or "none")
              + "; not learned: " + (", ".join(not_learned) or "none")
              + f". RotRNN against the better of the other models, claim at most {boundary:g}×: {effect}. "
              f"{n_last} of {len(runs)} runs ({n_last_learned} of {len(late)} on learned tasks) had their best "
              f"validation epoch at the last epoch; the largest last-epoch gain over the best before it was "
              f"{gain:.1%}"
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
                ax.plot(pm["position"], pm["output"], color=colour, lw=0.8, alpha=0.8, label=MODEL_NAMES[m])
        c = int(p["channel"].iloc[0]) if len(p) and "channel" in p else 0
        data = ctx.plan.data(t)
        lag = (f", lag {int(shifts(int(data['length']), int(data.get('num_shifts', 8)))[c])}"
               if data.get("task") == "shift" else "")
        ax.set_title(t, fontsize=9)
        ax.set_ylabel(f"channel {c}{lag}")
    axes[0][0].legend(fontsize=7, ncol=4, frameon=False)
    axes[-1][0].set_xlabel("position (scored positions only)")
    files.append(save_figure(fig, ctx.figures / "dlr_tasks_predictions.png"))
    shapes = []
    for t in tasks:
        d, c = ctx.plan.data(t), ctx.plan.config(t, models[0], ctx.plan.task_seeds(t)[0])
        shapes.append(f"{t} at L = {d.get('length')}, {c['net']['n_layers']} layer(s), {c['train']['epochs']} "
                      f"epochs of {d.get('n_train')} sequences")
    dlr_n = {t: ctx.plan.config(t, "dlr", ctx.plan.task_seeds(t)[0])["layer"]["d_state"]
             for t in tasks if "dlr" in ctx.plan.task_models(t)}
    setup = (f"DLR's tasks (rotrnn.data.synthetic, DLR's definitions): {'; '.join(shapes)}; d_model and sizes in "
             f"params.yaml, suites.{ctx.suite}.tasks. State matched per layer at {state_text} real variables: "
             "RotRNN's d_state (heads × N), twice the LRU's complex d_state, and for DLR 2 × d_model × d_state "
             f"(d_state = {', '.join(sorted({str(v) for v in dlr_n.values()}))} complex states per feature). Test MSE "
             "at the best validation epoch; baseline: each position's and channel's mean over the training split.")
    body = ["## Test MSE", table_md(table),
            "Cells: geometric mean over seeds [95% interval].",
            "## Relative to the per-position baseline", table_md(rel),
            f"Cells: test MSE / baseline, geometric mean [95% interval]; learned: whole interval below "
            f"{learned_below:g}.",
            "## RotRNN against the better of LRU and DLR", table_md(cmp) if len(cmp) else "No learned task.",
            "Ratio of geometric means, Welch's 95% interval on log MSE; the better model is picked by its geometric "
            "mean on the same runs (which favours it slightly).",
            *([("## Tasks left out\n" + "\n".join(f"- {k}: {v}" for k, v in dropped.items()))] if dropped else []),
            "![prediction vs target](figures/dlr_tasks_predictions.png)",
            "Figure: the first test example at the scored positions, seed "
            f"{int(preds['seed'].min()) if len(preds) else '–'}; shift shows a channel with a non-zero lag."]
    seeds = sorted(int(s) for s in runs["seed"].unique())
    v = Verdict(claim, verdict, effect, undecided)
    return Section("synthetic", setup, f"{seeds} per task and model", answer, body, train_tasks=tasks,
                   command_s=res["wall_s"], files=files, verdict=v)
