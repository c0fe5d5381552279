"""A scaled-down copy of params.yaml's analysis suite (same tasks, jobs and experiments; tiny data, models and
budgets) for the tests: it checks the machinery, never the committed numbers."""
from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def scaled_params(tmp: Path) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    suite = params["suites"]["analysis"]
    suite["seeds"] = [0, 1]
    suite["paths"] = {"reports": str(tmp / "reports")}
    params["paths"] = {"raw": str(tmp / "raw"), "prepared": str(tmp / "prepared"), "runs": str(tmp / "runs"),
                       "reports": str(tmp / "reports")}
    params["tracking"]["uri"] = f"sqlite:///{tmp / 'mlflow.db'}"
    small = {"listops": {"n_train": 24, "n_val": 8, "n_test": 16, "min_length": 12, "max_length": 40,
                         "max_depth": 3, "max_args": 3},
             "multiscale": {"length": 48, "kernel": "ema", "scales": [1, 4, 16], "n_train": 16, "n_val": 8, "n_test": 8},
             "sines": {"length": 64, "n_train": 24, "n_val": 8, "n_test": 12},
             "synthetic": {"length": 24, "n_train": 16, "n_val": 8, "n_test": 8}}
    for task, block in suite["tasks"].items():
        block = dict(block or {})
        gen = ((block.get("data") or {}).get("generate") or (params["tasks"][task].get("data") or {}).get("generate"))
        block["data"] = {**(block.get("data") or {}), **small[gen]}
        block["train"] = {**(block.get("train") or {}), "epochs": 2, "batch_size": 8, "max_steps_per_epoch": 2,
                          "eval_limit": None, "eval_batch_size": 8}
        block["net"] = {**(block.get("net") or {}), "d_model": 8}
        if task == "listops":
            block["net"]["n_layers"] = 2
        if task == "sines":
            block["seeds"] = [0, 1]  # two seeds give the paired intervals; the committed suite runs five
        suite["tasks"][task] = block
    ex = suite["experiments"]
    ex["norms"].update(length=40, batch=4, real_length=8, real_batch=8)
    ex["cost"].update(lengths=[32, 64], batch=2, d_model=8, d_state=16, n_heads=2, dlr_state=4, repeats=1,
                      reference_max_length=32)
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path
