"""`rotrnn bench prepare`: `rotrnn data prepare` on raw trees of the real sizes, measured per task.

For each task a raw tree in the upstream format and layout, at the upstream counts and sizes, is written into a
scratch directory by the task module's own fixture writer with full-size arguments (`FULL_SIZE`): synthetic
content, real file formats, file counts, image resolutions, clip lengths and split lists. Then `rotrnn data prepare`
runs on it in a child process, and the benchmark records

- wall time, CPU time (user + system) and peak resident set (``ru_maxrss``) of that child, from ``wait4``;
- its peak anonymous memory (``RssAnon`` in ``/proc/<pid>/status``, sampled every 0.1 s): the resident set also
  counts the pages of the memory-mapped output files it has touched, which the kernel can write back and drop, so
  the anonymous peak is what the job's memory request must cover;
- the raw and prepared bytes (apparent file sizes) and the prepared splits' sizes;
- the machine's load: the CPU time every other process used while the child ran, as a share of wall × cores
  (on a shared machine the child's wall time depends on it).

The raw tree is synced and dropped from the page cache (``posix_fadvise(DONTNEED)``, best effort) before the child
starts, so the child reads it from disk as a cluster job would; both trees are deleted after each task. A task is
refused (skipped, with a message) when the free disk would fall below ``--min-free-gb`` while it runs.

Results go to ``<report>.csv`` (one row per task), ``<report>.json`` (every figure) and ``<report>.md`` (a table
plus the command, commit, machine and load); a later run replaces only the rows of the tasks it measured, and text
below the notes marker in an existing ``.md`` is kept. Figures, not tests: they depend on the machine.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

CSV_COLUMNS = ("task", "split_sizes", "wall_s", "cpu_s", "peak_rss_mb", "raw_bytes", "prepared_bytes", "commit")
NOTES_MARKER = "<!-- notes below this line are kept when `rotrnn bench prepare` rewrites the file -->"
REPO = Path(__file__).resolve().parents[2]
SAMPLE_S = 0.1
MB = 1 << 20
GB = 1 << 30


@dataclass(frozen=True)
class FullSize:
    """One task at its upstream size: how to write the raw tree, the prepared split sizes it must give, a rough
    upper bound on raw + prepared disk (for the free-space guard), and what of the raw tree is synthetic."""

    write: Callable[[Path, int], None]
    splits: dict[str, int]
    disk_gb: float
    content: str


def _listops(raw: Path, seed: int) -> None:
    from rotrnn.data.listops import generate_raw

    generate_raw(raw, 96_000, 2_000, 2_000, seed)


def _imdb(raw: Path, seed: int) -> None:
    from rotrnn.data.imdb import write_fixture

    write_fixture(raw, seed, per_class=12_500, words=(10, 450))


def _aan(raw: Path, seed: int) -> None:
    from rotrnn.data.aan import write_fixture

    write_fixture(raw, seed, sizes=(147_086, 18_090, 17_437), words=(100, 1_700))


def _cifar(raw: Path, seed: int) -> None:
    from rotrnn.data.cifar import write_fixture

    write_fixture(raw, seed, per_class=1_000)


def _pathfinder(resolution: int, distractors: int) -> Callable[[Path, int], None]:
    def write(raw: Path, seed: int) -> None:
        from rotrnn.data.pathfinder import write_fixture

        write_fixture(raw, seed, resolution=resolution, n_batches=200, per_batch=1_000, distractors=distractors)

    return write


def _speech(raw: Path, seed: int) -> None:
    from rotrnn.data.speech import write_fixture

    write_fixture(raw, seed, totals=(84_843, 9_981, 11_005), p_full=0.9, short=(4_000, 16_000))


FULL_SIZE: dict[str, FullSize] = {
    "listops": FullSize(_listops, {"train": 96_000, "val": 2_000, "test": 2_000}, 2.0,
                        "LRA's own generator (rotrnn data generate listops), LRA's lengths 500-2000"),
    "imdb": FullSize(_imdb, {"train": 25_000, "val": 25_000, "test": 25_000}, 1.0,
                     "25,000 + 25,000 review files of 10-450 random words (mean about 1,300 characters, as the "
                     "real reviews); no train/unsup folder (prepare never reads it)"),
    "aan": FullSize(_aan, {"train": 147_086, "val": 18_090, "test": 17_437}, 6.0,
                    "the three TSVs at S4's train count and the val/test counts LRA tables give, documents of "
                    "100-1,700 random words (about 5,000 characters on average; the real length distribution is "
                    "not published, most documents exceed the 3,999 kept)"),
    "cifar": FullSize(_cifar, {"train": 45_000, "val": 5_000, "test": 10_000}, 0.5,
                      "five pickled batches of 10,000 and a test batch of 10,000, smooth colour gradients plus "
                      "noise"),
    "pathfinder": FullSize(_pathfinder(32, 5), {"train": 160_000, "val": 20_000, "test": 20_000}, 2.0,
                           "200 metadata files of 1,000 lines, 200,000 drawn 32x32 grey PNGs (5 distractors)"),
    "pathx": FullSize(_pathfinder(128, 7), {"train": 160_000, "val": 20_000, "test": 20_000}, 6.0,
                      "200 metadata files of 1,000 lines, 200,000 drawn 128x128 grey PNGs (7 distractors)"),
    "speech35": FullSize(_speech, {"train": 84_843, "val": 9_981, "test": 11_005, "test_8k": 11_005,
                                   "test_8k_resampled": 11_005}, 10.0,
                         "105,829 16 kHz mono 16-bit WAVs (90 % exactly one second, the rest 4,000-16,000 "
                         "samples) of tones and noise in the 35 word folders, the real split lists' sizes"),
}


def add_prepare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tasks", default=",".join(FULL_SIZE), help=f"comma-separated subset of {','.join(FULL_SIZE)}")
    p.add_argument("--scratch", type=Path, default=None,
                   help="where the raw and prepared trees are written (and deleted); default: the system temp dir")
    p.add_argument("--report", type=Path, default=None,
                   help="report path without suffix (default reports/perf/prepare-<cores>core under the repository)")
    p.add_argument("--min-free-gb", type=float, default=20.0,
                   help="skip a task whose raw + prepared trees would leave less free disk than this")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", action="store_true", help="keep the scratch trees (for inspecting them)")


def _cpu_times() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return (total - idle) / tick, total / tick


def _tree_bytes(root: Path) -> tuple[int, int]:
    """(apparent bytes, number of files) under root."""
    size = n = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            size += os.lstat(os.path.join(dirpath, f)).st_size
            n += 1
    return size, n


def drop_from_cache(root: Path) -> None:
    """Write the tree out and ask the kernel to drop its pages, so that the measured run reads it from disk."""
    os.sync()
    for dirpath, _, files in os.walk(root):
        for f in files:
            fd = os.open(os.path.join(dirpath, f), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


class _AnonPeak(threading.Thread):
    """Samples a process's RssAnon until it exits; `peak_kb` is the largest value seen."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.status = Path(f"/proc/{pid}/status")
        self.peak_kb = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                for line in self.status.read_text().splitlines():
                    if line.startswith("RssAnon:"):
                        self.peak_kb = max(self.peak_kb, int(line.split()[1]))
                        break
            except (OSError, ValueError):  # exited (or became a zombie with an empty status)
                pass
            self.stop.wait(SAMPLE_S)


