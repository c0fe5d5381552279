"""A small learnable prepared task and a params file, so training tests do not depend on any dataset module."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from rotrnn.data import PreparedWriter


def write_parity_task(out: Path, n_train: int = 192, n_eval: int = 64, length: int = 24, seed: int = 0) -> Path:
    """Tokens in {1, 2, 3} of variable length; the class is which token is most frequent (ties → the smaller one).

    Needs the whole sequence (masked pooling) and is learnable by a tiny model in a few epochs."""
    rng = np.random.default_rng(seed)
    meta = {"task": "majority", "kind": "tokens", "vocab_size": 4, "l_max": length, "target": "class",
            "loss": "cross_entropy", "n_classes": 3, "preprocessing_version": "test", "sources": {},
            "notes": "test task"}
    with PreparedWriter(out, meta) as w:
        for split, n in (("train", n_train), ("val", n_eval), ("test", n_eval)):
            lengths = rng.integers(length // 2, length + 1, size=n)
            x = np.zeros((n, length), np.int64)
            y = np.zeros(n, np.int64)
            for i, L in enumerate(lengths):
                x[i, :L] = rng.integers(1, 4, size=L)
                y[i] = np.argmax(np.bincount(x[i, :L], minlength=4)[1:])
            w.put(split, "inputs", x)
            w.put(split, "lengths", lengths.astype(np.int64))
            w.put(split, "labels", y)
    return out


PARAMS = {
    "suite": "test",
    "paths": {"raw": "raw", "prepared": "prepared", "runs": "runs", "reports": "reports"},
    "tracking": {"uri": "sqlite:///mlflow.db", "experiment": "rotrnn-{suite}", "log_checkpoint": False},
    "defaults": {
        "train": {"epochs": 4, "batch_size": 16, "eval_batch_size": None, "ssm_lr": 3e-3, "lr_factor": 3.0,
                  "weight_decay": 0.01, "warmup_epochs": 0.5, "lr_min": 0.0, "cosine": True,
                  "opt_config": "standard", "optimizer_impl": "auto", "grad_clip": 0.0, "precision": "auto", "compile": False, "checkpoint_every": 5,
                  "log_every": 4, "max_steps_per_epoch": None, "train_limit": None, "eval_limit": None},
        "net": {"d_model": 16, "n_layers": 2, "norm": "layer", "prenorm": True, "activation": "half_glu1",
                "dropout": 0.1, "bn_momentum": 0.95, "pooling": "mean"},
        "layers": {"rotrnn": {"d_state": 16, "n_heads": 2}, "lru": {"d_state": 8}, "dlr": {"d_state": 4}},
    },
    "tasks": {"majority": {"data": {}}},
    "suites": {"test": {"data": "fixtures", "models": ["rotrnn", "lru", "dlr"], "seeds": [0],
                        "tasks": {"majority": {}}}},
}


@pytest.fixture(scope="session")
def majority_data(tmp_path_factory) -> Path:
    return write_parity_task(tmp_path_factory.mktemp("data") / "majority")


def make_project(root: Path, data: Path) -> Path:
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    (root / "prepared" / "test").mkdir(parents=True)
    (root / "prepared" / "test" / "majority").symlink_to(data)
    return root


@pytest.fixture
def project(tmp_path, majority_data, monkeypatch) -> Path:
    """A project directory with params.yaml, the prepared task in place and MLflow pointed inside it."""
    make_project(tmp_path, majority_data)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path


@pytest.fixture(scope="module")
def shared_project(tmp_path_factory, majority_data) -> Path:
    """One project for the subprocess tests of a module (they pass --no-track and their own --out)."""
    return make_project(tmp_path_factory.mktemp("project"), majority_data)
