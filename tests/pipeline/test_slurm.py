"""A real Slurm run: a one-node cluster (slurmctld + slurmd + munge, installed from Debian's slurm-wlm and munge if
missing) and a smoke subset through `snakemake --profile` with a test copy of profiles/slurm (squeue status
checks, the cluster's partition, no GPU: the node has none). Prepare and train run as Slurm jobs (their job logs are
kept and checked), raw data, tracking and the report on the submitting host; the daemons started here are stopped.

Skipped only where it cannot run: not root (installing and starting the daemons needs it) or no apt-get."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from .conftest import BIN, ROOT, snakemake, tool_env

pytestmark = pytest.mark.slow

TOOLS = ("slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel", "munged", "munge", "unmunge")


def _run(*args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, **kw)


def _install() -> None:
    if all(shutil.which(t) for t in TOOLS):
        return
    if os.geteuid() != 0:
        pytest.skip("installing slurm-wlm and munge needs root")
    if not shutil.which("apt-get"):
        pytest.skip("no apt-get to install Debian's slurm-wlm and munge")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "slurm-wlm", "munge"]
    proc = _run(*cmd, timeout=600, env=env)
    if proc.returncode != 0:  # a stale package index: refresh once
        _run("apt-get", "update", "-q", timeout=300, env=env)
        proc = _run(*cmd, timeout=600, env=env)
    missing = [t for t in TOOLS if not shutil.which(t)]
    assert proc.returncode == 0 and not missing, f"apt-get install failed (missing {missing}):\n{proc.stderr[-3000:]}"


def _munge_works() -> bool:
    try:
        enc = _run("munge", "-n", timeout=10)
        return enc.returncode == 0 and _run("unmunge", input=enc.stdout, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _start_munge() -> int | None:
    """Start munged if no working one runs; returns the pid of the one started here."""
    if _munge_works():
        return None
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        created = _run("mungekey", "--create", "--keyfile", str(key), timeout=30)
        assert created.returncode == 0, created.stderr
        shutil.chown(key, "munge", "munge")
        key.chmod(0o400)
    for d in ("/run/munge", "/var/log/munge", "/var/lib/munge"):
        Path(d).mkdir(parents=True, exist_ok=True)
        shutil.chown(d, "munge", "munge")
    started = _run("runuser", "-u", "munge", "--", "munged", timeout=30)
    assert started.returncode == 0, f"munged did not start: {started.stderr}"
    for _ in range(50):
        if _munge_works():
            return int(Path("/run/munge/munged.pid").read_text())
        time.sleep(0.2)
    raise AssertionError("munged started but munge/unmunge fail")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_resources() -> tuple[int, int]:
    out = _run("slurmd", "-C").stdout
    fields = dict(kv.split("=", 1) for kv in out.split() if "=" in kv)
    return int(fields["CPUs"]), int(fields["RealMemory"])


SYSTEM_CONF = Path("/etc/slurm/slurm.conf")


def _write_conf(d: Path) -> Path:
    host = socket.gethostname().split(".")[0]
    cpus, mem = _node_resources()
    for sub in ("state", "spool", "log"):
        (d / sub).mkdir(parents=True)
    conf = d / "slurm.conf"
    conf.write_text(f"""ClusterName=rotrnntest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=300
ReturnToService=2
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem - 512} State=UNKNOWN
PartitionName=ci Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
    return conf


def _install_conf(conf: Path, backup: Path) -> None:
    """The cluster's config at Slurm's default path: the plugin's job step drops every SLURM_* variable (SLURM_CONF
    too) before `srun`, which then only finds /etc/slurm/slurm.conf. A config already there is restored after."""
    SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
    if SYSTEM_CONF.exists():
        shutil.copy2(SYSTEM_CONF, backup)
    shutil.copy2(conf, SYSTEM_CONF)


def _restore_conf(backup: Path) -> None:
    if backup.exists():
        shutil.copy2(backup, SYSTEM_CONF)
    else:
        SYSTEM_CONF.unlink(missing_ok=True)


