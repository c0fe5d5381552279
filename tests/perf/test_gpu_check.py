"""benchmarks/gpu_check.py: the dry-run plan, the one-line refusal without CUDA, and every section's code at toy
sizes on CPU (so the first GPU call does not find a typo)."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def run(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    """The script in a child process; the timeout only guards against a hang (the toy run takes about a minute
    on an idle core, several on a loaded two-core machine)."""
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=ENV, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def test_dry_run_prints_the_plan():
    proc = run("--dry-run")
    assert proc.returncode == 0, proc.stderr
    for needle in ("kernels", "TRITON_INTERPRET=0", "test_scan_fused_chunk.py", "scan",
                   "fused_recurrent vs fused_chunk", "pathx (batch 32, L 16384", "listops (batch 50, L 2048",
                   "layer", "L = 1024, 16384", "tasks", "speech35", "bf16 autocast vs float32", "listops",
                   "96k/2k/2k", "train/val accuracy", "compile", "reduce-overhead", "gpu-DEVICE.md"):
        assert needle in proc.stdout, needle
    budget = int(proc.stdout.split("total budget ")[1].split(" s")[0])
    assert budget <= 9 * 60
    # compile before listops: the training run gets what is left
    assert proc.stdout.index("  compile (") < proc.stdout.index("  listops (")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_refuses_without_cuda_in_one_line(tmp_path):
    proc = run("--out", str(tmp_path / "r.md"))
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "no CUDA" in proc.stderr
    assert not (tmp_path / "r.md").exists()


def test_every_section_runs_at_toy_sizes_on_cpu(tmp_path):
    out = tmp_path / "gpu-tiny.md"
    proc = run("--tiny", "--device", "cpu", "--sections", "scan,layer,tasks,listops,compile", "--out", str(out),
               "--commit", "abc1234")
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    for section in ("## scan", "## layer", "## tasks", "## listops", "## compile", "Total:", "commit: abc1234"):
        assert section in text
    assert "failed" not in text
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    tasks = {r["task"] for r in rows if r["section"] == "tasks"}
    assert tasks == {"listops", "imdb", "aan", "cifar", "pathfinder", "pathx", "speech35", "cumsum", "shift"}
    assert any(r["section"] == "listops" and float(r["val acc"]) >= 0 for r in rows)
    modes = {(r["task"], r["mode"]): r for r in rows if r["section"] == "compile"}
    assert set(modes) == {(t, m) for t in ("listops", "pathx") for m in ("eager", "default", "reduce-overhead")}
    assert all(float(r["max loss diff vs eager / first loss"]) < 1e-4 for r in modes.values())
