"""Names from params.yaml reach folders and command lines (issue 20, item 4): a suite, task, model or data-source
name that is not `[A-Za-z0-9_][A-Za-z0-9_-]*` is refused when the file loads, with one line naming the key, before
any rule runs; and what the Snakemake rules and the DVC stages put on a command line is quoted anyway, so a hostile
value that reaches one (the `params=` path, which is a file name, not a name) is one word and runs nothing."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
import yaml

from rotrnn.config import ConfigError, load_params, resolve
from rotrnn.pipeline import dvcfile
from rotrnn.pipeline.dvcfile import stages
from rotrnn.pipeline.plan import Plan

from .conftest import BIN, ROOT, run_tool, snakemake

HOSTILE = "x$(touch PWNED)"


def _params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def _write(path, params) -> None:
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.parametrize("edit, key", [
    (lambda p: p["suites"].__setitem__(HOSTILE, p["suites"].pop("paper")), f"suites.{HOSTILE}"),
    (lambda p: p["tasks"].__setitem__("../../etc", p["tasks"]["imdb"]), "tasks.../../etc"),
    (lambda p: p["tasks"]["imdb"]["data"].__setitem__("source", "../.."), "tasks.imdb.data.source"),
    (lambda p: p["suites"]["paper"]["tasks"]["cumsum"].__setitem__("data", {"task": "a b"}),
     "suites.paper.tasks.cumsum.data.task"),
])
def test_a_bad_name_is_refused_naming_file_line_and_key(tmp_path, edit, key):
    params = _params()
    edit(params)
    _write(tmp_path / "params.yaml", params)
    with pytest.raises(ConfigError) as err:
        load_params(tmp_path / "params.yaml")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'params.yaml'}:") and f": {key}: " in message
    assert "is not a valid name" in message


def test_set_cannot_point_a_data_source_outside_the_raw_root():
    with pytest.raises(ConfigError, match=r"data\.source: '\.\./\.\./home' is not a valid name"):
        resolve(_params(), "paper", "imdb", "lru", 0, ["data.source=../../home"])


def test_a_hostile_suite_is_refused_before_any_rule_runs(project):
    """`snakemake --config suite=...` on a params file with a suite named `x$(touch PWNED)`: exit non-zero with the
    key named, nothing ran (no PWNED, no log, no output)."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["suites"][HOSTILE] = params["suites"]["smoke"]
    _write(project / "params.yaml", params)
    proc = snakemake(project, "--cores", "1", "--config", f"suite={HOSTILE}", check=False)
    assert proc.returncode != 0
    assert f"suites.{HOSTILE}: '{HOSTILE}' is not a valid name" in proc.stdout + proc.stderr
    assert not (project / "PWNED").exists()
    assert not (project / "logs").exists() and not (project / "runs").exists()
    # the CLI says it in one line, exit 2
    proc = run_tool([BIN / "rotrnn", "config", "check"], project, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "is not a valid name" in proc.stderr


def test_snakemake_quotes_what_it_puts_on_a_command_line(project):
    """A params file whose name holds `$(touch PWNED)` (a legal file name) given as `--config params=...`: the
    tracking rule's `rotrnn stage tracking --params ...` reads that file and runs nothing."""
    hostile_file = "p$(touch PWNED).yaml"
    (project / hostile_file).write_text((project / "params.yaml").read_text())
    proc = snakemake(project, "--cores", "1", "--config", f"params={hostile_file}", "dvc=false", "--",
                     "runs/smoke/.tracking.json", check=False)
    assert not (project / "PWNED").exists(), "the params= path ran as shell code"
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert json.loads((project / "runs/smoke/.tracking.json").read_text())["suite"] == "smoke"


def test_dvc_commands_are_quoted(tmp_path, monkeypatch):
    """The generated `cmd:` lines of a plan whose suite, task and model names got past validation (built without
    it): run by a shell, as DVC runs them, each name arrives as one argument and nothing else runs."""
    params = _params()
    suite = copy.deepcopy(params["suites"]["smoke"])
    suite["tasks"] = {"cumsum; touch PWNED2": suite["tasks"]["cumsum"]}
    suite["models"] = ["rotrnn`touch PWNED3`"]
    params["tasks"]["cumsum; touch PWNED2"] = params["tasks"]["cumsum"]
    params["suites"][HOSTILE] = suite
    plan = Plan(params, "params.yaml", HOSTILE)
    # a prepare stage's deps come from the task's resolved config, which validates the names again; the quoting
    # is what this test is about, so the deps are the shared prepare code alone
    monkeypatch.setattr(dvcfile, "prepare_deps", lambda plan, task: dvcfile._deps(dvcfile.STAGE_CODE["prepare"]))
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "rotrnn").write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    (fake / "rotrnn").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}
    commands = {name: stage["cmd"] for name, stage in stages(plan).items()}
    assert "train-cumsum; touch PWNED2-rotrnn`touch PWNED3`-0" in commands
    for name, cmd in commands.items():
        out = subprocess.run(["sh", "-c", cmd], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
        argv = json.loads(out.stdout)
        assert argv[argv.index("--suite") + 1] == HOSTILE, (name, cmd)
        if "--task" in argv:
            assert argv[argv.index("--task") + 1] == "cumsum; touch PWNED2"
        if "--model" in argv:
            assert argv[argv.index("--model") + 1] == "rotrnn`touch PWNED3`"
    assert not any((tmp_path / f).exists() for f in ("PWNED", "PWNED2", "PWNED3"))
