"""The authors' optimiser (authors' s5/train_helpers.py and s5/train.py): AdamW with three parameter groups and a warmup + cosine schedule.

Groups (S5/RotRNN ``optax.multi_transform``):

- ``ssm``: the recurrent parameters (RotRNN gamma_log, theta; LRU nu_log, theta_log, gamma_log; DLR Lambda_a,
  Lambda_b) at the recurrent rate ``ssm_lr`` with no weight decay, in every opt_config;
- ``regular``: everything else at ``lr = lr_factor · ssm_lr`` with weight decay; RotRNN's M is always here;
- ``none``: (BandCdecay only) B at ``ssm_lr`` with weight decay.

B, C and D move between groups by ``opt_config``:

=============== ============ ============= =================
opt_config       B            C (C_back)    D
=============== ============ ============= =================
standard         ssm          regular       regular
BandCdecay       none         regular       regular
BfastandCdecay   regular      regular       regular
noBCdecay        ssm          ssm           ssm
=============== ============ ============= =================

DLR has no input matrix; its output kernel W plays C's role.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from rotrnn.choices import OPT_CONFIGS
from rotrnn.nn.base import DiagonalRecurrentLayer

INPUT_NAMES = {"B", "B_re", "B_im"}
OUTPUT_NAMES = {"C", "C_back", "C_re", "C_im", "C_back_re", "C_back_im", "W_re", "W_im", "W_back_re", "W_back_im"}
FEEDTHROUGH_NAMES = {"D"}


def layer_parameter_role(layer: DiagonalRecurrentLayer, name: str) -> str:
    """'recurrent', 'B', 'C', 'D' or 'other' for a parameter of a recurrent layer."""
    if name in layer.recurrent_parameters:
        return "recurrent"
    if name in INPUT_NAMES:
        return "B"
    if name in OUTPUT_NAMES:
        return "C"
    if name in FEEDTHROUGH_NAMES:
        return "D"
    return "other"


def group_of(role: str, opt_config: str) -> str:
    if opt_config not in OPT_CONFIGS:
        raise ValueError(f"unknown opt_config {opt_config!r}; choose one of {OPT_CONFIGS}")
    if role == "recurrent":
        return "ssm"
    if role == "B":
        return {"standard": "ssm", "BandCdecay": "none", "BfastandCdecay": "regular", "noBCdecay": "ssm"}[opt_config]
    if role in ("C", "D"):
        return "ssm" if opt_config == "noBCdecay" else "regular"
    return "regular"


def parameter_groups(model: nn.Module, opt_config: str) -> dict[str, list[str]]:
    """Group name -> qualified parameter names. Every trainable parameter lands in exactly one group."""
    groups: dict[str, list[str]] = {"ssm": [], "regular": [], "none": []}
    owner: dict[str, tuple[DiagonalRecurrentLayer, str]] = {}
    for mod_name, mod in model.named_modules():
        if isinstance(mod, DiagonalRecurrentLayer):
            for p_name, _ in mod.named_parameters(recurse=False):
                owner[f"{mod_name}.{p_name}" if mod_name else p_name] = (mod, p_name)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        role = layer_parameter_role(*owner[name]) if name in owner else "other"
        groups[group_of(role, opt_config)].append(name)
    return groups


def build_optimizer(model: nn.Module, train: dict[str, Any]) -> tuple[torch.optim.Optimizer, dict[str, list[str]]]:
    ssm_lr = float(train["ssm_lr"])
    lr = float(train["lr_factor"]) * ssm_lr
    wd = float(train["weight_decay"])
    names = parameter_groups(model, train["opt_config"])
    params = dict(model.named_parameters())
    settings = {"ssm": (ssm_lr, 0.0), "regular": (lr, wd), "none": (ssm_lr, wd)}
    param_groups = [
        {"params": [params[n] for n in names[g]], "lr": settings[g][0], "weight_decay": settings[g][1], "name": g}
        for g in ("ssm", "regular", "none") if names[g]
    ]
    betas = tuple(train.get("betas", (0.9, 0.999)))
    impl = adamw_implementation([p for g in param_groups for p in g["params"]], train.get("optimizer_impl", "auto"))
    return torch.optim.AdamW(param_groups, betas=betas, eps=float(train.get("eps", 1e-8)), **impl), names


def adamw_implementation(params: list[torch.Tensor], choice: str = "auto") -> dict[str, bool]:
    """AdamW keyword arguments for ``choice``: 'fused' (one kernel over all parameters of a group), 'foreach'
    (multi-tensor ops), 'loop' (PyTorch's per-parameter reference loop) or 'auto'.

    'auto' is fused where PyTorch has the fused kernel (floating-point parameters on CPU or CUDA, all on one device
    type), else foreach. The update is the same AdamW; fused and loop agree to float rounding (tested), and the
    optimiser state has the same keys, so checkpoints move between implementations.
    """
    if choice not in ("auto", "fused", "foreach", "loop"):
        raise ValueError(f"train.optimizer_impl must be auto, fused, foreach or loop, got {choice!r}")
    if choice == "auto":
        kinds = {p.device.type for p in params}
        fusable = len(kinds) == 1 and kinds <= {"cpu", "cuda"} and all(p.is_floating_point() for p in params)
        choice = "fused" if fusable else "foreach"
    return {"fused": {"fused": True}, "foreach": {"foreach": True}, "loop": {"foreach": False}}[choice]


def lr_multiplier(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Linear warmup (step+1)/warmup_steps, then cosine from 1 to min_ratio over the remaining steps.

    The reference's cosine counts from step 0 instead of from the end of warmup, so it reaches lr_min warmup
    epochs early and stays there; here the cosine spans exactly the steps after warmup.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, train: dict[str, Any], steps_per_epoch: int
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    total = steps_per_epoch * int(train["epochs"])
    warmup = int(round(float(train["warmup_epochs"]) * steps_per_epoch))
    if not train.get("cosine", True):
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: (s + 1) / warmup if s < warmup else 1.0)
    lr_min = float(train.get("lr_min", 0.0))
    ratios = [lr_min / g["lr"] if g["lr"] > 0 else 0.0 for g in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, [lambda s, r=r: lr_multiplier(s, warmup, total, r) for r in ratios])
