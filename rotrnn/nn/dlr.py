"""DLR (Gupta, Mehta, Berant 2022, "Simplifying and Understanding State Space Models with Diagonal Linear RNNs").

A discretisation-free diagonal linear RNN per feature, as the convolution y = K * u + D ⊙ u with
K[h, ℓ] = Re Σ_n W[h, n] λ_n^ℓ (Gupta et al. 2022; ag1988/dlr dss.py, DLRKernel). Equivalently, each feature h runs its own states

    x^h_t = λ ⊙ x^h_{t-1} + u_{h,t} · 1,    y_{h,t} = Re(W_h · x^h_t) + D_h u_{h,t},

with λ_n = exp(Λ_n), Λ_n = -a_n² + i b_n shared by all features and W complex per feature. ``mode="fft"`` (the
default, as DLR runs) computes the kernel and convolves by FFT in O(B·d·L log L), never materialising the
d_model × d_state states per step; ``mode="scan"`` runs the recurrence on the shared scan (batch × d_model sequences
of d_state channels), which the tests check it against. The "omega" initialisation:
Λ_n = -dt_n/2 + 2πi n/N with dt_n log-uniform in [dt_min, dt_max]; W ~ complex normal · W_scale (W_scale = 1/N).
The activation and output linear map of DLR's block belong to the surrounding model block here.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .base import DiagonalRecurrentLayer, step_input_gain


class DLR(DiagonalRecurrentLayer):
    recurrent_parameters = ("Lambda_a", "Lambda_b")

    def __init__(
        self,
        d_model: int,
        d_state: int,
        dt_min: float = 1e-4,
        dt_max: float = 0.1,
        W_scale: float | None = None,
        bidirectional: bool = False,
        backend: str = "auto",
        mode: str = "fft",
    ):
        super().__init__(d_model, bidirectional, backend)
        if mode not in ("fft", "scan"):
            raise ValueError(f"DLR mode must be 'fft' or 'scan', got {mode!r}")
        self.mode = mode
        if d_state < 1:
            raise ValueError(f"d_state must be positive, got {d_state}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        self.d_state = N = d_state
        dt = torch.exp(math.log(dt_min) + torch.rand(N) * (math.log(dt_max) - math.log(dt_min)))
        self.Lambda_a = nn.Parameter(torch.sqrt(dt / 2))  # Re Λ = -a²
        self.Lambda_b = nn.Parameter((2 * math.pi * torch.arange(N) / N) % (2 * math.pi))  # Im Λ = b
        scale = (1.0 / N if W_scale is None else W_scale) / math.sqrt(2)  # E|W|² = W_scale²
        self.W_re = nn.Parameter(torch.randn(d_model, N) * scale)
        self.W_im = nn.Parameter(torch.randn(d_model, N) * scale)
        self.D = nn.Parameter(torch.randn(d_model))
        if bidirectional:
            self.W_back_re = nn.Parameter(torch.randn(d_model, N) * scale)
            self.W_back_im = nn.Parameter(torch.randn(d_model, N) * scale)

    def log_lambda(self) -> torch.Tensor:
        """Λ = -a² + i b."""
        return torch.complex(-self.Lambda_a**2, self.Lambda_b)

    def kernel(self, length: int, step: float = 1.0, backward: bool = False) -> torch.Tensor:
        """(d_model, length) K[h, ℓ] = Re Σ_n W[h, n] λ_n^ℓ, the convolution kernel the recurrence computes.

        With ``step=s``: λ → λ^s and W → W · (1 - λ^s)/(1 - λ), the same exact rescaling as the scan's (or W
        unchanged with ``step_input = "one"``, the transition power alone)."""
        log_lam = self.log_lambda()
        ell = torch.arange(length, device=self.Lambda_a.device, dtype=self.Lambda_a.dtype)
        powers = torch.exp(step * log_lam[:, None] * ell)  # (N, L)
        W = torch.complex(self.W_back_re, self.W_back_im) if backward else torch.complex(self.W_re, self.W_im)
        gain = step_input_gain(log_lam, step, self.step_input)
        if gain is not None:
            W = W * gain
        return (W @ powers).real

    def forward(self, u: torch.Tensor, step: float = 1.0, maps: dict[str, torch.Tensor] | None = None
                ) -> torch.Tensor:
        if self.mode == "scan":
            return super().forward(u, step, maps)
        self.check_input(u)
        if not step > 0:
            raise ValueError(f"step must be positive, got {step}")
        L = u.shape[1]
        x = (u.float() if u.dtype in (torch.float16, torch.bfloat16) else u).transpose(1, 2)  # (B, d, L)
        n = 2 * L  # linear, not circular, convolution

        def causal_conv(x: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
            return torch.fft.irfft(torch.fft.rfft(x, n) * torch.fft.rfft(K.to(x.dtype), n), n)[..., :L]

        y = causal_conv(x, self.kernel(L, step))
        if self.bidirectional:  # y_back[t] = Σ_k K_back[k] u[t + k]: the causal convolution of the reversed input
            y = y + causal_conv(x.flip(-1), self.kernel(L, step, backward=True)).flip(-1)
        return y.transpose(1, 2).to(u.dtype) + self.D * u

    def projections(self) -> dict[str, torch.Tensor]:
        """Nothing to derive: DLR's output map is its parameter W, one per feature (encode/decode below)."""
        return {}

    def encode(self, u: torch.Tensor, maps: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """(B, L, d) -> (B·d, L, N): each feature's input drives all of its N states."""
        B, L, d = u.shape
        x = u.float() if u.dtype in (torch.float16, torch.bfloat16) else u
        x = x.permute(0, 2, 1).reshape(B * d, L, 1)
        cdtype = torch.complex128 if x.dtype == torch.float64 else torch.complex64
        return x.to(cdtype).expand(B * d, L, self.d_state)

    def decode(self, h: torch.Tensor, backward: bool = False, maps: dict[str, torch.Tensor] | None = None
               ) -> torch.Tensor:
        W_re, W_im = (self.W_back_re, self.W_back_im) if backward else (self.W_re, self.W_im)
        d = self.d_model
        h = h.unflatten(0, (-1, d))  # (B, d, L, N)
        y = torch.einsum("bdln,dn->bld", h.real.to(W_re.dtype), W_re) - torch.einsum(
            "bdln,dn->bld", h.imag.to(W_im.dtype), W_im
        )
        return y

    def extra_repr(self) -> str:
        return f"d_state={self.d_state}, mode={self.mode!r}, " + super().extra_repr()
