"""Small shared-machine hazards (issue 20, item 9): with train.compile on, TorchInductor's cache is a private
directory of the user (not /tmp/torchinductor_$USER, which another user can create first), and a set
TORCHINDUCTOR_CACHE_DIR is respected; a suite without its own paths.reports writes its tables into
reports/<suite>/, not over the paper suite's reports/."""
from __future__ import annotations

import os

import pytest
import torch
import yaml

from rotrnn.config import load_params, resolve, suite_paths
from rotrnn.errors import UserError
from rotrnn.pipeline.plan import Plan
from rotrnn.train import inductor
from rotrnn.train.loop import train

from .conftest import PARAMS


@pytest.fixture
def compiled_env(monkeypatch):
    """torch.compile replaced by a recorder of the environment it is called in (compiling takes a minute on CPU;
    what matters is where Inductor would cache)."""
    seen = []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: seen.append(os.environ.get(inductor.ENV)) or model)
    return seen


def _train_compiled(project):
    config = resolve(load_params(project / "params.yaml"), "test", "majority", "lru", 0,
                     ["train.compile=true", "train.epochs=1", "train.max_steps_per_epoch=2"])
    code, _ = train(config, quiet=True, track=False)
    assert code == 0


def test_compile_uses_a_private_inductor_cache(project, tmp_path, monkeypatch, compiled_env):
    monkeypatch.delenv(inductor.ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _train_compiled(project)
    cache = tmp_path / "cache/rotrnn/torchinductor"
    assert compiled_env == [str(cache)]
    assert cache.is_dir() and cache.stat().st_mode & 0o777 == 0o700 and cache.stat().st_uid == os.getuid()


def test_a_set_inductor_cache_is_respected(project, tmp_path, monkeypatch, compiled_env):
    mine = tmp_path / "my-cache"
    monkeypatch.setenv(inductor.ENV, str(mine))
    _train_compiled(project)
    assert compiled_env == [str(mine)]


@pytest.mark.parametrize("make", ["world_writable", "symlink"])
def test_a_cache_dir_others_can_write_is_refused(tmp_path, monkeypatch, make):
    monkeypatch.delenv(inductor.ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    target = tmp_path / "rotrnn/torchinductor"
    target.parent.mkdir(parents=True)
    if make == "world_writable":  # as a pre-created /tmp folder would be
        target.mkdir()
        target.chmod(0o777)
    else:
        (tmp_path / "elsewhere").mkdir()
        target.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UserError, match=rf"{target}: the compile cache must be a directory of yours with mode 0700"):
        inductor.use_private_cache()
    assert inductor.ENV not in os.environ


def test_a_suite_without_paths_reports_does_not_write_the_paper_tables(tmp_path):
    params = dict(PARAMS, suites={**PARAMS["suites"], "mine": dict(PARAMS["suites"]["test"])})
    params["suites"]["paper"] = dict(PARAMS["suites"]["test"], paths={"reports": "reports"})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    loaded = load_params(tmp_path / "params.yaml")
    assert suite_paths(loaded, "mine")["reports"] == "reports/mine"
    assert suite_paths(loaded, "paper")["reports"] == "reports"
    plan = Plan(loaded, str(tmp_path / "params.yaml"), "mine")
    assert all(f.startswith("reports/mine/") for f in plan.report_files())
