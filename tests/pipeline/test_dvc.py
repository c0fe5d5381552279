"""DVC versions what Snakemake makes. The DVC files are generated from params.yaml and the plan (committed files equal
the generated ones; a stage's params determine its config; its code deps cover every module its work loads), and in
a Git copy of the project (a shrunken smoke suite): `snakemake` -> `dvc status` clean -> `dvc repro` runs nothing ->
`dvc push` -> fresh clone -> `dvc pull` -> `rotrnn evaluate` on a pulled checkpoint gives the run's recorded test
metric exactly; and `dvc repro` -> `snakemake -n` schedules nothing."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rotrnn.pipeline import dvcfile, load_plan
from rotrnn.pipeline.plan import Plan

from .conftest import BIN, GIT, ROOT, copy_project, edit_params, git_commit_all, run_tool, snakemake, tool_env

PARAMS = ROOT / "params.yaml"
CLEAN = "Data and pipelines are up to date."


def dvc(project, *args, **kw):
    return run_tool([BIN / "dvc", *args], project, **kw)


def rotrnn(project, *args, **kw):
    return run_tool([BIN / "rotrnn", *args], project, **kw)


# ---- the generated files -------------------------------------------------------------------------------------------
def test_committed_dvc_files_equal_generated():
    files = dvcfile.suite_files(str(PARAMS))
    params = yaml.safe_load(PARAMS.read_text())
    assert set(files) == {"dvc.yaml" if s == params["suite"] else f"workflow/dvc/{s}/dvc.yaml"
                          for s in params["suites"]}
    for where, plan in files.items():
        assert (ROOT / where).read_text() == dvcfile.render(plan), f"{where}: run `rotrnn pipeline dvc-yaml`"
    assert dvcfile.stale(str(PARAMS), ROOT) == []
    assert "DVC files up to date" in rotrnn(ROOT, "pipeline", "dvc-yaml", "--check").stdout


def test_check_names_a_stale_file_and_dvc_sees_one_suite(tmp_path):
    project = copy_project(tmp_path / "project")
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["suites"]["smoke"]["seeds"] = [0, 1, 2]
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    proc = rotrnn(project, "pipeline", "dvc-yaml", "--check", check=False)
    assert proc.returncode == 2
    assert "dvc.yaml: differs from what params.yaml and the plan generate (suite 'smoke')" in proc.stderr
    assert "run `rotrnn pipeline dvc-yaml`" in proc.stderr and "workflow/dvc/paper" not in proc.stderr
    # recording a run against a stale file is refused, naming the file
    refused = rotrnn(project, "pipeline", "dvc-commit", "--suite", "smoke", check=False)
    assert refused.returncode == 2 and "dvc.yaml: not what params.yaml and the plan generate" in refused.stderr

    rotrnn(project, "pipeline", "dvc-yaml")
    rotrnn(project, "pipeline", "dvc-yaml", "--check")
    git_commit_all(project)
    # DVC lists the default suite's stages only (the other suites' files are hidden by .dvcignore)
    stages = dvc(project, "stage", "list", "--name-only").stdout.split()
    s = params["suites"]["smoke"]
    assert stages == ([f"prepare-{t}" for t in s["tasks"]] + ["tracking"]
                      + [f"train-{t}-{m}-{n}" for t in s["tasks"] for m in s["models"] for n in s["seeds"]]
                      + ["report"])
    # an orphaned suite file is named too
    (project / "workflow/dvc/gone").mkdir()
    (project / "workflow/dvc/gone/dvc.yaml").write_text("stages: {}\n")
    proc = rotrnn(project, "pipeline", "dvc-yaml", "--check", check=False)
    assert proc.returncode == 2 and "workflow/dvc/gone/dvc.yaml: no such suite" in proc.stderr


def _copy_keys(src: dict, dst: dict, keys: list[str]) -> dict:
    for key in keys:
        parts = key.split(".")
        s, d = src, dst
        for part in parts[:-1]:
            s = s[part]
            if not isinstance(d.get(part), dict):
                d[part] = {}
            d = d[part]
        d[parts[-1]] = copy.deepcopy(s[parts[-1]])
    return dst


def _restrict(params: dict, keys: list[str]) -> dict:
    """params with only `keys` (dotted paths) under defaults, tasks and the suites' overrides and tasks."""
    out = {k: copy.deepcopy(v) for k, v in params.items() if k not in ("defaults", "tasks", "suites")}
    out.update(defaults={}, tasks={t: {} for t in params["tasks"]},
               suites={s: {**{k: v for k, v in b.items() if k not in ("overrides", "tasks")},
                           "tasks": {t: {} for t in b["tasks"]}} for s, b in params["suites"].items()})
    return _copy_keys(params, out, keys)


