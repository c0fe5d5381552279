"""What the `rotrnn analysis` commands share: their settings in params.yaml, where their results go, their MLflow
record, and loading a finished training run of the suite."""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any, Iterator

from rotrnn import atomic
from rotrnn.errors import UserError

EXPERIMENTS = ("norms", "heads", "rescale", "synthetic", "cost")
# report file stem per experiment (DLR's tasks are not called synthetic.md: `rotrnn report` writes that name)
REPORT_STEMS = {"norms": "norms", "heads": "heads", "rescale": "rescale", "synthetic": "dlr_tasks", "cost": "cost"}


class AnalysisError(UserError, ValueError):
    """An analysis command cannot run as configured, or what it reads is missing; the message names the file, key
    or run (the command line prints it as one line and exits 2)."""


def settings(params: dict[str, Any], suite: str, name: str, params_path: str = "params.yaml") -> dict[str, Any]:
    """``suites.<suite>.experiments.<name>`` of params.yaml."""
    if name not in EXPERIMENTS:
        raise AnalysisError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}")
    block = ((params.get("suites") or {}).get(suite) or {}).get("experiments") or {}
    if name not in block:
        raise AnalysisError(f"{params_path}: suites.{suite}.experiments has no {name!r} block")
    return dict(block[name] or {})


def experiment_tasks(params: dict[str, Any], suite: str, name: str) -> list[str]:
    """The suite tasks whose training runs an experiment reads (its pipeline inputs)."""
    cfg = settings(params, suite, name)
    if name == "norms":
        return [str(t) for t in (cfg.get("networks") or {}).values()]
    if name == "heads":  # the multi-scale tasks and the single-scale control
        return [str(t) for key in ("tasks", "control") for t in (cfg.get(key) or {}).values()]
    if name == "rescale":
        return [str(cfg["task"])] if cfg.get("task") else []
    if name == "synthetic":
        return [str(t) for t in cfg.get("tasks") or []]
    return []


def has_experiments(params: dict[str, Any], suite: str) -> bool:
    return bool((params["suites"][suite] or {}).get("experiments"))


def report_targets(params: dict[str, Any], suite: str) -> list[str]:
    """The Markdown files `rotrnn analysis report` writes (the pipeline's final targets for such a suite)."""
    from rotrnn.config import suite_paths

    out = suite_paths(params, suite)["reports"]
    return [f"{out}/README.md"] + [f"{out}/{REPORT_STEMS[n]}.md" for n in EXPERIMENTS]


def results_dir(params: dict[str, Any], suite: str) -> Path:
    from rotrnn.config import suite_paths

    return Path(suite_paths(params, suite)["runs"]) / suite / "_experiments"


def result_path(params: dict[str, Any], suite: str, name: str) -> Path:
    """The JSON an experiment writes last (the pipeline's target for that experiment)."""
    return results_dir(params, suite) / f"{name}.json"


class OtherLoad:
    """How many cores other processes kept busy while a block ran: the machine's busy CPU time (psutil) minus this
    process's own, over the wall time. A timing taken while others used the cores is inflated and noisy; unlike the
    load average, this counts only the measured interval and not the jobs that ran just before it."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._start = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        t = self._psutil.cpu_times()
        busy = sum(getattr(t, k, 0.0) for k in ("user", "nice", "system", "irq", "softirq", "steal"))
        own = self._psutil.Process().cpu_times()
        return time.perf_counter(), busy, own.user + own.system

    def cores(self) -> float:
        """Average number of cores other processes used since construction."""
        (w0, b0, o0), (w1, b1, o1) = self._start, self._sample()
        return max(0.0, ((b1 - b0) - (o1 - o0)) / max(w1 - w0, 1e-9))


def write_result(path: Path, result: dict[str, Any]) -> None:
    """The experiment's result JSON, stamped with when it finished (the report's measured suite wall time ends at
    the last experiment's stamp)."""
    import datetime as dt

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(path, {**result, "finished_utc": dt.datetime.now(dt.timezone.utc).isoformat()})


START = "snakemake_start.json"


def record_start(plan, command: str) -> Path:
    """Called by the Snakefile when a (non-dry) run of an analysis suite starts: when, the command, and how much of
    the suite was already done (a resumed run's wall time covers only the rest)."""
    import datetime as dt

    jobs = plan.jobs()
    done = sum(run_status(Path(plan.metrics_path(*job)).parent) in ("finished", "diverged") for job in jobs)
    results = sum(result_path(plan.params, plan.suite, n).is_file() for n in EXPERIMENTS)
    path = results_dir(plan.params, plan.suite) / START
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(path, {"started_utc": dt.datetime.now(dt.timezone.utc).isoformat(), "command": command,
                             "jobs": len(jobs), "jobs_done_before": done, "results_before": results})
    return path


def read_start(params: dict[str, Any], suite: str) -> dict[str, Any] | None:
    return atomic.read_json(results_dir(params, suite) / START)


