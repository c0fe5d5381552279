"""A file-based MLflow store that many cluster jobs would write is refused (issue 20, item 8): a SQLite store on a
network filesystem (read from the mount table: here a fake one), and any SQLite store under Slurm ($SLURM_JOB_ID, or
the Snakefile submitting to a cluster), each in one line naming the store and the fix; a tracking server is
accepted."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rotrnn.errors import UserError
from rotrnn.mounts import mount_of
from rotrnn.train.tracking import check_store

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def mounts(tmp_path) -> Path:
    """A mount table in /proc/mounts' format: / local, and under tmp_path an NFS, a Lustre, a FUSE sshfs (a name
    with a space, which the table writes as \\040) and a local scratch disk mounted inside the NFS share."""
    for d in ("nfs", "lustre", "my home", "nfs/scratch"):
        (tmp_path / d).mkdir(parents=True)
    table = tmp_path / "mounts"
    table.write_text("\n".join([
        "/dev/vda / ext4 rw,relatime 0 0",
        f"server:/export {tmp_path}/nfs nfs4 rw,vers=4.2 0 0",
        f"10.0.0.1@tcp:/fs {tmp_path}/lustre lustre rw,flock 0 0",
        f"user@host:/home {str(tmp_path / 'my home').replace(' ', chr(92) + '040')} fuse.sshfs rw 0 0",
        f"/dev/nvme0n1 {tmp_path}/nfs/scratch xfs rw 0 0",
    ]) + "\n")
    return table


def test_the_mount_of_a_path_is_the_longest_mount_point_above_it(tmp_path, mounts):
    assert mount_of(tmp_path / "nfs/a/b/mlflow.db", mounts).fstype == "nfs4"  # need not exist yet
    assert mount_of(tmp_path / "nfs/scratch/mlflow.db", mounts).fstype == "xfs"
    assert mount_of(tmp_path / "my home/x.db", mounts).fstype == "fuse.sshfs"
    assert mount_of(tmp_path / "local.db", mounts).fstype == "ext4"


@pytest.mark.parametrize("where, fstype", [("nfs", "nfs4"), ("lustre", "lustre"), ("my home", "fuse.sshfs")])
def test_sqlite_on_a_network_filesystem_is_refused(tmp_path, mounts, where, fstype):
    db = tmp_path / where / "mlflow.db"
    with pytest.raises(UserError) as err:
        check_store(f"sqlite:///{db}", cluster=False, mounts=mounts)
    message = str(err.value)
    assert "\n" not in message
    assert f"{db} is on a network filesystem ({fstype} at {tmp_path / where})" in message
    assert "MLFLOW_TRACKING_URI=https://" in message
    assert not db.exists()


def test_local_sqlite_and_servers_are_accepted(tmp_path, mounts):
    check_store(f"sqlite:///{tmp_path}/nfs/scratch/mlflow.db", cluster=False, mounts=mounts)
    check_store(f"sqlite:///{tmp_path}/mlflow.db", cluster=False, mounts=mounts)
    for uri in ("https://mlflow.example.org", "http://127.0.0.1:5000", "postgresql://db/mlflow"):
        check_store(uri, cluster=True, mounts=mounts)


def test_a_slurm_job_refuses_any_file_store(tmp_path, monkeypatch):
    """`rotrnn tracking init` (and so every training job: both create the store through init_store) inside a Slurm
    job with the default SQLite store: exit 2, one line, no database written."""
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(SLURM_JOB_ID="4242", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "rotrnn.cli", "tracking", "init"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert f"MLflow store sqlite:///{tmp_path}/mlflow.db: a file store under Slurm (job 4242)" in lines[0]
    assert "export MLFLOW_TRACKING_URI=https://HOST:PORT" in lines[0]
    assert not (tmp_path / "mlflow.db").exists()
    # a tracking server is what the refusal asks for: accepted under Slurm
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    check_store("https://mlflow.example.org:8443")
