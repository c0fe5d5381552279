"""Read a suite's finished training runs from MLflow into one table (one row per task × model × seed)."""
from __future__ import annotations

from typing import Any

import pandas as pd

BEST_KEYS = ("best/test/accuracy", "best/test_8k/accuracy", "best/test_8k_resampled/accuracy", "best/test/loss",
             "best/val/accuracy", "best/val/loss")
COLUMNS = ("run_id", "task", "model", "seed", "status", "metric", "end_time", *BEST_KEYS)


def load_runs_empty() -> pd.DataFrame:
    """The table of a suite with no run yet."""
    return pd.DataFrame(columns=list(COLUMNS))


def load_runs(uri: str, experiment: str) -> pd.DataFrame:
    """Columns: run_id, task, model, seed, status, metric, end_time and the best/* metrics. FINISHED runs count, and
    so do diverged ones (FAILED with a `diverged_at_step` tag: a result, shown as such); when a task/model/seed was
    run more than once, the newest such run is kept."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        raise LookupError(f"no MLflow experiment {experiment!r} at {uri}: run the suite's training first")
    finished = mlflow.search_runs(experiment_names=[experiment], filter_string="attributes.status = 'FINISHED'",
                                  max_results=50_000)
    failed = mlflow.search_runs(experiment_names=[experiment], filter_string="attributes.status = 'FAILED'",
                                max_results=50_000)
    if "tags.diverged_at_step" in failed:
        failed = failed[failed["tags.diverged_at_step"].notna()]
    else:
        failed = failed.iloc[0:0]
    frames = [f for f in (finished, failed) if not f.empty]
    if not frames:
        return load_runs_empty()
    df = pd.concat(frames, ignore_index=True)
    out = pd.DataFrame({
        "run_id": df["run_id"],
        "task": df.get("tags.task"),
        "model": df.get("tags.model"),
        "seed": pd.to_numeric(df.get("tags.seed"), errors="coerce"),
        "status": df["status"].map({"FINISHED": "finished", "FAILED": "diverged"}),
        "metric": df.get("tags.metric", pd.Series("accuracy", index=df.index)),
        "end_time": df["end_time"],
    })
    for key in BEST_KEYS:
        out[key] = df[f"metrics.{key}"] if f"metrics.{key}" in df else float("nan")
    out = out.dropna(subset=["task", "model", "seed"])
    out = out.sort_values("end_time").drop_duplicates(["task", "model", "seed"], keep="last")
    return out.sort_values(["task", "model", "seed"]).reset_index(drop=True)


def history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) pairs of one metric, deduplicated by step (a resumed run may log a step twice)."""
    from mlflow.tracking import MlflowClient

    points: dict[int, float] = {}
    for m in sorted(MlflowClient(tracking_uri=uri).get_metric_history(run_id, key), key=lambda m: m.timestamp):
        points[m.step] = m.value
    return sorted(points.items())


def summarise(values: pd.Series) -> dict[str, Any]:
    v = values.dropna()
    return {"mean": float(v.mean()) if len(v) else float("nan"),
            "std": float(v.std(ddof=1)) if len(v) > 1 else float("nan"), "n": int(len(v))}
