"""Snakemake front door: both suites resolve with the expected job counts (local and Slurm profiles, from the
project root as typed), and a subset of the smoke suite runs end to end in a copy of the project: every raw kind
(generated ListOps, a fixture, a generated synthetic task), training, MLflow and the report tables."""
from __future__ import annotations

import csv
import json

import pytest
import yaml

from .conftest import ROOT, edit_params, job_counts, snakemake


@pytest.mark.parametrize("suite, raw", [("smoke", 7), ("paper", 4)])
def test_dry_run_resolves_suite(suite, raw):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())["suites"][suite]
    out = snakemake(ROOT, "-n", "--config", f"suite={suite}").stdout
    counts = job_counts(out)
    n_train = len(params["tasks"]) * len(params["models"]) * len(params["seeds"])
    assert counts == {"raw": raw, "prepare": len(params["tasks"]), "tracking_init": 1, "train": n_train,
                      "report": 1, "all": 1, "total": raw + len(params["tasks"]) + n_train + 3}


def test_default_suite_and_profile(project):
    """Plain `snakemake` picks params.yaml's suite and the local profile (workflow/profiles/default)."""
    proc = snakemake(project, "-n")
    assert "Using workflow specific profile workflow/profiles/default" in proc.stderr + proc.stdout
    assert "runs/smoke/listops/rotrnn/seed0/metrics.json" in proc.stdout


def test_slurm_profile_as_typed(project):
    """`snakemake --profile slurm` from the project root: ./slurm resolves, training jobs ask for one GPU and get
    the requeue signal; per-task runtime/memory come from the rule."""
    out = snakemake(project, "-n", "--profile", "slurm", "--config", "suite=paper", "tasks=pathx,cumsum",
                    "models=lru", "seeds=0").stdout
    assert job_counts(out)["train"] == 2
    blocks = out.split("\n\n")
    pathx = next(b for b in blocks if "rule train:" in b and "task=pathx" in b)
    assert "gpu=1" in pathx and "slurm_extra=--signal=USR1@300" in pathx
    assert "runtime=1440" in pathx and "mem_mb=48000" in pathx


def test_unknown_subset_value_is_named(project):
    proc = snakemake(project, "-n", "--config", "tasks=cifar,nope", check=False)
    assert proc.returncode != 0
    assert "--config tasks: ['nope'] not in suite 'smoke'" in proc.stdout + proc.stderr


def _shrink_listops(params):
    # a tiny generated ListOps so that the generated raw kind runs in seconds
    params["suites"]["smoke"]["tasks"]["listops"]["data"].update(n_train=48, n_val=16, n_test=16)
    params["suites"]["smoke"]["tasks"]["listops"]["train"] = {"epochs": 1}


@pytest.mark.slow
def test_smoke_subset_end_to_end(project):
    edit_params(project, _shrink_listops)
    subset = ["--config", "tasks=listops,cifar,cumsum", "models=lru", "seeds=0"]
    snakemake(project, *subset, timeout=400)

    for task in ("listops", "cifar", "cumsum"):
        metrics = json.loads((project / f"runs/smoke/{task}/lru/seed0/metrics.json").read_text())
        assert metrics["status"] == "finished" and metrics["task"] == task
        assert (project / f"runs/smoke/{task}/lru/seed0/checkpoints/best.pt").is_file()
    assert json.loads((project / "data/raw/smoke/listops/.rotrnn-raw.json").read_text())["kind"] == "generate"
    assert "experiment 'rotrnn-smoke'" in (project / "runs/smoke/.tracking-init.txt").read_text()

    # the report: tables name the suite, hold this pipeline's rows, and count the runs
    lra = list(csv.DictReader((project / "reports/smoke/lra.csv").open()))
    assert {r["suite"] for r in lra} == {"smoke"}
    assert {r["runs_in_suite"] for r in lra} == {"3"}
    assert "Smoke suite" in (project / "reports/smoke/lra.md").read_text()
    synthetic = (project / "reports/smoke/synthetic.csv").read_text()
    assert "cumsum" in synthetic
    assert any((project / "reports/smoke/figures").glob("*.png"))

    # up to date: nothing to run; a config change reruns only the jobs it touches
    assert "Nothing to be done" in snakemake(project, "-n", *subset).stdout
    edit_params(project, lambda p: p["suites"]["smoke"]["tasks"]["cumsum"].update(train={"epochs": 1}))
    counts = job_counts(snakemake(project, "-n", *subset).stdout)
    assert counts["train"] == 1 and "prepare" not in counts


def _train_pids(project):
    """Processes of this project's `rotrnn stage train` jobs (found by their working directory)."""
    import os
    from pathlib import Path

    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and Path(os.readlink(proc / "cwd")) == project and \
                    b"stage\0train" in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


@pytest.mark.slow
def test_requeue_exit_is_retried_and_resumes(project):
    """SIGUSR1 (what Slurm sends before the time limit) makes the job checkpoint and exit 75; Snakemake's retry
    runs it again and it resumes from its checkpoint instead of starting over."""
    import os
    import signal
    import subprocess
    import time

    from .conftest import BIN, tool_env

    edit_params(project, lambda p: p["suites"]["smoke"]["tasks"]["cumsum"].update(train={"epochs": 25}))
    run = project / "runs/smoke/cumsum/lru/seed0"
    sm = subprocess.Popen([str(BIN / "snakemake"), "runs/smoke/cumsum/lru/seed0/metrics.json", "--config",
                           "tasks=cumsum", "models=lru", "seeds=0"], cwd=project, env=tool_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 240
        while not (run / "checkpoints/last.pt").exists() and time.time() < deadline and sm.poll() is None:
            time.sleep(0.5)
        pids = _train_pids(project.resolve())
        assert pids, "no training process found"
        for pid in pids:
            os.kill(pid, signal.SIGUSR1)
        out, _ = sm.communicate(timeout=400)
    finally:
        if sm.poll() is None:
            sm.kill()
    assert sm.returncode == 0, out[-4000:]
    assert "Trying to restart job" in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "finished" and [h["epoch"] for h in metrics["history"]] == list(range(1, 26))
    # resumed, not restarted: the job reopened its MLflow run (a restart would have opened a second one)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("rotrnn-smoke")
    runs = client.search_runs([exp.experiment_id])
    assert [(r.info.run_id, r.info.status) for r in runs] == [(metrics["mlflow_run_id"], "FINISHED")]
