"""What RotRNN, LRU and DLR share: each is a time-invariant diagonal complex recurrence in its eigenbasis,

    h_t = λ ⊙ h_{t-1} + v_t,    v = encode(u),    y = decode(h) + D ⊙ u,

so one scan operator (:func:`rotrnn.ops.scan.linear_scan`) serves all three. A layer supplies log λ (so that
λ^s = exp(s log λ) is exact for any step s) and its encode/decode maps.

Changing the sampling rate (``step=s``): the transition becomes λ^s and the input term the exact sum of powers
Σ_{j<s} λ^j = (1 - λ^s)/(1 - λ), the discrete analogue of a zero-order hold, so an input that is constant over each
coarse step gives the same states as the fine recurrence at the coarse time points.

``step_input`` (a layer attribute, so that it reaches every layer of a model without new forward arguments) selects
the input term for ``step != 1``: ``"sum"`` (default) the exact power sum above; ``"one"`` the transition power alone,
λ^s with the input unscaled, v_t entering once as at the fine rate. Evaluating with ``step=1`` is "no rescale".
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from rotrnn.ops.scan import linear_scan


def as_complex(x: torch.Tensor) -> torch.Tensor:
    """Real (..., 2C) with interleaved (re, im) pairs -> complex (..., C), a free view for float32/float64."""
    if x.dtype in (torch.float16, torch.bfloat16):  # no complex type for these: the scan accumulates in float32
        x = x.float()
    return torch.view_as_complex(x.unflatten(-1, (-1, 2)).contiguous())


def as_real(h: torch.Tensor) -> torch.Tensor:
    """Complex (..., C) -> real (..., 2C) with interleaved (re, im) pairs."""
    return torch.view_as_real(h).flatten(-2)


STEP_INPUTS = ("sum", "one")


def step_input_gain(log_lam: torch.Tensor, step: float, mode: str = "sum") -> torch.Tensor | None:
    """The factor on v_t at step s: Σ_{j<s} λ^j = (1 - λ^s)/(1 - λ) for ``"sum"``, none (1) for ``"one"`` or s = 1."""
    if mode not in STEP_INPUTS:
        raise ValueError(f"step_input must be one of {STEP_INPUTS}, got {mode!r}")
    if step == 1.0 or mode == "one":
        return None
    return (1 - torch.exp(step * log_lam)) / (1 - torch.exp(log_lam))


class DiagonalRecurrentLayer(nn.Module):
    """Base class: subclasses define ``log_lambda``, ``encode`` and ``decode`` and the parameter ``D``."""

    #: names of the parameters that set λ; the optimiser gives them the recurrent learning rate, no weight decay
    recurrent_parameters: tuple[str, ...] = ()

    def __init__(self, d_model: int, bidirectional: bool = False, backend: str = "auto"):
        super().__init__()
        if d_model < 1:
            raise ValueError(f"d_model must be positive, got {d_model}")
        self.d_model = d_model
        self.bidirectional = bidirectional
        self.backend = backend
        self.step_input = "sum"  # see the module docstring; only read when step != 1

    # -- interface -------------------------------------------------------------------------------------------
    def log_lambda(self) -> torch.Tensor:
        """(C,) complex: log of the diagonal transition."""
        raise NotImplementedError

    def projections(self) -> dict[str, torch.Tensor]:
        """The input and output matrices in the eigenbasis, as real matrices on interleaved (re, im) pairs:
        ``B`` (2C, d_model), ``C`` and, when bidirectional, ``C_back`` (d_model, 2C).

        ``forward`` computes them once per call and hands them to ``encode`` and ``decode`` (a bidirectional layer
        decodes twice), so that derived quantities such as RotRNN's P = expm(M - Mᵀ) are built once per training
        step.
        """
        raise NotImplementedError

    @classmethod
    def projections_of(cls, layers: Sequence[DiagonalRecurrentLayer]) -> list[dict[str, torch.Tensor]]:
        """``[layer.projections() for layer in layers]``; a subclass may compute them together (see RotRNN)."""
        return [layer.projections() for layer in layers]

    def encode(self, u: torch.Tensor, maps: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """(B, L, d_model) -> v = B u, complex (B, L, C): one real matmul onto interleaved (re, im) rows."""
        maps = maps if maps is not None else self.projections()
        return as_complex(nn.functional.linear(u, maps["B"]))

    def decode(self, h: torch.Tensor, backward: bool = False, maps: dict[str, torch.Tensor] | None = None
               ) -> torch.Tensor:
        """States (B, L, C) -> Re(C h), (B, L, d_model); ``backward`` selects the reverse half's output map."""
        maps = maps if maps is not None else self.projections()
        W = maps["C_back" if backward else "C"]
        return nn.functional.linear(as_real(h).to(W.dtype), W)

    # -- shared ----------------------------------------------------------------------------------------------
    def check_input(self, u: torch.Tensor) -> None:
        if u.dim() != 3 or u.shape[-1] != self.d_model:
            raise ValueError(
                f"{type(self).__name__} expects u of shape (batch, length, d_model={self.d_model}), "
                f"got {tuple(u.shape)}"
            )

    def eigen_states(self, u: torch.Tensor, step: float = 1.0, reverse: bool = False) -> torch.Tensor:
        """The scan's states h in the eigenbasis, (B', L, C) complex."""
        return self._scan(self.encode(u), step, reverse)

    def _scan(self, v: torch.Tensor, step: float, reverse: bool) -> torch.Tensor:
        log_lam = self.log_lambda().to(v.dtype)
        lam = torch.exp(step * log_lam)
        gain = step_input_gain(log_lam, step, self.step_input)
        if gain is not None:
            v = v * gain  # Σ_{j<s} λ^j
        return linear_scan(lam, v, reverse=reverse, backend=self.backend)

    def forward(self, u: torch.Tensor, step: float = 1.0, maps: dict[str, torch.Tensor] | None = None
                ) -> torch.Tensor:
        """y = decode(scan(encode(u))) + D ⊙ u (+ the reverse scan of the same inputs when bidirectional).

        ``maps``: this layer's ``projections()`` when the caller computed them already (``projections_of``)."""
        self.check_input(u)
        if not step > 0:
            raise ValueError(f"step must be positive, got {step}")
        maps = maps if maps is not None else self.projections()
        v = self.encode(u, maps)
        # y = decode(h) + D ⊙ u in one pass over the output
        y = torch.addcmul(self.decode(self._scan(v, step, reverse=False), maps=maps), self.D, u)
        if self.bidirectional:
            y = y + self.decode(self._scan(v, step, reverse=True), backward=True, maps=maps)
        return y

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, bidirectional={self.bidirectional}, backend={self.backend!r}"
