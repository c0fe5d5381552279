"""`rotrnn bench ... --out FILE`: the report is whole (header, targets, the printed tables), names the machine in
words and no local path, keeps stderr out, and its targets table reads the same figures the tables print."""
from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rotrnn.bench.report import render, targets, typed_command

REPO = Path(__file__).resolve().parents[2]
# the smallest run of both benches that still reaches every targets row it can measure without --compile (the
# step bench's model keeps the paper's size: one batch of one ListOps example per step)
TINY = ["bench", "all", "--batch", "1", "--length", "64", "--d-model", "16", "--d-state", "16", "--heads", "2",
        "--repeats", "1", "--layers", "rotrnn", "--backends", "fused_cpu", "--no-scan-table", "--tasks", "listops",
        "--step-batch", "1", "--step-repeats", "1"]
WARNING = "a warning on stderr that must stay out of the report"


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table_after(lines: list[str], header_start: str) -> list[list[str]]:
    """The rows (cells) of the first Markdown table whose header line starts with ``header_start``."""
    i = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[i + 2:]:
        if not line.startswith("|"):
            break
        rows.append(_cells(line))
    return rows


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("bench")
    # a warning on stderr before the benches start, as torch's own (inductor, cpp_extension) come mid-run
    code = f"import sys, warnings; from rotrnn.cli import main; warnings.warn({WARNING!r}); sys.exit(main())"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}  # one thread: the cores are shared
    proc = subprocess.run([sys.executable, "-c", code, *TINY, "--out", "perf/report.md"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd, proc, (cwd / "perf" / "report.md").read_text()


@pytest.mark.slow
def test_report_has_header_fields_and_no_local_path(run):
    cwd, proc, text = run
    assert WARNING in proc.stderr and WARNING not in text
    for local in {sys.prefix, sys.base_prefix, str(Path(sys.executable).parent), str(REPO), str(cwd),
                  str(Path.home())} - {"/"}:
        assert local not in text
    assert "site-packages" not in text and not re.search(r"\.py:\d+", text)  # no warning's source location
    lines = text.splitlines()
    assert lines[0] == f"# CPU benchmark: `{typed_command(TINY)}`"
    assert f"- command: `{typed_command(TINY + ['--out', 'perf/report.md'])}`" in lines
    assert re.search(r"^- commit: [0-9a-f]{40}(-dirty)?$", text, re.M)
    assert re.search(r"^- date: \d{4}-\d\d-\d\d \d\d:\d\d UTC$", text, re.M)
    assert re.search(r"^- wall time: (\d+ min )?\d+ s$", text, re.M)
    assert re.search(r"^- machine: .+, \d+ cores, torch \S+, 1 thread\(s\)$", text, re.M)
    assert "## Targets" in lines


@pytest.mark.slow
def test_report_holds_the_printed_tables_and_its_targets_read_them(run):
    _, proc, text = run
    out = proc.stdout.splitlines()
    lines = text.splitlines()
    for line in out:  # every printed table row and line is in the report (a heading one level down)
        if line and not line.startswith("wrote "):
            assert ("#" + line if line.startswith("#") else line) in lines
    measured = {row[0]: row[1] for row in _table_after(lines, "| figure | measured |")}
    layer = {(r[0], r[1]): r for r in _table_after(out, "| layer | backend |")}
    step = _table_after(out, "| step ms (median, range) |")
    loading = re.search(r"step waited [\d.]+ ms per batch = ([\d.]+) % of the step time", proc.stdout).group(1)
    assert measured["RotRNN layer fwd+bwd / six-matmul floor, `fused_cpu` scan (median, range)"] == \
        layer["rotrnn", "fused_cpu"][5]
    assert measured["ListOps step / dense floor, eager (median, range)"] == step[0][3]
    assert measured["ListOps data loading (wait for the prefetching thread), share of the step time"] == \
        f"{loading} %"
    assert measured["ListOps step, `torch.compile` median / the eager floor median"].startswith("not measured")
    assert measured["Image step / dense floor, eager (median, range)"].startswith("not measured")


def _step(ratios, compiled_s=None, wait_share=0.0001):
    return {"step_s": [1.669], "floor_s": [1.639], "ratios": ratios, "collate_s": [0.001], "wait_share": wait_share,
            "operators": 1, "compiled": None if compiled_s is None else {"compile_s": 60.0, "step_s": compiled_s}}


def test_targets_judge_the_figure_as_printed_and_read_the_compiled_step():
    fused = {"layer": "rotrnn", "backend": "fused_cpu", "ratios": [1.1, 1.2, 1.3]}
    results = {"layer": {"device": "cpu", "rows": [fused]},
               "step": {"device": "cpu", "tasks": {"listops": _step([1.31, 1.2, 1.4], compiled_s=[1.6, 1.669, 1.7]),
                                                   "cifar": _step([1.3], wait_share=0.06)}}}
    rows = {r[0]: r[1:] for r in targets(results)}
    assert rows["RotRNN layer fwd+bwd / six-matmul floor, `fused_cpu` scan (median, range)"] == \
        ("1.20 (1.10-1.30)", "≤ 1.2", "met")
    assert rows["ListOps step / dense floor, eager (median, range)"] == ("1.31 (1.20-1.40)", "≤ 1.3", "not met")
    assert rows["ListOps step, `torch.compile` median / the eager floor median"] == \
        ("1669 / 1639 ms = 1.02", "≤ 1.3", "met")
    assert rows["Image step, `torch.compile` median / the eager floor median"][0] == "not measured (run with --compile)"
    assert rows["Image data loading (wait for the prefetching thread), share of the step time"] == \
        ("6.000 %", "≤ 5 %", "not met")
    no_fused = {"layer": {"device": "cpu", "rows": [{"layer": "lru", "backend": "fused_cpu", "ratios": [1.0]}]}}
    assert [r[0] for r in targets(no_fused)] == ["RotRNN layer fwd+bwd / six-matmul floor, `fused_cpu` scan (median, "
                                                 "range)"]
    assert targets(no_fused)[0][1].startswith("not measured")


def test_command_names_no_directory_and_the_title_drops_out():
    assert typed_command(["bench", "all", "--out", "/home/someone/r.md"]) == "rotrnn bench all --out r.md"
    assert typed_command(["bench", "layer", "--out=/tmp/x/r.md"]) == "rotrnn bench layer --out=r.md"
    text = render(["bench", "layer", "--out", "r.md"], "abc", dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.timezone.utc),
                  125.4, "Some CPU, 2 cores, torch 2, 2 thread(s)",
                  {"layer": {"device": "cpu", "rows": []}}, ["# rotrnn bench layer: x\nline", "\n## scan alone"])
    lines = text.splitlines()
    assert lines[0] == "# CPU benchmark: `rotrnn bench layer`"
    assert "- wall time: 2 min 5 s" in lines and "- date: 2026-01-02 03:04 UTC" in lines
    assert lines[-4:] == ["## rotrnn bench layer: x", "line", "", "### scan alone"]  # printed headings a level down
