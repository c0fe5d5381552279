"""The configuration: the schema of ``params.yaml``, its loading and validation, the per-job cascade, and the paths
every stage derives from it. It imports no model code (the names it checks model choices against are data,
:mod:`rotrnn.choices`), so that the data stages, which read it, do not depend on the layers.

``params.yaml`` is the single source of configuration. Its schema is the dataclasses below: every section, every
key, its type and allowed values. An unknown key is an error naming the file, line, key path and the closest valid
key; a wrong type names the key, the value and the expected type. Layer arguments are checked here as a mapping of
values; their names and types against the layer constructors' signatures by :mod:`rotrnn.config.layers` (which
imports the layers): when a model is built (``rotrnn train``), and for every job of a suite before any is queued
(the Snakefile, ``rotrnn config check``, ``rotrnn pipeline plan``). The file is validated when it is loaded, each
job's resolved config when it is resolved (after ``--set``).

A job's config is resolved as (later wins)::

    defaults → tasks[task] → tasks[task].models[model] → suites[suite].overrides
             → suites[suite].tasks[task] → --set key=value

and has the keys ``suite, task, model, seed, data, train, net, layer, tracking, paths``; ``layer`` holds the chosen
layer's constructor arguments (``layers[model]`` at each level).
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import yaml

from rotrnn.choices import ACTIVATIONS, MODELS, NORMS, OPT_CONFIGS, POOLINGS
from rotrnn.errors import UserError

#: a layer's constructor arguments (after d_model): model -> {name: (type, required)} (rotrnn.config.layers); None:
#: layer arguments are checked as a mapping of values only
Signature = Optional[Callable[[str], dict[str, tuple[Any, bool]]]]
DATA_MODES = ("fixtures", "download")


class ConfigError(UserError, ValueError):
    """A configuration problem; the message names the file (and line), the key path and what was expected."""


# ---- names ---------------------------------------------------------------------------------------------------------
#: what a suite, task, model or data-source name may be: each becomes a folder name under paths.* (which the raw
#: and prepare stages replace) and a word of the Snakemake and DVC command lines, so no `/`, `..`, shell
#: metacharacter, space or leading `-` (an option to the command reading it)
NAME_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_-]*"
_NAME = re.compile(NAME_PATTERN)


def check_name(value: Any, where: str) -> None:
    """A name from params.yaml or the command line (suite, task, model, data source): ConfigError naming the key
    unless it matches :data:`NAME_PATTERN`."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ConfigError(f"{where}: {value!r} is not a valid name (letters, digits, `_` and `-`, not starting "
                          "with `-`): names become folder and command-line words")


def check_names(params: dict[str, Any], where: Any = str) -> None:
    """Every name params.yaml defines or refers to: the suites and tasks (keys), `suite:`, the models and tasks a
    suite or task lists, and each data block's `source` (the raw folder a download goes to) and `task` (the
    synthetic generator). Called by :func:`validate_params` before anything else reads the names."""
    def items(node: Any) -> Any:  # types are checked after the names
        return node.items() if isinstance(node, dict) else ()

    def data_names(block: Any, path: str) -> None:
        data = block.get("data") if isinstance(block, dict) else None
        if isinstance(data, dict):
            for key in ("source", "task"):
                if data.get(key) is not None:
                    check_name(data[key], where(f"{path}.data.{key}"))

    if params.get("suite") is not None:
        check_name(params["suite"], where("suite"))
    data_names(params.get("defaults"), "defaults")
    for task, block in items(params.get("tasks")):
        check_name(task, where(f"tasks.{task}"))
        data_names(block, f"tasks.{task}")
        for model, level in items(block.get("models") if isinstance(block, dict) else None):
            check_name(model, where(f"tasks.{task}.models.{model}"))
            data_names(level, f"tasks.{task}.models.{model}")
    for name, suite in items(params.get("suites")):
        check_name(name, where(f"suites.{name}"))
        if not isinstance(suite, dict):
            continue
        data_names(suite.get("overrides"), f"suites.{name}.overrides")
        for i, model in enumerate(suite.get("models") if isinstance(suite.get("models"), list) else ()):
            check_name(model, where(f"suites.{name}.models[{i}]"))
        for task, block in items(suite.get("tasks")):
            check_name(task, where(f"suites.{name}.tasks.{task}"))
            data_names(block, f"suites.{name}.tasks.{task}")


