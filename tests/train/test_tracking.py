"""MLflow records of training runs: what a run leaves in the store, and concurrent jobs on one fresh SQLite store."""
from __future__ import annotations

import os
import subprocess
import sys

import mlflow
import pytest

from rotrnn.config import load_params, resolve
from rotrnn.train.loop import train


def test_run_is_found_with_params_metrics_tags_artifacts(project):
    cfg = resolve(load_params(project / "params.yaml"), "test", "majority", "rotrnn", 7, ["train.epochs=2"])
    code, summary = train(cfg, quiet=True)
    assert code == 0
    uri = f"sqlite:///{project / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    df = mlflow.search_runs(experiment_names=["rotrnn-test"])
    assert len(df) == 1
    run = df.iloc[0]
    assert run["tags.mlflow.runName"] == "majority/rotrnn/7" and run["status"] == "FINISHED"
    assert run["run_id"] == summary["mlflow_run_id"]
    # the whole resolved config, flattened
    assert run["params.train.ssm_lr"] == str(cfg["train"]["ssm_lr"]) and run["params.layer.n_heads"] == "2"
    assert run["params.net.d_model"] == "16" and run["params.seed"] == "7"
    for tag in ("git_commit", "data_checksum", "device", "torch_version"):
        assert run[f"tags.{tag}"]
    assert len(run["tags.data_checksum"]) == 64  # sha256 from meta.json
    best = summary["best"]
    assert run["metrics.best/test/accuracy"] == pytest.approx(best["test/accuracy"])
    assert run["metrics.val/accuracy"] == pytest.approx(summary["history"][-1]["val/accuracy"])
    for key in ("train/loss", "perf/tokens_per_s", "epoch_time_s", "perf/peak_memory_mb", "state_norm/layer_0"):
        assert f"metrics.{key}" in df.columns and run[f"metrics.{key}"] == run[f"metrics.{key}"], key
    history = mlflow.tracking.MlflowClient().get_metric_history(run["run_id"], "val/accuracy")
    assert len(history) == 2
    artifacts = {a.path for a in mlflow.tracking.MlflowClient().list_artifacts(run["run_id"])}
    assert {"config.yaml", "metrics.json"} <= artifacts
    assert run["tags.best_checkpoint"].endswith("checkpoints/best.pt")


@pytest.mark.slow
def test_eight_concurrent_jobs_on_a_fresh_store_all_land(project):
    procs = [subprocess.Popen([sys.executable, "-m", "rotrnn.cli", "train", "--task", "majority", "--model", "lru",
                               "--seed", str(s), "--quiet", "--set", "train.epochs=1", "--set", "train.train_limit=32",
                               "--set", "train.eval_limit=16"],
                              cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})  # 8 jobs share 2 cores
             for s in range(8)]
    results = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err[-2000:]
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    df = mlflow.search_runs(experiment_names=["rotrnn-test"])
    assert sorted(df["tags.mlflow.runName"]) == [f"majority/lru/{s}" for s in range(8)]
    assert (df["status"] == "FINISHED").all()
    assert df["metrics.best/test/accuracy"].notna().all()