@pytest.fixture
def slurm_cluster(tmp_path):
    _install()
    if os.geteuid() != 0:
        pytest.skip("starting slurmctld and slurmd as SlurmUser=root needs root")
    munge_pid = _start_munge()
    conf = _write_conf(tmp_path / "slurm")
    backup = tmp_path / "slurm" / "slurm.conf.previous"
    env = {**os.environ, "SLURM_CONF": str(conf)}
    daemons = []
    _install_conf(conf, backup)
    try:
        for daemon in (["slurmctld", "-D", "-i", "-f", str(conf)], ["slurmd", "-D", "-f", str(conf)]):
            daemons.append(subprocess.Popen(daemon, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                            start_new_session=True))
            time.sleep(1)
        for _ in range(120):
            state = _run("sinfo", "-h", "-o", "%t", env=env).stdout.strip()
            if state == "idle":
                break
            time.sleep(0.5)
        else:
            logs = "\n".join(p.read_text()[-1500:] for p in (tmp_path / "slurm/log").glob("*.log"))
            raise AssertionError(f"the node did not become idle (sinfo: {state!r})\n{logs}")
        yield env
    finally:
        _run("scancel", "--full", "-u", "root", env=env)
        for p in reversed(daemons):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        _restore_conf(backup)
        if munge_pid is not None:
            os.kill(munge_pid, signal.SIGTERM)


def _test_profile(project: Path) -> Path:
    """profiles/slurm adapted to the test cluster: squeue status (no accounting), its partition, no GPU."""
    profile = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
    profile.update({"jobs": 2, "latency-wait": 5, "slurm-status-command": "squeue",
                    "slurm-init-seconds-before-status-checks": 2, "slurm-keep-successful-logs": True})
    profile["default-resources"] = {**profile["default-resources"], "slurm_partition": "ci", "mem_mb": 1500,
                                    "runtime": 10}
    train = profile["set-resources"]["train"]
    for key in ("gpu", "gpu_model", "gres", "cpus_per_gpu"):
        train.pop(key, None)
    train["mem_mb"] = 2000  # the node's memory, not a GPU node's
    d = project / "slurm-test"
    d.mkdir()
    (d / "config.yaml").write_text(yaml.safe_dump(profile))
    return d


@pytest.fixture
def tracking_server(tmp_path):
    """A tracking server for the Slurm jobs (a Slurm run refuses a SQLite store): plain `mlflow server` on loopback,
    where the one-node cluster's jobs run; its own process group, always stopped."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
                             "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1",
                             "--port", str(port)], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not start")
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)


def test_smoke_subset_on_slurm(project, slurm_cluster, tracking_server):
    profile = _test_profile(project)
    proc = snakemake(project, "--profile", "slurm-test", "--config", "tasks=cifar,cumsum", "models=lru", "seeds=0",
                     env=tool_env(SLURM_CONF=slurm_cluster["SLURM_CONF"], MLFLOW_TRACKING_URI=tracking_server),
                     timeout=500)
    assert "executor slurm" in (proc.stdout + proc.stderr).lower() or (project / ".snakemake/slurm_logs").is_dir()
    for task in ("cifar", "cumsum"):
        metrics = json.loads((project / f"runs/smoke/{task}/lru/seed0/metrics.json").read_text())
        assert metrics["status"] == "finished"
    logs = project / ".snakemake/slurm_logs"
    # prepare and train ran as Slurm jobs (one log per job, named by its job id); raw and report did not
    assert len(list((logs / "rule_train").rglob("*.log"))) == 2
    assert len(list((logs / "rule_prepare").rglob("*.log"))) == 2
    assert not (logs / "rule_raw").exists() and not (logs / "rule_report").exists()
    train_log = next((logs / "rule_train").rglob("*.log")).read_text()
    assert "rotrnn stage train" in train_log
    assert (project / "reports/smoke/lra.md").is_file()
    assert profile.name == "slurm-test"
