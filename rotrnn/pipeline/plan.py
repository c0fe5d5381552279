"""The plan both front doors share, without side effects: a suite's jobs, every path a stage reads and writes (the
paths a stage writes being those the next one reads, and `rotrnn train` writes), and what kind of data each task
needs. Snakemake (Snakefile, workflow/rules/*.smk) and DVC (dvc.yaml) build their graphs from it; the stages
(:mod:`rotrnn.pipeline.stages`) do the work.

A task's data block is `tasks.T.data` deep-merged with `suites.S.tasks.T.data` (the same cascade `rotrnn train`
resolves). Keys: `source` (the archive group for downloads: lra, imdb, cifar, speech35; default: the task name),
`generate` (listops, synthetic, multiscale or sines), the generator's arguments, and `seed`. A suite's task may
narrow the suite's models (`suites.S.tasks.T.models: [rotrnn]`) and give its own seeds (`seeds: [0]`, or more seeds
than the suite's list).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

from rotrnn.config import (DATA_MODES, ConfigError, load_params, prepared_path, resolve, run_path, suite_name,
                           suite_paths)

RAW_MARKER = ".rotrnn-raw.json"
# generator arguments a data block may carry, with the `rotrnn data generate` defaults they replace
LISTOPS_ARGS = {"n_train": 96_000, "n_val": 2_000, "n_test": 2_000, "min_length": 500, "max_length": 2000,
                "max_depth": 10, "max_args": 10}
SYNTHETIC_ARGS = {"task": None, "length": 4096, "n_train": 16_000, "n_val": 1_600, "n_test": 1_600,
                  "num_shifts": 8, "mem": 32, "dim": 4}
# the analysis suite's generators (rotrnn.data.multiscale, rotrnn.data.sines), written straight into the prepared
# format like `synthetic`: generate kind -> the arguments a data block may give, with their defaults
GENERATED_ARGS = {
    "multiscale": {"length": 1024, "kernel": "ema", "scales": [2, 32, 512], "n_train": 4000, "n_val": 400, "n_test": 400,
                   "score_from": None, "unit_variance": False},
    "sines": {"length": 512, "n_classes": 6, "f_min": 0.01, "f_max": 0.1, "components": 3, "noise": 0.3,
              "distractors": 0, "distractor_band": [0.25, 0.45], "factors": [2, 4], "n_train": 4000, "n_val": 500,
              "n_test": 500},
}
COMMON_KEYS = {"source", "generate", "seed"}
DVC_SUITES_DIR = "workflow/dvc"   # the DVC files of the suites other than the default one
# resolved-config sections that do not change what a run computes (see Plan.config_digest)
DIGEST_EXCLUDES = ("tracking", "paths")
# what `rotrnn report` writes into a suite's paths.reports, besides figures/
REPORT_NAMES = ("lra.md", "lra.tex", "lra.csv", "speech_commands.md", "speech_commands.tex", "speech_commands.csv",
                "synthetic.md", "synthetic.csv", "runs.csv", "provenance.json")


class PlanError(ConfigError):
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
        """Every seed some job of the suite uses: the suite's `seeds`, then any more that a task lists."""
        seeds = [int(s) for s in self.block.get("seeds") or []]
        for block in (self.block.get("tasks") or {}).values():
            only = block.get("seeds") if isinstance(block, dict) else None
            seeds += [int(s) for s in only or [] if int(s) not in seeds]
        return seeds

    @property
    def data_mode(self) -> str:
        return self.block.get("data")

    def _narrowed(self, task: str, key: str, values: list) -> list:
        block = (self.block.get("tasks") or {}).get(task)
        only = block.get(key) if isinstance(block, dict) else None
        return [v for v in values if v in only] if isinstance(only, list) else values

    def task_models(self, task: str) -> list[str]:
        """The suite's models, or the subset a task of the suite lists (`suites.S.tasks.T.models: [rotrnn]`)."""
        return self._narrowed(task, "models", self.models)

    def task_seeds(self, task: str) -> list[int]:
        """The suite's seeds, or the ones a task of the suite lists (`suites.S.tasks.T.seeds: [0]`: fewer, or more
        for an experiment whose verdict needs more seeds than the suite's other tasks)."""
        block = (self.block.get("tasks") or {}).get(task)
        only = block.get("seeds") if isinstance(block, dict) else None
        return [int(s) for s in only] if isinstance(only, list) else [int(s) for s in self.block.get("seeds") or []]

    def jobs(self) -> list[tuple[str, str, int]]:
        return [(t, m, s) for t in self.tasks for m in self.task_models(t) for s in self.task_seeds(t)]

    def paths(self) -> dict[str, str]:
        return suite_paths(self.params, self.suite)

    # ---- data ---------------------------------------------------------------------------------------------------
    def data(self, task: str) -> dict[str, Any]:
        """The task's resolved data block (the view `rotrnn train` logs), checked."""
        if task not in self.tasks:
            raise PlanError(f"{self.params_path}: suite {self.suite!r} has no task {task!r} "
                            f"(suites.{self.suite}.tasks: {', '.join(self.tasks)})")
        models, seeds = self.task_models(task) or self.models, self.task_seeds(task) or self.seeds
        block = resolve(self.params, self.suite, task, models[0], seeds[0])["data"] or {}
        where = f"{self.params_path}: tasks.{task}.data + suites.{self.suite}.tasks.{task}.data"
        gen = block.get("generate")
        allowed = COMMON_KEYS | (LISTOPS_ARGS.keys() if gen == "listops" else
                                 SYNTHETIC_ARGS.keys() if gen == "synthetic" else
                                 GENERATED_ARGS[gen].keys() if gen in GENERATED_ARGS else set())
        if gen not in (None, "listops", "synthetic", *GENERATED_ARGS):
            raise PlanError(f"{where}: generate must be one of listops, synthetic, {', '.join(GENERATED_ARGS)}; "
                            f"got {gen!r}")
        unknown = sorted(set(block) - allowed)
        if unknown:
            raise PlanError(f"{where}: unknown key(s) {unknown} (allowed here: {sorted(allowed)})")
        if gen == "synthetic" and not block.get("task"):
            raise PlanError(f"{where}: generate: synthetic needs `task:` (e.g. cumsum)")
        if gen is None and task not in _task_registry():
            raise PlanError(f"{where}: {task!r} is neither a dataset task ({', '.join(_task_registry())}) nor "
                            "generated (generate: listops | synthetic | multiscale | sines)")
        return block

    def data_module(self, task: str) -> str:
        """The module whose code makes the task's data: its generator (`generate: listops | synthetic | multiscale
        | sines`, rotrnn.data.<generate>) or, for a dataset task, the registry's module (its fixture writer and
        preparation). The stages import it by this name, and its import closure is the task's own part of its
        prepare stage's DVC code deps (rotrnn.pipeline.dvcfile), so editing one task's module stales that task."""
        gen = self.data(task).get("generate")
        if gen is not None:
            return f"rotrnn.data.{gen}"
        from rotrnn.data.tasks import TASKS

        return TASKS[task].module

    def raw_kind(self, task: str) -> str | None:
        """'generate' | 'fixture' | 'download' | None (generated straight into the prepared format)."""
        block = self.data(task)
        if block.get("generate") in ("synthetic", *GENERATED_ARGS):
            return None
        # a generated ListOps under another name (the analysis suite's one-layer listops1) is generated in any mode
        if block.get("generate") == "listops" and (self.data_mode != "download" or task != "listops"):
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
        return prepared_path(self.paths(), self.suite, task)

    # ---- training and reports -----------------------------------------------------------------------------------
    def run_dir(self, task: str, model: str, seed: int | str) -> str:
        return run_path(self.paths(), self.suite, task, model, seed)

    def metrics_path(self, task: str, model: str, seed: int | str) -> str:
        return f"{self.run_dir(task, model, seed)}/metrics.json"

    def config(self, task: str, model: str, seed: int) -> dict[str, Any]:
        return resolve(self.params, self.suite, task, model, int(seed), source=self.params_path)

    def config_digest(self, task: str, model: str, seed: int) -> str:
        """sha256 of what a run's result depends on in its resolved config: Snakemake reruns a job when it changes
        (params trigger). `tracking` and `paths` are left out: where MLflow records a run, or where the folders live
        (the paths are the jobs' outputs, which Snakemake follows anyway), changes no number a run produces, and
        the DVC stages (rotrnn/pipeline/dvcfile.py) declare exactly the params.yaml keys this digest covers."""
        config = {k: v for k, v in self.config(task, model, seed).items() if k not in DIGEST_EXCLUDES}
        text = json.dumps(config, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def reports_dir(self) -> str:
        return str(self.paths()["reports"])

    def report_files(self) -> list[str]:
        return [f"{self.reports_dir}/{name}" for name in REPORT_NAMES]

    def figures_dir(self) -> str:
        return f"{self.reports_dir}/figures"

    def tracking_marker(self) -> str:
        """Written once the suite's MLflow experiment exists; it names only the suite and the experiment (not the
        store URI or the experiment id), so that the training stages that depend on it do not change with the
        store they log to."""
        return f"{self.paths()['runs']}/{self.suite}/.tracking.json"

    # ---- DVC --------------------------------------------------------------------------------------------------------
    @property
    def is_default(self) -> bool:
        return self.suite == self.params.get("suite")

    def dvc_file(self) -> str:
        """The suite's DVC file: the root dvc.yaml for params.yaml's `suite:`, the one suite DVC versions in a
        checkout (DVC cannot pick a suite through a params key, and a file of stages that never ran here would make
        `dvc status` and `dvc pull` report all of them); workflow/dvc/<suite>/dvc.yaml, hidden from DVC by
        .dvcignore, for every other suite."""
        return "dvc.yaml" if self.is_default else f"{DVC_SUITES_DIR}/{self.suite}/dvc.yaml"

    def dvc_lock(self) -> str:
        return self.dvc_file()[: -len(".yaml")] + ".lock"


def _task_registry() -> list[str]:
    from rotrnn.data.tasks import TASKS

    return list(TASKS)


def load_plan(params: str | os.PathLike = "params.yaml", suite: str | None = None) -> Plan:
    """Read and validate params.yaml, pick `suite` (default: its `suite:` key) and check every job of it: each job's
    resolved config and each task's data block. So a Snakefile or DVC stage that loads the plan queues no job with
    a bad config."""
    p = load_params(params)
    plan = Plan(p, str(params), suite_name(p, suite, str(params)))
    for task in plan.tasks:
        plan.raw_kind(task)  # checks the data block
    for job in plan.jobs():
        plan.config(*job)
    return plan