# ---- the schema ----------------------------------------------------------------------------------------------------
# Fields with Optional[...] may be null. In a file every key of a section may be left out (a later level or the
# defaults fill it in); a resolved job config must hold every key of train, net, paths and tracking.

@dataclass
class Train:
    epochs: int
    batch_size: int
    eval_batch_size: Optional[int]       # null: same as batch_size
    ssm_lr: float                        # the recurrent parameters' learning rate
    lr_factor: float                     # global rate = lr_factor × ssm_lr
    weight_decay: float
    warmup_epochs: float
    lr_min: float
    cosine: bool
    opt_config: Literal[OPT_CONFIGS]
    optimizer_impl: Literal["auto", "fused", "foreach", "loop"]   # AdamW kernel; the same update (auto: fused)
    grad_clip: float                     # 0: off
    precision: Literal["auto", "fp32", "bf16"]
    compile: Literal["auto", True, False]  # torch.compile the training steps (auto: on CUDA); evaluation stays eager
    checkpoint_every: int                # steps; 0: only at epoch ends
    log_every: int
    max_steps_per_epoch: Optional[int]
    train_limit: Optional[int]           # only the first n training examples
    eval_limit: Optional[int]


@dataclass
class Net:
    d_model: int
    n_layers: int
    norm: Literal[NORMS]
    prenorm: bool
    activation: Literal[ACTIVATIONS]
    dropout: float
    bn_momentum: float
    pooling: Literal[POOLINGS]


@dataclass
class Data:
    """Where a task's data comes from; which keys apply depends on ``generate`` (checked by the plan)."""

    source: str                          # the archive group a download comes from (default: the task name)
    generate: Literal["listops", "synthetic", "multiscale", "sines"]
    task: str                            # the synthetic task to generate
    seed: int
    n_train: int
    n_val: int
    n_test: int
    min_length: int
    max_length: int
    max_depth: int
    max_args: int
    length: int
    num_shifts: int
    mem: int
    dim: int
    kernel: Literal["delay", "ema"]      # multiscale: delayed copies or leaky integrators
    scales: list[int]                    # multiscale: the delays (delay) or time constants (ema) summed
    score_from: int                      # multiscale: first scored position (default: the largest scale)
    unit_variance: bool                  # multiscale: scale y to mean E[y²] = 1 over the scored positions
    n_classes: int                       # sines: frequency bands
    f_min: float                         # sines: band edges, cycles per sample
    f_max: float
    components: int                      # sines: sinusoids per signal
    noise: float                         # sines: white-noise standard deviation
    distractors: int                     # sines: unlabelled sinusoids above the coarse Nyquist frequency
    distractor_band: list[float]         # sines: their frequency range, cycles per sample
    factors: list[int]                   # sines: coarse test rates 1/s


@dataclass
class Paths:
    raw: str                             # downloads and extracted archives
    prepared: str                        # prepared/<suite>/<task>/
    runs: str                            # runs/<suite>/<task>/<model>/seed<S>/
    reports: str


@dataclass
class Tracking:
    uri: str                             # MLFLOW_TRACKING_URI overrides it
    experiment: str                      # a template with {suite}
    log_checkpoint: bool


class LayerArgs:
    """Marker: a layer's constructor arguments, checked against its signature (the model comes from context)."""


class Layers:
    """Marker: {model: LayerArgs}."""


@dataclass
class Level:
    """One level of the cascade."""

    train: Train
    net: Net
    layers: Layers
    data: Data


@dataclass
class TaskBlock(Level):
    models: dict[str, Level]             # per-model settings of this task (keys: the model registry)


@dataclass
class SuiteTask(Level):
    """A task of a suite: the last level of the cascade, and optionally a subset of the suite's models and seeds
    (the jobs are tasks × models × seeds with these subsets, rotrnn.pipeline.plan)."""

    models: list[str]
    seeds: list[int]


# the analysis suite's experiments (rotrnn.analysis, `rotrnn analysis <name>`); budget_minutes: the 2-core wall time
# the experiment (its training jobs and its command) is sized for
@dataclass
class NormsExperiment:
    budget_minutes: float
    networks: dict[str, str]             # label (single, deep) -> task of the suite
    models: list[str]
    length: int                          # steps per measured sequence
    t_from: int                          # the level is the mean over t in [t_from, length]
    band: list[float]                    # the claim's band for RotRNN's level / closed form
    init_seeds: int                      # untrained networks per model
    batch: int
    calibration_batch: int               # sequences that calibrate an untrained network's BatchNorm statistics
    data_seed: int


