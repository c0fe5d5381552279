"""The analysis suite in the pipeline: its DVC file holds a stage per experiment and the report, and Snakemake plans
every training job, the five experiments and the report. (That the committed DVC files equal the generator's output
is tests/pipeline/test_dvc.py's.)"""
import os
import re
import subprocess
import sys
from pathlib import Path

from rotrnn.pipeline import load_plan

ROOT = Path(__file__).resolve().parents[2]


def test_dvc_stages_of_the_analysis_suite():
    from rotrnn.analysis.common import EXPERIMENTS, result_path
    from rotrnn.pipeline import dvcfile

    plan = load_plan(ROOT / "params.yaml", "analysis")
    stages = dvcfile.stages(plan)
    assert "report" not in stages and "analysis-report" in stages
    for name in EXPERIMENTS:
        stage = stages[f"analysis-{name}"]
        assert stage["cmd"] == f"rotrnn analysis {name} --suite analysis"
        assert stage["outs"] == [{str(result_path(plan.params, "analysis", name)): {"cache": False}}]
        assert any(d.startswith("rotrnn/analysis") for d in stage["deps"]), stage["deps"]
    assert sum(name.startswith("train-") for name in stages) == len(plan.jobs())


def test_snakemake_plans_the_analysis_suite(tmp_path):
    """A dry run in an empty working directory: every job of the plan, each experiment once, the report."""
    snakemake = Path(sys.executable).with_name("snakemake")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([str(snakemake), "--config", "suite=analysis", f"params={ROOT / 'params.yaml'}", "-n",
                          "--quiet", "rules", "--directory", str(tmp_path), "--snakefile",
                          str(ROOT / "Snakefile")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    counts = {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", out.stdout + out.stderr, re.M)}
    plan = load_plan(ROOT / "params.yaml", "analysis")
    assert counts["train"] == len(plan.jobs())
    assert counts["prepare"] == len(plan.tasks)
    assert counts["analysis"] == 5 and counts["analysis_report"] == 1
