"""A job's life on a cluster: divergence recorded as a result, one MLflow run per job whatever kills it, a switch of
tracking store, the run-directory lock, one-line errors for bad input, and file modes that honour the umask."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from rotrnn.train import checkpoint as ckpt
from rotrnn.train.loop import DIVERGED_EXIT, REQUEUE_EXIT, all_finite

BASE = ("--task", "majority", "--model", "rotrnn", "--seed", "0", "--quiet")


def store(project: Path, name: str = "mlflow.db") -> str:
    return f"sqlite:///{project / name}"


def start(project: Path, *args: str, uri: str | None = None, **kw) -> subprocess.Popen:
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri or store(project), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "rotrnn.cli", "train", *BASE, *args], cwd=project, env=env,
                            stderr=subprocess.PIPE, text=True, **kw)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    t = time.time()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"job ended (exit {proc.returncode}) before writing {path}: {proc.stderr.read()}")
        if time.time() - t > timeout:
            proc.kill()
            raise AssertionError(f"no {path} after {timeout} s")
        time.sleep(0.005)


def runs_named(uri: str, name: str = "majority/rotrnn/0"):
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("rotrnn-test")
    return [r for r in client.search_runs([exp.experiment_id]) if r.info.run_name == name] if exp else []


def test_divergence_is_recorded_never_checkpointed_and_not_rerun(project):
    """The issue's own example: ssm_lr 1e6 with a checkpoint every step."""
    args = ("--out", "div", "--set", "train.ssm_lr=1e6", "--set", "train.checkpoint_every=1")
    code, err = finish(start(project, *args))
    assert code == DIVERGED_EXIT, err
    assert "diverged at step" in err and "Traceback" not in err
    summary = json.loads((project / "div" / "metrics.json").read_text())
    assert summary["status"] == "diverged" and summary["diverged_at_step"] >= 1
    for path in (project / "div" / "checkpoints").glob("*.pt"):
        saved = ckpt.load(path)
        assert all_finite(saved["model"]) and all_finite(saved["optimizer"]["state"]), path
        assert saved["state"]["global_step"] < summary["diverged_at_step"]
    [run] = runs_named(store(project))
    assert run.info.status == "FAILED"
    assert run.data.tags["diverged_at_step"] == str(summary["diverged_at_step"])
    # a rerun (a workflow manager's retry) does not train again: the divergence is the result
    code, err = finish(start(project, *args))
    assert code == DIVERGED_EXIT and "already diverged" in err + ""
    assert len(runs_named(store(project))) == 1


