"""Parameter groups per opt_config, and the learning-rate schedule."""
from __future__ import annotations

import math

import pytest

from rotrnn.models import RetrievalClassifier, SequenceClassifier
from rotrnn.train.optim import OPT_CONFIGS, build_optimizer, build_scheduler, lr_multiplier, parameter_groups

EXPECTED = {  # role -> group for each opt_config (the authors' S5-based optimiser, see rotrnn/train/optim.py)
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
