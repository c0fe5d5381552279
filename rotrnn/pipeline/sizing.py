"""Job sizes from measurements: each training job's Slurm time limit, memory and attempts, and what a suite costs.

A GPU suite's job (``suites.S.data: download``, the paper suite) is sized from the committed device report of a
named GPU (``reports/perf/gpu-<gpu>.csv``, written by ``benchmarks/gpu_check.py``; its section ``tasks`` holds the
bf16 training step time and the peak GPU memory of each task's paper configuration at its paper batch size)::

    steps       = epochs × ceil(n_train / batch_size)            (max_steps_per_epoch, train_limit applied)
    train_s     = steps × step_ms × batch_size / measured_batch  (per example, as measured)
    eval_s      = epochs × Σ_eval splits n / batch × step_ms × EVAL_COST   (forward only, every epoch)
    estimate    = SAFETY × (train_s + eval_s)
    attempts    = ceil(estimate / (time_limit − STARTUP − SIGNAL)): each attempt checkpoints at SIGUSR1
                  (--signal=USR1@300 in the slurm profile) and the next resumes
    runtime     = min(estimate + STARTUP + SIGNAL, time_limit) per attempt

n_train and the evaluation splits come from the prepared data's meta.json when it exists, else from the dataset's
published split sizes (rotrnn.data.tasks.TaskSpec.splits) or the generator's counts (the data block). The step
time is RotRNN's (the device check measures the RotRNN paper configuration); LRU and DLR jobs use it too, which the
plan says. A CPU suite (fixtures: smoke, analysis) is sized from its own committed runs: the largest per-job wall
time in its reports (``wall_s``/``train_wall_s`` columns), or the span of its runs' end times (runs.csv) where no
per-job time was recorded.
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rotrnn.errors import UserError
from rotrnn.pipeline.plan import GENERATED_ARGS, LISTOPS_ARGS, SYNTHETIC_ARGS, Plan

SAFETY = 1.5            # on every measured time: other users' load, slower nodes, data-loading stalls
EVAL_COST = 1 / 3       # an evaluation example against a training one: the forward of forward+backward
STARTUP_MIN = 5         # per attempt: start, open data, torch.compile (32 s measured on the H200), load checkpoint
SIGNAL_MIN = 5          # the slurm profile's --signal=USR1@300: an attempt stops this long before its limit
DEFAULT_TIME_LIMIT_MIN = 1440   # a partition's limit when none is given (24 h; `sinfo -o "%P %l"` tells yours)
HOST_BASE_MB = 4000     # host memory of a GPU training process besides its GPU-sized buffers: not measured
CPU_MEM_MB = 2000       # a CPU suite's job: not measured (its data are fixtures of a few hundred examples)
CPU_UNMEASURED_MIN = 60 # a CPU suite without any recorded run: the slurm profile's default runtime
SPARE_ATTEMPTS = 2      # a preempted or failed node also costs an attempt (exit 75: checkpointed, resumes)
REPORTS_DIR = "reports/perf"


@dataclass
class DeviceReport:
    """The `tasks` section of a device report: task -> (batch, step ms, peak GiB), and where it came from."""

    path: str
    device: str
    commit: str
    tasks: dict[str, tuple[int, float, float]]

    @property
    def source(self) -> str:
        return f"{self.path} ({self.device}, commit {self.commit})"


def read_device_report(path: str | Path) -> DeviceReport:
    """Read ``gpu-<gpu>.csv`` and the device and commit from the Markdown report beside it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such device report (reports/perf/gpu-<gpu>.csv; `make gpu-check` writes one)")
    tasks: dict[str, tuple[int, float, float]] = {}
    with path.open(newline="") as f:
        for i, row in enumerate(csv.DictReader(f), start=2):
            if row.get("section") != "tasks" or not row.get("task"):
                continue
            try:
                tasks[row["task"]] = (int(row["batch"]), float(row["bf16 step ms"]), float(row["peak GiB"]))
            except (KeyError, ValueError):
                raise UserError(f"{path}:{i}: a tasks row needs batch, bf16 step ms and peak GiB as numbers") from None
    md = path.with_suffix(".md")
    text = md.read_text() if md.is_file() else ""
    device = re.search(r"^# Device check: (.+)$", text, re.M)
    commit = re.search(r"^- commit: (\S+)", text, re.M)
    return DeviceReport(str(path), device.group(1) if device else "unknown device",
                        commit.group(1) if commit else "unknown", tasks)


def split_sizes(plan: Plan, task: str) -> tuple[dict[str, int], str]:
    """(examples per split, where the counts come from)."""
    import json

    meta = Path(plan.prepared_dir(task)) / "meta.json"
    if meta.is_file():
        splits = json.loads(meta.read_text()).get("splits")
        if isinstance(splits, dict):
            return {str(k): int(v) for k, v in splits.items()}, str(meta)
    block = plan.data(task)
    gen = block.get("generate")
    defaults = (LISTOPS_ARGS if gen == "listops" else SYNTHETIC_ARGS if gen == "synthetic"
                else GENERATED_ARGS.get(gen) if gen else None)
    if defaults is not None:
        return ({s: int(block.get(f"n_{s}", defaults[f"n_{s}"])) for s in ("train", "val", "test")},
                f"{plan.params_path} data block (generated)")
    from rotrnn.data.tasks import TASKS

    return dict(TASKS[task].splits), "rotrnn/data/tasks.py (published split sizes)"


