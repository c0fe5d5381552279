"""AdamW implementations (fused / foreach / loop): the same update, interchangeable checkpoints."""
from __future__ import annotations

import pytest
import torch

from rotrnn.models import SequenceClassifier
from rotrnn.train.optim import adamw_implementation, build_optimizer

TRAIN = {"ssm_lr": 1e-2, "lr_factor": 3, "weight_decay": 0.05, "opt_config": "BandCdecay"}


def run(impl: str, steps: int = 5, resume_from: dict | None = None):
    torch.manual_seed(0)
    model = SequenceClassifier("rotrnn", 5, 3, d_model=8, n_layers=2, tokens=True,
                               layer_kwargs={"d_state": 8, "n_heads": 2, "bidirectional": True})
    opt, _ = build_optimizer(model, {**TRAIN, "optimizer_impl": impl})
    if resume_from is not None:
        model.load_state_dict(resume_from["model"])
        opt.load_state_dict(resume_from["opt"])
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randint(0, 5, (4, 9), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x), torch.randint(0, 3, (4,), generator=g))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, opt


@pytest.mark.parametrize("impl", ["fused", "foreach"])
def test_implementations_agree_with_the_loop(impl):
    want, _ = run("loop")
    got, opt = run(impl)
    assert opt.defaults["fused" if impl == "fused" else "foreach"]
    for (name, a), b in zip(want.named_parameters(), got.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)


def test_checkpoint_moves_between_implementations():
    model, opt = run("fused", steps=2)
    saved = {"model": model.state_dict(), "opt": opt.state_dict()}
    _, loop_opt = run("loop", steps=0, resume_from=saved)
    assert loop_opt.state_dict()["state"].keys() == saved["opt"]["state"].keys()


def test_auto_choice_and_errors():
    cpu = [torch.zeros(2, requires_grad=True)]
    assert adamw_implementation(cpu) == {"fused": True}
    assert adamw_implementation([torch.zeros(2, dtype=torch.complex64)]) == {"foreach": True}
    with pytest.raises(ValueError, match="optimizer_impl"):
        adamw_implementation(cpu, "apex")
