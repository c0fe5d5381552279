"""DVC front door in a temporary copy of the project (its own Git repository, as a clone is): the stage lists of
both dvc.yaml files follow params.yaml, and `dvc repro` of a smoke subset runs, records params in dvc.lock, is then
up to date, and `dvc push`/`dvc pull` round-trip the checkpoints through the default local remote."""
from __future__ import annotations

import json
import shutil

import pytest
import yaml

from .conftest import BIN, ROOT, run_tool


def dvc(project, *args, **kw):
    return run_tool([BIN / "dvc", *args], project, **kw)


def _git_init(project):
    run_tool(["git", "init", "-q"], project)
    run_tool(["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", "add", "-A"], project)
    run_tool(["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", "commit", "-qm", "copy"],
             project)


def _stages(project, dvcfile=None):
    out = dvc(project, "stage", "list", "--name-only", *([dvcfile] if dvcfile else [])).stdout.split()
    return [s.split(":")[-1] for s in out]


def test_stage_lists_follow_params(project):
    _git_init(project)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())["suites"]
    for dvcfile, suite in ((None, "smoke"), ("workflow/dvc/paper/dvc.yaml", "paper")):
        stages = _stages(project, dvcfile)
        s = params[suite]
        assert [x for x in stages if x.startswith("prepare@")] == [f"prepare@{t}" for t in s["tasks"]]
        assert [x for x in stages if x.startswith("train@")] == [
            f"train@{t}-{m}-{n}" for t in s["tasks"] for m in s["models"] for n in s["seeds"]]
        assert "tracking_init" in stages and "report" in stages


def test_remote_is_local_and_default():
    config = (ROOT / ".dvc/config").read_text()
    assert "remote = localstore" in config and "url = ../.dvc-storage" in config


@pytest.mark.slow
def test_repro_subset_push_pull(project):
    _git_init(project)
    target = "train@cumsum-lru-0"
    dvc(project, "repro", target, timeout=300)
    run = project / "runs/smoke/cumsum/lru/seed0"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["suite"] == "smoke"
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert set(lock) == {"prepare@cumsum", "tracking_init", target}
    assert lock[target]["params"]["params.yaml"]["suites.smoke.tasks.cumsum"]["data"]["length"] == 64
    assert "didn't change" in dvc(project, "repro", target).stdout

    # metrics are visible to DVC; the checkpoints come back from the local remote
    shown = json.loads(dvc(project, "metrics", "show", "--json").stdout)
    assert "runs/smoke/cumsum/lru/seed0/metrics.json" in json.dumps(shown)
    dvc(project, "push", target)
    assert any((project / ".dvc-storage").rglob("*"))
    shutil.rmtree(run / "checkpoints")
    shutil.rmtree(project / ".dvc/cache")
    dvc(project, "pull", target)
    assert (run / "checkpoints/best.pt").is_file() and (run / "checkpoints/last.pt").is_file()
    assert "up to date" in dvc(project, "status", target).stdout.lower()