@dataclass
class JobSize:
    task: str
    model: str
    seed: int
    steps: int
    estimate_min: float          # the whole job's wall time, safety factor included
    runtime_min: int             # Slurm time limit of one attempt
    attempts: int
    mem_mb: int
    gpu: bool
    sources: list[tuple[str, str]] = field(default_factory=list)   # (where from, what it gives)

    @property
    def gpu_hours(self) -> float:
        return self.estimate_min / 60 if self.gpu else 0.0


def attempts_for(estimate_min: float, time_limit_min: int) -> int:
    """Attempts of at most ``time_limit_min`` each that cover the estimate (each loses STARTUP + SIGNAL)."""
    useful = time_limit_min - STARTUP_MIN - SIGNAL_MIN
    if useful <= 0:
        raise UserError(f"a time limit of {time_limit_min} min leaves no training time (each attempt spends "
                        f"{STARTUP_MIN + SIGNAL_MIN} min starting and checkpointing)")
    return max(1, math.ceil(estimate_min / useful))


def gpu_job(plan: Plan, task: str, model: str, seed: int, report: DeviceReport, time_limit_min: int) -> JobSize:
    if task not in report.tasks:
        raise UserError(f"{report.path}: no `tasks` row for {task!r} (measured: {', '.join(report.tasks)}); run the "
                        "device check with it")
    tcfg = plan.config(task, model, seed)["train"]
    splits, split_source = split_sizes(plan, task)
    measured_batch, step_ms, peak_gib = report.tasks[task]
    batch = int(tcfg["batch_size"])
    eval_batch = int(tcfg.get("eval_batch_size") or batch)
    n_train = splits.get("train", 0)
    if tcfg.get("train_limit"):
        n_train = min(n_train, int(tcfg["train_limit"]))
    per_epoch = math.ceil(n_train / batch)
    if tcfg.get("max_steps_per_epoch"):
        per_epoch = min(per_epoch, int(tcfg["max_steps_per_epoch"]))
    epochs = int(tcfg["epochs"])
    steps = epochs * per_epoch
    per_example_s = step_ms / 1000 / measured_batch
    train_s = steps * batch * per_example_s
    n_eval = sum(min(n, int(tcfg["eval_limit"])) if tcfg.get("eval_limit") else n
                 for s, n in splits.items() if s != "train")
    eval_s = epochs * math.ceil(n_eval / eval_batch) * eval_batch * per_example_s * EVAL_COST
    estimate = SAFETY * (train_s + eval_s) / 60
    attempts = attempts_for(estimate, time_limit_min)
    runtime = min(time_limit_min, math.ceil(estimate / attempts) + STARTUP_MIN + SIGNAL_MIN)
    mem = math.ceil(SAFETY * (HOST_BASE_MB + peak_gib * 1024 * batch / measured_batch))
    sources = [(report.source, "bf16 step time and peak GPU memory per task (RotRNN's paper config)"),
               (split_source, "split sizes"), (plan.params_path, "epochs, batch sizes, evaluation limits")]
    return JobSize(task, model, seed, steps, estimate, runtime, attempts, mem, True, sources)


def _cpu_walls(reports_dir: Path) -> tuple[dict[str, float], float | None, str]:
    """A CPU suite's measured job wall times: task -> largest seconds, the largest overall, and the source."""
    per_task: dict[str, float] = {}
    files = []
    for path in sorted(reports_dir.glob("*.csv")):
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            column = next((c for c in ("wall_s", "train_wall_s") if c in (reader.fieldnames or [])), None)
            if column is None or "task" not in (reader.fieldnames or []):
                continue
            files.append(path.as_posix())
            for row in reader:
                try:
                    per_task[row["task"]] = max(per_task.get(row["task"], 0.0), float(row[column]))
                except ValueError:
                    continue
    if per_task:
        return per_task, max(per_task.values()), ", ".join(files) + " (largest per-job wall per task)"
    runs = reports_dir / "runs.csv"
    if runs.is_file():
        with runs.open(newline="") as f:
            ends = [datetime.fromisoformat(r["end_time"]) for r in csv.DictReader(f) if r.get("end_time")]
        if len(ends) > 1:
            span = (max(ends) - min(ends)).total_seconds()
            return {}, span, f"{runs.as_posix()} (span of its {len(ends)} runs' end times; no per-job wall recorded)"
    return {}, None, "no measured wall time"


