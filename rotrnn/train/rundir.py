"""A job's run directory, ``paths.runs/<suite>/<task>/<model>/seed<S>/``, and the one place that decides what a job
does with it: start, resume from ``checkpoints/last.pt``, or report that the run already finished.

    config.yaml              the resolved config the run was started with
    checkpoints/last.pt      the resume point (written atomically every ``checkpoint_every`` steps and each epoch)
    checkpoints/best.pt      the parameters of the best validation epoch
    metrics.json             the summary, written last (``status``: finished, or diverged: a result too)
    mlflow_run.json          the job's one MLflow run (written when the run is created)
    .lock                    held (flock) by the job running here; the kernel drops it when the job dies
"""
from __future__ import annotations

import contextlib
import os
import socket
import sys
from pathlib import Path
from typing import Any, Iterator, Literal

import yaml

from rotrnn import atomic, locks
from rotrnn.config import ConfigError, flatten
from rotrnn.errors import UserError

Decision = Literal["new", "resume", "finished"]
DONE = ("finished", "diverged")  # metrics.json statuses that are results: the job is not run again


class RunLocked(UserError):
    """Another job holds the run directory."""


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config = self.path / "config.yaml"
        self.checkpoints = self.path / "checkpoints"
        self.last = self.checkpoints / "last.pt"
        self.best = self.checkpoints / "best.pt"
        self.metrics = self.path / "metrics.json"
        self.tracking = self.path / "mlflow_run.json"
        self.lock_file = self.path / ".lock"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the directory for the life of a job; a second job fails at once naming the holder. flock is
        released by the kernel when the holder exits or is killed, so a requeued job never waits on a dead lock."""
        try:
            with locks.locked(self.lock_file, timeout=0, note=f"host {socket.gethostname()} pid {os.getpid()}\n"):
                yield
        except locks.LockBusy as e:
            raise RunLocked(f"{self.path} is in use by another job ({e.holder or 'unknown'}); wait for it or stop it"
                            ) from None

    def clear(self) -> None:
        """Forget the run (its config, checkpoints, summary and MLflow run) so that it starts over."""
        for p in (self.metrics, self.last, self.best, self.config, self.tracking):
            p.unlink(missing_ok=True)

    def saved_config(self) -> dict[str, Any] | None:
        return yaml.safe_load(self.config.read_text()) if self.config.is_file() else None

    def decide(self, config: dict[str, Any], on_change: Literal["error", "restart"] = "error",
               fresh: bool = False) -> Decision:
        """What the job does. A directory holding another config is an error for a job started by hand (the user
        chose the directory) and starts over for a pipeline job (params.yaml changed since)."""
        if fresh:
            self.clear()
            return "new"
        previous = self.saved_config()
        if previous is not None and previous != config:
            if on_change == "error":
                was, now = flatten(previous), flatten(config)
                changed = sorted(k for k in was.keys() | now.keys() if was.get(k) != now.get(k))
                raise ConfigError(f"{self.path} holds a run with a different config (changed: {', '.join(changed)});"
                                  " use --fresh to start over or another --out")
            print(f"{self.config} holds an older config; starting this run over", file=sys.stderr)
            self.clear()
            return "new"
        if self.summary().get("status") in DONE:
            return "finished"
        return "resume" if self.last.is_file() else "new"

    def summary(self) -> dict[str, Any]:
        """metrics.json; empty if absent or unreadable (torn by a crash: the run then resumes and rewrites it)."""
        return atomic.read_json(self.metrics) or {}

    def write_config(self, config: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        if not self.config.is_file():
            atomic.write_text(self.config, yaml.safe_dump(config, sort_keys=True))
