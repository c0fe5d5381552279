"""`rotrnn stage ...`: the steps the Snakemake rules and the DVC stages call, and the plan they share.

Snakemake (Snakefile, workflow/rules/*.smk) and DVC (dvc.yaml) are two front doors to the same stages; neither holds
logic of its own. What a stage does for a suite and task is decided here, from params.yaml:

    rotrnn stage raw --suite S --task T        the raw tree: `suites.S.data: fixtures` writes the task's fixture,
                                               `download` fetches its archive (LRA's four tasks share one); a task
                                               whose data block says `generate: listops` is generated instead
    rotrnn stage prepare --suite S --task T    raw tree -> paths.prepared/S/T (the path `rotrnn train` reads);
                                               `generate: synthetic` tasks are generated here (no raw stage)
    rotrnn stage train --suite S --task T --model M --seed N
                                               `rotrnn train`, resuming a requeued job and starting over when the
                                               resolved config changed (exit 75: checkpointed, run it again)
    rotrnn stage jobs --suite S                the task/model/seed list (or every path, with --format json)

A task's data block is `tasks.T.data` deep-merged with `suites.S.tasks.T.data` (the same cascade `rotrnn train`
resolves). Keys: `source` (the archive group for downloads: lra, imdb, cifar, speech35; default: the task name),
`generate` (listops or synthetic), the generator's arguments, and `seed`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rotrnn import atomic

DATA_MODES = ("fixtures", "download")
RAW_MARKER = ".rotrnn-raw.json"
# generator arguments a data block may carry, with the `rotrnn data generate` defaults they replace
LISTOPS_ARGS = {"n_train": 96_000, "n_val": 2_000, "n_test": 2_000, "min_length": 500, "max_length": 2000,
                "max_depth": 10, "max_args": 10}
SYNTHETIC_ARGS = {"task": None, "length": 4096, "n_train": 16_000, "n_val": 1_600, "n_test": 1_600,
                  "num_shifts": 8, "mem": 32, "dim": 4}
COMMON_KEYS = {"source", "generate", "seed"}


class PlanError(ValueError):
    """params.yaml does not describe a runnable suite; the message names the file and the key."""


@dataclass(frozen=True)
class Plan:
    """One suite of params.yaml: its jobs and every path the stages read and write (as strings, so that the
    Snakefile can pass wildcard names such as "{task}" through the same functions to build its patterns)."""

    params: dict[str, Any]
    params_path: str
    suite: str

    # ---- the suite ----------------------------------------------------------------------------------------------
    @property
    def block(self) -> dict[str, Any]:
        return self.params["suites"][self.suite]

    @property
    def tasks(self) -> list[str]:
        return list(self.block.get("tasks") or {})

    @property
    def models(self) -> list[str]:
        return [str(m) for m in self.block.get("models") or []]

    @property
    def seeds(self) -> list[int]:
        return [int(s) for s in self.block.get("seeds") or []]

    @property
    def data_mode(self) -> str:
        return self.block.get("data")

    def jobs(self) -> list[tuple[str, str, int]]:
        return [(t, m, s) for t in self.tasks for m in self.models for s in self.seeds]

    def paths(self) -> dict[str, str]:
        from rotrnn.train.config import deep_merge

        return deep_merge(self.params.get("paths") or {}, self.block.get("paths"))

    # ---- data ---------------------------------------------------------------------------------------------------
    def data(self, task: str) -> dict[str, Any]:
        """The task's resolved data block (the view `rotrnn train` logs), checked."""
        from rotrnn.train.config import resolve

        if task not in self.tasks:
            raise PlanError(f"{self.params_path}: suite {self.suite!r} has no task {task!r} "
                            f"(suites.{self.suite}.tasks: {', '.join(self.tasks)})")
        block = resolve(self.params, self.suite, task, self.models[0], self.seeds[0])["data"] or {}
        where = f"{self.params_path}: tasks.{task}.data + suites.{self.suite}.tasks.{task}.data"
        gen = block.get("generate")
        allowed = COMMON_KEYS | (LISTOPS_ARGS.keys() if gen == "listops" else
                                 SYNTHETIC_ARGS.keys() if gen == "synthetic" else set())
        if gen not in (None, "listops", "synthetic"):
            raise PlanError(f"{where}: generate must be listops or synthetic, got {gen!r}")
        unknown = sorted(set(block) - allowed)
        if unknown:
            raise PlanError(f"{where}: unknown key(s) {unknown} (allowed here: {sorted(allowed)})")
        if gen == "synthetic" and not block.get("task"):
            raise PlanError(f"{where}: generate: synthetic needs `task:` (e.g. cumsum)")
        if gen == "listops" and task != "listops":
            raise PlanError(f"{where}: generate: listops only makes the listops task")
        if gen is None and task not in _task_registry():
            raise PlanError(f"{where}: {task!r} is neither a dataset task ({', '.join(_task_registry())}) nor "
                            "generated (generate: listops | synthetic)")
        return block

    def raw_kind(self, task: str) -> str | None:
        """'generate' | 'fixture' | 'download' | None (generated straight into the prepared format)."""
        block = self.data(task)
        if block.get("generate") == "synthetic":
            return None
        if block.get("generate") == "listops" and self.data_mode != "download":
            return "generate"
        if self.data_mode not in DATA_MODES:
            raise PlanError(f"{self.params_path}: suites.{self.suite}.data must be one of {DATA_MODES}, "
                            f"got {self.data_mode!r}")
        return "fixture" if self.data_mode == "fixtures" else "download"

    def raw_key(self, task: str) -> str | None:
        """The raw tree's folder under paths.raw: downloads are shared by suites and, for LRA, by four tasks
        (`source`); fixtures and generated trees belong to their suite and task."""
        kind = self.raw_kind(task)
        if kind is None:
            return None
        if kind == "download":
            return str(self.data(task).get("source") or task)
        return f"{self.suite}/{task}"

    def raw_dir(self, task: str) -> str | None:
        key = self.raw_key(task)
        return None if key is None else f"{self.paths()['raw']}/{key}"

    def raw_marker(self, task: str) -> str | None:
        d = self.raw_dir(task)
        return None if d is None else f"{d}/{RAW_MARKER}"

    def raw_targets(self) -> dict[str, str]:
        """raw key -> the first task of the suite that uses it (the task `rotrnn stage raw` is called with)."""
        out: dict[str, str] = {}
        for t in self.tasks:
            key = self.raw_key(t)
            if key is not None:
                out.setdefault(key, t)
        return out

    def prepared_dir(self, task: str) -> str:
        return f"{self.paths()['prepared']}/{self.suite}/{task}"

    # ---- training and reports -----------------------------------------------------------------------------------
    def run_dir(self, task: str, model: str, seed: int | str) -> str:
        return f"{self.paths()['runs']}/{self.suite}/{task}/{model}/seed{seed}"

    def metrics_path(self, task: str, model: str, seed: int | str) -> str:
        return f"{self.run_dir(task, model, seed)}/metrics.json"

    def config(self, task: str, model: str, seed: int) -> dict[str, Any]:
        from rotrnn.train.config import resolve

        return resolve(self.params, self.suite, task, model, int(seed))

    def config_digest(self, task: str, model: str, seed: int) -> str:
        """sha256 of the resolved run config: Snakemake reruns a job when it changes (params trigger)."""
        text = json.dumps(self.config(task, model, seed), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def reports_dir(self) -> str:
        return str(self.paths()["reports"])

    def report_files(self) -> list[str]:
        d = self.reports_dir
        return [f"{d}/{name}" for name in ("lra.md", "lra.tex", "lra.csv", "speech_commands.md",
                                           "speech_commands.tex", "speech_commands.csv", "synthetic.md",
                                           "synthetic.csv", "runs.csv")]

    def figures_dir(self) -> str:
        return f"{self.reports_dir}/figures"

    def tracking_marker(self) -> str:
        return f"{self.paths()['runs']}/{self.suite}/.tracking-init.txt"


def _task_registry() -> list[str]:
    from rotrnn.data.tasks import TASKS

    return list(TASKS)


def load_plan(params: str | os.PathLike = "params.yaml", suite: str | None = None) -> Plan:
    """Read params.yaml and check that `suite` (default: its `suite:` key) names a runnable suite."""
    from rotrnn.train.config import MODELS, load_params

    p = load_params(params)
    suite = suite or p.get("suite")
    if not suite:
        raise PlanError(f"{params}: no suite given and no top-level `suite:` key")
    if suite not in p["suites"]:
        raise PlanError(f"{params}: unknown suite {suite!r}; suites: {', '.join(p['suites'])}")
    plan = Plan(p, str(params), str(suite))
    for key, values in (("tasks", plan.tasks), ("models", plan.models), ("seeds", plan.seeds)):
        if not values:
            raise PlanError(f"{params}: suites.{suite}.{key} is empty")
    bad = [m for m in plan.models if m not in MODELS]
    if bad:
        raise PlanError(f"{params}: suites.{suite}.models: unknown model(s) {bad}; known: {', '.join(MODELS)}")
    missing = [t for t in plan.tasks if t not in p["tasks"]]
    if missing:
        raise PlanError(f"{params}: suites.{suite}.tasks names {missing}, which are not under tasks:")
    if plan.data_mode not in DATA_MODES:
        raise PlanError(f"{params}: suites.{suite}.data must be one of {DATA_MODES}, got {plan.data_mode!r}")
    return plan


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

        from rotrnn.data.listops import generate_raw

        args = {k: int(block.get(k, v)) for k, v in LISTOPS_ARGS.items()}
        # generated into a temp sibling and renamed, so an interrupted run leaves no half tree behind
        raw.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{raw.name}.tmp-", dir=raw.parent))
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
    if block.get("generate") == "synthetic":
        from rotrnn.data.synthetic import generate

        args = {k: block.get(k, v) for k, v in SYNTHETIC_ARGS.items() if k != "task"}
        return generate(str(block["task"]), out, seed=int(block.get("seed", 0)),
                        **{k: int(v) for k, v in args.items()})
    from rotrnn.data.tasks import get_task

    marker = Path(plan.raw_marker(task))
    if not marker.is_file():
        raise FileNotFoundError(f"{marker} is missing: run `rotrnn stage raw --suite {plan.suite} --task {task}` "
                                "first (or `snakemake` / `dvc repro`)")
    return get_task(task).prepare(Path(plan.raw_dir(task)), out)


def stage_train(plan: Plan, task: str, model: str, seed: int, device: str | None = None,
                extra: list[str] | None = None) -> int:
    """Run `rotrnn train` for one job; a run directory holding another config (params.yaml changed since) is
    started over, one holding the same config resumes from its last checkpoint."""
    import yaml

    from rotrnn.cli import main

    if (task, model, seed) not in plan.jobs():
        raise PlanError(f"{plan.params_path}: {task}/{model}/seed{seed} is not a job of suite {plan.suite!r}")
    config = plan.config(task, model, seed)
    saved = Path(plan.run_dir(task, model, seed)) / "config.yaml"
    fresh = saved.is_file() and yaml.safe_load(saved.read_text()) != config
    if fresh:
        print(f"rotrnn stage train: {saved} holds an older config; starting this run over", file=sys.stderr)
    argv = ["train", "--params", plan.params_path, "--suite", plan.suite, "--task", task, "--model", model,
            "--seed", str(seed), "--quiet"] + (["--fresh"] if fresh else []) + (["--device", device] if device else [])
    return main(argv + list(extra or []))


# ---- the command line ---------------------------------------------------------------------------------------------
def register(sub: argparse._SubParsersAction) -> None:
    stage = sub.add_parser("stage", help="pipeline stages (called by Snakemake and DVC)",
                           description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ssub = stage.add_subparsers(dest="stage", required=True, metavar="STAGE")

    def common(p: argparse.ArgumentParser, task: bool = True) -> None:
        p.add_argument("--suite", default=None, help="suite in params.yaml (default: its `suite:` key)")
        p.add_argument("--params", default="params.yaml", help="configuration file (default: %(default)s)")
        if task:
            p.add_argument("--task", required=True)

    p = ssub.add_parser("raw", help="fixture, generated or downloaded raw tree of one task (+ completion marker)")
    common(p)
    p.add_argument("--mirror", default=os.environ.get("ROTRNN_DATA_MIRROR"),
                   help="local directory or base URL holding the archives (default: $ROTRNN_DATA_MIRROR)")
    p.set_defaults(func=_cmd_raw)

    p = ssub.add_parser("prepare", help="prepared data of one task in paths.prepared/SUITE/TASK")
    common(p)
    p.add_argument("--fetch", action="store_true", help="run the raw stage first when the task has one "
                   "(DVC runs both as one stage per task)")
    p.add_argument("--mirror", default=os.environ.get("ROTRNN_DATA_MIRROR"))
    p.set_defaults(func=_cmd_prepare)

    p = ssub.add_parser("train", help="one training job (resumes; exit 75 = checkpointed, run again)")
    common(p)
    p.add_argument("--model", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--device", default=None)
    p.set_defaults(func=_cmd_train)

    p = ssub.add_parser("jobs", help="the suite's task/model/seed jobs")
    common(p, task=False)
    p.add_argument("--format", choices=["lines", "json"], default="lines",
                   help="lines: 'task model seed' per job; json: jobs and every stage path")
    p.set_defaults(func=_cmd_jobs)


def _fail(msg: str) -> int:
    print(f"rotrnn stage: error: {msg}", file=sys.stderr)
    return 2


def _plan(args: argparse.Namespace) -> Plan:
    return load_plan(args.params, args.suite)


def _cmd_raw(args: argparse.Namespace) -> int:
    from rotrnn.data.download import DownloadError

    try:
        raw = stage_raw(_plan(args), args.task, args.mirror)
    except (PlanError, KeyError, FileNotFoundError, ValueError, DownloadError) as e:
        return _fail(str(e.args[0] if isinstance(e, KeyError) else e))
    print(f"{args.task}: raw tree ready in {raw}")
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from rotrnn.data.download import DownloadError

    try:
        plan = _plan(args)
        if args.fetch and plan.raw_kind(args.task) is not None:
            stage_raw(plan, args.task, args.mirror)
        meta = stage_prepare(plan, args.task)
    except (PlanError, KeyError, FileNotFoundError, ValueError, DownloadError) as e:
        return _fail(str(e.args[0] if isinstance(e, KeyError) else e))
    print(f"{args.task}: prepared {plan.prepared_dir(args.task)}: splits {meta['splits']}, "
          f"checksum {meta['checksum'][:16]}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    try:
        plan = _plan(args)
        return stage_train(plan, args.task, args.model, args.seed, args.device)
    except (PlanError, KeyError, FileNotFoundError) as e:
        return _fail(str(e.args[0] if isinstance(e, KeyError) else e))


def _cmd_jobs(args: argparse.Namespace) -> int:
    try:
        plan = _plan(args)
        jobs = plan.jobs()
        if args.format == "lines":
            for t, m, s in jobs:
                print(t, m, s)
            return 0
        doc = {
            "suite": plan.suite, "tasks": plan.tasks, "models": plan.models, "seeds": plan.seeds,
            "raw": {t: plan.raw_dir(t) for t in plan.tasks}, "prepared": {t: plan.prepared_dir(t) for t in plan.tasks},
            "jobs": [{"task": t, "model": m, "seed": s, "metrics": plan.metrics_path(t, m, s)} for t, m, s in jobs],
            "reports": plan.report_files(),
        }
    except (PlanError, KeyError, FileNotFoundError) as e:
        return _fail(str(e.args[0] if isinstance(e, KeyError) else e))
    print(json.dumps(doc, indent=2))
    return 0
