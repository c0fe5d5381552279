"""Resolve one run's configuration from ``params.yaml`` (the single source of configuration).

Layering, later wins::

    defaults → tasks[task] → tasks[task].models[model] → suites[suite].overrides
             → suites[suite].tasks[task] (when a mapping) → --set key=value

A resolved config has the keys ``suite, task, model, seed, data, train, net, layer, tracking, paths``; ``layer``
holds the keyword arguments of the chosen layer class (from ``layers[model]`` at each level).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

MODELS = ("rotrnn", "lru", "dlr")
SECTIONS = ("train", "net", "layers", "data")


def deep_merge(base: dict[str, Any], over: dict[str, Any] | None) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def load_params(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"params file not found: {path}")
    with path.open() as f:
        try:
            params = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: invalid YAML: {e}") from e
    for key in ("defaults", "tasks", "suites"):
        if not isinstance(params, dict) or not isinstance(params.get(key), dict):
            raise ValueError(f"{path}: missing top-level mapping {key!r}")
    return params


def parse_override(item: str) -> tuple[list[str], Any]:
    """'train.ssm_lr=2e-3' -> (['train', 'ssm_lr'], 0.002); the value is read as YAML (numbers, bools, lists)."""
    key, sep, raw = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ValueError(f"--set expects key.path=value, got {item!r}")
    value = yaml.safe_load(raw) if raw.strip() else ""
    if isinstance(value, str):
        try:  # PyYAML (YAML 1.1) reads '2e-3' as a string; users mean a number
            value = float(raw)
        except ValueError:
            value = raw
    return key.split("."), value


def apply_overrides(config: dict[str, Any], items: list[str]) -> dict[str, Any]:
    config = copy.deepcopy(config)
    for item in items:
        keys, value = parse_override(item)
        node = config
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                raise KeyError(f"--set {item!r}: {'.'.join(keys[:-1])!r} is not a section of the resolved config")
            node = node[k]
        # layer arguments may be added (the constructor checks them); elsewhere a new key is a typo
        if keys[-1] not in node and keys[0] != "layer":
            raise KeyError(f"--set {item!r}: unknown key {'.'.join(keys)!r} (known here: {sorted(node)})")
        node[keys[-1]] = value
    return config


def _level(block: dict[str, Any] | None, model: str) -> dict[str, Any]:
    """One layer of the cascade, with layers[model] renamed to 'layer'."""
    block = copy.deepcopy(block or {})
    layers = block.pop("layers", None) or {}
    block.pop("models", None)
    if model in layers:
        block["layer"] = layers[model]
    return block


def suite_tasks(params: dict[str, Any], suite: str) -> list[str]:
    if suite not in params["suites"]:
        raise KeyError(f"unknown suite {suite!r}; params.yaml defines {sorted(params['suites'])}")
    tasks = params["suites"][suite].get("tasks") or {}
    return list(tasks)


def resolve(params: dict[str, Any], suite: str, task: str, model: str, seed: int,
            overrides: list[str] | None = None) -> dict[str, Any]:
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {MODELS}")
    if suite not in params["suites"]:
        raise KeyError(f"unknown suite {suite!r}; params.yaml defines {sorted(params['suites'])}")
    if task not in params["tasks"]:
        raise KeyError(f"unknown task {task!r}; params.yaml defines {sorted(params['tasks'])}")
    s = params["suites"][suite]
    task_block = params["tasks"][task]
    suite_task = (s.get("tasks") or {}).get(task)
    config: dict[str, Any] = {}
    for level in (params["defaults"], task_block, (task_block.get("models") or {}).get(model),
                  s.get("overrides"), suite_task if isinstance(suite_task, dict) else None):
        config = deep_merge(config, _level(level, model))
    config.update(suite=suite, task=task, model=model, seed=int(seed))
    config["tracking"] = deep_merge(params.get("tracking") or {}, s.get("tracking"))
    config["paths"] = deep_merge(params.get("paths") or {}, s.get("paths"))
    config = apply_overrides(config, overrides or [])
    config.setdefault("data", {})
    for section in ("train", "net", "layer"):
        if not isinstance(config.get(section), dict):
            raise ValueError(f"resolved config for {suite}/{task}/{model} has no {section!r} section")
    return config


def run_name(config: dict[str, Any]) -> str:
    return f"{config['task']}/{config['model']}/{config['seed']}"


def run_dir(config: dict[str, Any]) -> Path:
    return Path(config["paths"]["runs"]) / config["suite"] / config["task"] / config["model"] / f"seed{config['seed']}"


def data_dir(config: dict[str, Any]) -> Path:
    return Path(config["paths"]["prepared"]) / config["suite"] / config["task"]


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 1}} -> {'train.lr': 1}: the form MLflow params take."""
    flat: dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(flatten(v, key + "."))
        else:
            flat[key] = v
    return flat
