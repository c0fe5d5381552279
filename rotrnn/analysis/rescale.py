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

from rotrnn.analysis.common import (AnalysisError, load_run, log_mlflow, recurrent_layers, result_path, timed,
                                    write_result)

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
