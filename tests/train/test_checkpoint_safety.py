"""Checkpoints are other people's files (shared run directories, DVC remotes): reading one must not run code from
it, and real checkpoints of every model must still resume the run exactly."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rotrnn.config import load_params, resolve
from rotrnn.train import checkpoint as ckpt
from rotrnn.train.loop import train


class Payload:
    """Unpickling this calls ``fn(arg)``: the classic pickle exploit."""

    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return self.fn, (self.arg,)


def hostile(path: Path, marker: Path, fn=os.system) -> None:
    arg = f"touch {marker}" if fn is os.system else f"open({str(marker)!r}, 'w').close()"
    torch.save({"model": {"w": torch.zeros(2)}, "config": Payload(fn, arg)}, path)


def config(project: Path, model: str, *overrides: str) -> dict:
    return resolve(load_params(project / "params.yaml"), "test", "majority", model, 0, list(overrides))


@pytest.mark.parametrize("fn", [os.system, exec], ids=["os.system", "exec"])
def test_a_checkpoint_that_calls_a_function_is_refused_and_nothing_runs(tmp_path, fn):
    path, marker = tmp_path / "last.pt", tmp_path / "ran"
    hostile(path, marker, fn)
    with pytest.raises(ckpt.CheckpointError) as e:
        ckpt.load(path)
    assert not marker.exists()
    message = str(e.value)
    assert str(path) in message and "refused" in message and "\n" not in message


def _cli(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rotrnn.cli", *args], cwd=project, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))


def test_evaluate_and_resume_refuse_a_hostile_last_checkpoint(project):
    cfg = config(project, "lru", "train.epochs=1")
    assert train(cfg, out=project / "run", quiet=True, track=False)[0] == 0
    run, marker = project / "run", project / "ran"
    hostile(run / "checkpoints" / "last.pt", marker)
    done = _cli(project, "evaluate", "run", "--checkpoint", "last")
    assert done.returncode == 2, done.stderr
    assert "run/checkpoints/last.pt: refused" in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and not marker.exists()
    (run / "metrics.json").unlink()  # unfinished: the next job resumes from last.pt
    done = _cli(project, "train", "--task", "majority", "--model", "lru", "--seed", "0", "--quiet", "--no-track",
                "--out", "run", "--set", "train.epochs=1")
    assert done.returncode == 2, done.stderr
    assert "run/checkpoints/last.pt: refused" in done.stderr and "Traceback" not in done.stderr
    assert not marker.exists()


@pytest.mark.parametrize("model", ["rotrnn", "lru", "dlr"])
def test_every_models_checkpoint_loads_safely_and_resumes_bit_exactly(project, model):
    """One epoch, checkpoint, a fresh job resumes from it for the second: the same parameters as two epochs in one
    go (and the numpy RNG state, the one non-tensor object a checkpoint holds, comes back)."""
    from rotrnn.train.loop import drive, end_epoch, resolve_device, setup, train_epoch, SignalFlag
    from rotrnn.train.rundir import RunDir

    cfg = config(project, model, "train.epochs=2")
    assert train(cfg, out=project / "whole", quiet=True, track=False)[0] == 0
    run, dev = RunDir(project / "split"), resolve_device("cpu")
    job = setup(cfg, run, dev, project / "prepared/test/majority", quiet=True, track=False, resume=False)
    with SignalFlag() as flag:
        end_epoch(job, train_epoch(job, flag))
    saved = ckpt.load(run.last)
    assert saved["state"]["epoch"] == 1 and saved["rng"]["numpy"][0] == "MT19937"
    job = setup(cfg, run, dev, project / "prepared/test/majority", quiet=True, track=False, resume=True)
    assert drive(job)[0] == 0
    whole, split = ckpt.load(project / "whole/checkpoints/last.pt"), ckpt.load(run.last)
    assert whole["model"].keys() == split["model"].keys()
    for k, v in whole["model"].items():
        assert torch.equal(v, split["model"][k]), k