def run_prepare(task: str, raw: Path, out: Path, log: Path) -> dict[str, Any]:
    """`rotrnn data prepare task` in a child process: its wall, CPU, peak RSS and peak anonymous memory, and the
    other processes' share of the machine meanwhile."""
    cmd = [sys.executable, "-m", "rotrnn.cli", "data", "prepare", task, "--raw-root", str(raw), "--out", str(out)]
    busy0, total0 = _cpu_times()
    self0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
        sampler = _AnonPeak(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    wall = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    busy1, total1 = _cpu_times()
    self1 = resource.getrusage(resource.RUSAGE_SELF)
    child_cpu = usage.ru_utime + usage.ru_stime
    own_cpu = (self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)
    cores = (total1 - total0) / wall if wall > 0 else float(os.cpu_count() or 1)
    others = max(0.0, (busy1 - busy0) - child_cpu - own_cpu)
    return {
        "returncode": proc.returncode,
        "wall_s": wall,
        "cpu_s": child_cpu,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # Linux reports kilobytes
        "peak_anon_mb": sampler.peak_kb / 1024,
        "others_cpu_share": others / (wall * cores) if wall > 0 else 0.0,
        "log_tail": log.read_text(errors="replace")[-2000:],
    }


def run_prepare_from_small_process(task: str, raw: Path, out: Path, log: Path) -> dict[str, Any]:
    """`run_prepare` inside a fresh, small Python process (this module imports only the standard library).

    Linux counts the resident set of the process that starts a child into that child's ``ru_maxrss``
    (``vfork``/``fork``, then ``exec``: the old address space's high-water mark is kept). This process has imported
    torch (the CLI does) and may have written a large raw tree, so a child started from here would report at least
    its size; the child started from a 15 MB launcher reports its own."""
    code = ("import json, sys; from pathlib import Path; from rotrnn.bench.prepare import run_prepare; "
            "print(json.dumps(run_prepare(sys.argv[1], *map(Path, sys.argv[2:]))))")
    done = subprocess.run([sys.executable, "-c", code, task, str(raw), str(out), str(log)], capture_output=True,
                          text=True, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"{task}: the measuring process failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(task: str, scratch: Path, seed: int = 0, keep: bool = False) -> dict[str, Any]:
    """Write `task`'s full-size raw tree under `scratch`, prepare it in a child process, measure, clean up."""
    spec = FULL_SIZE[task]
    root = Path(tempfile.mkdtemp(prefix=f"{task}-", dir=scratch))
    raw, out = root / "raw", root / "prepared"
    try:
        t0 = time.perf_counter()
        spec.write(raw, seed)
        gen_s = time.perf_counter() - t0
        raw_bytes, raw_files = _tree_bytes(raw)
        drop_from_cache(raw)
        print(f"{task}: raw tree written in {gen_s:.0f} s ({raw_files} files, {raw_bytes / GB:.2f} GB); preparing",
              flush=True)
        rec = run_prepare_from_small_process(task, raw, out, root / "prepare.log")
        if rec["returncode"] != 0:
            raise RuntimeError(f"{task}: `rotrnn data prepare` exited {rec['returncode']}:\n{rec['log_tail']}")
        meta = json.loads((out / "meta.json").read_text())
        if meta["splits"] != spec.splits:
            raise RuntimeError(f"{task}: prepared splits {meta['splits']} differ from the upstream sizes {spec.splits}")
        prepared_bytes, _ = _tree_bytes(out)
        rec.pop("log_tail")
        splits = {k: meta["splits"][k] for k in spec.splits}  # upstream order: train, val, test, ...
        rec.update(task=task, splits=splits, generate_s=gen_s, raw_bytes=raw_bytes, raw_files=raw_files,
                   prepared_bytes=prepared_bytes, checksum=meta["checksum"], content=spec.content,
                   date=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
        return rec
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def machine() -> str:
    """The machine in words: CPU model, cores this process may use, memory, OS, Python and library versions."""
    import numpy

    from rotrnn.machine import cores, cpu_model

    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
    versions = f"Python {platform.python_version()}, numpy {numpy.__version__}"
    try:
        import torch

        versions += f", torch {torch.__version__}"
    except ImportError:
        pass
    return (f"{cpu_model()}, {cores()} cores, {mem_gb:.0f} GiB memory, {platform.system()} {platform.release()}; "
            f"{versions}")


def _split_sizes(splits: dict[str, int]) -> str:
    return ";".join(f"{k}={v}" for k, v in splits.items())


def write_report(base: Path, records: dict[str, dict[str, Any]], command: str) -> None:
    """`base`.json (all figures), `.csv` (CSV_COLUMNS) and `.md` (table, command, commit, machine, load); rows
    in FULL_SIZE order; notes below NOTES_MARKER in an existing .md are kept."""
    from rotrnn import atomic

    order = [t for t in FULL_SIZE if t in records]
    atomic.write_text(base.with_suffix(".json"), json.dumps({t: records[t] for t in order}, indent=1) + "\n")
    lines = [",".join(CSV_COLUMNS)]
    for t in order:
        r = records[t]
        row = (t, _split_sizes(r["splits"]), f"{r['wall_s']:.1f}", f"{r['cpu_s']:.1f}", f"{r['peak_rss_mb']:.0f}",
               str(r["raw_bytes"]), str(r["prepared_bytes"]), r["commit"])
        lines.append(",".join(row))
    atomic.write_text(base.with_suffix(".csv"), "\n".join(lines) + "\n")

    md = base.with_suffix(".md")
    notes = ""
    if md.exists() and NOTES_MARKER in md.read_text():
        notes = md.read_text().split(NOTES_MARKER, 1)[1].lstrip("\n")
    commits = sorted({records[t]["commit"] for t in order})
    out = [
        f"# `rotrnn data prepare` at full size, {base.name.split('-')[-1].replace('core', '')} cores",
        "",
        f"Measured by `{command}` (raw trees written at the upstream counts and sizes, then prepared in a child "
        f"process; `rotrnn/bench/prepare.py`) at commit{'s' if len(commits) > 1 else ''} "
        f"{', '.join(c[:12] for c in commits)}, on {records[order[0]]['machine']}.",
        "",
        "| task | splits | prepare wall (s) | CPU (s) | peak RSS (MB) | peak anon (MB) | raw (GB) | raw files | "
        "prepared (GB) | others' CPU share | writing the raw tree (s) | measured |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in order:
        r = records[t]
        out.append(f"| {t} | {_split_sizes(r['splits']).replace(';', ' ')} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
                   f"{r['peak_rss_mb']:.0f} | {r['peak_anon_mb']:.0f} | {r['raw_bytes'] / GB:.2f} | "
                   f"{r['raw_files']} | {r['prepared_bytes'] / GB:.2f} | {100 * r['others_cpu_share']:.0f} % | "
                   f"{r['generate_s']:.0f} | {r['date']} |")
    out += [
        "",
        "Columns: wall, CPU (user + system) and peak RSS (`ru_maxrss`) are the `rotrnn data prepare` child's; peak "
        "anon is its largest sampled `RssAnon` (the resident set without the pages of the memory-mapped output "
        "files, which the kernel writes back and drops under pressure); raw and prepared are apparent file sizes; "
        "others' CPU share is the CPU time all other processes on the machine used while the child ran, over wall "
        "× cores (the machine is shared, so wall times vary with it). The raw tree was synced and dropped from the "
        "page cache before each run.",
        "",
        "What the raw trees hold (formats, layouts and counts are the upstream ones; the content is synthetic):",
        "",
    ]
    out += [f"- {t}: {records[t]['content']}." for t in order]
    out += ["", NOTES_MARKER, ""]
    if notes:
        out.append(notes.rstrip("\n"))
        out.append("")
    atomic.write_text(md, "\n".join(out))


def run_prepare_bench(args: argparse.Namespace) -> int:
    from rotrnn.bench.provenance import commit_label
    from rotrnn.errors import UserError

    tasks = [t for t in args.tasks.split(",") if t]
    unknown = [t for t in tasks if t not in FULL_SIZE]
    if unknown:
        raise UserError(f"--tasks: unknown task {unknown[0]!r}; known: {', '.join(FULL_SIZE)}")
    cores = len(os.sched_getaffinity(0))
    base = args.report or REPO / "reports" / "perf" / f"prepare-{cores}core"
    scratch = args.scratch or Path(tempfile.gettempdir())
    scratch.mkdir(parents=True, exist_ok=True)
    records: dict[str, dict[str, Any]] = {}
    if base.with_suffix(".json").exists():
        records = json.loads(base.with_suffix(".json").read_text())
    commit = commit_label(None, REPO)
    where = machine()
    command = "rotrnn bench prepare" + (f" --tasks {args.tasks}" if args.tasks != ",".join(FULL_SIZE) else "")
    failed = 0
    for task in tasks:
        free_gb = shutil.disk_usage(scratch).free / GB
        if free_gb - FULL_SIZE[task].disk_gb < args.min_free_gb:
            print(f"{task}: skipped: {free_gb:.0f} GB free at {scratch}, its trees take up to "
                  f"{FULL_SIZE[task].disk_gb:.0f} GB and --min-free-gb is {args.min_free_gb:.0f}", flush=True)
            failed += 1
            continue
        try:
            rec = measure(task, scratch, args.seed, args.keep)
        except RuntimeError as e:
            print(e, file=sys.stderr, flush=True)
            failed += 1
            continue
        rec.update(commit=commit, machine=where)
        records[task] = rec
        print(f"{task}: prepared in {rec['wall_s']:.1f} s wall, {rec['cpu_s']:.1f} s CPU, peak RSS "
              f"{rec['peak_rss_mb']:.0f} MB (anon {rec['peak_anon_mb']:.0f} MB), raw {rec['raw_bytes'] / GB:.2f} GB,"
              f" prepared {rec['prepared_bytes'] / GB:.2f} GB, others' CPU share "
              f"{100 * rec['others_cpu_share']:.0f} %", flush=True)
        write_report(base, records, command)
    return 1 if failed else 0
