"""MLflow tracking for training runs.

The store defaults to ``sqlite:///mlflow.db`` in the working directory (the project root); ``MLFLOW_TRACKING_URI``
overrides it (a tracking server on a cluster). A fresh SQLite store must be created by one process before many jobs
use it, otherwise their concurrent schema migrations corrupt it: :func:`init_store` creates the database and the
experiment under an exclusive file lock, and every job calls it first (``rotrnn tracking init`` does it up front).

A file store shared by cluster jobs is refused (:func:`check_store`): on a network filesystem SQLite's locks are
unreliable, and under Slurm many jobs write one file; there a tracking server is the store (README, MLflow).
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

from rotrnn import atomic, locks
from rotrnn.mounts import MOUNTS, mount_of

DEFAULT_URI = "sqlite:///mlflow.db"
SERVER_SCHEMES = ("http://", "https://")
# the environment of a Slurm job (sbatch, srun, salloc): set in every job the Slurm profile submits
SLURM_ENV = "SLURM_JOB_ID"
RUN_RECORD = "mlflow_run.json"  # in the run directory: the job's one MLflow run (id, store, experiment)


def tracking_uri(config_uri: str | None = None) -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI") or config_uri or DEFAULT_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())  # jobs may run from other directories
    return uri


def experiment_name(config: dict[str, Any]) -> str:
    template = (config.get("tracking") or {}).get("experiment", "rotrnn-{suite}")
    return template.format(suite=config["suite"])


def _local_store(uri: str) -> Path | None:
    """The file or folder of a store kept in files (SQLite, MLflow's file store), None for a server or database."""
    if uri.startswith("sqlite:"):
        rest = uri[len("sqlite:"):]
        return None if rest.strip("/") in ("", ":memory:") else Path("/" + rest.lstrip("/"))
    if uri.startswith("file:"):
        return Path("/" + uri[len("file:"):].lstrip("/"))
    return None if "://" in uri else Path(uri).resolve()


def check_store(uri: str, cluster: bool | None = None, mounts: str | os.PathLike = MOUNTS) -> None:
    """Refuse (UserError, one line naming the store and the fix) a store kept in files where many processes on
    many hosts write it: under Slurm (`cluster`, default: $SLURM_JOB_ID is set: the Slurm profile's jobs, or the
    Snakefile when it submits to a cluster), or on a network filesystem per the mount table `mounts`. A tracking
    server (http(s)) or a database server is always accepted."""
    from rotrnn.errors import UserError

    path = _local_store(uri)
    if path is None:
        return
    if cluster is None:
        cluster = SLURM_ENV in os.environ
    fix = ("start a tracking server and point the jobs at it: export MLFLOW_TRACKING_URI=https://HOST:PORT "
           "(README, MLflow: the cluster server)")
    if cluster:
        job = os.environ.get(SLURM_ENV)
        raise UserError(f"MLflow store {uri}: a file store under Slurm{f' (job {job})' if job else ''}, where many "
                        f"jobs would write one SQLite file and corrupt it; {fix}")
    mount = mount_of(path, mounts)
    if mount is not None and mount.is_network:
        raise UserError(f"MLflow store {uri}: {path} is on a network filesystem ({mount.fstype} at "
                        f"{mount.mountpoint}), where SQLite's locks are unreliable; {fix}, or keep the store on a "
                        "local disk (MLFLOW_TRACKING_URI=sqlite:////local/disk/mlflow.db)")


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    if not uri.startswith("sqlite:///"):
        yield  # a server or database serialises its own migrations
        return
    db = Path(uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with locks.locked(str(db) + ".lock"):
        yield


def experiment_description(suite: str) -> str:
    return (f"Suite `{suite}` of the RotRNN reproduction (RotRNN vs LRU vs DLR; Dolga et al. 2024): one run per "
            f"task × model × seed, configured by `suites.{suite}` in params.yaml and made by "
            f"`snakemake --config suite={suite}` (or `dvc repro`, or `rotrnn train --suite {suite}` by hand). "
            f"Tables and figures: `rotrnn report --suite {suite}`.")


def init_store(uri: str, experiment: str, description: str | None = None) -> str:
    """Create the store (schema migrations) and the experiment once, safely under concurrency; returns its id.
    The description is the experiment's note in the MLflow UI."""
    from mlflow.tracking import MlflowClient

    check_store(uri)
    with _store_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            tags = {"mlflow.note.content": description} if description else None
            return client.create_experiment(experiment, tags=tags)
        if description and exp.tags.get("mlflow.note.content") != description:
            client.set_experiment_tag(exp.experiment_id, "mlflow.note.content", description)
        return exp.experiment_id


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
    """One MLflow run per training job, whatever happens to the job.

    The run id is created once and stored in the run directory at once (atomically, :data:`RUN_RECORD`), so every
    later attempt of the job, killed at any point, continues that run. A resumed job logs no (metric, step) that is
    already in the run (resumed training repeats the steps after the last checkpoint bit for bit, so they hold the
    same values). If the run directory names another tracking store than the current one (a move from the local
    SQLite file to a server), or its run is gone, the job continues in a new run that records the old run id and
    store as tags.
    """

    def __init__(self, config: dict[str, Any], run_dir: str | Path, quiet: bool = False):
        from mlflow.tracking import MlflowClient

        from rotrnn.config import run_name

        self.uri = tracking_uri(config["tracking"]["uri"])
        self.experiment = experiment_name(config)
        self.experiment_id = init_store(self.uri, self.experiment, experiment_description(config["suite"]))
        self.client = MlflowClient(tracking_uri=self.uri)
        self.record_path = Path(run_dir) / RUN_RECORD
        record = atomic.read_json(self.record_path)
        self.logged: dict[str, int] = {}
        if record and record.get("tracking_uri") == self.uri and self._exists(record["run_id"]):
            self.run_id, self.new = record["run_id"], False
            self.client.update_run(self.run_id, status="RUNNING")
            self.logged = self._logged_steps()
            return
        tags = {"run_dir": str(Path(run_dir).resolve())}
        if record:
            tags.update(previous_run_id=record["run_id"], previous_tracking_uri=record.get("tracking_uri", "unknown"))
        self.run_id = self.client.create_run(self.experiment_id, run_name=run_name(config), tags=tags).info.run_id
        self.new = True
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        atomic.write_json(self.record_path, {"run_id": self.run_id, "tracking_uri": self.uri,
                                             "experiment": self.experiment})
        if record:
            print(f"{run_name(config)}: tracking store changed ({record.get('tracking_uri')} -> {self.uri}); "
                  f"continuing in new MLflow run {self.run_id} (tag previous_run_id={record['run_id']})",
                  file=sys.stderr)

    def _exists(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(run_id)
            return True
        except MlflowException:
            return False

    def _logged_steps(self) -> dict[str, int]:
        """metric key -> the last step already logged in this run."""
        keys = self.client.get_run(self.run_id).data.metrics
        return {k: max(m.step for m in self.client.get_metric_history(self.run_id, k)) for k in keys}

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
        fresh = [Metric(k, float(v), now, int(step)) for k, v in metrics.items() if step > self.logged.get(k, -1)]
        if fresh:
            self.client.log_batch(self.run_id, metrics=fresh)
            self.logged.update({m.key: int(step) for m in fresh})

    def log_dataset(self, name: str, meta: dict[str, Any], path: str | Path) -> None:
        """The prepared data as the run's dataset input: its checksum as the digest, its directory as the source,
        split sizes and task kind as the profile (the UI's Datasets column)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        profile = {"splits": meta.get("splits"), "kind": meta.get("kind"), "l_max": meta.get("l_max"),
                   "preprocessing_version": meta.get("preprocessing_version")}
        dataset = Dataset(name=name, digest=str(meta.get("checksum", "unknown"))[:36], source_type="local",
                          source=json.dumps({"uri": str(Path(path).resolve())}), profile=json.dumps(profile))
        self.client.log_inputs(self.run_id, [DatasetInput(dataset, [InputTag("mlflow.data.context", "training")])])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)
