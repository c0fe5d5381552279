"""RotRNN (Dolga, Biegun, Cunningham, Barber 2024): a linear recurrence whose state matrix per head is a rotation.

Per head h (Dolga et al. 2024; authors' s5/rares_layers.py, GammaDecayBlockDiagEfficient; the paper's order P Θ Pᵀ):

    x_t = γ P Θ Pᵀ x_{t-1} + ξ B u_t,   x_0 = 0,        y_t = C x_t + D ⊙ u_t
    P = expm(M - Mᵀ) ∈ SO(N),   Θ = blockdiag(R(θ_1), …, R(θ_{N/2})),   γ = exp(-exp(gamma_log)) ∈ (0, 1)
    ξ = sqrt((1 - γ²) / ‖B‖_F²)   (recomputed every call)

For white-noise input, E‖x_t‖² = γ² E‖x_{t-1}‖² + (1 - γ²): the state norm per head tends to 1 (and stays at 1
from a unit-norm start). In the eigenbasis x̃ = Pᵀ x each rotation pair is one complex number z = x̃_{2j} + i x̃_{2j+1}
with λ = γ e^{iθ_j}, so P is folded into the input and output matrices and the scan is diagonal.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from rotrnn.ops.expm import expm

from .base import DiagonalRecurrentLayer, as_real


def double_exponential_init(n: int, r_min: float, r_max: float) -> torch.Tensor:
    """gamma_log with log(-log γ) uniform, so γ = exp(-exp(gamma_log)) lies in [r_min, r_max] (authors' init)."""
    lo, hi = math.log(-math.log(r_max)), math.log(-math.log(r_min))
    return lo + torch.rand(n) * (hi - lo)


def decay(gamma_log: torch.Tensor) -> torch.Tensor:
    """γ = exp(-exp(gamma_log)) ∈ (0, 1), elementwise."""
    return torch.exp(-torch.exp(gamma_log))


def orthogonal(M: torch.Tensor) -> torch.Tensor:
    """P = expm(M - Mᵀ) for (..., N, N) M: orthogonal with det +1 (:func:`rotrnn.ops.expm.expm`: no host sync)."""
    return expm(M - M.transpose(-1, -2))


def xi(gamma_log: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """(...,) normaliser ξ = sqrt((1 - γ²) / ‖B_h‖_F²) for gamma_log (...,) and B (..., N, d)."""
    return torch.sqrt((1 - decay(gamma_log) ** 2) / B.pow(2).sum(dim=(-2, -1)))


def check_radii(r_min: float, r_max: float, low_inclusive: bool = False) -> None:
    low_ok = r_min >= 0 if low_inclusive else r_min > 0
    if not (low_ok and r_min <= r_max < 1):
        bound = "0 <=" if low_inclusive else "0 <"
        raise ValueError(f"need {bound} r_min <= r_max < 1, got r_min={r_min}, r_max={r_max}")


class RotRNN(DiagonalRecurrentLayer):
    """RotRNN layer: (batch, length, d_model) -> (batch, length, d_model).

    d_state is the total real state size; it is split into n_heads heads of N = d_state / n_heads (N even).
    """

    recurrent_parameters = ("gamma_log", "theta")

    def __init__(
        self,
        d_model: int,
        d_state: int,
        n_heads: int,
        r_min: float = 0.9,
        r_max: float = 0.999,
        max_phase: float = 2 * math.pi,
        bidirectional: bool = False,
        backend: str = "auto",
    ):
        super().__init__(d_model, bidirectional, backend)
        if n_heads < 1 or d_state < 1 or d_state % n_heads:
            raise ValueError(f"d_state={d_state} must be a positive multiple of n_heads={n_heads}")
        N = d_state // n_heads
        if N % 2:
            raise ValueError(
                f"state size per head N = d_state/n_heads = {d_state}/{n_heads} = {N} must be even "
                "(each 2x2 rotation acts on a pair of coordinates)"
            )
        check_radii(r_min, r_max)
        self.d_state, self.n_heads, self.N = d_state, n_heads, N
        H = n_heads
        # initial scales as in the authors' run (authors' s5/rares_layers.py); θ parametrised directly as in the paper
        self.M = nn.Parameter(torch.randn(H, N, N) / math.sqrt(N + d_state))
        self.theta = nn.Parameter(torch.rand(H, N // 2) * max_phase)
        self.gamma_log = nn.Parameter(double_exponential_init(H, r_min, r_max))
        self.B = nn.Parameter(torch.randn(H, N, d_model) / math.sqrt(d_model + d_state))
        self.C = nn.Parameter(torch.randn(d_model, H * N) / math.sqrt(d_model + d_state))
        self.D = nn.Parameter(torch.randn(d_model))
        if bidirectional:
            self.C_back = nn.Parameter(torch.randn(d_model, H * N) / math.sqrt(d_model + d_state))

    # -- the paper's quantities ------------------------------------------------------------------------------
    @property
    def gamma(self) -> torch.Tensor:
        """(H,) decay γ = exp(-exp(gamma_log))."""
        return decay(self.gamma_log)

    def orthogonal(self) -> torch.Tensor:
        """(H, N, N) P = expm(M - Mᵀ), orthogonal with det +1."""
        return orthogonal(self.M)

    def xi(self) -> torch.Tensor:
        """(H,) normaliser ξ = sqrt((1 - γ²) / ‖B_h‖_F²)."""
        return xi(self.gamma_log, self.B)

    def rotation(self, k: float = 1.0) -> torch.Tensor:
        """(H, N, N) Θ(kθ) = blockdiag(R(kθ_1), …): R(φ) = [[cos φ, -sin φ], [sin φ, cos φ]] on adjacent pairs."""
        c, s = torch.cos(k * self.theta), torch.sin(k * self.theta)
        R = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # (H, N/2, 2, 2)
        eye = torch.eye(self.N // 2, dtype=R.dtype, device=R.device)
        return torch.einsum("hpij,pq->hpiqj", R, eye).reshape(self.n_heads, self.N, self.N)

    def transition(self, k: float = 1.0) -> torch.Tensor:
        """(H, N, N) A^k = γ^k P Θ(kθ) Pᵀ from the rotation structure (no dense matrix power; k may be fractional)."""
        P = self.orthogonal()
        return self.gamma.pow(k)[:, None, None] * (P @ self.rotation(k) @ P.transpose(-1, -2))

    # -- eigenbasis maps -------------------------------------------------------------------------------------
    def log_lambda(self) -> torch.Tensor:
        # λ = γ e^{iθ}: log λ = -exp(gamma_log) + iθ, per rotation pair, flattened head-major
        log_gamma = -torch.exp(self.gamma_log)[:, None].expand_as(self.theta)
        return torch.complex(log_gamma, self.theta).reshape(-1)

    def projections(self) -> dict[str, torch.Tensor]:
        """P once, then ξ Pᵀ B (rows: complex pairs, head-major) and C_h P_h (and C_back_h P_h) per head."""
        return self._fold(self.M[None], self.B[None], self.gamma_log[None],
                          {name: getattr(self, name)[None] for name in self._output_maps()})[0]

    @classmethod
    def projections_of(cls, layers: Sequence[RotRNN]) -> list[dict[str, torch.Tensor]]:
        """``projections()`` of several layers of one shape, with one expm and one product per map for all of them.

        A model calls this once per step instead of once per layer: P's expm is about a hundred small kernels
        forward and backward, so on a GPU the per-layer calls cost launches, not arithmetic.
        """
        first = layers[0] if layers else None
        if len(layers) < 2 or any(
            type(m) is not cls or (m.n_heads, m.N, m.d_model, m.bidirectional, m.M.dtype, m.M.device)
            != (first.n_heads, first.N, first.d_model, first.bidirectional, first.M.dtype, first.M.device)
            for m in layers
        ):
            return super().projections_of(layers)

        def stack(name: str) -> torch.Tensor:
            return torch.stack([getattr(m, name) for m in layers])

        return cls._fold(stack("M"), stack("B"), stack("gamma_log"),
                         {name: stack(name) for name in first._output_maps()})

    def _output_maps(self) -> tuple[str, ...]:
        return ("C", "C_back") if self.bidirectional else ("C",)

    @staticmethod
    def _fold(M: torch.Tensor, B: torch.Tensor, gamma_log: torch.Tensor, C: dict[str, torch.Tensor]
              ) -> list[dict[str, torch.Tensor]]:
        """The eigenbasis maps of K layers from their parameters stacked on a leading axis: M (K, H, N, N),
        B (K, H, N, d), gamma_log (K, H), C[name] (K, d, H·N)."""
        K, H, N, d = B.shape
        P = orthogonal(M)
        B_eig = (xi(gamma_log, B)[..., None, None] * (P.transpose(-1, -2) @ B)).reshape(K, H * N, d)
        folded = {name: torch.einsum("kdhn,khnm->kdhm", W.view(K, d, H, N), P).reshape(K, d, H * N)
                  for name, W in C.items()}
        return [{"B": B_eig[k], **{name: W[k] for name, W in folded.items()}} for k in range(K)]

    def states(self, u: torch.Tensor, step: float = 1.0) -> torch.Tensor:
        """(B, L, H, N): the forward states x_t before C."""
        self.check_input(u)
        x_eig = as_real(self.eigen_states(u, step)).unflatten(-1, (self.n_heads, self.N))
        return torch.einsum("hnm,blhm->blhn", self.orthogonal(), x_eig.to(self.M.dtype))

    def extra_repr(self) -> str:
        return f"d_state={self.d_state}, n_heads={self.n_heads}, N={self.N}, " + super().extra_repr()
