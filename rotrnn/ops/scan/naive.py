"""Reference scan: the plain sequential loop, the ground truth every fast path is tested against.

    h_t = λ ⊙ h_{t-1} + v_t,   h_{-1} = 0          (forward)
    h_t = λ ⊙ h_{t+1} + v_t,   h_{L} = 0           (reverse)

Gradients come from autograd through the loop, so this is slow but obviously right (float64-capable).
"""
from __future__ import annotations

import torch


def scan_naive(lam: torch.Tensor, v: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """lam: (C,) complex; v: (B, L, C) complex. Returns h: (B, L, C)."""
    steps = range(v.shape[1] - 1, -1, -1) if reverse else range(v.shape[1])
    h = torch.zeros_like(v[:, 0])
    out = [None] * v.shape[1]
    for t in steps:
        h = lam * h + v[:, t]
        out[t] = h
    return torch.stack(out, dim=1)
