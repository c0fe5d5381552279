"""MLflow tracking for training runs.

The store defaults to ``sqlite:///mlflow.db`` in the working directory (the project root); ``MLFLOW_TRACKING_URI``
overrides it (a tracking server on a cluster). A fresh SQLite store must be created by one process before many jobs
use it, otherwise their concurrent schema migrations corrupt it: :func:`init_store` creates the database and the
experiment under an exclusive file lock, and every job calls it first (``rotrnn tracking init`` does it up front).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

DEFAULT_URI = "sqlite:///mlflow.db"


def tracking_uri(config_uri: str | None = None) -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI") or config_uri or DEFAULT_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())  # jobs may run from other directories
    return uri


def experiment_name(config: dict[str, Any]) -> str:
    template = (config.get("tracking") or {}).get("experiment", "rotrnn-{suite}")
    return template.format(suite=config["suite"])


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    if not uri.startswith("sqlite:///"):
        yield  # a server or database serialises its own migrations
        return
    db = Path(uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(str(db) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def init_store(uri: str, experiment: str) -> str:
    """Create the store (schema migrations) and the experiment once, safely under concurrency; returns its id."""
    from mlflow.tracking import MlflowClient

    with _store_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(experiment)
        return exp.experiment_id if exp is not None else client.create_experiment(experiment)


def git_commit(cwd: str | Path = ".") -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        commit = out.stdout.strip() if out.returncode == 0 else "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("-dirty" if dirty and commit != "unknown" else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Tracker:
    """One MLflow run per training job; a resumed job reopens its run (the id is kept in the checkpoint)."""

    def __init__(self, config: dict[str, Any], run_id: str | None = None):
        import mlflow
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri((config.get("tracking") or {}).get("uri"))
        self.experiment = experiment_name(config)
        self.experiment_id = init_store(self.uri, self.experiment)
        self.client = MlflowClient(tracking_uri=self.uri)
        self._mlflow = mlflow
        if run_id is not None:
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
        else:
            from rotrnn.config import run_name
            run = self.client.create_run(self.experiment_id, run_name=run_name(config))
            self.run_id = run.info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):  # MLflow's batch limit
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, int(step)) for k, v in metrics.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)