def _without_data(params: dict, keys: list[str]) -> dict:
    """params with every data section of the cascade removed except `keys`."""
    out = copy.deepcopy(params)
    levels = [out["defaults"], *out["tasks"].values(),
              *(m for t in out["tasks"].values() for m in (t.get("models") or {}).values()),
              *(s.get("overrides") or {} for s in out["suites"].values()),
              *(b or {} for s in out["suites"].values() for b in s["tasks"].values())]
    for level in levels:
        level.pop("data", None)
    return _copy_keys(params, out, keys)


@pytest.mark.parametrize("suite", ["smoke", "paper"])
def test_stage_params_determine_the_config(suite):
    """The params a training stage declares are the whole of what its config digest (Snakemake's params trigger)
    is computed from: params.yaml cut down to them resolves to the same digest; and the prepare stage's params
    give the same data block."""
    params = yaml.safe_load(PARAMS.read_text())
    plan = load_plan(PARAMS, suite)
    for task, model, seed in plan.jobs():
        keys = dvcfile.train_params(plan, task, model)
        cut = Plan(_restrict(params, keys), str(PARAMS), suite)
        assert cut.config_digest(task, model, seed) == plan.config_digest(task, model, seed), (task, model, keys)
    for task in plan.tasks:
        cut = Plan(_without_data(params, dvcfile.prepare_params(plan, task)), str(PARAMS), suite)
        assert cut.data(task) == plan.data(task) and cut.raw_kind(task) == plan.raw_kind(task)


def test_params_are_exact_and_tracking_is_not_one():
    """A stage lists only keys params.yaml has (DVC fails on a missing one) and no key of another task or model;
    the MLflow store is no training param (the digest leaves tracking out too)."""
    plan = load_plan(PARAMS, "paper")
    keys = dvcfile.train_params(plan, "cifar", "lru")
    assert "tasks.cifar.models.lru.train" in keys and "defaults.layers.lru" in keys
    assert not [k for k in keys if "rotrnn" in k.split(".") or "dlr" in k.split(".") or k.startswith("tracking")]
    for k in keys:
        assert dvcfile._get(plan.params, k) is not None, k
    digest = plan.config_digest("cifar", "lru", 0)
    moved = yaml.safe_load(PARAMS.read_text())
    moved["tracking"]["uri"] = "sqlite:////elsewhere/mlflow.db"
    assert Plan(moved, str(PARAMS), "paper").config_digest("cifar", "lru", 0) == digest


_LOADED = """
import json, sys
kind, task = sys.argv[1], sys.argv[2]
if kind != "report":
    from rotrnn.pipeline import stages
    from rotrnn.pipeline.plan import load_plan
    plan = load_plan("params.yaml", "smoke")
if kind == "prepare":
    if plan.raw_kind(task):
        stages.stage_raw(plan, task)
    stages.stage_prepare(plan, task)
elif kind == "tracking":
    stages.stage_tracking(plan)
elif kind == "train":
    assert stages.stage_train(plan, "cumsum", "lru", 0) == 0
elif kind == "report":
    from rotrnn.report.build import _report, register
    import argparse
    p = argparse.ArgumentParser(); sub = p.add_subparsers(); register(sub)
    args = p.parse_args(["report", "--suite", "smoke"])
    assert args.func(args) == 0
print(json.dumps(sorted(m.__file__ for n, m in sys.modules.items()
                        if (n == "rotrnn" or n.startswith("rotrnn.")) and getattr(m, "__file__", None))))
"""


