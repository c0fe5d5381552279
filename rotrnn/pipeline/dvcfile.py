"""A suite's DVC file, rendered from params.yaml and the plan: the one source of the DVC stages, so that DVC hashes
exactly what Snakemake's rules depend on and the two front doors agree on what is up to date.

Every stage calls the same `rotrnn` command as the Snakemake rule of the same name and declares:

* deps: its data inputs (prepared data, the tracking marker, the runs' metrics) and the source code that decides its
  output: the import closure (static, by :mod:`ast`) of the functions that do the stage's work, within the `rotrnn`
  package, written as folders where a whole folder is in it and as files otherwise. A prepare stage's closure is
  the shared data-stage code plus its own task's module (:meth:`Plan.data_module`, which the stage imports by
  name), so editing one task's preparation stales that task only; the configuration imports no model code
  (rotrnn.choices), so editing a layer stales the training stages only. The command-line layer and this module are
  not in any closure, so editing them does not make results stale;
* params: exactly the params.yaml keys the stage's resolved config (or data block) is built from (the keys
  :meth:`Plan.config_digest`, Snakemake's params trigger, covers), only those present in the file;
* outs: what the Snakemake rule writes, plus the checkpoint folders, which DVC versions but Snakemake must not
  declare (it deletes declared outputs before a retry, and with them the resume point).

Stage names: ``prepare-<task>``, ``tracking``, ``train-<task>-<model>-<seed>``, ``report``; a suite with
``experiments:`` (the analysis suite) has ``analysis-<experiment>`` and ``analysis-report`` instead of ``report``.
"""
from __future__ import annotations

import ast
import copy
import functools
import shlex
from pathlib import Path
from typing import Any

import yaml

import rotrnn
from rotrnn.analysis.common import has_experiments
from rotrnn.pipeline.plan import Plan

