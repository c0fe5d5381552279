"""Training jobs: learning, determinism, exact resume after SIGKILL, SIGTERM → checkpoint + requeue exit code,
non-finite loss handling, the evaluate command."""
from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rotrnn.data import PreparedWriter
from rotrnn.train import checkpoint as ckpt
from rotrnn.config import load_params, resolve
from rotrnn.train.loop import DIVERGED_EXIT, REQUEUE_EXIT, all_finite, train


def config(project: Path, model: str = "rotrnn", seed: int = 0, *overrides: str) -> dict:
    return resolve(load_params(project / "params.yaml"), "test", "majority", model, seed, list(overrides))


def cli(project: Path, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rotrnn.cli", "train", "--task", "majority", "--model", "rotrnn",
                             "--seed", "0", "--quiet", "--no-track", *args], cwd=project, **kw)


@pytest.mark.parametrize("model", ["rotrnn", "lru", "dlr"])
def test_short_run_learns_and_beats_chance(project, model):
    code, summary = train(config(project, model, 0, "train.epochs=5"), quiet=True, track=False)
    assert code == 0
    history = summary["history"]
    assert history[-1]["val/loss"] < 0.75 * history[0]["val/loss"]
    # chance: always predicting the most frequent class of the test set
    test_labels = np.load(project / "prepared/test/majority/test.labels.npy")
    chance = np.bincount(test_labels).max() / len(test_labels)
    assert summary["best"]["test/accuracy"] > chance + 0.2
    assert summary["best"]["epoch"] == max(range(len(history)), key=lambda i: history[i]["val/accuracy"]) + 1
    assert (project / "runs/test/majority" / model / "seed0/metrics.json").is_file()


def test_same_seed_same_metrics_different_seed_differs(project):
    _, a = train(config(project, "lru", 3), out=project / "a", quiet=True, track=False)
    _, b = train(config(project, "lru", 3), out=project / "b", quiet=True, track=False)
    _, c = train(config(project, "lru", 4), out=project / "c", quiet=True, track=False)
    strip = lambda s: [{k: v for k, v in h.items() if "time" not in k and "per_s" not in k and "memory" not in k}
                       for h in s["history"]]
    assert strip(a) == strip(b)
    assert strip(a) != strip(c)


def _final_params(run: Path) -> dict[str, torch.Tensor]:
    return ckpt.load(run / "checkpoints" / "last.pt")["model"]


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    t = time.time()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"job ended (exit {proc.returncode}) before writing {path}")
        if time.time() - t > timeout:
            proc.kill()
            raise AssertionError(f"no {path} after {timeout} s")
        time.sleep(0.02)


RESUME_ARGS = ("--set", "train.epochs=3", "--set", "train.batch_size=8", "--set", "train.checkpoint_every=3")


@pytest.fixture(scope="module")
def uninterrupted(shared_project) -> dict[str, torch.Tensor]:
    proc = cli(shared_project, *RESUME_ARGS, "--out", "ref")
    assert proc.wait(timeout=300) == 0
    return _final_params(shared_project / "ref")


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(shared_project, uninterrupted):
    project = shared_project
    run = project / "killed"
    proc = cli(project, *RESUME_ARGS, "--out", "killed")
    _wait_for(run / "checkpoints" / "last.pt", proc)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    state = ckpt.load(run / "checkpoints" / "last.pt")["state"]
    assert not (run / "metrics.json").exists()
    assert state["global_step"] < 3 * 24  # 192 examples / 8 per batch = 24 steps per epoch
    proc = cli(project, *RESUME_ARGS, "--out", "killed")
    assert proc.wait(timeout=300) == 0
    resumed = _final_params(run)
    assert resumed.keys() == uninterrupted.keys()
    for k in resumed:
        assert torch.equal(resumed[k], uninterrupted[k]), k
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["status"] == "finished" and summary["final_step"] == 72