@pytest.mark.slow
def test_code_deps_cover_every_module_a_stage_loads(tmp_path):
    """Run each kind of stage for real (a fixture task, a generated one, tracking, a short training job, the
    report) and check that every rotrnn module it loaded is one of the stage's DVC code deps."""
    project = copy_project(tmp_path / "project")
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    smoke = params["suites"]["smoke"]
    smoke["tasks"] = {"cifar": {}, "cumsum": smoke["tasks"]["cumsum"]}
    smoke["tasks"]["cumsum"]["train"] = {"epochs": 1}
    smoke["models"], smoke["seeds"] = ["lru"], [0]
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    plan = load_plan(path, "smoke")
    root = project.resolve()  # `python -c` in the copy imports the copy's rotrnn (its sources are this checkout's)
    for kind, task in (("prepare", "cifar"), ("prepare", "cumsum"), ("tracking", ""), ("train", ""),
                       ("report", "")):
        proc = subprocess.run([sys.executable, "-c", _LOADED, kind, task], cwd=project,
                              env=tool_env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        loaded = {Path(f).resolve() for f in json.loads(proc.stdout.strip().splitlines()[-1])}
        stage = {"prepare": dvcfile.prepare_stage(task), "tracking": "tracking",
                 "train": dvcfile.train_stage("cumsum", "lru", 0), "report": "report"}[kind]
        covered: set[Path] = set()
        for dep in dvcfile.stages(plan)[stage]["deps"]:
            p = root / dep
            covered |= set(p.rglob("*.py")) if p.is_dir() else {p}
        assert loaded - covered == set(), f"{kind}: loaded but not a dep: {sorted(loaded - covered)}"


# ---- what an edit makes stale -------------------------------------------------------------------------------------
def _recorded_smoke_state(tmp_path) -> Path:
    """A Git copy of the project whose smoke-suite stages are all recorded in dvc.lock (`rotrnn pipeline dvc-commit`,
    what Snakemake's last rule runs) over small stand-ins for their outputs: the DVC record of a finished smoke
    run, its code and params real, in seconds instead of the run's minutes. Which stages an edit stales depends
    on the deps DVC hashed, not on what the outputs hold."""
    project = copy_project(tmp_path / "project")
    git_commit_all(project)
    for name, stage in yaml.safe_load((project / "dvc.yaml").read_text())["stages"].items():
        for out in [*stage.get("outs", []), *stage.get("metrics", [])]:
            path = project / (out if isinstance(out, str) else next(iter(out)))
            if path.suffix:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({"stage": name}) + "\n")
            else:
                path.mkdir(parents=True, exist_ok=True)
                (path / "part.npy").write_text(name)
    rotrnn(project, "pipeline", "dvc-commit", "--suite", "smoke")
    assert dvc(project, "status").stdout.strip() == CLEAN
    return project


def _stale_after(project: Path, source: str) -> set[str]:
    """The stages `dvc status` reports after a comment is appended to one source file (restored afterwards)."""
    path = project / source
    text = path.read_text()
    path.write_text(text + "\n# an edit\n")
    try:
        return set(json.loads(dvc(project, "status", "--json").stdout))
    finally:
        path.write_text(text)


