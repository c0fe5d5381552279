"""Experiment 2: does a single decay per head limit the time scales a RotRNN layer can hold? (Dolga et al. 2024 §3:
A_h = γ_h P_h Θ_h P_hᵀ, so every mode of head h decays as γ_h^ℓ; several heads give several envelopes.)

The training runs are ordinary jobs of the suite: one task per head count on the same multi-scale data (the sum of
delayed copies of :mod:`rotrnn.data.multiscale`), same total state size, so that N = d_state / n_heads varies with
n_heads. This command reads their checkpoints for the learned γ_h (and the initial ones, rebuilt with the run's seed)
and collects the test MSE.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rotrnn.analysis.common import (AnalysisError, init_model, load_run, log_mlflow, result_path, timed,
                                    training_runs, write_result)


def gammas(model) -> list[float]:
    from rotrnn.analysis.common import recurrent_layers

    return [float(g) for layer in recurrent_layers(model) for g in layer.gamma.detach()]


def run(params: dict[str, Any], suite: str, cfg: dict[str, Any], params_path: str = "params.yaml") -> dict[str, Any]:
    from rotrnn.pipeline import load_plan

    plan = load_plan(params_path, suite)
    tasks = {int(h): str(t) for h, t in (cfg.get("tasks") or {}).items()}
    if not tasks:
        raise AnalysisError(f"{params_path}: suites.{suite}.experiments.heads.tasks (n_heads -> task) is empty")
    rows = []
    with timed() as clock:
        for n_heads, task in sorted(tasks.items()):
            for t, model_name, seed in plan.jobs():
                if t != task or model_name != "rotrnn":
                    continue
                model, config, meta = load_run(plan.run_dir(task, model_name, seed), "best")
                if int(config["layer"]["n_heads"]) != n_heads:
                    raise AnalysisError(f"{params_path}: task {task} trains {config['layer']['n_heads']} heads, but "
                                        f"experiments.heads.tasks maps it to {n_heads}")
                rows.append({"n_heads": n_heads, "task": task, "seed": seed, "N": int(config["layer"]["d_state"])
                             // n_heads, "gamma": gammas(model), "gamma_init": gammas(init_model(config, meta))})
    runs = {(r["task"], r["seed"]): r for r in training_runs(plan, list(tasks.values())) if r["model"] == "rotrnn"}
    for r in rows:
        run_ = runs.get((r["task"], r["seed"]), {})
        r.update(test_mse=run_.get("test/loss"), val_mse=run_.get("val/loss"), train_wall_s=run_.get("wall_s"),
                 steps=run_.get("steps"))
    result = {"experiment": "heads", "suite": suite, "settings": cfg, "wall_s": clock["wall_s"],
              "train_wall_s": sum(r["train_wall_s"] or 0 for r in rows), "rows": rows}
    path = result_path(params, suite, "heads")
    write_result(path, result)
    metrics = {f"test_mse/h{r['n_heads']}/seed{r['seed']}": r["test_mse"] for r in rows if r["test_mse"] is not None}
    log_mlflow(params, suite, "heads", cfg, metrics | {"wall_s": clock["wall_s"]}, [path])
    return result


