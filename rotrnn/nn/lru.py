"""LRU (Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks for Long Sequences").

    x_t = λ ⊙ x_{t-1} + γ ⊙ (B u_t),    y_t = Re(C x_t) + D ⊙ u_t
    λ_j = exp(-exp(nu_log_j) + i exp(theta_log_j)),   γ_j = exp(gamma_log_j)

with |λ| initialised uniformly on the ring [r_min, r_max] (|λ|² uniform, Orvieto et al. Lemma 3.2), phases on
[0, max_phase], and the normalisation γ learned as in the paper (§3.4), initialised to sqrt(1 - |λ|²).
``radius_init="double_exponential"`` draws log(-log|λ|) uniformly instead, RotRNN's draw of its decays γ
(rotrnn.nn.rotrnn.double_exponential_init), so that the two models can be compared at the same decay distribution.
d_state is the number of complex states.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .base import DiagonalRecurrentLayer
from .rotrnn import check_radii


RADIUS_INITS = ("ring", "double_exponential")


class LRU(DiagonalRecurrentLayer):
    recurrent_parameters = ("nu_log", "theta_log", "gamma_log")

    def __init__(
        self,
        d_model: int,
        d_state: int,
        r_min: float = 0.9,
        r_max: float = 0.999,
        max_phase: float = 2 * math.pi,
        bidirectional: bool = False,
        backend: str = "auto",
        radius_init: str = "ring",
    ):
        super().__init__(d_model, bidirectional, backend)
        if d_state < 1:
            raise ValueError(f"d_state must be positive, got {d_state}")
        if radius_init not in RADIUS_INITS:
            raise ValueError(f"radius_init must be one of {RADIUS_INITS}, got {radius_init!r}")
        check_radii(r_min, r_max, low_inclusive=radius_init == "ring")
        self.d_state = d_state
        u1, u2 = torch.rand(d_state), torch.rand(d_state)
        if radius_init == "ring":
            radius_sq = (u1 * (r_max**2 - r_min**2) + r_min**2).clamp_min(1e-12)
        else:  # log(-log|λ|) uniform on [log(-log r_max), log(-log r_min)], as RotRNN's γ
            lo, hi = math.log(-math.log(r_max)), math.log(-math.log(r_min))
            radius_sq = torch.exp(-2 * torch.exp(lo + u1 * (hi - lo)))
        self.nu_log = nn.Parameter(torch.log(-0.5 * torch.log(radius_sq)))
        self.theta_log = nn.Parameter(torch.log((max_phase * u2).clamp_min(1e-12)))
        self.gamma_log = nn.Parameter(0.5 * torch.log1p(-radius_sq))  # log sqrt(1 - |λ|²)
        self.B_re = nn.Parameter(torch.randn(d_state, d_model) / math.sqrt(2 * d_model))
        self.B_im = nn.Parameter(torch.randn(d_state, d_model) / math.sqrt(2 * d_model))
        self.C_re = nn.Parameter(torch.randn(d_model, d_state) / math.sqrt(d_state))
        self.C_im = nn.Parameter(torch.randn(d_model, d_state) / math.sqrt(d_state))
        self.D = nn.Parameter(torch.randn(d_model))
        if bidirectional:
            self.C_back_re = nn.Parameter(torch.randn(d_model, d_state) / math.sqrt(d_state))
            self.C_back_im = nn.Parameter(torch.randn(d_model, d_state) / math.sqrt(d_state))

    def log_lambda(self) -> torch.Tensor:
        return torch.complex(-torch.exp(self.nu_log), torch.exp(self.theta_log))

    def projections(self) -> dict[str, torch.Tensor]:
        """γ ⊙ B as real rows with interleaved (re, im), and Re(C ·) = C_re x_re - C_im x_im per output map."""
        gamma = torch.exp(self.gamma_log)[:, None]
        maps = {"B": torch.stack([gamma * self.B_re, gamma * self.B_im], dim=1).reshape(2 * self.d_state,
                                                                                        self.d_model)}
        for name in ("C", "C_back") if self.bidirectional else ("C",):
            C_re, C_im = getattr(self, name + "_re"), getattr(self, name + "_im")
            maps[name] = torch.stack([C_re, -C_im], dim=-1).reshape(self.d_model, 2 * self.d_state)
        return maps

    def extra_repr(self) -> str:
        return f"d_state={self.d_state}, " + super().extra_repr()
