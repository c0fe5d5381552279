"""Atomic writes under concurrency and crashes: two writers of one file never tear it or make it vanish for a reader,
a failed write leaves the old file and no temp file, the reports index loses no suite when reports finish together,
an unreadable metrics.json left by a crash does not make every retry fail, and reading the umask never sets it."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rotrnn import atomic

ROOT = Path(__file__).resolve().parents[1]
SIZE = 200_000  # large enough that a write takes several system calls


def _writers(code: str, n: int, cwd: Path) -> list[subprocess.Popen]:
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), str(w)], cwd=cwd, env=env,
                             stderr=subprocess.PIPE, text=True) for w in range(n)]


def test_two_processes_writing_one_file_never_tear_it_or_make_it_vanish(tmp_path):
    target = tmp_path / "record.txt"
    atomic.write_text(target, "start\n")
    procs = _writers(f"""
        import sys
        from rotrnn import atomic
        w = sys.argv[1]
        for i in range(200):
            head = f"{{w}} {{i:03d}} "
            atomic.write_text("record.txt", head + "x" * ({SIZE} - len(head) - 1) + "\\n")
        """, 2, tmp_path)
    reads, bad = 0, []
    while any(p.poll() is None for p in procs):
        try:
            text = target.read_text()
        except FileNotFoundError:
            bad.append("missing")
            continue
        reads += 1
        if text != "start\n" and (len(text) != SIZE or text.count("x") != SIZE - 7):
            bad.append(f"torn read of {len(text)} bytes")
    errors = [p.stderr.read() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert reads > 0 and not bad, bad[:5]
    assert [p.name for p in tmp_path.iterdir()] == ["record.txt"]  # no temp file left


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "m.json"
    atomic.write_json(target, {"a": 1})

    def boom(f):
        f.write(b'{"half": ')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic.replace(target, boom)
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_an_unreadable_metrics_json_left_by_a_crash_does_not_fail_every_retry(tmp_path):
    """A metrics.json emptied or cut by a crash: the run is not finished, it resumes (and rewrites it at the end)."""
    from rotrnn.train.rundir import RunDir

    run = RunDir(tmp_path / "run")
    config = {"seed": 0, "train": {"epochs": 1}}
    run.write_config(config)
    run.last.parent.mkdir(parents=True)
    run.last.write_bytes(b"checkpoint")
    for text in ("", '{"status": "fini', "\xff\xfe"):
        run.metrics.write_text(text, errors="surrogateescape")
        with pytest.warns(RuntimeWarning, match="metrics.json: not valid JSON"):
            assert run.decide(config) == "resume"


def test_reading_the_umask_never_changes_it(monkeypatch, tmp_path):
    """Setting the umask to read it would give another thread's new files the wrong mode in between."""
    real = os.umask(0o027)
    try:
        def forbidden(mask):
            raise AssertionError(f"os.umask({mask:o}) called")

        monkeypatch.setattr(os, "umask", forbidden)
        assert atomic.umask() == 0o027
        atomic.write_text(tmp_path / "f", "x")
        assert (tmp_path / "f").stat().st_mode & 0o777 == 0o640
    finally:
        monkeypatch.undo()
        os.umask(real)


def _provenance(folder: Path, suite: str, commit: str) -> None:
    atomic.write_json(folder / "provenance.json", {
        "suite": suite, "command": f"rotrnn report --suite {suite}", "commit": commit, "generated_utc": "now",
        "runs": 0, "experiment": f"rotrnn-{suite}", "runs_command": "snakemake", "files": ["lra.md"]})


def test_reports_finishing_together_lose_no_suite_in_the_index(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "reports" / "smoke").mkdir(parents=True)
    procs = _writers("""
        import sys
        from pathlib import Path
        from rotrnn import atomic
        from rotrnn.report.index import write_index
        suite, folder = [("paper", "reports"), ("smoke", "reports/smoke")][int(sys.argv[1])]
        for i in range(40):
            atomic.write_json(Path(folder) / "provenance.json", {
                "suite": suite, "command": "c", "commit": f"{suite}{i:03d}", "generated_utc": "now", "runs": 0,
                "experiment": "e", "runs_command": "r", "files": ["lra.md"]})
            write_index("params.yaml")
        """, 2, tmp_path)
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    index = (tmp_path / "reports" / "README.md").read_text()
    assert "at commit `paper039`" in index and "at commit `smoke039`" in index


def test_the_index_is_rewritten_under_its_lock(tmp_path, monkeypatch):
    """While another process holds the index lock, write_index waits (it would otherwise build from records that
    the holder is about to supersede)."""
    from rotrnn import locks

    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "reports").mkdir()
    _provenance(tmp_path / "reports", "paper", "c0ffee")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, time
        from rotrnn import locks
        with locks.locked("reports/.README.md.lock"):
            print("held", flush=True)
            sys.stdin.readline()
        """)], cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert holder.stdout.readline().strip() == "held"
    monkeypatch.chdir(tmp_path)
    calls = []
    real = locks._acquire

    def acquire(f, path, timeout, poll):
        calls.append(path)
        holder.stdin.write("\n")  # let the holder go, then wait for the lock as write_index would
        holder.stdin.flush()
        return real(f, path, timeout, poll)

    monkeypatch.setattr(locks, "_acquire", acquire)
    from rotrnn.report.index import write_index

    write_index("params.yaml")
    assert holder.wait(timeout=60) == 0
    assert calls == [Path("reports/.README.md.lock")]
    assert "at commit `c0ffee`" in (tmp_path / "reports/README.md").read_text()
