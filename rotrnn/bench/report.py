"""`rotrnn bench ... --out FILE`: the Markdown report of one run, made whole by the command (never edited by hand):
a header (the command as typed, commit, date, wall time, the machine in words), the project's CPU targets read off
the measured figures, then the tables the command prints. Only what the benches emit enters it: warnings go to
stderr and stay out, and no local path is written (the executable's is dropped, an absolute argument is cut to its
name).

The formatters below print a figure both in the benches' tables and in the targets table, so that the two always
read the same."""
from __future__ import annotations

import datetime as dt
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable

# task -> its name in the paper, for the steps the targets cover
TARGET_STEPS = {"listops": "ListOps", "cifar": "Image"}
LAYER_TARGET = 1.2  # RotRNN layer fwd+bwd over its six-matmul floor, with the CPU default backend
STEP_TARGET = 1.3  # paper training step over its dense floor
LOADING_TARGET = 5.0  # % of the step time spent waiting for data


def ratio_cell(ratios: list[float]) -> str:
    return f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.0f}"


def percent(share: float) -> str:
    return f"{100 * share:.3f}"


def _verdict(shown: str, target: float) -> str:
    # judged on the figure as printed, so that a reader never sees 1.20 marked as over a 1.2 target
    return "met" if float(shown) <= target else "not met"


def targets(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(figure, measured, target, verdict) rows for the benches in ``results`` (``layer``, ``step``); a target whose
    figure this run did not measure says so."""
    rows = []
    if "layer" in results:
        found = [r for r in results["layer"]["rows"] if (r["layer"], r["backend"]) == ("rotrnn", "fused_cpu")]
        figure = "RotRNN layer fwd+bwd / six-matmul floor, `fused_cpu` scan (median, range)"
        if found:
            cell = ratio_cell(found[0]["ratios"])
            rows.append((figure, cell, f"≤ {LAYER_TARGET}", _verdict(cell.split()[0], LAYER_TARGET)))
        else:
            rows.append((figure, "not measured (no rotrnn layer with the fused_cpu backend in this run)", "", "–"))
    if "step" in results:
        tasks = results["step"]["tasks"]
        for task, name in TARGET_STEPS.items():
            eager = f"{name} step / dense floor, eager (median, range)"
            compiled = f"{name} step, `torch.compile` median / the eager floor median"
            if task not in tasks:
                rows += [(eager, f"not measured (no {task} in --tasks)", "", "–"),
                         (compiled, f"not measured (no {task} in --tasks)", "", "–")]
                continue
            r = tasks[task]
            cell = ratio_cell(r["ratios"])
            rows.append((eager, cell, f"≤ {STEP_TARGET}", _verdict(cell.split()[0], STEP_TARGET)))
            if r["compiled"] is None:
                rows.append((compiled, "not measured (run with --compile)", "", "–"))
            else:
                c, f = statistics.median(r["compiled"]["step_s"]), statistics.median(r["floor_s"])
                shown = f"{c / f:.2f}"
                rows.append((compiled, f"{ms(c)} / {ms(f)} ms = {shown}", f"≤ {STEP_TARGET}",
                             _verdict(shown, STEP_TARGET)))
        for task, r in tasks.items():
            shown = percent(r["wait_share"])
            rows.append((f"{TARGET_STEPS.get(task, task)} data loading (wait for the prefetching thread), share of "
                         "the step time", f"{shown} %", f"≤ {LOADING_TARGET:g} %", _verdict(shown, LOADING_TARGET)))
    return rows


def typed_command(argv: list[str]) -> str:
    """`rotrnn ARGS` as typed, without the executable's path; an absolute path becomes its name (a report names no
    directory of the machine that made it)."""
    words = []
    for arg in argv:
        flag, eq, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        if os.path.isabs(value):
            value = Path(value).name
        words.append(flag + eq + value)
    return " ".join(["rotrnn", *words])


def _duration(seconds: float) -> str:
    minutes, s = divmod(round(seconds), 60)
    return f"{minutes} min {s} s" if minutes else f"{s} s"


def _without_out(argv: list[str]) -> list[str]:
    kept, skip = [], False
    for arg in argv:
        if not skip and arg != "--out" and not arg.startswith("--out="):
            kept.append(arg)
        skip = arg == "--out"
    return kept


def render(argv: list[str], commit: str, started: dt.datetime, wall_s: float, machine: str, results: dict[str, Any],
           printed: list[str]) -> str:
    """The report's text: ``argv`` is the command's arguments as typed, ``printed`` what the benches emitted."""
    device = (results.get("layer") or results.get("step"))["device"]
    lines = [f"# {device.split(':')[0].upper()} benchmark: `{typed_command(_without_out(argv))}`", "",
             f"- command: `{typed_command(argv)}`",
             f"- commit: {commit}",
             f"- date: {started.strftime('%Y-%m-%d %H:%M UTC')}",
             f"- wall time: {_duration(wall_s)}",
             f"- machine: {machine}", "",
             "Generated by the command above; regenerate it, never edit it by hand. Every figure that matters is a "
             "ratio measured within this one run (the layer and eager step ratios pair each timed run with a floor "
             "run just before it): the machine may be shared, and absolute times drift between runs, so compare "
             "ratios, not milliseconds.", "",
             "## Targets", "",
             "The project's CPU targets, read off the tables below.", "",
             "| figure | measured | target | verdict |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in targets(results)]
    lines.append("")
    # the printed sections start at '#'; under the report's title they are one level down
    for text in printed:
        lines += [("#" + line if line.startswith("#") else line) for line in text.split("\n")]
    return "\n".join(lines).rstrip("\n") + "\n"


def run_with_report(args, bench: Callable[[Any, Callable[[str], None]], dict[str, Any]]) -> None:
    """Run ``bench(args, emit)``, printing as without --out, and write the report to ``args.out`` atomically (a
    reader never sees half a report, and a failed run leaves the previous one)."""
    from rotrnn import atomic
    from rotrnn.bench.provenance import commit_label
    from rotrnn.machine import machine

    printed: list[str] = []

    def emit(text: str = "") -> None:
        print(text, flush=True)
        printed.append(text)

    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    results = bench(args, emit)
    wall_s = time.perf_counter() - t0
    device = (results.get("layer") or results.get("step"))["device"]
    repo = Path(__file__).resolve().parents[2]
    text = render(args.argv, commit_label(None, repo), started, wall_s, machine(device), results, printed)
    atomic.write_text(args.out, text)
    print(f"\nwrote {args.out}")
