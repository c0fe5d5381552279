"""Experiment 3: zero-shot change of sampling rate. A model trained at rate 1 meets the same test signals at rate 1/s.

Three ways to run the layers on the coarse signal (:mod:`rotrnn.nn.base`):

- ``sum``: ``step=s`` with the exact power sum, h_t = λ^s h_{t−1} + (Σ_{j<s} λ^j) v_t, the states of the fine
  recurrence at the coarse time points when the input is held constant over each coarse step;
- ``one``: ``step=s`` with the transition power alone, h_t = λ^s h_{t−1} + v_t (the input enters once, unscaled);
- ``none``: ``step=1``, no rescale (what the authors' RotRNN and LRU do, since they ignore ``step_rescale``);

and two ways of making the coarse signal (:mod:`rotrnn.data.sines`): plain decimation ``x[::s]`` and band-limited
resampling with ``torchaudio.functional.resample``. The command evaluates every finished run of the task on every
coarse test split with every variant.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

from rotrnn.analysis.common import (AnalysisError, load_run, log_mlflow, recurrent_layers, result_path, run_status,
                                    timed, usable, write_result)

VARIANTS = ("sum", "one", "none")


@contextlib.contextmanager
def step_input(model, mode: str) -> Iterator[None]:
    """Set every recurrent layer's ``step_input`` for the block (``none`` evaluates with step 1 instead)."""
    layers = recurrent_layers(model)
    old = [layer.step_input for layer in layers]
    try:
        for layer in layers:
            layer.step_input = "sum" if mode == "none" else mode
        yield
    finally:
        for layer, o in zip(layers, old):
            layer.step_input = o


def evaluate_variants(model, data_dir, meta: dict[str, Any], batch_size: int, limit: int | None = None
                      ) -> list[dict[str, Any]]:
    """Accuracy (and loss) on ``test`` at rate 1 and on every split with a step in meta, per variant."""
    import torch

    from rotrnn.data import load_dataset
    from rotrnn.train.loop import evaluate

    dev = torch.device("cpu")
    rows = []
    splits = {"test": 1, **{k: int(v) for k, v in (meta.get("step") or {}).items()}}
    for split, s in splits.items():
        ds = load_dataset(data_dir, split, limit=limit)
        for variant in (VARIANTS if s != 1 else ("exact",)):
            with step_input(model, "sum" if variant == "exact" else variant):
                step = 1.0 if variant in ("none", "exact") else float(s)
                res = evaluate(model, ds, meta, batch_size, dev, "fp32", step)
            method = "fine" if s == 1 else ("decimate" if "dec" in split else "resample")
            rows.append({"split": split, "factor": s, "method": method, "variant": variant, **res})
    return rows


def run(params: dict[str, Any], suite: str, cfg: dict[str, Any], params_path: str = "params.yaml") -> dict[str, Any]:
    from pathlib import Path

    from rotrnn.pipeline import load_plan

    plan = load_plan(params_path, suite)
    task = str(cfg.get("task", ""))
    if task not in plan.tasks:
        raise AnalysisError(f"{params_path}: suites.{suite}.experiments.rescale.task {task!r} is not a task of the "
                            "suite")
    rows = []
    with timed() as clock:
        for t, model_name, seed in plan.jobs():
            if t != task:
                continue
            if run_status(plan.run_dir(t, model_name, seed)) == "diverged" and not usable(
                    plan.run_dir(t, model_name, seed), "best"):
                rows.append({"model": model_name, "seed": seed, "split": "test", "factor": 1, "method": "fine",
                             "variant": "exact", "accuracy": float("nan"), "loss": float("nan"), "diverged": True})
                continue
            model, config, meta = load_run(plan.run_dir(t, model_name, seed), "best")
            if not meta.get("step"):
                raise AnalysisError(f"{plan.prepared_dir(t)}: meta.json has no coarse splits (`step`)")
            bs = int(config["train"].get("eval_batch_size") or config["train"]["batch_size"])
            for r in evaluate_variants(model, Path(plan.prepared_dir(t)), meta, bs, cfg.get("eval_limit")):
                rows.append({"model": model_name, "seed": seed, **r})
    result = {"experiment": "rescale", "suite": suite, "settings": cfg, "task": task, "wall_s": clock["wall_s"],
              "rows": rows}
    path = result_path(params, suite, "rescale")
    write_result(path, result)
    metrics = {f"acc/{r['model']}/seed{r['seed']}/{r['split']}/{r['variant']}": r["accuracy"] for r in rows}
    log_mlflow(params, suite, "rescale", cfg, metrics | {"wall_s": clock["wall_s"]}, [path])
    return result


