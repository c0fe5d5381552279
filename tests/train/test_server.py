"""The cluster's MLflow server (issue 20, item 5): `rotrnn tracking serve` starts MLflow's basic-auth app on
127.0.0.1; a request without credentials (or with a wrong password) is refused with 401, a Host header the server
does not serve with 403, and a real `rotrnn train` job with a user's credentials in MLflow's environment variables
logs its run there. The server runs in its own process group, with bounded waits, and is always stopped."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from .conftest import make_project

pytestmark = pytest.mark.slow  # the server takes 20-40 s to start on 2 busy cores

ROOT = Path(__file__).resolve().parents[2]
ADMIN_PASSWORD = "admin-" + os.urandom(9).hex()
JOBS_USER, JOBS_PASSWORD = "jobs", "jobs-" + os.urandom(9).hex()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`rotrnn tracking serve` on a free port; yields its URL once /health answers (at most 120 s)."""
    tmp = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rotrnn.cli", "tracking", "serve", "--backend-store-uri", f"sqlite:///{tmp}/mlflow.db",
         "--artifacts-destination", str(tmp / "artifacts"), "--state-dir", str(tmp / "auth"), "--port", str(port)],
        cwd=tmp, env=_env(MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN_PASSWORD), stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)  # its own process group: mlflow starts uvicorn as a child, stopped with it
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited {proc.returncode}: {(tmp / 'server.log').read_text()[-3000:]}")
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not up after 120 s: {(tmp / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, tmp
    finally:
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(wait)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()


def test_the_server_refuses_requests_without_credentials(server):
    url, tmp = server
    api = f"{url}/api/2.0/mlflow/experiments/search"
    assert requests.get(api, params={"max_results": 1}, timeout=10).status_code == 401
    assert requests.get(api, params={"max_results": 1}, auth=("admin", "wrong"), timeout=10).status_code == 401
    assert requests.post(f"{url}/api/2.0/mlflow/experiments/create", json={"name": "forged"},
                         timeout=10).status_code == 401
    ok = requests.get(api, params={"max_results": 1}, auth=("admin", ADMIN_PASSWORD), timeout=10)
    assert ok.status_code == 200
    # a Host header it does not serve (DNS rebinding) is refused even with credentials
    bad_host = requests.get(api, params={"max_results": 1}, auth=("admin", ADMIN_PASSWORD),
                            headers={"Host": f"evil.example:{url.rsplit(':', 1)[1]}"}, timeout=10)
    assert bad_host.status_code == 403
    # the auth config and user database are private; the admin password is not written anywhere
    assert (tmp / "auth").stat().st_mode & 0o777 == 0o700
    assert (tmp / "auth/basic_auth.ini").stat().st_mode & 0o777 == 0o600
    assert ADMIN_PASSWORD not in (tmp / "auth/basic_auth.ini").read_text()


def test_a_training_job_with_credentials_logs_its_run(server, tmp_path, majority_data, monkeypatch):
    url, _ = server
    from mlflow.server import get_app_client
    from mlflow.tracking import MlflowClient

    # the admin makes the jobs' user (README, MLflow: the cluster server)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
    get_app_client("basic-auth", tracking_uri=url).create_user(JOBS_USER, JOBS_PASSWORD)

    project = make_project(tmp_path, majority_data)
    job = _env(MLFLOW_TRACKING_URI=url, MLFLOW_TRACKING_USERNAME=JOBS_USER, MLFLOW_TRACKING_PASSWORD=JOBS_PASSWORD)
    proc = subprocess.run([sys.executable, "-m", "rotrnn.cli", "train", "--task", "majority", "--model", "lru",
                           "--seed", "0", "--quiet", "--set", "train.epochs=1"], cwd=project, env=job,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", JOBS_USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", JOBS_PASSWORD)
    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name("rotrnn-test")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "majority/lru/0" and run.info.status == "FINISHED"
    assert "val/accuracy" in run.data.metrics and run.data.params["train.epochs"] == "1"
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"metrics.json"}
    assert not (project / "mlflow.db").exists()  # nothing went to the default store


def test_serve_refuses_a_missing_or_weak_admin_password(tmp_path):
    for password in (None, "password1234", "short"):
        env = _env(**({"MLFLOW_AUTH_ADMIN_PASSWORD": password} if password else {}))
        proc = subprocess.run([sys.executable, "-m", "rotrnn.cli", "tracking", "serve", "--backend-store-uri",
                               f"sqlite:///{tmp_path}/mlflow.db", "--artifacts-destination", str(tmp_path / "a"),
                               "--state-dir", str(tmp_path / "auth"), "--port", str(_free_port())],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "$MLFLOW_AUTH_ADMIN_PASSWORD" in proc.stderr


@pytest.mark.parametrize("make", ["other_user", "group_writable", "symlink"])
def test_serve_refuses_a_state_dir_it_does_not_own_alone(tmp_path, make):
    """The auth app's user database lives in --state-dir: a folder another user made first (or can write, or a link
    to elsewhere) is refused in one line naming it, and nothing is written into it."""
    state = tmp_path / "auth"
    if make == "symlink":
        (tmp_path / "elsewhere").mkdir()
        state.symlink_to(tmp_path / "elsewhere")
    else:
        state.mkdir(mode=0o700)
        if make == "group_writable":
            state.chmod(0o770)
        elif os.getuid() == 0:  # root can hand the folder to another user; others see it as their own otherwise
            os.chown(state, 65534, 65534)
        else:
            state = Path("/")  # a directory of another user (root) that every machine has
    proc = subprocess.run([sys.executable, "-m", "rotrnn.cli", "tracking", "serve", "--backend-store-uri",
                           f"sqlite:///{tmp_path}/mlflow.db", "--artifacts-destination", str(tmp_path / "a"),
                           "--state-dir", str(state), "--port", str(_free_port())],
                          cwd=tmp_path, env=_env(MLFLOW_AUTH_ADMIN_PASSWORD="a-long-enough-secret"),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert f"{state}: the tracking server's --state-dir must be a directory of yours with mode 0700" in proc.stderr
    assert not (state / "basic_auth.ini").exists() and not (tmp_path / "elsewhere" / "basic_auth.ini").exists()
