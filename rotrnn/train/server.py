"""`rotrnn tracking serve`: the cluster's MLflow tracking server, with authentication.

A plain ``mlflow server --host 0.0.0.0`` lets anyone who reaches the port read, change or delete runs, and
``rotrnn report`` builds the paper's tables from those runs. This starts MLflow's own ``basic-auth`` app
(``mlflow server --app-name basic-auth``, MLflow docs "Basic HTTP authentication"): every REST call needs a user and
password, users other than a run's creator may only read it (``default_permission = READ``), and the admin user is
created on first start from ``MLFLOW_AUTH_ADMIN_PASSWORD`` (never a default). ``--allowed-hosts`` lists the
``Host`` headers the server answers (MLflow refuses others, which also breaks a hostname URI such as
http://gpu042:5000 under its default list). Basic auth sends the password with every request, so the server
listens on 127.0.0.1 by default: put TLS in front (a reverse proxy) or reach it through an SSH tunnel (README,
MLflow). Jobs authenticate with ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``.
"""
from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import socket
import sys
from pathlib import Path

from rotrnn import atomic
from rotrnn.private import private_dir
from rotrnn.errors import UserError

ADMIN_PASSWORD_ENV = "MLFLOW_AUTH_ADMIN_PASSWORD"   # MLflow's own variable: the admin's password on first start
SECRET_KEY_ENV = "MLFLOW_FLASK_SERVER_SECRET_KEY"  # signs the auth app's CSRF tokens
MIN_PASSWORD = 12


def auth_config(auth_db: str, admin_username: str = "admin") -> str:
    """The basic-auth app's ini (MLFLOW_AUTH_CONFIG_PATH): its user database and the default permission. The admin
    password is not in it: MLflow reads it from MLFLOW_AUTH_ADMIN_PASSWORD."""
    return ("[mlflow]\n"
            "default_permission = READ\n"           # others' runs: readable, not editable or deletable
            f"database_uri = {auth_db}\n"
            f"admin_username = {admin_username}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            "grant_default_workspace_access = false\n")


def allowed_hosts(host: str, port: int, extra: list[str]) -> list[str]:
    """The Host headers the server answers: this machine's names and loopback at the port, the bind address, and
    the names clients use (a reverse proxy's name, with or without port)."""
    names = {host, "localhost", "127.0.0.1", socket.gethostname(), socket.getfqdn()}
    out = sorted(f"{n}:{port}" for n in names if n and n not in ("0.0.0.0", "::"))
    return out + [h for h in extra if h not in out]


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def server_command(store: str, artifacts: str, state_dir: Path, host: str, port: int, extra_hosts: list[str],
                   workers: int = 1) -> tuple[list[str], dict[str, str]]:
    """The `mlflow server` command line and environment; writes the auth ini (mode 0600) into `state_dir` (made
    0700), where the auth app's user database also lives."""
    password = os.environ.get(ADMIN_PASSWORD_ENV, "")
    if len(password) < MIN_PASSWORD or password in ("password", "password1234"):
        raise UserError(f"${ADMIN_PASSWORD_ENV}: set it to the admin's password (at least {MIN_PASSWORD} characters, "
                        "not a default) before the first start; e.g. export "
                        f"{ADMIN_PASSWORD_ENV}=\"$(openssl rand -base64 18)\" and keep it")
    mlflow = shutil.which("mlflow", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if mlflow is None:
        raise UserError("mlflow not found (install the project with `pip install -e .`)")
    # the auth app's user database lives here: a folder someone else made first, or can write, could hold theirs
    private_dir(state_dir, "the tracking server's --state-dir", "remove it or name a new directory")
    ini = state_dir / "basic_auth.ini"
    atomic.write_text(ini, auth_config(f"sqlite:///{(state_dir / 'basic_auth.db').resolve()}"))
    os.chmod(ini, 0o600)
    env = dict(os.environ, MLFLOW_AUTH_CONFIG_PATH=str(ini))
    env.setdefault(SECRET_KEY_ENV, secrets.token_hex(32))  # one key for all workers of this server
    cmd = [mlflow, "server", "--app-name", "basic-auth", "--backend-store-uri", store,
           "--artifacts-destination", artifacts, "--host", host, "--port", str(port),
           "--allowed-hosts", ",".join(allowed_hosts(host, port, extra_hosts)), "--workers", str(workers)]
    return cmd, env


def serve(store: str, artifacts: str, state_dir: Path, host: str, port: int, extra_hosts: list[str],
          workers: int = 1) -> None:
    """Replace this process with the server (so a signal to it reaches MLflow)."""
    cmd, env = server_command(store, artifacts, state_dir, host, port, extra_hosts, workers)
    if not _is_loopback(host):
        print(f"rotrnn tracking serve: listening on {host}:{port}: basic auth sends passwords in clear text; put "
              "TLS in front of this port or bind 127.0.0.1 and use an SSH tunnel (README, MLflow)", file=sys.stderr)
    print(f"rotrnn tracking serve: {' '.join(cmd[1:])}", file=sys.stderr)
    sys.stderr.flush()
    os.execve(cmd[0], cmd, env)