@dataclass
class HeadsExperiment:
    budget_minutes: float
    tasks: dict[int, str]                # n_heads -> task of the suite (the multi-scale task)
    control: dict[int, str]              # n_heads -> task of the suite (the single-scale control)
    compare: list[int]                   # the two head counts whose gap the verdict is about
    smallest_effect: float               # boundary of the difference of differences (unexplained variance)
    failed_above: float                  # unexplained variance above which a run counts as failed


@dataclass
class RescaleExperiment:
    budget_minutes: float
    task: str
    eval_limit: Optional[int]
    smallest_effect: float               # pp: (accuracy drop with no rescale) − (with the power sum) the claim needs
    maker_boundary: float                # pp: (drop on x[::s]) − (drop on resampled) above which resampling wins


@dataclass
class SyntheticExperiment:
    budget_minutes: float
    tasks: list[str]
    boundary: float                      # claim: RotRNN's MSE at most boundary × the better of LRU and DLR's
    learned_below: float                 # learned: MSE / per-position baseline below this (whole 95% interval)
    plot_channels: Optional[dict[str, int]]  # task -> output channel the figure shows (default 0)
    dropped: Optional[dict[str, str]]    # task -> why the experiment leaves it out (the report lists them)


@dataclass
class CostExperiment:
    budget_minutes: float                # also stops the sweep early (what is skipped is recorded)
    lengths: list[int]
    layers: list[str]
    batch: int
    d_model: int
    d_state: int
    n_heads: int
    dlr_state: int
    repeats: int                         # timed repeats per measurement, each paired with its floor
    reference_max_length: int
    threads: int
    fit_min_length: int                  # the exponent of time ∝ L^k is fitted on L >= this
    exponent_band: list[float]           # [low, high]: the claim "time grows linearly" holds when k lies in it
    floor_factor: float                  # the claim "near the floor" holds when layer / floor is below it


@dataclass
class Experiments:
    norms: NormsExperiment
    heads: HeadsExperiment
    rescale: RescaleExperiment
    synthetic: SyntheticExperiment
    cost: CostExperiment


@dataclass
class Suite:
    data: Literal[DATA_MODES]
    models: list[str]
    seeds: list[int]
    tasks: dict[str, Optional[SuiteTask]]
    overrides: Level
    paths: Paths
    tracking: Tracking
    experiments: Experiments

@dataclass
class Params:
    suite: str                           # the suite commands use when none is given
    paths: Paths
    tracking: Tracking
    defaults: Level
    tasks: dict[str, TaskBlock]
    suites: dict[str, Suite]


@dataclass
class Job:
    """A resolved job config."""

    suite: str
    task: str
    model: str
    seed: int
    data: Data
    train: Train
    net: Net
    layer: LayerArgs
    tracking: Tracking
    paths: Paths


REQUIRED_PARAMS = ("paths", "tracking", "defaults", "tasks", "suites")   # top-level keys a params file must have
COMPLETE_IN_JOB = (Train, Net, Paths, Tracking)                         # sections a resolved job must fill


# ---- validation ----------------------------------------------------------------------------------------------------
class _Where:
    """Names a place for error messages: the file, and each key path's line when the file was parsed; carries the
    layer signatures layer arguments are checked against (None: not checked against the layers)."""

    def __init__(self, source: str, lines: dict[str, int] | None = None, signature: Signature = None):
        self.source, self.lines, self.signature = source, lines or {}, signature

    def __call__(self, path: str) -> str:
        line = self.lines.get(path)
        return f"{self.source}:{line}: {path}" if line else f"{self.source}: {path}"


def _closest(key: str, valid: list[str]) -> str:
    match = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
    hint = f"did you mean `{match[0]}`? " if match else ""
    return f"{hint}(valid: {', '.join(valid)})"


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(str(a).lower() if isinstance(a, bool) else str(a) for a in typing.get_args(tp))
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, globalns=globals())


