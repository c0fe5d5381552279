"""Job sizes from measurements (rotrnn/pipeline/sizing.py) and the preflight: numbers derived from a small fake
device report, attempts that cover a job longer than the time limit, and one-line refusals."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from rotrnn.errors import UserError
from rotrnn.pipeline import load_plan, sizing

from .conftest import ROOT

PARAMS = ROOT / "params.yaml"
HEADER = "section,task,batch,bf16 step ms,peak GiB,tokens/s\n"


def _report(tmp_path: Path, rows: str) -> sizing.DeviceReport:
    (tmp_path / "gpu-fake.csv").write_text(HEADER + rows)
    (tmp_path / "gpu-fake.md").write_text("# Device check: Fake GPU\n\n- commit: abc1234\n")
    return sizing.read_device_report(tmp_path / "gpu-fake.csv")


def test_a_gpu_job_is_sized_from_the_report_the_splits_and_the_epochs(tmp_path):
    report = _report(tmp_path, "scan,,,,,\ntasks,listops,25,100.0,2.0,1\n")
    assert report.tasks == {"listops": (25, 100.0, 2.0)} and "commit abc1234" in report.source
    plan = load_plan(PARAMS, "paper")
    tcfg = plan.config("listops", "rotrnn", 0)["train"]
    size = sizing.gpu_job(plan, "listops", "rotrnn", 0, report, time_limit_min=100_000)
    batch, epochs = tcfg["batch_size"], tcfg["epochs"]
    steps = epochs * math.ceil(96_000 / batch)  # published ListOps: 96k train, 2k val, 2k test
    per_example = 0.1 / 25
    train_s = steps * batch * per_example
    eval_batch = tcfg["eval_batch_size"] or batch
    eval_s = epochs * math.ceil(4_000 / eval_batch) * eval_batch * per_example * sizing.EVAL_COST
    assert size.steps == steps
    assert size.estimate_min == pytest.approx(sizing.SAFETY * (train_s + eval_s) / 60)
    assert size.attempts == 1 and size.gpu_hours == pytest.approx(size.estimate_min / 60)
    assert size.mem_mb == math.ceil(sizing.SAFETY * (sizing.HOST_BASE_MB + 2.0 * 1024 * batch / 25))
    assert any("gpu-fake.csv" in src for src, _ in size.sources)


def test_attempts_cover_a_job_longer_than_the_time_limit(tmp_path):
    report = _report(tmp_path, "tasks,listops,25,100.0,2.0,1\n")
    plan = load_plan(PARAMS, "paper")
    long = sizing.gpu_job(plan, "listops", "rotrnn", 0, report, time_limit_min=100_000)
    size = sizing.gpu_job(plan, "listops", "rotrnn", 0, report, time_limit_min=60)
    useful = 60 - sizing.STARTUP_MIN - sizing.SIGNAL_MIN
    assert size.attempts == math.ceil(long.estimate_min / useful) > 1
    assert size.attempts * useful >= long.estimate_min and size.runtime_min <= 60
    assert sizing.retries([size]) == size.attempts - 1 + sizing.SPARE_ATTEMPTS
    with pytest.raises(UserError, match="leaves no training time"):
        sizing.gpu_job(plan, "listops", "rotrnn", 0, report, time_limit_min=10)
    with pytest.raises(UserError, match=r"gpu-fake.csv: no `tasks` row for 'cifar'"):
        sizing.gpu_job(plan, "cifar", "rotrnn", 0, report, time_limit_min=60)


def test_cpu_suites_are_sized_from_their_own_runs():
    """The smoke and analysis suites' jobs get minutes, not a paper job's hours."""
    for suite in ("smoke", "analysis"):
        sizes = sizing.suite_sizes(load_plan(PARAMS, suite))
        assert sizes and all(not s.gpu and s.runtime_min <= 60 and s.mem_mb <= 4000 for s in sizes), suite


def _preflight(tmp_path, profile, uri="sqlite:///mlflow.db", mounts="/ / ext4 rw 0 0\n", limit=1440, attempts=None):
    plan = load_plan(PARAMS, "paper")
    sizes = sizing.suite_sizes(plan, "h200", limit, ROOT)
    (tmp_path / "mounts").write_text(mounts)
    sizing.preflight(plan, sizes, profile, "profiles/slurm", uri, str(tmp_path / "mounts"), attempts)


def test_preflight_refusals(tmp_path):
    ok = {"default-resources": {"slurm_partition": "gpu"}}
    server = "http://mlflow.example:5000"
    _preflight(tmp_path, ok, uri=server)
    with pytest.raises(UserError, match="no slurm_partition set"):
        _preflight(tmp_path, {"default-resources": {"runtime": 60}}, uri=server)
    with pytest.raises(UserError, match=r"paper/pathx/\w+/seed\d needs \d+ attempts of \d+ min and gets 1"):
        _preflight(tmp_path, ok, uri=server, limit=120, attempts=1)
    # a SQLite store, on a local disk or on Lustre: the jobs of several nodes would write it (each job refuses it)
    store = tmp_path / "shared"
    store.mkdir()
    for mounts in ("/ / ext4 rw 0 0\n", f"/ / ext4 rw 0 0\nfs1@tcp:/scratch {store} lustre rw 0 0\n"):
        with pytest.raises(UserError, match=r"mlflow.db: a file store under Slurm"):
            _preflight(tmp_path, ok, uri=f"sqlite:///{store}/mlflow.db", mounts=mounts)


def test_plan_command_prints_totals_and_sources_and_check_refuses_in_one_line(tmp_path):
    from .conftest import BIN, run_tool

    out = run_tool([BIN / "rotrnn", "pipeline", "plan", "--suite", "paper"], ROOT).stdout
    plan = load_plan(PARAMS, "paper")
    total = sum(s.gpu_hours for s in sizing.suite_sizes(plan, "h200", sizing.DEFAULT_TIME_LIMIT_MIN, ROOT))
    assert f"Total: {total:.1f} GPU-hours" in out
    assert "reports/perf/gpu-h200.csv (NVIDIA H200, commit " in out and "prepared data:" in out
    assert "| pathx | rotrnn | 3 |" in out
    (tmp_path / "config.yaml").write_text("executor: slurm\ndefault-resources:\n  runtime: 60\n")
    proc = run_tool([BIN / "rotrnn", "pipeline", "plan", "--suite", "paper", "--check", "--profile", tmp_path],
                    ROOT, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no slurm_partition set" in proc.stderr


def test_preparation_figures_charge_only_data_of_the_measured_size(tmp_path):
    """The full-size measurement of a task is the paper suite's (LRA's 96k/2k/2k ListOps); a suite that generates
    a smaller ListOps under the same task name is not charged it."""
    perf = tmp_path / sizing.REPORTS_DIR
    perf.mkdir(parents=True)
    (perf / "prepare-2core.csv").write_text(
        "task,split_sizes,wall_s,cpu_s,peak_rss_mb,raw_bytes,prepared_bytes,commit\n"
        "listops,train=96000;val=2000;test=2000,50,24,747,1,206402337,abc\n")
    paper, _ = sizing.prepare_costs(load_plan(PARAMS, "paper"), tmp_path)
    analysis, _ = sizing.prepare_costs(load_plan(PARAMS, "analysis"), tmp_path)
    assert paper["listops"]["prepared_bytes"] == "206402337"
    assert "listops" not in analysis


@pytest.mark.parametrize("text, message", [("- a\n- b\n", "a mapping of options, found list"),
                                           ("jobs: [1\n", "not valid YAML")])
def test_a_broken_profile_is_one_line_naming_it(tmp_path, text, message):
    (tmp_path / "config.yaml").write_text(text)
    with pytest.raises(UserError, match=message) as e:
        sizing.slurm_profile(tmp_path)
    assert str(tmp_path / "config.yaml") in str(e.value)