def read_result(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise AnalysisError(f"{path}: no result; run its `rotrnn analysis` command first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise AnalysisError(f"{path}: not valid JSON ({e})") from e


@contextlib.contextmanager
def timed() -> Iterator[dict[str, float]]:
    """{'wall_s': ...} filled when the block ends."""
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        yield out
    finally:
        out["wall_s"] = time.perf_counter() - t0


def log_mlflow(params: dict[str, Any], suite: str, name: str, settings_: dict[str, Any], metrics: dict[str, float],
               artifacts: list[Path]) -> str | None:
    """One FINISHED MLflow run ``analysis/<name>`` in the suite's experiment: settings as params, summary numbers as
    metrics, result files as artifacts. Returns the run id."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    from rotrnn.config import flatten, suite_tracking
    from rotrnn.train.tracking import experiment_name, git_commit, init_store, tracking_uri

    tracking = suite_tracking(params, suite)
    uri = tracking_uri(tracking.get("uri"))
    exp_id = init_store(uri, experiment_name({"suite": suite, "tracking": tracking}))
    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(exp_id, run_name=f"analysis/{name}")
    rid = run.info.run_id
    now = int(time.time() * 1000)
    flat = sorted(flatten(settings_).items())
    for i in range(0, max(len(flat), 1), 100):
        client.log_batch(rid, params=[Param(k, str(v)[:6000]) for k, v in flat[i:i + 100]])
    items = [Metric(k, float(v), now, 0) for k, v in sorted(metrics.items())]
    for i in range(0, len(items), 500):
        client.log_batch(rid, metrics=items[i:i + 500])
    client.log_batch(rid, tags=[RunTag("analysis", name), RunTag("suite", suite), RunTag("git_commit", git_commit())])
    for path in artifacts:
        client.log_artifact(rid, str(path))
    client.set_terminated(rid, "FINISHED")
    return rid


def run_status(run_dir: str | Path) -> str | None:
    """'finished', 'diverged' (recorded by the loop, a result) or None (not done) from the run's metrics.json."""
    from rotrnn import atomic

    return (atomic.read_json(Path(run_dir) / "metrics.json") or {}).get("status")


def usable(run_dir: str | Path, checkpoint: str) -> bool:
    """Whether an analysis can read this run: finished, or diverged after writing the checkpoint asked for (a run
    that diverged before its first epoch ended has no best.pt; the analyses report it as diverged instead)."""
    status = run_status(run_dir)
    return status == "finished" or (status == "diverged" and
                                    (Path(run_dir) / "checkpoints" / f"{checkpoint}.pt").is_file())


def load_run(run_dir: str | Path, checkpoint: str = "last", device: str = "cpu"):
    """(model in eval mode, config, meta) of a finished training run."""
    from rotrnn.train import checkpoint as ckpt
    from rotrnn.train.loop import build_model

    path = Path(run_dir) / "checkpoints" / f"{checkpoint}.pt"
    if not path.is_file():
        raise AnalysisError(f"{path}: no checkpoint; train the run first (`rotrnn stage train ...` or snakemake)")
    saved = ckpt.load(path, device)
    model = build_model(saved["config"], saved["meta"]).to(device)
    model.load_state_dict(saved["model"])
    return model.eval(), saved["config"], saved["meta"]


def init_model(config: dict[str, Any], meta: dict[str, Any]):
    """The model exactly as `rotrnn train` initialises it for this config (same seed, same build order)."""
    from rotrnn.train import checkpoint as ckpt
    from rotrnn.train.loop import build_model

    ckpt.seed_everything(config["seed"])
    return build_model(config, meta).eval()


def recurrent_layers(model) -> list:
    from rotrnn.nn.base import DiagonalRecurrentLayer

    return [m for m in model.modules() if isinstance(m, DiagonalRecurrentLayer)]


def training_runs(plan, tasks: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per finished job of the suite among ``tasks``: the selected test/val figures at the best validation
    epoch, the steps trained, the time in training steps (sum of the loop's epoch times) and the job's wall time
    (``wall_s``), from each run's metrics.json (the numbers the run logged to MLflow)."""
    rows = []
    for task, model, seed in plan.jobs():
        if tasks is not None and task not in tasks:
            continue
        path = Path(plan.metrics_path(task, model, seed))
        if not path.is_file():
            continue
        m = json.loads(path.read_text())
        if m.get("status") not in ("finished", "diverged"):  # a diverged run is a result (the loop records it)
            continue
        best = m.get("best") or {}
        rows.append({"task": task, "model": model, "seed": seed, "status": m["status"], "metric": m.get("metric"),
                     "best_epoch": best.get("epoch"), "steps": m.get("final_step"),
                     "train_s": float(sum(h.get("epoch_time_s", 0.0) for h in m.get("history", []))),
                     # the job's wall time as the loop recorded it (summed over attempts; not file times, which a
                     # no-op rerun rewrites)
                     "wall_s": float(m.get("wall_s", float("nan"))),
                     **{k: v for k, v in best.items() if "/" in k}})
    return rows