def cpu_job(plan: Plan, task: str, model: str, seed: int, time_limit_min: int) -> JobSize:
    per_task, largest, source = _cpu_walls(Path(plan.reports_dir))
    wall = per_task.get(task, largest)
    if wall is None:  # a new suite never run: the profile's default, said so
        return JobSize(task, model, seed, 0, CPU_UNMEASURED_MIN, CPU_UNMEASURED_MIN, 1, CPU_MEM_MB, False,
                       [(f"no run recorded in {plan.reports_dir}", f"{CPU_UNMEASURED_MIN} min: not measured")])
    estimate = SAFETY * wall / 60
    attempts = attempts_for(estimate, time_limit_min)
    runtime = min(time_limit_min, math.ceil(estimate / attempts) + STARTUP_MIN + SIGNAL_MIN)
    return JobSize(task, model, seed, 0, estimate, runtime, attempts, CPU_MEM_MB, False,
                   [(source, "job wall time on 2 CPU cores"), ("not measured", f"memory ({CPU_MEM_MB} MB)")])


def is_gpu_suite(plan: Plan) -> bool:
    """The suites that train at full size (downloaded data) run on GPUs; fixture suites on CPUs."""
    return plan.data_mode == "download"


def job_size(plan: Plan, task: str, model: str, seed: int, gpu: str = "h200",
             time_limit_min: int = DEFAULT_TIME_LIMIT_MIN, root: str | Path = ".") -> JobSize:
    if is_gpu_suite(plan):
        return gpu_job(plan, task, model, seed, device_report(gpu, root), time_limit_min)
    return cpu_job(plan, task, model, seed, time_limit_min)


_REPORTS: dict[str, DeviceReport] = {}


def device_report(gpu: str, root: str | Path = ".") -> DeviceReport:
    path = str(Path(root) / REPORTS_DIR / f"gpu-{gpu}.csv")
    if path not in _REPORTS:
        _REPORTS[path] = read_device_report(path)
    return _REPORTS[path]


def suite_sizes(plan: Plan, gpu: str = "h200", time_limit_min: int = DEFAULT_TIME_LIMIT_MIN,
                root: str | Path = ".") -> list[JobSize]:
    return [job_size(plan, t, m, s, gpu, time_limit_min, root) for t, m, s in plan.jobs()]


def retries(sizes: list[JobSize]) -> int:
    """Snakemake's `retries` for the train rule (one value for the rule): what the most-attempted job needs, and
    SPARE_ATTEMPTS for preemption."""
    return max((s.attempts for s in sizes), default=1) - 1 + SPARE_ATTEMPTS


def prepare_costs(plan: Plan, root: str | Path = ".") -> tuple[dict[str, dict[str, Any]], str]:
    """The full-size data preparation measurements (reports/perf/prepare-2core.csv, one row per task) of the plan's
    tasks whose data has the measured split sizes (a suite that generates a smaller ListOps is not charged the
    96k-example one)."""
    path = Path(root) / REPORTS_DIR / "prepare-2core.csv"
    if not path.is_file():
        return {}, f"{REPORTS_DIR}/prepare-2core.csv: not measured"
    with path.open(newline="") as f:
        rows = {r["task"]: r for r in csv.DictReader(f) if r.get("task")}
    matching = {}
    for task in plan.tasks:
        row = rows.get(task)
        if row is None:
            continue
        measured = dict(part.split("=", 1) for part in row.get("split_sizes", "").split(";") if "=" in part)
        if all(measured.get(split) == str(n) for split, n in split_sizes(plan, task)[0].items()):
            matching[task] = row
    return matching, f"{REPORTS_DIR}/prepare-2core.csv"


# ---- the preflight -------------------------------------------------------------------------------------------------
def slurm_profile(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    file = path / "config.yaml"
    if not file.is_file():
        raise UserError(f"{file}: no such Snakemake profile")
    try:
        profile = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise UserError(f"{file}{f':{mark.line + 1}' if mark else ''}: not valid YAML") from e
    if not isinstance(profile, dict):
        raise UserError(f"{file}: a Snakemake profile is a mapping of options, found {type(profile).__name__}")
    return profile


def preflight(plan: Plan, sizes: list[JobSize], profile: dict[str, Any], profile_path: str,
              tracking_uri: str, mounts: str = "/proc/mounts", max_attempts: int | None = None) -> None:
    """Refuse, in one line, what would fail on the cluster: no partition, a job its attempts cannot cover, an
    MLflow store kept in files (SQLite), which jobs on several nodes would write at once and which each job
    refuses under Slurm (:func:`rotrnn.train.tracking.check_store`)."""
    from rotrnn.train.tracking import check_store

    resources = {**(profile.get("default-resources") or {}), **((profile.get("set-resources") or {}).get("train")
                                                                 or {})}
    if not resources.get("slurm_partition"):
        raise UserError(f"{profile_path}/config.yaml: no slurm_partition set (default-resources or set-resources."
                        "train); fill in your GPU partition")
    allowed = max_attempts if max_attempts is not None else retries(sizes) + 1
    over = [s for s in sizes if s.attempts > allowed]
    if over:
        s = max(over, key=lambda s: s.attempts)
        raise UserError(f"{plan.suite}/{s.task}/{s.model}/seed{s.seed} needs {s.attempts} attempts of "
                        f"{s.runtime_min} min and gets {allowed}; raise the time limit or the retries")
    check_store(tracking_uri, cluster=True, mounts=mounts)  # what every job would refuse, before any is queued
