"""Experiment 4 (DLR's synthetic tasks at CPU scale): one test example per task and model, prediction against target.

The test MSE table comes from the training runs themselves; this command reads each task's best checkpoint of the
first seed and keeps, for the first test example, the target and the model's output at the scored positions (the
``label_mask``), first output channel, for the figure.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rotrnn.analysis.common import AnalysisError, load_run, log_mlflow, result_path, timed, write_result


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
            seed = min(s for _, s in jobs)
            for model_name in dict.fromkeys(m for m, _ in jobs):
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