PACKAGE_DIR = Path(rotrnn.__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent
COMMAND = "rotrnn pipeline dvc-yaml"

# where each stage's work is done: (module, functions) whose code and imports decide the stage's output; None: the
# whole module (every function in it may run)
STAGE_CODE: dict[str, tuple[tuple[str, tuple[str, ...] | None], ...]] = {
    "prepare": (("rotrnn.pipeline.stages", ("stage_raw", "stage_prepare")),),
    "tracking": (("rotrnn.pipeline.stages", ("stage_tracking",)),),
    "train": (("rotrnn.pipeline.stages", ("stage_train",)),),
    "report": (("rotrnn.report.build", None),),
    # the analysis suite's experiments (`rotrnn analysis <name>`) and its report
    "analysis-norms": (("rotrnn.analysis.norms", None),),
    "analysis-heads": (("rotrnn.analysis.heads", None),),
    "analysis-rescale": (("rotrnn.analysis.rescale", None),),
    "analysis-synthetic": (("rotrnn.analysis.predictions", None),),
    "analysis-cost": (("rotrnn.analysis.cost", None),),
    "analysis-report": (("rotrnn.analysis.report", None),),
}
LEVEL_SECTIONS = ("train", "net", "data")  # the sections of a cascade level besides layers.<model>


# ---- code dependencies ---------------------------------------------------------------------------------------------
def _module_file(name: str) -> Path | None:
    """rotrnn.a.b -> rotrnn/a/b.py or rotrnn/a/b/__init__.py (None: not a module of the package)."""
    parts = name.split(".")
    if parts[0] != "rotrnn":
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imported(nodes: list[ast.AST], module: str, is_package: bool) -> set[str]:
    """Module names the nodes import (absolute; for `from X import y` both X and X.y, y may be a submodule). A module
    imported by a name computed at run time (the task registry's, a generator's) is not seen: the stages that do so
    add it to their entries (prepare_deps)."""
    out: set[str] = set()
    stack = list(nodes)
    while stack:
        node = stack.pop()
        if _is_type_checking(node):
            continue  # never runs
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
        stack.extend(ast.iter_child_nodes(node))
    return out


@functools.lru_cache(maxsize=None)
def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _with_parents(names: set[str]) -> set[str]:
    """Importing rotrnn.a.b runs rotrnn/__init__.py and rotrnn/a/__init__.py first."""
    out = set(names)
    for name in names:
        parts = name.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return out


def code_closure(entries: tuple[tuple[str, tuple[str, ...] | None], ...]) -> set[Path]:
    """The package files whose code runs when the entry functions run: their module's top level and their own
    bodies (and the packages above it), then, transitively, every module they import, all of it (which of its
    functions run is not known; a module reached that way is read whole, an entry module too)."""
    todo: set[str] = set()
    files: set[Path] = set()
    for module, functions in entries:
        path = _module_file(module)
        if path is None:
            raise ValueError(f"{module}: not a module of the rotrnn package")
        tree = _parse(path)
        is_package = path.name == "__init__.py"
        nodes: list[ast.AST] = [tree]
        if functions is not None:
            defs = (ast.FunctionDef, ast.AsyncFunctionDef)
            bodies = [n for n in tree.body if isinstance(n, defs) and n.name in functions]
            missing = set(functions) - {n.name for n in bodies}
            if missing:
                raise ValueError(f"{module}: no function(s) {sorted(missing)}")
            nodes = [n for n in tree.body if not isinstance(n, defs)] + bodies
        files.add(path)
        todo |= _with_parents(_imported(nodes, module, is_package) | {module}) - {module}
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_file(name)
        if path is None:
            continue
        files.add(path)
        todo |= _with_parents(_imported([_parse(path)], name, path.name == "__init__.py")) - seen
    return files


def _sources(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*.py") if "__pycache__" not in p.parts}


def compress(files: set[Path], folder: Path = PACKAGE_DIR) -> list[str]:
    """Files -> the shortest list of project-relative paths: a folder where every .py file under it is in the set,
    the file otherwise."""
    if _sources(folder) <= files:
        return [folder.relative_to(PROJECT_DIR).as_posix()]
    out: list[str] = []
    for child in sorted(folder.iterdir()):
        if child.is_dir() and child.name != "__pycache__":
            if _sources(child) & files:
                out += compress(files, child)
        elif child in files:
            out.append(child.relative_to(PROJECT_DIR).as_posix())
    return out


@functools.lru_cache(maxsize=None)
def _deps(entries: tuple[tuple[str, tuple[str, ...] | None], ...]) -> tuple[str, ...]:
    return tuple(compress(code_closure(entries)))


def code_deps(stage: str) -> tuple[str, ...]:
    return _deps(STAGE_CODE[stage])


def prepare_deps(plan: Plan, task: str) -> tuple[str, ...]:
    """A prepare stage's code: the raw and prepare stages' shared code and the task's own module, whole."""
    return _deps((*STAGE_CODE["prepare"], (plan.data_module(task), None)))


# ---- params --------------------------------------------------------------------------------------------------------
def _get(params: dict[str, Any], dotted: str) -> Any:
    node: Any = params
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _level_keys(params: dict[str, Any], prefix: str, model: str | None, sections=LEVEL_SECTIONS) -> list[str]:
    """The keys of one cascade level that feed a job's config: its sections and layers.<model> (what
    rotrnn.config.resolve reads from a level; a null value is skipped there and here)."""
    block = _get(params, prefix)
    if not isinstance(block, dict):
        return []
    keys = [f"{prefix}.{s}" for s in sections if block.get(s) is not None]
    if model is not None and isinstance(block.get("layers"), dict) and block["layers"].get(model) is not None:
        keys.append(f"{prefix}.layers.{model}")
    return keys


def train_params(plan: Plan, task: str, model: str) -> list[str]:
    """The params.yaml keys a job's config (less tracking and paths, see Plan.config_digest) is resolved from."""
    p, s = plan.params, plan.suite
    return [*_level_keys(p, "defaults", model), *_level_keys(p, f"tasks.{task}", model),
            *_level_keys(p, f"tasks.{task}.models.{model}", model), *_level_keys(p, f"suites.{s}.overrides", model),
            *_level_keys(p, f"suites.{s}.tasks.{task}", model)]


def prepare_params(plan: Plan, task: str) -> list[str]:
    """The keys a task's data block (Plan.data: the cascade's data sections, resolved with the suite's first model)
    and its raw kind (suites.S.data) come from."""
    p, s, m = plan.params, plan.suite, plan.models[0]
    keys = [f"suites.{s}.data"]
    for prefix in ("defaults", f"tasks.{task}", f"tasks.{task}.models.{m}", f"suites.{s}.overrides",
                   f"suites.{s}.tasks.{task}"):
        keys += _level_keys(p, prefix, None, ("data",))
    return keys


def tracking_params(plan: Plan) -> list[str]:
    return ["tracking"] + ([f"suites.{plan.suite}.tracking"] if _get(plan.params, f"suites.{plan.suite}.tracking")
                           is not None else [])


# ---- the file ------------------------------------------------------------------------------------------------------
def command(*words: Any) -> str:
    """A stage's `cmd:` line, every word shell-quoted (DVC runs it through the shell): the names in it are checked
    when params.yaml loads (rotrnn.config.NAME_PATTERN), and a name that got past that still runs nothing."""
    return shlex.join(str(w) for w in words)


def train_stage(task: str, model: str, seed: int) -> str:
    return f"train-{task}-{model}-{seed}"


def prepare_stage(task: str) -> str:
    return f"prepare-{task}"


def stages(plan: Plan) -> dict[str, dict[str, Any]]:
    """Stage name -> definition, in the order DVC lists them."""
    s = plan.suite
    out: dict[str, dict[str, Any]] = {}
    for task in plan.tasks:
        out[prepare_stage(task)] = {
            "cmd": command("rotrnn", "stage", "prepare", "--suite", s, "--task", task, "--fetch"),
            "deps": list(prepare_deps(plan, task)),
            "params": prepare_params(plan, task),
            "outs": [plan.prepared_dir(task)],
        }
    out["tracking"] = {
        "cmd": command("rotrnn", "stage", "tracking", "--suite", s),
        "deps": list(code_deps("tracking")),
        "params": tracking_params(plan),
        "outs": [plan.tracking_marker()],
    }
    for task, model, seed in plan.jobs():
        run = plan.run_dir(task, model, seed)
        out[train_stage(task, model, seed)] = {
            "cmd": command("rotrnn", "stage", "train", "--suite", s, "--task", task, "--model", model,
                           "--seed", seed),
            "deps": [plan.prepared_dir(task), plan.tracking_marker(), *code_deps("train")],
            "params": train_params(plan, task, model),
            "outs": [f"{run}/checkpoints"],
            "metrics": [plan.metrics_path(task, model, seed)],
        }
    if has_experiments(plan.params, s):
        out.update(analysis_stages(plan))
        return out
    out["report"] = {
        "cmd": command("rotrnn", "report", "--suite", s),
        "deps": [*(plan.metrics_path(*job) for job in plan.jobs()), *code_deps("report")],
        "params": [f"suites.{s}.models", f"suites.{s}.seeds"],
        # in Git (reports/ is part of the repository), not in the DVC cache
        "outs": [{path: {"cache": False}} for path in [*plan.report_files(), plan.figures_dir()]],
    }
    return out


def analysis_stages(plan: Plan) -> dict[str, dict[str, Any]]:
    """One stage per experiment (the finished runs of its tasks in, its result JSON out: the Snakemake rule
    `analysis`) and the report (rule `analysis_report`)."""
    from rotrnn.analysis.common import EXPERIMENTS, experiment_tasks, report_targets, result_path

    s, out = plan.suite, {}
    for name in EXPERIMENTS:
        tasks = set(experiment_tasks(plan.params, s, name))
        out[f"analysis-{name}"] = {
            "cmd": command("rotrnn", "analysis", name, "--suite", s),
            "deps": [*(plan.metrics_path(*job) for job in plan.jobs() if job[0] in tasks), plan.tracking_marker(),
                     *code_deps(f"analysis-{name}")],
            "params": [f"suites.{s}.experiments.{name}"],
            "outs": [{str(result_path(plan.params, s, name)): {"cache": False}}],
        }
    out["analysis-report"] = {
        "cmd": command("rotrnn", "analysis", "report", "--suite", s),
        "deps": [*(str(result_path(plan.params, s, name)) for name in EXPERIMENTS), *code_deps("analysis-report")],
        # in Git (reports/ is part of the repository), not in the DVC cache
        "outs": [{path: {"cache": False}} for path in [*report_targets(plan.params, s), f"{plan.reports_dir}/figures"]],
    }
    return out


def render(plan: Plan) -> str:
    """The suite's dvc.yaml, byte for byte what `rotrnn pipeline dvc-yaml` writes."""
    where = plan.dvc_file()
    depth = len(Path(where).parts) - 1
    body = stages(plan)
    if depth:  # every stage runs in the project root, where params.yaml and the paths above are
        body = {name: {"wdir": "/".join([".."] * depth), **stage} for name, stage in body.items()}
    if depth == 0:
        where_text = [f"# The DVC stages of suite `{plan.suite}` (params.yaml's `suite:`, the suite DVC versions here), generated",
                      f"# by `{COMMAND}` from params.yaml and the plan (rotrnn/pipeline/plan.py, dvcfile.py)."]
    else:
        where_text = [f"# The DVC stages of suite `{plan.suite}`, generated by `{COMMAND}` from params.yaml and the plan",
                      "# (rotrnn/pipeline/plan.py, dvcfile.py). Hidden from DVC (.dvcignore) while params.yaml's `suite:`",
                      f"# names another suite; `suite: {plan.suite}` and `{COMMAND}` make them the root dvc.yaml's."]
    header = where_text + [
        "# Do not edit: change params.yaml or the code and run the command again (tests/pipeline/test_dvc.py fails",
        "# while a committed file differs). `dvc repro` runs the stages; `snakemake` records them in dvc.lock when",
        "# it has made their outputs (rule dvc_commit). Each stage calls the `rotrnn` command of the Snakemake rule",
        "# of the same name; deps list the source code that decides its output, params the params.yaml keys its",
        "# config is resolved from.",
    ]
    text = yaml.safe_dump({"stages": body}, sort_keys=False, width=118, default_flow_style=None)
    return "\n".join(header) + "\n" + text


def suite_files(params_path: str = "params.yaml") -> dict[str, Plan]:
    """DVC file -> plan, for every suite in params.yaml."""
    from rotrnn.config import load_params
    from rotrnn.pipeline.plan import load_plan

    params = load_params(params_path)
    plans = [load_plan(params_path, s) for s in params["suites"]]
    return {plan.dvc_file(): plan for plan in plans}


def stale(params_path: str = "params.yaml", root: Path | str = ".") -> list[str]:
    """Why the DVC files in `root` are not what the command generates: one line per differing, missing or orphaned
    file (a workflow/dvc/<suite>/dvc.yaml whose suite is no longer in params.yaml or is now the default)."""
    from rotrnn.pipeline.plan import DVC_SUITES_DIR

    root = Path(root)
    problems = []
    expected = suite_files(params_path)
    for where, plan in expected.items():
        path = root / where
        if not path.is_file():
            problems.append(f"{where}: missing (suite {plan.suite!r})")
        elif path.read_text() != render(plan):
            problems.append(f"{where}: differs from what params.yaml and the plan generate (suite {plan.suite!r})")
    for path in sorted((root / DVC_SUITES_DIR).glob("*/dvc.yaml")):
        where = path.relative_to(root).as_posix()
        if where not in expected:
            problems.append(f"{where}: no such suite in {params_path} (or it is the default suite, whose stages "
                            "are in dvc.yaml); remove it")
    return problems


# ---- recording what Snakemake made ---------------------------------------------------------------------------------
def commit(plan: Plan, tasks: list[str], models: list[str], seeds: list[int]) -> list[str]:
    """`dvc commit` the suite's stages of a Snakemake run of (tasks × models × seeds): the prepare stages of its
    tasks, the tracking stage, its training stages, and the report stage when every job of the suite has its
    metrics (the DVC report stage covers the whole suite). Their deps and outs must exist (Snakemake made them);
    DVC then records their hashes and params in the suite's dvc.lock and caches the data and checkpoints, so that
    `dvc status` is clean, `dvc repro` reruns none of them and `dvc push` sends them. Returns the stage names.

    What `dvc commit --force STAGE...` does, through DVC's API in this process with the DVC file and params.yaml
    read once (:func:`_record`): the command collects each named target separately, reparsing dvc.yaml, params.yaml
    and dvc.lock and rewriting dvc.lock for each, which took 5.4 of 13.3 minutes of the smoke suite's pipeline."""
    from rotrnn.errors import UserError

    where = Path(plan.dvc_file())
    if not plan.is_default:
        raise UserError(f"suite {plan.suite!r}: DVC versions the suite named by {plan.params_path}'s `suite:` "
                        f"({plan.params.get('suite')}), whose stages are dvc.yaml; to version this one, set "
                        f"`suite: {plan.suite}` there and run `{COMMAND}`")
    if not where.is_file() or where.read_text() != render(plan):
        raise UserError(f"{where}: not what params.yaml and the plan generate; run `{COMMAND}` (and commit the "
                        "file) before recording runs in it")
    if Path(plan.params_path).resolve() != Path("params.yaml").resolve():
        raise UserError(f"--params {plan.params_path}: the DVC stages read the project's params.yaml; only runs "
                        "made from it can be recorded")
    chosen = [(t, m, s) for t, m, s in plan.jobs() if t in tasks and m in models and s in seeds]
    names = [prepare_stage(t) for t in tasks] + ["tracking"] + [train_stage(*job) for job in chosen]
    if has_experiments(plan.params, plan.suite):  # the experiments and the report that Snakemake made
        names += [n for n, stage in analysis_stages(plan).items()
                  if all(Path(next(iter(o))).exists() for o in stage["outs"])]
    elif all(Path(plan.metrics_path(*job)).exists() for job in plan.jobs()):
        names.append("report")
    defined = stages(plan)
    missing = []
    for name in names:
        stage = defined[name]
        for path in [*stage["deps"], *stage.get("metrics", []),
                     *(o if isinstance(o, str) else next(iter(o)) for o in stage["outs"])]:
            if not Path(path).exists():
                missing.append(f"{path} ({name})")
    if missing:
        raise UserError(f"cannot record {where}'s stages, missing: {', '.join(missing[:5])}"
                        + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    _record(where, names)
    return names


def _record(where: Path, names: list[str]) -> None:
    """Save (hash deps and outs, params) and commit (cache outs, the run cache) the named stages of one DVC file and
    write its lock once: DVC's own `commit` (dvc/repo/commit.py) with one collection for all targets. DVC reads
    params.yaml once per params dependency and stage (three parses a stage, ~0.3 s each); it is not changed
    while this runs, so each parse is served from one read here (deep copies, as DVC may keep what it gets)."""
    from unittest import mock

    from dvc.dependency import param
    from dvc.dvcfile import load_file
    from dvc.exceptions import DvcException
    from dvc.repo import Repo, lock_repo

    from rotrnn.errors import UserError

    parsed: dict[tuple[str, str], Any] = {}
    load_path = param.load_path

    def load_once(path, fs, **kw):
        key = (str(path), repr(sorted(kw.items())))
        if key not in parsed:
            parsed[key] = load_path(path, fs, **kw)
        return copy.deepcopy(parsed[key])

    try:
        with Repo(".") as repo, lock_repo(repo), mock.patch.object(param, "load_path", load_once):
            dvcfile = load_file(repo, str(where))
            stages = [dvcfile.stages[name] for name in names]
            for stage in stages:
                stage.save()
                stage.commit()
            dvcfile.dump_stages(stages, update_pipeline=False)
    except DvcException as e:
        raise UserError(f"dvc commit of {where} failed: {e}") from e