VARIANT_NAMES = {"sum": "the exact power sum (step=s)", "one": "the transition power alone (input unscaled)",
                 "none": "no rescale", "exact": "rate 1"}


def report(ctx):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    from rotrnn.analysis.sections import Section, mean_std, save_figure, table_md, write_csv

    res = ctx.require("rescale")
    rows = pd.DataFrame(res["rows"])
    rows["accuracy"] = 100 * rows["accuracy"]
    files = [write_csv(ctx.out / "rescale.csv", rows)]
    names = {"rotrnn": "RotRNN", "lru": "LRU", "dlr": "DLR"}
    cols = [("test", "exact")] + [(s, v) for s in sorted(set(rows["split"]) - {"test"}) for v in VARIANTS]
    models_ = list(dict.fromkeys(rows["model"]))
    table = pd.DataFrame([{"test split": s, "rate": "1" if s == "test" else f"1/{int(rows.loc[rows['split'] == s, 'factor'].iloc[0])}",
                           "variant": "–" if s == "test" else v, **{
        names.get(m, m): mean_std(rows.loc[(rows["model"] == m) & (rows["split"] == s) & (rows["variant"] == v),
                                           "accuracy"], "{:.1f}") for m in models_}} for s, v in cols])
    coarse = rows[rows["split"] != "test"]
    by_variant = coarse.groupby("variant")["accuracy"].mean()
    by_method = coarse.groupby("method")["accuracy"].mean()
    top = int(coarse["factor"].max())
    at_top = coarse[coarse["factor"] == top].groupby(["method", "variant"])["accuracy"].mean()
    best_v = by_variant.idxmax()
    answer = ("Averaged over models, seeds, factors and both coarse-signal makers, accuracy was "
              + ", ".join(f"{by_variant[v]:.1f}% with {VARIANT_NAMES[v]}" for v in VARIANTS if v in by_variant)
              + f" (best: {VARIANT_NAMES[best_v]}); band-limited resampling gave {by_method.get('resample', np.nan):.1f}% "
              f"against {by_method.get('decimate', np.nan):.1f}% for plain decimation; at factor {top} the power-sum "
              f"rescale reached {at_top.get(('decimate', 'sum'), np.nan):.1f}% on decimated and "
              f"{at_top.get(('resample', 'sum'), np.nan):.1f}% on resampled signals, against "
              f"{rows.loc[rows['split'] == 'test', 'accuracy'].mean():.1f}% at rate 1.")
    models = list(dict.fromkeys(rows["model"]))
    splits = sorted(set(coarse["split"]))
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.4), sharey=True, squeeze=False,
                             layout="constrained")
    width = 0.8 / len(VARIANTS)
    for ax, m in zip(axes[0], models):
        x = np.arange(len(splits))
        for i, v in enumerate(VARIANTS):
            vals = [rows.loc[(rows["model"] == m) & (rows["split"] == s) & (rows["variant"] == v), "accuracy"]
                    for s in splits]
            ax.bar(x + (i - 1) * width, [a.mean() for a in vals], width, yerr=[a.std(ddof=1) if len(a) > 1 else 0
                                                                               for a in vals],
                   label=VARIANT_NAMES[v])
        ref = rows.loc[(rows["model"] == m) & (rows["split"] == "test"), "accuracy"].mean()
        ax.axhline(ref, color="k", lw=0.8, ls="--", label="rate 1")
        ax.set_xticks(x, splits, rotation=30, fontsize=8)
        ax.set_title(names.get(m, m))
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][0].legend(fontsize=7, frameon=False)
    files.append(save_figure(fig, ctx.figures / "rescale.png"))
    data = ctx.plan.data(res["task"])
    setup = (f"Task `{res['task']}`: band classification of sinusoid mixtures ({data.get('n_classes')} log-spaced "
             f"bands in [{data.get('f_min')}, {data.get('f_max')}] cycles/sample, white noise σ = {data.get('noise')}, "
             f"length {data.get('length')}, {data.get('n_train')} training signals), one layer per model, trained at "
             f"rate 1; test signals at rate 1/s, s ∈ {data.get('factors')}: `test_dec<s>` = x[::s], `test_rs<s>` = "
             "torchaudio.functional.resample(x, s, 1). Accuracy at the best validation epoch's checkpoint.")
    body = ["## Test accuracy (%)", table_md(table),
            "Cells: mean ± std over seeds (runs). Variants: `sum` = exact power sum, `one` = transition power with "
            "the input unscaled, `none` = step 1.", "![rescale](figures/rescale.png)"]
    seeds = sorted(int(s) for s in rows["seed"].unique())
    return Section("rescale", setup, f"{seeds} per model", answer, body, train_tasks=[res["task"]],
                   command_s=res["wall_s"], files=files)
