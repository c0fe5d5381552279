"""Helpers for the pipeline tests: a temporary copy of the project (the files Snakemake and DVC read, committed to its
own Git repository, as a clone is) and the venv's tools on PATH, as a user who activated the environment has them,
running this checkout's code (PYTHONPATH), whichever checkout the venv's editable install points at."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# what a project copy needs: the Snakefile, rules and profiles, the configuration, the DVC files, for DVC's code
# dependencies the sources, and the committed reports the train rule's job sizes are computed from
PROJECT_FILES = ("Snakefile", "workflow", "profiles", "slurm", "params.yaml", "dvc.yaml", ".dvc", ".dvcignore",
                 ".gitignore", "rotrnn", "reports")
GIT = ("git", "-c", "user.name=test", "-c", "user.email=test@example.invalid")


def tool_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    # the code under test is this checkout's, also where the venv's editable install points at another checkout
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.pop("MLFLOW_TRACKING_URI", None)  # each copy has its own store (params: sqlite:///mlflow.db)
    env.update(extra)
    return env


def copy_project(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_symlink():
            os.symlink(os.readlink(src), dest / name)
        elif src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "tmp",
                                                                            "cache"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


def edit_params(project: Path, edit) -> None:
    """Change the copy's params.yaml and regenerate its DVC files from it, as a user must (the DVC record of a run
    needs the suite's generated dvc.yaml)."""
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    edit(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    run_tool([BIN / "rotrnn", "pipeline", "dvc-yaml"], project)


def git_commit_all(project: Path, message: str = "copy") -> None:
    if not (project / ".git").exists():
        run_tool(["git", "init", "-q"], project)
    run_tool([*GIT, "add", "-A"], project)
    run_tool([*GIT, "commit", "-qm", message], project)


def run_tool(args: list[str], cwd: Path, timeout: float = 240, check: bool = True,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env or tool_env(), capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}"
                             f"\n--- stderr\n{proc.stderr[-6000:]}")
    return proc


def snakemake(project: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return run_tool([BIN / "snakemake", *args], project, **kw)


def job_counts(dry_run_output: str) -> dict[str, int]:
    """The 'Job stats' table of `snakemake -n` as {rule: count}."""
    section = dry_run_output.split("Job stats:", 1)[1]
    counts = {}
    for line in section.splitlines()[3:]:
        m = re.fullmatch(r"\s*(\w+)\s+(\d+)\s*", line)
        if not m:
            break
        counts[m.group(1)] = int(m.group(2))
    return counts


@pytest.fixture
def project(tmp_path) -> Path:
    """A copy of the project in its own Git repository (DVC, whose record Snakemake writes, works in one)."""
    dest = copy_project(tmp_path / "project")
    git_commit_all(dest)
    return dest