def test_sigterm_checkpoints_and_exits_for_requeue(shared_project, uninterrupted):
    project = shared_project
    run = project / "term"
    proc = cli(project, *RESUME_ARGS, "--out", "term", stderr=subprocess.PIPE, text=True)
    _wait_for(run / "checkpoints" / "last.pt", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == REQUEUE_EXIT, err
    assert "requeue" in err
    saved = ckpt.load(run / "checkpoints" / "last.pt")
    assert 0 < saved["state"]["global_step"] < 72
    assert not (run / "metrics.json").exists()
    first_attempt_s = saved["state"]["wall_s"]
    time.sleep(1.5)  # a pause between attempts (a requeue waiting in the queue) is not the job's time
    t0 = time.time()
    assert cli(project, *RESUME_ARGS, "--out", "term").wait(timeout=300) == 0
    second_attempt_s = time.time() - t0
    for k, v in _final_params(run).items():
        assert torch.equal(v, uninterrupted[k]), k
    # the job's wall time sums the attempts: the first attempt's saved share plus (at most) the second process's time
    wall = json.loads((run / "metrics.json").read_text())["wall_s"]
    assert first_attempt_s > 0
    assert first_attempt_s < wall < first_attempt_s + second_attempt_s


def _finite_checkpoints(run_dir):
    """Every checkpoint on disk holds only finite parameters and optimiser state."""
    paths = sorted((run_dir / "checkpoints").glob("*.pt"))
    for path in paths:
        saved = ckpt.load(path)
        assert all_finite(saved["model"]) and all_finite(saved["optimizer"]["state"]), path
    return paths


def test_a_non_finite_input_diverges_and_is_recorded(project, tmp_path):
    data = tmp_path / "bad"
    meta = {"task": "bad", "kind": "continuous", "in_dim": 1, "l_max": 4, "target": "class",
            "loss": "cross_entropy", "n_classes": 2, "preprocessing_version": "test", "sources": {}, "notes": ""}
    x = np.random.default_rng(0).normal(size=(32, 4, 1)).astype(np.float32)
    x[20, 0, 0] = np.inf
    with PreparedWriter(data, meta) as w:
        for split in ("train", "val", "test"):
            w.put(split, "inputs", x)
            w.put(split, "lengths", np.full(32, 4, np.int64))
            w.put(split, "labels", (np.arange(32) % 2).astype(np.int64))
    cfg = config(project, "lru", 0, "train.batch_size=4", "train.checkpoint_every=1", "net.norm=layer")
    code, summary = train(cfg, data=data, out=tmp_path / "run", quiet=True, track=False)
    assert code == DIVERGED_EXIT and summary["status"] == "diverged"
    step = summary["diverged_at_step"]
    assert summary["last_finite_step"] == step - 1 and math.isfinite(summary["last_finite_loss"])
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["diverged_at_step"] == step
    saved = ckpt.load(tmp_path / "run" / "checkpoints" / "last.pt")
    assert saved["state"]["global_step"] == step - 1
    _finite_checkpoints(tmp_path / "run")


def test_changed_config_refuses_to_resume(project):
    train(config(project, "lru", 0, "train.epochs=1"), out=project / "r", quiet=True, track=False)
    with pytest.raises(ValueError, match=r"different config \(changed: train.ssm_lr\)"):
        train(config(project, "lru", 0, "train.epochs=1", "train.ssm_lr=0.1"), out=project / "r", quiet=True,
              track=False)


def test_evaluate_command_reproduces_best_metrics(project):
    _, summary = train(config(project, "lru", 0, "train.epochs=2"), quiet=True, track=False)
    out = subprocess.run([sys.executable, "-m", "rotrnn.cli", "evaluate", "runs/test/majority/lru/seed0"],
                         cwd=project, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    assert result["epoch"] == summary["best"]["epoch"]
    for k in ("val/accuracy", "test/accuracy", "test/loss"):
        assert result[k] == pytest.approx(summary["best"][k], rel=1e-6)


def test_dlr_learns_cumsum_far_below_the_zero_predictor(project, tmp_path):
    """DLR's own synthetic task (generated by rotrnn.data.synthetic): a linear recurrence can represent cumsum, so a
    short run must cut the test MSE far below that of predicting zero."""
    from rotrnn.data.synthetic import generate

    data = tmp_path / "cumsum"
    generate("cumsum", data, length=64, n_train=512, n_val=64, n_test=64, seed=0)
    cfg = config(project, "dlr", 0, "train.epochs=4", "net.norm=layer", "net.prenorm=false", "net.n_layers=1",
                 "net.activation=gelu", "net.dropout=0.0", "train.warmup_epochs=0.25")
    code, summary = train(cfg, data=data, out=tmp_path / "run", quiet=True, track=False)
    assert code == 0 and summary["metric"] == "loss"
    y = np.load(data / "test.labels.npy")
    mask = np.load(data / "test.label_mask.npy") if (data / "test.label_mask.npy").exists() else np.ones(y.shape[:2], bool)
    zero_mse = float((y[mask] ** 2).mean())
    assert summary["best"]["test/loss"] < 0.1 * zero_mse
    assert summary["history"][-1]["val/loss"] < summary["history"][0]["val/loss"]


def test_the_driver_steps_one_at_a_time(project):
    """setup → train_epoch → end_epoch → finish, called by hand, do what `train` does in order."""
    from rotrnn.config import data_dir, run_dir
    from rotrnn.train.loop import SignalFlag, end_epoch, finish, resolve_device, setup, train_epoch
    from rotrnn.train.rundir import RunDir

    cfg = config(project, "lru", 0, "train.epochs=1")
    run = RunDir(run_dir(cfg))
    job = setup(cfg, run, resolve_device("cpu"), data_dir(cfg), quiet=True, track=False, resume=False)
    assert run.config.is_file() and job.state["global_step"] == 0
    with SignalFlag() as flag:
        counters = train_epoch(job, flag)
    assert job.state["batch"] == counters["n_batches"] == 12 and job.state["global_step"] == 12
    end_epoch(job, counters)
    assert job.state["epoch"] == 1 and job.state["batch"] == 0 and run.last.is_file() and run.best.is_file()
    assert job.state["best"]["epoch"] == 1 and "val/accuracy" in job.state["history"][0]
    summary = finish(job)
    assert summary["status"] == "finished" and json.loads(run.metrics.read_text()) == summary
    assert run.decide(cfg) == "finished"


def test_compile_auto_means_cuda_only():
    from rotrnn.train.loop import compile_wanted

    assert compile_wanted("auto", torch.device("cuda")) and not compile_wanted("auto", torch.device("cpu"))
    assert compile_wanted(True, torch.device("cpu")) and not compile_wanted(False, torch.device("cuda"))
    with pytest.raises(ValueError, match="train.compile must be auto, true or false, got 'on'"):
        compile_wanted("on", torch.device("cpu"))


def test_compiled_training_step_matches_eager_and_keeps_checkpoint_keys(project):
    """train.compile: the step runs torch.compile(model); the numbers follow the eager run (same seed, same batches;
    compiled kernels may round differently) and checkpoints hold the eager module's keys, so that evaluation,
    resume and the analysis commands read them unchanged."""
    _, eager = train(config(project, "lru", 0, "train.epochs=1"), out=project / "eager", quiet=True, track=False)
    code, compiled = train(config(project, "lru", 0, "train.epochs=1", "train.compile=true"), out=project / "compiled",
                           quiet=True, track=False)
    assert code == 0
    assert compiled["history"][0]["val/loss"] == pytest.approx(eager["history"][0]["val/loss"], rel=1e-3)
    keys = set(ckpt.load(project / "compiled" / "checkpoints" / "best.pt")["model"])
    assert keys == set(ckpt.load(project / "eager" / "checkpoints" / "best.pt")["model"])
    assert not any("_orig_mod" in k for k in keys)
