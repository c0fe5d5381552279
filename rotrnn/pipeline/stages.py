"""The pipeline stages `rotrnn stage ...` runs, each called by one Snakemake rule and one DVC stage:

    raw      the task's raw tree: `suites.S.data: fixtures` writes the task's fixture, `download` fetches its archive
             (LRA's four tasks share one); a task whose data block says `generate: listops` is generated instead
    prepare  raw tree -> paths.prepared/S/T (the path `rotrnn train` reads); `generate: synthetic` tasks are
             generated here, like the analysis suite's `multiscale` and `sines` (they have no raw stage)
    tracking the suite's MLflow experiment, created once before parallel training jobs (concurrent first use of a
             fresh SQLite store breaks its schema migration), and a marker naming it
    train    one job: resumes a requeued job, starts over when the resolved config changed (exit 75: checkpointed on a
             signal, run it again)
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from rotrnn import atomic
from rotrnn.pipeline.plan import GENERATED_ARGS, LISTOPS_ARGS, RAW_MARKER, SYNTHETIC_ARGS, Plan, PlanError


# ---- the stages ---------------------------------------------------------------------------------------------------
def _write_marker(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(path, record)


def stage_raw(plan: Plan, task: str, mirror: str | None = None) -> Path:
    """Make the task's raw tree and its completion marker; returns the raw directory."""
    kind = plan.raw_kind(task)
    if kind is None:
        raise PlanError(f"{plan.params_path}: {plan.suite}/{task} is generated at the prepare stage; it has no raw "
                        "stage")
    block = plan.data(task)
    raw = Path(plan.raw_dir(task))
    seed = int(block.get("seed", 0))
    record: dict[str, Any] = {"suite": plan.suite, "task": task, "kind": kind}
    if kind == "fixture":
        from rotrnn.data.fixtures import write_fixtures

        write_fixtures(raw.parent, [task], seed)  # writes raw.parent/<task> = raw, atomically
        record["seed"] = seed
    elif kind == "generate":
        import shutil

        generate_raw = importlib.import_module(plan.data_module(task)).generate_raw  # rotrnn.data.listops
        args = {k: int(block.get(k, v)) for k, v in LISTOPS_ARGS.items()}
        # generated into a temp sibling and renamed, so an interrupted run leaves no half tree behind
        raw.parent.mkdir(parents=True, exist_ok=True)
        tmp = atomic.mkdtemp(f".{raw.name}.tmp-", raw.parent)
        try:
            generate_raw(tmp, args.pop("n_train"), args.pop("n_val"), args.pop("n_test"), seed, **args)
            if raw.exists():
                shutil.rmtree(raw)
            tmp.rename(raw)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        record["generator"] = {"seed": seed, **{k: int(block.get(k, v)) for k, v in LISTOPS_ARGS.items()}}
    else:
        from rotrnn.data.download import download_task

        paths = download_task(task, raw, mirror, progress=sys.stderr.isatty())
        record["archives"] = [p.name for p in paths]
    _write_marker(raw / RAW_MARKER, record)
    return raw


def stage_prepare(plan: Plan, task: str) -> dict[str, Any]:
    """Write paths.prepared/<suite>/<task> (atomically, by the task's writer); returns its meta."""
    block = plan.data(task)
    out = Path(plan.prepared_dir(task))
    # generators are imported by the name the plan gives (Plan.data_module), which is also the module the task's
    # DVC stage depends on
    if block.get("generate") == "synthetic":
        args = {k: block.get(k, v) for k, v in SYNTHETIC_ARGS.items() if k != "task"}
        return importlib.import_module(plan.data_module(task)).generate(
            str(block["task"]), out, seed=int(block.get("seed", 0)), **{k: int(v) for k, v in args.items()})
    if block.get("generate") in GENERATED_ARGS:
        gen = block["generate"]
        args = {k: block.get(k, v) for k, v in GENERATED_ARGS[gen].items()}
        return importlib.import_module(plan.data_module(task)).generate(out, seed=int(block.get("seed", 0)), **args)
    from rotrnn.data.tasks import get_task

    marker = Path(plan.raw_marker(task))
    if not marker.is_file():
        raise PlanError(f"{marker} is missing: run `rotrnn stage raw --suite {plan.suite} --task {task}` "
                                "first (or `snakemake` / `dvc repro`)")
    # a generated ListOps under another task name (the analysis suite's one-layer listops1) is still ListOps
    return get_task("listops" if block.get("generate") == "listops" else task).prepare(Path(plan.raw_dir(task)), out)


def stage_tracking(plan: Plan) -> dict[str, Any]:
    """Create the MLflow store and the suite's experiment; write the plan's tracking marker. The marker holds the
    suite and the experiment name only: the store URI ($MLFLOW_TRACKING_URI may point elsewhere) and the experiment
    id are returned (for the log), not recorded, so the training stages that depend on the marker do not change with
    the store."""
    from rotrnn.config import suite_tracking
    from rotrnn.train.tracking import experiment_description, experiment_name, init_store, tracking_uri

    config = {"suite": plan.suite, "tracking": suite_tracking(plan.params, plan.suite)}
    uri = tracking_uri(config["tracking"]["uri"])
    experiment = experiment_name(config)
    exp_id = init_store(uri, experiment, experiment_description(plan.suite))
    _write_marker(Path(plan.tracking_marker()), {"suite": plan.suite, "experiment": experiment})
    return {"uri": uri, "experiment": experiment, "id": exp_id}


def stage_train(plan: Plan, task: str, model: str, seed: int, device: str | None = None) -> int:
    """Train one job of the plan; a run directory holding another config (params.yaml changed since) is started
    over, one holding the same config resumes from its last checkpoint. Returns the exit status."""
    from rotrnn.train.loop import DIVERGED_EXIT, train

    if (task, model, seed) not in plan.jobs():
        raise PlanError(f"{plan.params_path}: {task}/{model}/seed{seed} is not a job of suite {plan.suite!r}")
    code, _ = train(plan.config(task, model, seed), device=device, quiet=True, on_change="restart")
    if code in (0, DIVERGED_EXIT):
        # the checkpoint folder is the job's DVC output; a run that diverged before its first checkpoint has none,
        # and DVC records a folder only when it exists (empty here)
        Path(plan.run_dir(task, model, seed), "checkpoints").mkdir(parents=True, exist_ok=True)
    # a diverged run is a result (metrics.json records it, the report shows it): success for the workflow manager,
    # so that it does not spend its retries rerunning the same divergence
    return 0 if code == DIVERGED_EXIT else code