def _check(value: Any, tp: Any, path: str, where: _Where, complete: bool, model: str | None = None) -> None:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return
        return _check(value, next(a for a in args if a is not type(None)), path, where, complete, model)
    if tp is LayerArgs:
        return _check_layer(value, path, where, complete, model)
    if tp is Layers:
        return _check_mapping(value, path, where, MODELS, lambda k, v, p: _check_layer(v, p, where, False, k))
    if dataclasses.is_dataclass(tp):
        hints = _hints(tp)
        if value is None and not complete:
            return
        if not isinstance(value, dict):
            raise ConfigError(f"{where(path)}: expected a mapping with keys {', '.join(hints)}, got {value!r}")
        for key, v in value.items():
            if key not in hints:
                raise ConfigError(f"{where(f'{path}.{key}' if path else str(key))}: unknown key; "
                                  f"{_closest(key, list(hints))}")
            _check(v, hints[key], f"{path}.{key}" if path else key, where, complete, model)
        if complete and tp in COMPLETE_IN_JOB:
            missing = [k for k in hints if k not in value]
            if missing:
                raise ConfigError(f"{where(path)}: missing key(s) {', '.join(missing)} (set at no level of the "
                                  "cascade)")
        return
    if origin is dict:
        if tp == dict[str, Level]:  # tasks.T.models: keys are models
            return _check_mapping(value, path, where, MODELS,
                                  lambda k, v, p: _check(v, Level, p, where, False, k))
        return _check_mapping(value, path, where, None, lambda k, v, p: _check(v, args[1], p, where, complete))
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where(path)}: {value!r} should be a list")
        for i, item in enumerate(value):
            _check(item, args[0], f"{path}[{i}]", where, complete)
        if path.endswith(".models"):
            bad = [m for m in value if m not in MODELS]
            if bad:
                raise ConfigError(f"{where(path)}: unknown model {bad[0]!r}; {_closest(bad[0], list(MODELS))}")
        return
    _check_scalar(value, tp, path, where)


def _check_mapping(value: Any, path: str, where: _Where, keys: tuple[str, ...] | None, check) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise ConfigError(f"{where(path)}: expected a mapping, got {value!r}")
    for k, v in value.items():
        if keys is not None and k not in keys:
            raise ConfigError(f"{where(f'{path}.{k}')}: unknown model; {_closest(k, list(keys))}")
        check(k, v, f"{path}.{k}")


def _check_layer(value: Any, path: str, where: _Where, complete: bool, model: str | None) -> None:
    if value is None and not complete:
        return
    if not isinstance(value, dict):
        raise ConfigError(f"{where(path)}: expected a mapping of {model} layer arguments, got {value!r}")
    if where.signature is None:  # names and types are the layers' (rotrnn.config.layers); here: plain values
        for key, v in value.items():
            if not isinstance(key, str) or isinstance(v, (dict, list)):
                raise ConfigError(f"{where(f'{path}.{key}')}: a layer argument must be a name and a single value, "
                                  f"got {v!r}")
        return
    sig = where.signature(model)
    for key, v in value.items():
        if key not in sig:
            raise ConfigError(f"{where(f'{path}.{key}')}: not an argument of the {model} layer; "
                              f"{_closest(key, list(sig))}")
        _check_scalar(v, sig[key][0], f"{path}.{key}", where)
    if complete:
        missing = [k for k, (_, required) in sig.items() if required and k not in value]
        if missing:
            raise ConfigError(f"{where(path)}: the {model} layer needs {', '.join(missing)} (set at no level)")


def _check_scalar(value: Any, tp: Any, path: str, where: _Where) -> None:
    if typing.get_origin(tp) is typing.Union:
        if value is None:
            return
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if tp is Any:
        return
    if typing.get_origin(tp) is Literal:  # by type too: 1 == True, but `compile: 1` is not `compile: true`
        ok = any(value == a and type(value) is type(a) for a in typing.get_args(tp))
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, tp)
    if not ok:
        raise ConfigError(f"{where(path)}: {value!r} ({type(value).__name__}) is not {_type_name(tp)}")


