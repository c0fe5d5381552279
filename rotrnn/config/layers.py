"""The configuration checked against the layers: layer arguments by name and type against the layer constructors'
signatures. It imports the model code (rotrnn.nn), which :mod:`rotrnn.config` does not, so it is called where a
model is built or jobs are queued: ``rotrnn train`` and the training stage (rotrnn.train.loop.train), the Snakefile,
``rotrnn config check/show`` and ``rotrnn pipeline plan``; the data stages never load it."""
from __future__ import annotations

import functools
import inspect
import typing
from pathlib import Path
from typing import Any

from rotrnn import config as schema
from rotrnn.nn import LAYERS


@functools.lru_cache(maxsize=None)
def layer_signature(model: str) -> dict[str, tuple[Any, bool]]:
    """A layer's constructor arguments (after d_model): name -> (type, required)."""
    cls = LAYERS[model]
    hints = typing.get_type_hints(cls.__init__)
    out = {}
    for name, p in list(inspect.signature(cls.__init__).parameters.items())[2:]:  # self, d_model
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        out[name] = (hints.get(name, Any), p.default is inspect.Parameter.empty)
    return out


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """rotrnn.config.load_params, with every level's layer arguments checked against the layers."""
    return schema.load_params(path, signature=layer_signature)


def resolve(params: dict[str, Any], suite: str, task: str, model: str, seed: int,
            overrides: list[str] | None = None, source: str = "params.yaml") -> dict[str, Any]:
    """rotrnn.config.resolve, with the job's layer arguments (and --set layer.*) checked against its layer."""
    return schema.resolve(params, suite, task, model, seed, overrides, source, signature=layer_signature)


def apply_overrides(config: dict[str, Any], items: list[str]) -> dict[str, Any]:
    return schema.apply_overrides(config, items, signature=layer_signature)


def check_job(config: dict[str, Any], source: str) -> None:
    """A resolved job config (or one read back from a run directory), layer arguments included."""
    schema.check_job(config, source, signature=layer_signature)


def check_plan(plan) -> None:
    """The params file of a plan (rotrnn.pipeline.plan.Plan) and every job of its suite, against the layers: what the
    Snakefile and `rotrnn pipeline plan` run before anything is queued."""
    load_params(plan.params_path)
    for task, model, seed in plan.jobs():
        check_job(plan.config(task, model, seed), f"{plan.params_path} ({plan.suite}/{task}/{model})")
