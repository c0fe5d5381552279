"""Configuration cascade, parameter groups per opt_config, and the learning-rate schedule."""
from __future__ import annotations

import math

import pytest

from rotrnn.models import RetrievalClassifier, SequenceClassifier
from rotrnn.train.config import apply_overrides, flatten, load_params, resolve
from rotrnn.train.optim import OPT_CONFIGS, build_optimizer, build_scheduler, lr_multiplier, parameter_groups

from .conftest import PARAMS

EXPECTED = {  # role -> group for each opt_config (facts §3.2)
    "standard": {"recurrent": "ssm", "B": "ssm", "C": "regular", "D": "regular", "M": "regular", "other": "regular"},
    "BandCdecay": {"recurrent": "ssm", "B": "none", "C": "regular", "D": "regular", "M": "regular", "other": "regular"},
    "BfastandCdecay": {"recurrent": "ssm", "B": "regular", "C": "regular", "D": "regular", "M": "regular",
                       "other": "regular"},
    "noBCdecay": {"recurrent": "ssm", "B": "ssm", "C": "ssm", "D": "ssm", "M": "regular", "other": "regular"},
}
ROLES = {
    "rotrnn": {"gamma_log": "recurrent", "theta": "recurrent", "B": "B", "C": "C", "C_back": "C", "D": "D", "M": "M"},
    "lru": {"nu_log": "recurrent", "theta_log": "recurrent", "gamma_log": "recurrent", "B_re": "B", "B_im": "B",
            "C_re": "C", "C_im": "C", "C_back_re": "C", "C_back_im": "C", "D": "D"},
    "dlr": {"Lambda_a": "recurrent", "Lambda_b": "recurrent", "W_re": "C", "W_im": "C", "W_back_re": "C",
            "W_back_im": "C", "D": "D"},
}
LAYER_KW = {"rotrnn": {"d_state": 8, "n_heads": 2}, "lru": {"d_state": 4}, "dlr": {"d_state": 4}}


@pytest.mark.parametrize("opt_config", OPT_CONFIGS)
@pytest.mark.parametrize("layer", ["rotrnn", "lru", "dlr"])
def test_each_parameter_lands_in_its_group(layer, opt_config):
    model = SequenceClassifier(layer, 5, 3, d_model=8, n_layers=2, tokens=True,
                               layer_kwargs={**LAYER_KW[layer], "bidirectional": True})
    groups = parameter_groups(model, opt_config)
    where = {n: g for g, names in groups.items() for n in names}
    assert sorted(where) == sorted(n for n, _ in model.named_parameters())  # each exactly once
    seen_roles = set()
    for name, group in where.items():
        parts = name.split(".")
        if parts[0] == "backbone" and parts[1] == "blocks" and parts[3] == "layer":
            role = ROLES[layer][parts[4]]
        else:
            role = "other"  # encoder, norms, GLU denses, decoder
        seen_roles.add(role)
        assert group == EXPECTED[opt_config][role], (name, role, opt_config)
    assert {"recurrent", "C", "D", "other"} <= seen_roles


def test_optimizer_rates_and_decay():
    model = RetrievalClassifier("rotrnn", 5, 2, d_model=8, n_layers=1, tokens=True, layer_kwargs=LAYER_KW["rotrnn"])
    train = {"ssm_lr": 1e-3, "lr_factor": 4, "weight_decay": 0.05, "opt_config": "BandCdecay"}
    opt, groups = build_optimizer(model, train)
    by_name = {g["name"]: g for g in opt.param_groups}
    assert by_name["ssm"]["lr"] == 1e-3 and by_name["ssm"]["weight_decay"] == 0.0
    assert by_name["regular"]["lr"] == pytest.approx(4e-3) and by_name["regular"]["weight_decay"] == 0.05
    assert by_name["none"]["lr"] == 1e-3 and by_name["none"]["weight_decay"] == 0.05
    assert "backbone.blocks.0.layer.M" in groups["regular"]  # M: global rate with weight decay, in every config
    assert "backbone.blocks.0.layer.B" in groups["none"]
    with pytest.raises(ValueError, match="unknown opt_config 'bogus'"):
        parameter_groups(model, "bogus")


