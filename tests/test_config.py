"""rotrnn/config/: the schema of params.yaml (unknown keys and wrong types are errors that name the file, line,
key and the closest valid key), the cascade, --set, and every paper-suite job building a model that runs."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from rotrnn.config import (MODELS, ConfigError, apply_overrides, flatten, load_yaml, resolve, validate_params)
from rotrnn.config.layers import load_params
from rotrnn.config import layers as checked
from rotrnn.nn import LAYERS

from train.conftest import PARAMS  # tests/ is on sys.path (rootdir without __init__.py)

ROOT = Path(__file__).resolve().parents[1]
PROJECT_PARAMS = ROOT / "params.yaml"


def test_model_registry_is_the_layers_package():
    assert MODELS == tuple(LAYERS) == ("rotrnn", "lru", "dlr")


def test_cascade_and_overrides():
    params = {
        **PARAMS,
        "tasks": {"majority": {"train": {"epochs": 7}, "layers": {"lru": {"d_state": 32}},
                               "models": {"lru": {"train": {"batch_size": 3}}}}},
        "suites": {"test": {**PARAMS["suites"]["test"], "overrides": {"train": {"epochs": 2}},
                            "tasks": {"majority": {"net": {"d_model": 4}}}}},
    }
    validate_params(params, "test params")
    c = resolve(params, "test", "majority", "lru", 5, ["train.ssm_lr=2e-3", "layer.r_min=0.5"])
    assert c["train"]["epochs"] == 2  # suite override beats the task
    assert c["train"]["batch_size"] == 3  # per-model task setting
    assert c["layer"] == {"d_state": 32, "r_min": 0.5}
    assert c["net"]["d_model"] == 4 and c["net"]["n_layers"] == 2
    assert c["train"]["ssm_lr"] == 2e-3 and isinstance(c["train"]["ssm_lr"], float)
    assert (c["suite"], c["task"], c["model"], c["seed"]) == ("test", "majority", "lru", 5)
    assert flatten(c)["train.ssm_lr"] == 2e-3
    with pytest.raises(ConfigError, match=r"--set 'train.sssm_lr=1'.*did you mean `ssm_lr`"):
        apply_overrides(c, ["train.sssm_lr=1"])
    with pytest.raises(ConfigError, match="key.path=value"):
        apply_overrides(c, ["train.ssm_lr"])
    with pytest.raises(ConfigError, match=r"train\.epochs: 'abc' \(str\) is not an integer"):
        apply_overrides(c, ["train.epochs=abc"])
    with pytest.raises(ConfigError, match=r"not an argument of the lru layer; did you mean `r_max`"):
        checked.apply_overrides(c, ["layer.r_mx=0.5"])
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        resolve(params, "test", "nope", "lru", 0)
    with pytest.raises(ConfigError, match="unknown model 'gru'"):
        resolve(params, "test", "majority", "gru", 0)


def test_the_schema_imports_no_model_code_and_the_layers_check_their_arguments(tmp_path):
    """What the data stages load (the schema, the plan, the stages) imports neither torch nor the layers, so a
    prepare stage's DVC code deps hold no model code; the layer arguments are checked against the layer
    constructors by rotrnn.config.layers, which the training job and the Snakefile call."""
    code = ("import sys, rotrnn.config, rotrnn.pipeline.plan, rotrnn.pipeline.stages; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('rotrnn.nn', 'rotrnn.models', "
            "'rotrnn.train'))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    path = _edited(tmp_path, "rotrnn: {d_state: 256, n_heads: 32, r_min", "rotrnn: {d_state: 256, n_head: 32, r_min")
    from rotrnn.config import load_params as schema_only

    assert schema_only(path)["defaults"]["layers"]["rotrnn"]["n_head"] == 32  # a mapping of values: fine here
    with pytest.raises(ConfigError, match=r"defaults\.layers\.rotrnn\.n_head: not an argument of the rotrnn layer"):
        load_params(path)
    params = schema_only(path)
    params["suites"]["smoke"]["overrides"] = {"layers": {"rotrnn": {"n_heads": [1, 2]}}}
    with pytest.raises(ConfigError, match=r"suites\.smoke\.overrides\.layers\.rotrnn\.n_heads: a layer argument "
                       "must be a name and a single value"):
        validate_params(params)


def test_yaml_reads_exponent_without_dot_as_a_number():
    assert load_yaml("a: 1e-3\nb: 2E5\nc: 1.0e-4\nd: 3\ne: abc") == {"a": 1e-3, "b": 2e5, "c": 1e-4, "d": 3,
                                                                      "e": "abc"}


def _edited(tmp_path: Path, old: str, new: str) -> Path:
    text = PROJECT_PARAMS.read_text()
    assert old in text, old
    path = tmp_path / "params.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


TYPOS = [
    # (text in params.yaml, its typo, the key path the error must name, the suggestion it must make)
    ("train: {epochs: 200, batch_size: 50", "train: {epoch: 5, epochs: 200, batch_size: 50", "tasks.cifar.train.epoch",
     "epochs"),
    ("    n_layers: 6\n", "    n_layer: 6\n", "defaults.net.n_layer", "n_layers"),
    ("  train:\n    epochs: 10", "  trian:\n    epochs: 10", "defaults.trian", "train"),
    ("    overrides:\n", "    overides:\n", "suites.smoke.overides", "overrides"),
    ("rotrnn: {d_state: 256, n_heads: 32, r_min", "rotrnn: {d_state: 256, n_head: 32, r_min",
     "defaults.layers.rotrnn.n_head", "n_heads"),
    ("    models: [rotrnn, lru, dlr]\n    seeds: [0, 1, 2]", "    models: [rotrnn, lrn, dlr]\n    seeds: [0, 1, 2]",
     "suites.paper.models", "lru"),
    ("    warmup_epochs: 1\n", "    warmup_epoch: 1\n", "defaults.train.warmup_epoch", "warmup_epochs"),
]


@pytest.mark.parametrize("old,new,key,suggestion", TYPOS, ids=[t[2] for t in TYPOS])
def test_a_typo_is_an_error_naming_file_line_key_and_suggestion(tmp_path, old, new, key, suggestion):
    path = _edited(tmp_path, old, new)
    with pytest.raises(ConfigError) as err:
        load_params(path)
    msg = str(err.value)
    text = path.read_text()
    line = text[:text.index(new)].count("\n") + 1  # the edited line
    assert msg.startswith(f"{path}:{line}: {key}"), msg
    assert f"did you mean `{suggestion}`" in msg


@pytest.mark.parametrize("old,new,key,expected", [
    ("    epochs: 10\n", "    epochs: abc\n", "defaults.train.epochs", "is not an integer"),
    ("    prenorm: true\n", "    prenorm: 3\n", "defaults.net.prenorm", "is not true or false"),
    ("    opt_config: standard ", "    opt_config: Standard ", "defaults.train.opt_config", "is not one of standard"),
    ("    norm: batch\n", "    norm: group\n", "defaults.net.norm", "is not one of batch, layer"),
    ("    compile: auto ", "    compile: yes_please ", "defaults.train.compile", "is not one of auto, true, false"),
    ("    compile: auto ", "    compile: 1 ", "defaults.train.compile", "is not one of auto, true, false"),
    ("  smoke:\n    # every", "  smoke:\n    seeds_: [1]\n    # every", "suites.smoke.seeds_", "did you mean `seeds`"),
])
def test_a_wrong_value_names_key_value_and_expected_type(tmp_path, old, new, key, expected):
    with pytest.raises(ConfigError, match=rf"{key}: .*{expected}"):
        load_params(_edited(tmp_path, old, new))


def test_missing_keys_and_files(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("defaults: {}\ntasks: {}\n")
    with pytest.raises(ConfigError, match="missing top-level key `paths`"):
        load_params(bad)
    params = yaml.safe_load(PROJECT_PARAMS.read_text())
    del params["defaults"]["train"]["grad_clip"]
    bad.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match=r"train: missing key\(s\) grad_clip"):
        resolve(load_params(bad), "smoke", "listops", "rotrnn", 0)


def test_a_key_given_twice_is_an_error(tmp_path):
    path = _edited(tmp_path, "    data: {source: cifar}\n", "    data: {source: cifar}\n    train: {epochs: 5}\n")
    with pytest.raises(ConfigError, match=r"params.yaml: invalid YAML: .*'train' appears twice"):
        load_params(path)


def test_check_command_prints_one_line_and_no_traceback(tmp_path):
    path = _edited(tmp_path, "    n_layers: 6\n", "    n_layer: 6\n")
    proc = subprocess.run([sys.executable, "-m", "rotrnn.cli", "config", "check", "--params", str(path)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "defaults.net.n_layer: unknown key; did you mean `n_layers`" in proc.stderr
    ok = subprocess.run([sys.executable, "-m", "rotrnn.cli", "config", "check", "--params", str(PROJECT_PARAMS)],
                        capture_output=True, text=True, cwd=tmp_path)
    assert ok.returncode == 0 and "suite paper: 81 jobs" in ok.stdout


# what a prepared task's meta says about the model it needs (the parts build_model reads)
TOKENS = {"kind": "tokens", "target": "class", "loss": "cross_entropy"}
CONTINUOUS = {"kind": "continuous", "in_dim": 1, "target": "class", "loss": "cross_entropy"}
TASK_META = {
    "listops": {**TOKENS, "vocab_size": 18, "n_classes": 10},
    "imdb": {**TOKENS, "vocab_size": 100, "n_classes": 2},
    "aan": {**TOKENS, "vocab_size": 100, "n_classes": 2, "dual": True},
    "cifar": {**CONTINUOUS, "n_classes": 10},
    "pathfinder": {**CONTINUOUS, "n_classes": 2},
    "pathx": {**CONTINUOUS, "n_classes": 2},
    "speech35": {**CONTINUOUS, "n_classes": 35},
    "cumsum": {"kind": "continuous", "in_dim": 1, "target": "sequence", "loss": "mse", "out_dim": 1},
    "shift": {"kind": "continuous", "in_dim": 1, "target": "sequence", "loss": "mse", "out_dim": 1},
}


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_every_paper_job_builds_its_model_and_runs_a_forward_step(model):
    """Each paper-suite config constructs at full size and runs one forward and backward step at length 32."""
    from rotrnn.train.loop import build_model, forward

    params = load_params(PROJECT_PARAMS)
    torch.manual_seed(0)
    for task in params["suites"]["paper"]["tasks"]:
        config = resolve(params, "paper", task, model, 0)
        meta = TASK_META[task]
        net = build_model(config, meta)
        L, B = 32, 2
        x = torch.randint(1, meta["vocab_size"], (B, L)) if meta["kind"] == "tokens" else torch.randn(B, L, 1)
        batch = {"inputs": x, "lengths": torch.full((B,), L)}
        if meta.get("dual"):
            batch.update(inputs2=x.flip(1), lengths2=torch.full((B,), L))
        out = forward(net, batch)
        expected = (B, L, meta["out_dim"]) if meta["target"] == "sequence" else (B, meta["n_classes"])
        assert out.shape == expected, (task, model)
        out.float().pow(2).mean().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters() if p.requires_grad)