@pytest.mark.slow
def test_an_edit_stales_only_the_stages_whose_output_it_decides(tmp_path):
    """Editing a layer stales the training stages (and the report, which reads models), not the data; editing
    one task's preparation stales its prepare stage only (the training stages read the prepared data, unchanged
    until it is remade)."""
    project = _recorded_smoke_state(tmp_path)
    plan = load_plan(project / "params.yaml", "smoke")
    training = {dvcfile.train_stage(*job) for job in plan.jobs()}
    stale = _stale_after(project, "rotrnn/nn/rotrnn.py")
    assert training <= stale <= training | {"report"}, sorted(stale - training)
    assert _stale_after(project, "rotrnn/data/listops.py") == {dvcfile.prepare_stage("listops")}
    assert _stale_after(project, "rotrnn/data/synthetic.py") == {dvcfile.prepare_stage(t) for t in plan.tasks
                                                                 if plan.data(t).get("generate") == "synthetic"}
    assert dvc(project, "status").stdout.strip() == CLEAN


def test_remote_is_local_and_default():
    config = (ROOT / ".dvc/config").read_text()
    assert "remote = localstore" in config and "url = ../.dvc-storage" in config


# ---- the two front doors on one record -----------------------------------------------------------------------------
def _small_suite(params):
    """The smoke suite cut to two jobs (a fixture task and a generated one): both front doors then run a whole
    suite, the report stage included."""
    smoke = params["suites"]["smoke"]
    smoke["tasks"] = {"cifar": {}, "cumsum": smoke["tasks"]["cumsum"]}
    smoke["models"], smoke["seeds"] = ["lru"], [0]


def _small_project(tmp_path):
    project = copy_project(tmp_path / "project")
    edit_params(project, _small_suite)
    git_commit_all(project)
    return project


def _ran_stages(repro_output: str) -> list[str]:
    return [line for line in repro_output.splitlines() if line.startswith("Running stage")]


@pytest.mark.slow
def test_snakemake_then_dvc_status_push_clone_pull_evaluate(tmp_path):
    project = _small_project(tmp_path)
    snakemake(project, timeout=600)
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert set(lock) == {"prepare-cifar", "prepare-cumsum", "tracking", "train-cifar-lru-0", "train-cumsum-lru-0",
                         "report"}
    outs = {o["path"] for s in lock.values() for o in s.get("outs", [])}
    assert {"data/prepared/smoke/cifar", "runs/smoke/cifar/lru/seed0/checkpoints",
            "runs/smoke/cumsum/lru/seed0/metrics.json"} <= outs
    # the record is DVC's own: status clean, repro runs nothing, and Snakemake still has nothing to do
    assert dvc(project, "status").stdout.strip() == CLEAN
    repro = dvc(project, "repro").stdout
    assert _ran_stages(repro) == [] and CLEAN in repro
    assert "Nothing to be done" in snakemake(project, "-n").stdout

    # versioned: push, then a fresh clone gets data and checkpoints back
    git_commit_all(project, "run")
    dvc(project, "push")
    clone = tmp_path / "clone"
    run_tool([*GIT, "clone", "-q", str(project), str(clone)], tmp_path)
    assert not (clone / "runs").exists()
    # the default remote lives in the checkout (../.dvc-storage from .dvc/); point the clone at the original's
    dvc(clone, "remote", "modify", "--local", "localstore", "url", str(project / ".dvc-storage"))
    dvc(clone, "pull")
    assert dvc(clone, "status").stdout.strip() == CLEAN
    for task, key in (("cifar", "test/accuracy"), ("cumsum", "test/loss")):
        run = f"runs/smoke/{task}/lru/seed0"
        recorded = json.loads((clone / run / "metrics.json").read_text())
        assert recorded["status"] == "finished"
        evaluated = json.loads(rotrnn(clone, "evaluate", run, "--splits", "test").stdout)
        assert evaluated["epoch"] == recorded["best"]["epoch"]
        assert evaluated[key] == recorded["best"][key]  # exactly: the same weights on the same data


@pytest.mark.slow
def test_dvc_repro_then_snakemake_schedules_nothing(tmp_path):
    project = _small_project(tmp_path)
    repro = dvc(project, "repro", timeout=600).stdout
    assert len(_ran_stages(repro)) == 6
    assert dvc(project, "status").stdout.strip() == CLEAN
    out = snakemake(project, "-n").stdout
    assert "Nothing to be done" in out, out[-3000:]
