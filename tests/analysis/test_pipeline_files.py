"""The analysis suite in the pipeline: the committed DVC file is the generator's output for params.yaml, and
Snakemake plans every training job, the five experiments and the report."""
import os
import re
import subprocess
import sys
from pathlib import Path

from rotrnn.analysis.dvcfile import render
from rotrnn.pipeline import load_plan

ROOT = Path(__file__).resolve().parents[2]


def test_committed_dvc_file_is_generated_from_params():
    plan = load_plan(ROOT / "params.yaml", "analysis")
    committed = (ROOT / "workflow" / "dvc" / "analysis" / "dvc.yaml").read_text()
    assert committed == render(plan).replace(str(ROOT / "params.yaml"), "params.yaml"), (
        "workflow/dvc/analysis/dvc.yaml is stale: run `rotrnn analysis dvc --suite analysis`")


def test_snakemake_plans_the_analysis_suite(tmp_path):
    """A dry run in an empty working directory: every job of the plan, each experiment once, the report."""
    snakemake = Path(sys.executable).with_name("snakemake")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([str(snakemake), "--config", "suite=analysis", f"params={ROOT / 'params.yaml'}", "-n",
                          "--quiet", "rules", "--directory", str(tmp_path), "--snakefile",
                          str(ROOT / "workflow" / "Snakefile")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    counts = {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", out.stdout + out.stderr, re.M)}
    plan = load_plan(ROOT / "params.yaml", "analysis")
    assert counts["train"] == len(plan.jobs())
    assert counts["prepare"] == len(plan.tasks)
    assert counts["analysis"] == 5 and counts["analysis_report"] == 1