def test_schedule_warmup_then_cosine_to_lr_min():
    steps_per_epoch, epochs = 10, 5
    train = {"ssm_lr": 1e-3, "lr_factor": 2, "weight_decay": 0.0, "opt_config": "standard", "epochs": epochs,
             "warmup_epochs": 1, "lr_min": 1e-4}
    model = SequenceClassifier("lru", 3, 2, d_model=4, n_layers=1, tokens=True, layer_kwargs={"d_state": 2})
    opt, _ = build_optimizer(model, train)
    sched = build_scheduler(opt, train, steps_per_epoch)
    lrs = []
    for _ in range(steps_per_epoch * epochs):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    ssm = [row[0] for row in lrs]
    assert ssm[0] == pytest.approx(1e-3 / 10)  # (step + 1) / warmup_steps
    assert ssm[9] == pytest.approx(1e-3)
    assert ssm[10] == pytest.approx(1e-3)  # the cosine starts at the end of warmup (no step-counter quirk)
    assert ssm[-1] == pytest.approx(1e-4 + (1e-3 - 1e-4) * 0.5 * (1 + math.cos(math.pi * 39 / 40)))
    assert all(a >= b for a, b in zip(ssm[10:], ssm[11:]))
    assert lrs[25][1] == pytest.approx(1e-4 + (2e-3 - 1e-4) * 0.5 * (1 + math.cos(math.pi * 15 / 40)))
    assert lr_multiplier(10**6, 10, 50, 0.1) == pytest.approx(0.1)


def test_config_cascade_and_overrides():
    params = {
        **PARAMS,
        "tasks": {"majority": {"train": {"epochs": 7}, "layers": {"lru": {"d_state": 32}},
                               "models": {"lru": {"train": {"batch_size": 3}}}}},
        "suites": {"test": {"overrides": {"train": {"epochs": 2}}, "tasks": {"majority": {"net": {"d_model": 4}}}}},
    }
    c = resolve(params, "test", "majority", "lru", 5, ["train.ssm_lr=2e-3", "layer.r_min=0.5"])
    assert c["train"]["epochs"] == 2  # suite override beats the task
    assert c["train"]["batch_size"] == 3  # per-model task setting
    assert c["layer"] == {"d_state": 32, "r_min": 0.5}
    assert c["net"]["d_model"] == 4 and c["net"]["n_layers"] == 2
    assert c["train"]["ssm_lr"] == 2e-3 and isinstance(c["train"]["ssm_lr"], float)
    assert (c["suite"], c["task"], c["model"], c["seed"]) == ("test", "majority", "lru", 5)
    assert flatten(c)["train.ssm_lr"] == 2e-3
    with pytest.raises(KeyError, match="unknown key 'train.sssm_lr'"):
        apply_overrides(c, ["train.sssm_lr=1"])
    with pytest.raises(ValueError, match="key.path=value"):
        apply_overrides(c, ["train.ssm_lr"])
    with pytest.raises(KeyError, match="unknown task 'nope'"):
        resolve(params, "test", "nope", "lru", 0)
    with pytest.raises(ValueError, match="unknown model 'gru'"):
        resolve(params, "test", "majority", "gru", 0)


def test_project_params_resolve_for_every_suite_task_model():
    from pathlib import Path

    params = load_params(Path(__file__).resolve().parents[2] / "params.yaml")
    from rotrnn.train.loop import build_model  # every resolved layer config must construct

    for suite, s in params["suites"].items():
        for task in s["tasks"]:
            for model in s["models"]:
                c = resolve(params, suite, task, model, 0)
                meta = {"kind": "continuous", "in_dim": 2, "loss": "cross_entropy", "n_classes": 3, "target": "class"}
                net = build_model(c, meta) if c["net"]["d_model"] <= 128 else None
                assert c["train"]["opt_config"] in OPT_CONFIGS
                if net is not None:
                    assert sum(p.numel() for p in net.parameters()) > 0


def test_load_params_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="params file not found"):
        load_params(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("defaults: {}\ntasks: {}\n")
    with pytest.raises(ValueError, match="missing top-level mapping 'suites'"):
        load_params(bad)