def test_kill9_before_and_after_the_first_checkpoint_leaves_one_run_logged_once(project):
    args = ("--out", "k", "--set", "train.checkpoint_every=30", "--set", "train.epochs=3")
    reference = start(project, "--out", "ref", "--no-track", *args[2:])
    assert finish(reference)[0] == 0
    run = project / "k"
    proc = start(project, *args)
    wait_for(run / "mlflow_run.json", proc)  # the MLflow run exists; the first checkpoint is 30 steps away
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (run / "checkpoints" / "last.pt").exists()
    proc = start(project, *args)
    # kill as soon as the checkpoint (step 30 of 36) exists: the last 6 steps of these tiny batches take well under
    # the 0.3 s this test used to wait, so with a fast scan the job could end before the kill
    wait_for(run / "checkpoints" / "last.pt", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (run / "metrics.json").exists()
    code, err = finish(start(project, *args))
    assert code == 0, err
    [mlrun] = runs_named(store(project))
    assert mlrun.info.status == "FINISHED"
    assert mlrun.info.run_id == json.loads((run / "mlflow_run.json").read_text())["run_id"]
    client = MlflowClient(tracking_uri=store(project))
    for key in mlrun.data.metrics:
        steps = [m.step for m in client.get_metric_history(mlrun.info.run_id, key)]
        assert len(steps) == len(set(steps)), (key, sorted(steps))
    assert len([m for m in client.get_metric_history(mlrun.info.run_id, "val/accuracy")]) == 3  # one per epoch
    got, want = ckpt.load(run / "checkpoints/last.pt")["model"], ckpt.load(project / "ref/checkpoints/last.pt")["model"]
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_a_new_tracking_store_continues_in_a_new_run_that_names_the_old_one(project):
    args = ("--out", "sw", "--set", "train.checkpoint_every=5", "--set", "train.epochs=6")
    proc = start(project, *args)
    wait_for(project / "sw" / "checkpoints" / "last.pt", proc)
    proc.send_signal(signal.SIGTERM)
    assert finish(proc)[0] == REQUEUE_EXIT
    [old] = runs_named(store(project))
    assert old.info.status == "KILLED"
    new_store = store(project, "server.db")
    code, err = finish(start(project, *args, uri=new_store))
    assert code == 0, err
    assert "tracking store changed" in err and err.count("tracking store changed") == 1
    [new] = runs_named(new_store)
    assert new.info.status == "FINISHED"
    assert new.data.tags["previous_run_id"] == old.info.run_id
    assert new.data.tags["previous_tracking_uri"] == store(project)


def test_second_job_on_a_run_directory_exits_at_once_and_a_dead_holders_lock_is_free(project):
    args = ("--out", "lk", "--no-track", "--set", "train.epochs=40", "--set", "train.checkpoint_every=5")
    a, b = start(project, *args), start(project, *args)
    t0 = time.time()
    while a.poll() is None and b.poll() is None:
        assert time.time() - t0 < 120, "neither job stopped"
        time.sleep(0.05)
    loser, holder = (a, b) if a.poll() is not None else (b, a)
    code, err = finish(loser)
    assert holder.poll() is None, "the holder must still be training"
    assert code == 2 and "is in use by another job" in err and f"pid {holder.pid}" in err
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    wait_for(project / "lk" / "checkpoints" / "last.pt", holder)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    t0 = time.time()
    again = start(project, *args[:-4], "--set", "train.epochs=1", "--set", "train.checkpoint_every=5")
    code, err = finish(again)
    # the dead holder's lock is gone: the job starts at once (it resumes, then refuses the changed epochs)
    assert code == 2 and "holds a run with a different config" in err and time.time() - t0 < 60
    code, err = finish(start(project, *args[:2], "--set", "train.epochs=40", "--set", "train.checkpoint_every=5"))
    assert code == 0, err


@pytest.mark.parametrize("args,message", [
    (("--set", "train.epochs=abc"), "train.epochs: 'abc' (str) is not an integer"),
    (("--set", "train.epoch=3"), "did you mean `epochs`"),
    (("--set", "net.n_layer=3"), "did you mean `n_layers`"),
    (("--data", "nowhere"), "--data nowhere: no such directory"),
])
def test_bad_input_is_one_line_and_writes_nothing(project, args, message):
    code, err = finish(start(project, "--out", "bad", *args))
    assert code == 2, err
    assert message in err and "Traceback" not in err and err.strip().count("\n") == 0
    assert not (project / "bad").exists()


def test_missing_prepared_data_is_one_line_and_writes_nothing(project):
    (project / "prepared" / "test" / "majority").unlink()
    code, err = finish(start(project))
    assert code == 2 and "no prepared data here" in err and "prepared/test/majority" in err
    assert "Traceback" not in err and err.strip().count("\n") == 0
    assert not (project / "runs").exists()


@pytest.mark.parametrize("mask", [0o022, 0o002])
def test_checkpoints_and_run_files_honour_the_umask(tmp_path, mask):
    from rotrnn import atomic

    old = os.umask(mask)
    try:
        ckpt.atomic_save({"x": torch.ones(2)}, tmp_path / "c.pt")
        atomic.write_json(tmp_path / "m.json", {})
        d = atomic.mkdtemp(".t-", tmp_path)
    finally:
        os.umask(old)
    assert (tmp_path / "c.pt").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o666 & ~mask
    assert d.stat().st_mode & 0o777 == 0o777 & ~mask
