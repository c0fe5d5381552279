"""A diverged job through Snakemake: one attempt (the divergence is a recorded result, not a failure worth the
rule's retries), the MLflow run FAILED with its tag, and the report showing the run as diverged."""
from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from .conftest import edit_params, snakemake


@pytest.mark.slow
def test_diverged_job_runs_once_and_is_reported(project):
    edit_params(project, lambda p: p["suites"]["smoke"]["tasks"]["cumsum"].update(train={"ssm_lr": 1.0e6,
                                                                                          "lr_factor": 1.0e3}))
    out = snakemake(project, "--config", "tasks=cumsum", "models=rotrnn", "seeds=0", timeout=600)
    log = out.stdout + out.stderr
    assert "Trying to restart job" not in log
    metrics = json.loads((project / "runs/smoke/cumsum/rotrnn/seed0/metrics.json").read_text())
    assert metrics["status"] == "diverged"
    train_log = (project / "logs/smoke/train/cumsum-rotrnn-seed0.log").read_text()
    assert train_log.count("diverged at step") == 1
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("rotrnn-smoke").experiment_id])
    assert run.info.status == "FAILED" and run.data.tags["diverged_at_step"] == str(metrics["diverged_at_step"])
    table = (project / "reports/smoke/synthetic.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| RotRNN"))
    assert "diverged (1/1 seeds)" in row