# ---- loading -------------------------------------------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    """Two fixes to PyYAML's safe loader: a key given twice in one mapping is an error (PyYAML keeps the last one
    silently, so a second `train:` block would erase the first); and ``1e-3`` (no dot, a string in YAML 1.1) is a
    number, as a learning rate written that way is meant to be."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping (first on line {seen[key]})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def _key_lines(text: str) -> dict[str, int]:
    """key path ('tasks.cifar.train.epochs') -> 1-based line, from the YAML node tree."""
    lines: dict[str, int] = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                path = f"{prefix}.{k.value}" if prefix else str(k.value)
                lines[path] = k.start_mark.line + 1
                walk(v, path)

    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError:
        return lines
    if root is not None:
        walk(root, "")
    return lines


def validate_params(params: Any, source: str = "params.yaml", lines: dict[str, int] | None = None,
                    signature: Signature = None) -> None:
    where = _Where(source, lines, signature)
    if not isinstance(params, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    for key in REQUIRED_PARAMS:
        if key not in params:
            raise ConfigError(f"{source}: missing top-level key `{key}`")
    check_names(params, where)
    _check(params, Params, "", where, complete=False)
    _check(params["paths"], Paths, "paths", where, complete=True)
    _check(params["tracking"], Tracking, "tracking", where, complete=True)
    for name, suite in params["suites"].items():
        s = suite or {}
        for key in ("data", "models", "seeds", "tasks"):
            if not s.get(key):
                raise ConfigError(f"{where(f'suites.{name}')}: needs a non-empty `{key}`")
        for task in s["tasks"]:
            if task not in params["tasks"]:
                raise ConfigError(f"{where(f'suites.{name}.tasks.{task}')}: not a task under `tasks:`; "
                                  f"{_closest(task, list(params['tasks']))}")
    if params.get("suite") is not None and params["suite"] not in params["suites"]:
        raise ConfigError(f"{where('suite')}: {params['suite']!r} is not a suite; "
                          f"{_closest(params['suite'], list(params['suites']))}")


def load_params(path: str | Path = "params.yaml", signature: Signature = None) -> dict[str, Any]:
    """Read and validate a params file (ConfigError naming the file, line and key on any problem); layer arguments
    against ``signature`` when given (rotrnn.config.layers)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    text = path.read_text()
    try:
        params = load_yaml(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    validate_params(params, str(path), _key_lines(text), signature)
    return params


# ---- the cascade ---------------------------------------------------------------------------------------------------
def deep_merge(base: dict[str, Any], over: dict[str, Any] | None) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def suite_name(params: dict[str, Any], suite: str | None, source: str = "params.yaml") -> str:
    """The suite a command works on: the one given, else params' `suite:`; never a silent fallback."""
    name = suite or params.get("suite")
    if not name:
        raise ConfigError(f"{source}: no suite given (--suite) and no top-level `suite:` key")
    if name not in params["suites"]:
        raise ConfigError(f"{source}: unknown suite {name!r}; {_closest(name, list(params['suites']))}")
    return str(name)


def suite_paths(params: dict[str, Any], suite: str) -> dict[str, str]:
    """paths, with the suite's own paths over them; a suite that does not name its `paths.reports` writes into
    <paths.reports>/<suite>/, never over another suite's tables (the paper suite names `reports` itself)."""
    own = params["suites"][suite].get("paths") or {}
    paths = deep_merge(params["paths"], own)
    if own.get("reports") is None:
        paths["reports"] = f"{params['paths']['reports']}/{suite}"
    return paths


def suite_tracking(params: dict[str, Any], suite: str) -> dict[str, Any]:
    return deep_merge(params["tracking"], params["suites"][suite].get("tracking"))


def _level(block: dict[str, Any] | None, model: str) -> dict[str, Any]:
    """One level of the cascade, with layers[model] renamed to 'layer'."""
    block = copy.deepcopy(block or {})
    layers = block.pop("layers", None) or {}
    block.pop("models", None)  # per-model settings (tasks.T.models) or a suite task's model subset (a list)
    block.pop("seeds", None)  # a suite task's seed subset
    block = {k: v for k, v in block.items() if v is not None}
    if layers.get(model):
        block["layer"] = layers[model]
    return block


def parse_override(item: str) -> tuple[list[str], Any]:
    """'train.ssm_lr=2e-3' -> (['train', 'ssm_lr'], 0.002); the value is read as YAML (numbers, bools, lists)."""
    key, sep, raw = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: expected key.path=value")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(config: dict[str, Any], items: list[str], signature: Signature = None) -> dict[str, Any]:
    """Apply --set items to a resolved config; each is checked against the schema and names itself on error."""
    config = copy.deepcopy(config)
    hints = _hints(Job)
    for item in items:
        keys, value = parse_override(item)
        if len(keys) != 2 or keys[0] not in ("train", "net", "layer", "data", "paths", "tracking"):
            section = keys[0] if keys[0] in hints else None
            raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE with SECTION one of train, net, layer, "
                              f"data, paths, tracking" + ("" if section else f"; {_closest(keys[0], list(hints))}"))
        section, key = keys
        where = _Where(f"--set {item}")
        if section == "layer":
            sig = signature(config["model"]) if signature is not None else None
            if sig is not None and key not in sig:
                raise ConfigError(f"--set {item!r}: not an argument of the {config['model']} layer; "
                                  f"{_closest(key, list(sig))}")
            if sig is not None:
                _check_scalar(value, sig[key][0], f"layer.{key}", where)
        else:
            fields = _hints(hints[section])
            if key not in fields:
                raise ConfigError(f"--set {item!r}: unknown key {section}.{key}; {_closest(key, list(fields))}")
            _check_scalar(value, fields[key], f"{section}.{key}", where)
        config.setdefault(section, {})[key] = value
    return config


