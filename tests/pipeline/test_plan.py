"""`rotrnn stage` and the plan both front doors share: job lists, the paths a stage writes being the paths the next
one reads (and `rotrnn train` writes), raw kinds per suite, and clear errors for bad params."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from rotrnn.config import ConfigError
from rotrnn.pipeline import Plan, PlanError, load_plan
from rotrnn.config import data_dir, run_dir

from .conftest import ROOT

PARAMS = ROOT / "params.yaml"


def test_registered_in_main_cli():
    from rotrnn.cli import COMMAND_MODULES

    assert "rotrnn.pipeline.cli" in COMMAND_MODULES


@pytest.mark.parametrize("suite", ["smoke", "paper"])
def test_jobs_are_the_product_of_tasks_models_seeds(suite):
    plan = load_plan(PARAMS, suite)
    block = yaml.safe_load(PARAMS.read_text())["suites"][suite]
    assert plan.jobs() == [(t, m, s) for t in block["tasks"] for m in block["models"] for s in block["seeds"]]
    assert len(plan.jobs()) == len(block["tasks"]) * len(block["models"]) * len(block["seeds"])


@pytest.mark.parametrize("suite", ["smoke", "paper"])
def test_stage_paths_are_where_rotrnn_train_reads_and_writes(suite):
    plan = load_plan(PARAMS, suite)
    for task, model, seed in plan.jobs()[:: max(1, len(plan.jobs()) // 12)]:
        config = plan.config(task, model, seed)
        assert plan.prepared_dir(task) == str(data_dir(config))
        assert plan.run_dir(task, model, seed) == str(run_dir(config))
        assert plan.metrics_path(task, model, seed) == f"{run_dir(config)}/metrics.json"


def test_smoke_raw_kinds():
    plan = load_plan(PARAMS, "smoke")
    kinds = {t: plan.raw_kind(t) for t in plan.tasks}
    assert kinds["listops"] == "generate"
    assert kinds["cumsum"] is None and kinds["shift"] is None  # generated straight into the prepared format
    assert {kinds[t] for t in ("imdb", "aan", "cifar", "pathfinder", "pathx", "speech35")} == {"fixture"}
    assert plan.raw_dir("cifar") == "data/raw/smoke/cifar"


def test_paper_downloads_lra_once_for_its_four_tasks():
    plan = load_plan(PARAMS, "paper")
    assert {t: plan.raw_kind(t) for t in ("listops", "aan", "pathfinder", "pathx")} == dict.fromkeys(
        ("listops", "aan", "pathfinder", "pathx"), "download")
    assert {plan.raw_dir(t) for t in ("listops", "aan", "pathfinder", "pathx")} == {"data/raw/lra"}
    assert sorted(plan.raw_targets()) == ["cifar", "imdb", "lra", "speech35"]
    assert plan.raw_kind("cumsum") is None


def test_config_digest_changes_only_with_the_jobs_config(tmp_path):
    params = yaml.safe_load(PARAMS.read_text())
    plan = Plan(params, str(PARAMS), "smoke")
    before = {j: plan.config_digest(*j) for j in [("cumsum", "lru", 0), ("cifar", "lru", 0)]}
    params["suites"]["smoke"]["tasks"]["cumsum"] = {**params["suites"]["smoke"]["tasks"]["cumsum"],
                                                    "train": {"epochs": 5}}
    after = {j: Plan(params, str(PARAMS), "smoke").config_digest(*j) for j in before}
    assert after[("cumsum", "lru", 0)] != before[("cumsum", "lru", 0)]
    assert after[("cifar", "lru", 0)] == before[("cifar", "lru", 0)]


def _params_with(tmp_path, edit):
    params = yaml.safe_load(PARAMS.read_text())
    edit(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_unknown_suite_names_file_and_suites(tmp_path):
    with pytest.raises(ConfigError, match=r"params\.yaml: unknown suite 'nope'; \(valid: smoke, paper, analysis\)"):
        load_plan(PARAMS, "nope")


def test_unknown_data_key_is_named_with_its_place(tmp_path):
    path = _params_with(tmp_path, lambda p: p["suites"]["smoke"]["tasks"]["cumsum"]["data"].update(lenght=8))
    with pytest.raises(ConfigError, match=r"suites\.smoke\.tasks\.cumsum\.data\.lenght: unknown key; did you mean "
                                          r"`length`"):
        load_plan(path, "smoke")
    # a key of the schema that the task's generator does not take
    path = _params_with(tmp_path, lambda p: p["suites"]["smoke"]["tasks"]["cumsum"]["data"].update(max_depth=8))
    with pytest.raises(PlanError, match=r"tasks\.cumsum\.data \+ suites\.smoke\.tasks\.cumsum\.data: unknown "
                                        r"key\(s\) \['max_depth'\]"):
        load_plan(path, "smoke")


def test_bad_data_mode_and_empty_seeds(tmp_path):
    path = _params_with(tmp_path, lambda p: p["suites"]["smoke"].update(data="fixture"))
    with pytest.raises(ConfigError, match=r"suites\.smoke\.data: 'fixture' \(str\) is not one of fixtures, download"):
        load_plan(path, "smoke")
    path = _params_with(tmp_path, lambda p: p["suites"]["paper"].update(seeds=[]))
    with pytest.raises(ConfigError, match=r"suites\.paper: needs a non-empty `seeds`"):
        load_plan(path, "paper")


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "rotrnn.cli", "stage", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_stage_jobs_cli(tmp_path):
    out = _cli("jobs", "--params", str(PARAMS), "--suite", "smoke", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("\n")[:-1]
    assert lines[0] == "listops rotrnn 0" and len(lines) == len(load_plan(PARAMS, "smoke").jobs())
    doc = json.loads(_cli("jobs", "--params", str(PARAMS), "--suite", "paper", "--format", "json",
                          cwd=tmp_path).stdout)
    assert doc["raw"]["aan"] == "data/raw/lra" and doc["raw"]["cumsum"] is None
    assert doc["jobs"][0]["metrics"] == "runs/paper/listops/rotrnn/seed0/metrics.json"
    assert "reports/lra.md" in doc["reports"]


def test_stage_errors_exit_2_with_message(tmp_path):
    out = _cli("raw", "--params", str(PARAMS), "--suite", "smoke", "--task", "cumsum", cwd=tmp_path)
    assert out.returncode == 2
    assert "smoke/cumsum is generated at the prepare stage; it has no raw stage" in out.stderr
    out = _cli("prepare", "--params", str(PARAMS), "--suite", "smoke", "--task", "cifar", cwd=tmp_path)
    assert out.returncode == 2
    assert "data/raw/smoke/cifar/.rotrnn-raw.json is missing: run `rotrnn stage raw --suite smoke --task cifar`" \
        in out.stderr
    out = _cli("train", "--params", str(PARAMS), "--suite", "smoke", "--task", "cifar", "--model", "lru",
               "--seed", "7", cwd=tmp_path)
    assert out.returncode == 2 and "cifar/lru/seed7 is not a job of suite 'smoke'" in out.stderr
    assert not (tmp_path / "runs").exists()


def test_raw_and_prepare_stages_write_complete_trees(tmp_path):
    """fixture raw tree + marker, then prepared data that `rotrnn train` can load; the generated synthetic task."""
    from rotrnn.data import load_dataset

    for args in (("raw", "--task", "imdb"), ("prepare", "--task", "imdb"), ("prepare", "--task", "shift")):
        out = _cli(*args, "--params", str(PARAMS), "--suite", "smoke", cwd=tmp_path)
        assert out.returncode == 0, out.stderr
    marker = json.loads((tmp_path / "data/raw/smoke/imdb/.rotrnn-raw.json").read_text())
    assert marker == {"kind": "fixture", "seed": 0, "suite": "smoke", "task": "imdb"}
    assert load_dataset(tmp_path / "data/prepared/smoke/imdb", "train").meta["task"] == "imdb"
    shift = load_dataset(tmp_path / "data/prepared/smoke/shift", "train")
    smoke = yaml.safe_load(PARAMS.read_text())["suites"]["smoke"]["tasks"]["shift"]["data"]
    assert len(shift) == smoke["n_train"] and shift.meta["generator"]["length"] == smoke["length"]
    leftovers = [p.name for p in (tmp_path / "data/prepared/smoke").iterdir() if p.name.startswith(".")]
    assert leftovers == []
