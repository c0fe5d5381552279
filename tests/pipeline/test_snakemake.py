"""Snakemake front door: the root Snakefile and the local default profile are found from the project root with no
options, both suites resolve with the expected job counts (local and Slurm profiles, as typed), and a subset of the
smoke suite runs end to end in a copy of the project: every raw kind (generated ListOps, a fixture, a generated
synthetic task), training, MLflow, the report tables and DVC's record of what was made."""
from __future__ import annotations

import csv
import json

import pytest
import yaml

from .conftest import ROOT, edit_params, job_counts, snakemake


@pytest.mark.parametrize("suite, raw", [("smoke", 7), ("paper", 4)])
def test_dry_run_resolves_suite(project, suite, raw):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    s = params["suites"][suite]
    out = snakemake(project, "-n", "--config", f"suite={suite}").stdout
    counts = job_counts(out)
    n_train = len(s["tasks"]) * len(s["models"]) * len(s["seeds"])
    # DVC records the suite named by params.yaml's `suite:` (its stages are dvc.yaml); another suite's run is not
    n_dvc = int(suite == params["suite"])
    expected = {"raw": raw, "prepare": len(s["tasks"]), "tracking_init": 1, "train": n_train, "report": 1,
                "dvc_commit": n_dvc, "all": 1}
    expected = {k: v for k, v in expected.items() if v}
    assert counts == {**expected, "total": sum(expected.values())}


def test_root_snakefile_and_default_profile(project):
    """Plain `snakemake` from the project root: the root Snakefile, the local profile profiles/default (Snakemake 9's
    default workflow profile, relative to the working directory) and params.yaml's suite."""
    assert (project / "Snakefile").is_file() and not (project / "workflow/Snakefile").exists()
    proc = snakemake(project, "-n")
    out = proc.stderr + proc.stdout
    assert "Using workflow specific profile profiles/default for setting default command line arguments" in out
    assert "runs/smoke/listops/rotrnn/seed0/metrics.json" in proc.stdout


def test_slurm_profile_as_typed(project):
    """`snakemake --profile slurm` from the project root: ./slurm resolves, training jobs ask for one GPU and get
    the requeue signal; each job's runtime and memory are the measured sizes (rotrnn/pipeline/sizing.py) at the
    time limit given, the job longer than the limit split into attempts."""
    assert (project / "slurm").resolve() == (project / "profiles/slurm").resolve()
    proc = snakemake(project, "-n", "--profile", "slurm", "--config", "suite=paper", "tasks=pathx,cumsum",
                     "models=lru", "seeds=0", "time_limit=600")
    out = proc.stdout
    assert "Using profiles slurm and workflow specific profile profiles/default" in proc.stderr + proc.stdout
    assert job_counts(out)["train"] == 2
    blocks = out.split("\n\n")
    pathx = next(b for b in blocks if "rule train:" in b and "task=pathx" in b)
    assert "gpu=1" in pathx and "slurm_extra=--signal=USR1@300" in pathx
    from rotrnn.pipeline import load_plan, sizing

    size = sizing.job_size(load_plan(project / "params.yaml", "paper"), "pathx", "lru", 0, "h200", 600, project)
    assert size.attempts > 1 and size.runtime_min <= 600
    assert f"runtime={size.runtime_min}," in pathx and f"mem_mb={size.mem_mb}," in pathx


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
    # the tracking marker names the experiment, not the store (the DVC training stages depend on it)
    assert json.loads((project / "runs/smoke/.tracking.json").read_text()) == {"suite": "smoke",
                                                                                "experiment": "rotrnn-smoke"}
    # DVC's record: the stages this run made (its tasks' data, tracking, its jobs), not the suite's report (the DVC
    # report stage covers the whole suite)
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert set(lock) == {"prepare-listops", "prepare-cifar", "prepare-cumsum", "tracking", "train-listops-lru-0",
                         "train-cifar-lru-0", "train-cumsum-lru-0"}

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


@pytest.mark.parametrize("suite", ["paper", "analysis"])
def test_committed_reports_do_not_make_a_fresh_clone_look_done(project, suite):
    """reports/ is committed: in a fresh clone the tables exist but no run does, and the suite must still be
    scheduled (Snakemake calls a target done when it exists, whatever its missing inputs)."""
    import shutil

    shutil.copytree(ROOT / "reports", project / "reports", dirs_exist_ok=True)
    out = snakemake(project, "-n", "--config", f"suite={suite}").stdout
    assert "Nothing to be done" not in out
    counts = job_counts(out)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    from rotrnn.pipeline import load_plan

    assert counts["train"] == len(list(load_plan(ROOT / "params.yaml", suite).jobs()))
    if suite == "analysis":
        assert counts["analysis"] == len(params["suites"]["analysis"]["experiments"])


def test_a_cluster_run_refuses_a_sqlite_store_before_queuing_anything(project):
    """`snakemake --executor slurm` (what `--profile slurm` sets) with the default `sqlite:///mlflow.db`: refused in
    one line naming the store and the fix before any job (local or submitted) runs (issue 20, item 8)."""
    proc = snakemake(project, "--executor", "slurm", "--jobs", "2", "--config", "tasks=cumsum", "models=lru",
                     "seeds=0", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"Error: MLflow store sqlite:///{project}/mlflow.db: a file store under Slurm" in out
    assert "export MLFLOW_TRACKING_URI=https://HOST:PORT" in out
    assert not (project / "runs").exists() and not (project / "mlflow.db").exists()
    assert not (project / ".snakemake/slurm_logs").exists()