def resolve(params: dict[str, Any], suite: str, task: str, model: str, seed: int,
            overrides: list[str] | None = None, source: str = "params.yaml", signature: Signature = None
            ) -> dict[str, Any]:
    """One job's config (see the module docstring), validated: complete and typed; layer arguments constructible when
    ``signature`` is given (rotrnn.config.layers.resolve)."""
    if model not in MODELS:
        raise ConfigError(f"unknown model {model!r}; {_closest(model, list(MODELS))}")
    suite = suite_name(params, suite, source)
    if task not in params["tasks"]:
        raise ConfigError(f"{source}: unknown task {task!r}; {_closest(task, list(params['tasks']))}")
    s = params["suites"][suite]
    task_block = params["tasks"][task] or {}
    suite_task = (s.get("tasks") or {}).get(task)
    config: dict[str, Any] = {}
    for level in (params["defaults"], task_block, (task_block.get("models") or {}).get(model),
                  s.get("overrides"), suite_task):
        config = deep_merge(config, _level(level, model))
    config.update(suite=suite, task=task, model=model, seed=int(seed))
    config["tracking"] = suite_tracking(params, suite)
    config["paths"] = suite_paths(params, suite)
    config.setdefault("data", {})
    config.setdefault("layer", {})
    config = apply_overrides(config, overrides or [], signature)
    check_job(config, f"{source} ({suite}/{task}/{model})", signature)
    return config


def check_job(config: dict[str, Any], source: str, signature: Signature = None) -> None:
    """Validate a resolved job config (also one read back from a run directory)."""
    for key in ("suite", "task", "model"):
        check_name(config.get(key), f"{source}: {key}")
    for key in ("source", "task"):  # --set data.source=... comes in here
        if (config.get("data") or {}).get(key) is not None:
            check_name(config["data"][key], f"{source}: data.{key}")
    _check(config, Job, "", _Where(source, signature=signature), complete=True, model=config.get("model"))
    missing = [k for k in _hints(Job) if k not in config]
    if missing:
        raise ConfigError(f"{source}: resolved config lacks {', '.join(missing)}")


# ---- names and paths (the one place that computes them) ------------------------------------------------------------
def run_name(config: dict[str, Any]) -> str:
    return f"{config['task']}/{config['model']}/{config['seed']}"


def run_path(paths: dict[str, str], suite: str, task: str, model: str, seed: int | str) -> str:
    """paths.runs/<suite>/<task>/<model>/seed<S> (strings, so the Snakefile can pass "{task}" wildcards through)."""
    return f"{paths['runs']}/{suite}/{task}/{model}/seed{seed}"


def prepared_path(paths: dict[str, str], suite: str, task: str) -> str:
    return f"{paths['prepared']}/{suite}/{task}"


def run_dir(config: dict[str, Any]) -> Path:
    return Path(run_path(config["paths"], config["suite"], config["task"], config["model"], config["seed"]))


def data_dir(config: dict[str, Any]) -> Path:
    return Path(prepared_path(config["paths"], config["suite"], config["task"]))


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
