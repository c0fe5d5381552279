"""Matrix exponential with a fixed sequence of kernels and no host synchronisation (RotRNN's P = expm(M - Mᵀ)).

``torch.linalg.matrix_exp`` chooses its Padé degree and number of squarings on the host from the norm of its input
(a device synchronisation on CUDA, in the forward and again in the backward, which runs it on a 2N×2N block
matrix), and a synchronising step cannot be captured in a CUDA graph. Forward and backward are about 100 small
kernels for a (32, 8, 8) batch; on a GPU each is a launch, so P costs launches, not arithmetic (a whole RotRNN layer
call took about 6 ms of fixed cost on an H200, ``reports/perf/gpu-h200.md``), which is why a model computes every
layer's P in one call (``RotRNN.projections_of``). Here every matrix gets the same fixed sequence of batched
operations, and the per-matrix number of squarings becomes a mask on the device:

    expm(A) = T₁₈(A / 2^s)^(2^s),   T₁₈(X) = Σ_{k≤18} X^k / k!,   s = clamp(⌈log₂ ‖A‖₁⌉, 0, S_MAX) per matrix.

With ‖X‖₁ ≤ 1 the Taylor remainder is at most Σ_{k>18} 1/k! < e/19! ≈ 2.2e-17, below float64 rounding. T₁₈ is
evaluated by Paterson–Stockmeyer in X⁴: 7 matrix products. The squarings run S_MAX times, each applied only where its
index is below s, so matrices of different norms share the kernels (on the CPU, where reading a value is free, only
up to the largest s). Up to ‖A‖₁ = 2^S_MAX = 4096 the result is accurate to float64; beyond it the scaled norm
exceeds 1 and the remainder grows (float32 accuracy holds to about ‖A‖₁ ≈ 12000). RotRNN's M - Mᵀ starts near
‖·‖₁ ≈ 0.7 (paper initialisation, N = 8), far below the bound.

Backward: for a loss with gradient G at expm(A), the exponential of a block-triangular matrix (Van Loan 1978) gives
the Fréchet derivative,

    ∂loss/∂A = [expm([[Aᵀ, G], [0, Aᵀ]])]_{1,2}   (the upper-right N×N block),

which is also what PyTorch computes. It is linear in G, so G is scaled to unit max-norm first and the result scaled
back: the block's norm, and with it the number of squarings, does not depend on the gradient's size.
"""
from __future__ import annotations

import contextlib
import math

import torch

DEGREE = 18  # Taylor degree; remainder < e/19! ≈ 2.2e-17 for ‖X‖₁ ≤ 1
S_MAX = 12  # masked squarings: float64-accurate up to ‖A‖₁ = 2^12
_BLOCK = 4  # Paterson–Stockmeyer block: powers I, X, X², X³; Horner in X⁴
# _COEFFS[j, i] = 1/(4j + i)!, zero beyond the degree: T(X) = Σ_j (Σ_i _COEFFS[j, i] X^i) (X⁴)^j
_COEFFS = [[1 / math.factorial(_BLOCK * j + i) if _BLOCK * j + i <= DEGREE else 0.0 for i in range(_BLOCK)]
           for j in range(DEGREE // _BLOCK + 1)]


def _expm_fixed(A: torch.Tensor) -> torch.Tensor:
    """expm of a (K, n, n) batch by the fixed sequence in the module docstring (no autograd of its own)."""
    norm = A.abs().sum(dim=-2).amax(dim=-1)  # ‖A‖₁, max column sum
    # log2(0) = -inf clamps to 0; a NaN norm (a diverged model) squares nothing and its NaNs flow into the result
    s = torch.log2(norm).ceil_().nan_to_num_(nan=0.0).clamp_(0, S_MAX)
    X = A * torch.exp2(-s)[:, None, None]
    X2 = torch.bmm(X, X)
    X3 = torch.bmm(X2, X)
    X4 = torch.bmm(X2, X2)
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device).expand_as(A)
    coeffs = torch.tensor(_COEFFS, dtype=A.dtype, device=A.device)
    blocks = torch.einsum("ji,ikab->jkab", coeffs, torch.stack([eye, X, X2, X3]))  # (DEGREE//4 + 1, K, n, n)
    T = blocks[-1]
    for j in range(len(_COEFFS) - 2, -1, -1):
        T = torch.baddbmm(blocks[j], T, X4)
    # on the CPU reading max(s) costs nothing and skips squarings no matrix needs (identities under the mask)
    host = A.device.type == "cpu" and A.numel() and not torch.compiler.is_compiling()
    n_squarings = int(s.max()) if host else S_MAX
    squares = s[:, None, None] > torch.arange(n_squarings, dtype=s.dtype, device=s.device)[:, None, None, None]
    for i in range(n_squarings):
        T = torch.where(squares[i], torch.bmm(T, T), T)
    return T


# device types with an autocast mode; a set rather than torch.amp.is_autocast_available, which Dynamo cannot trace
_AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps", "hpu")


def _no_autocast(A: torch.Tensor) -> contextlib.AbstractContextManager:
    kind = A.device.type
    return torch.autocast(kind, enabled=False) if kind in _AUTOCAST_DEVICES else contextlib.nullcontext()


class _Expm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, A: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(A)
        with _no_autocast(A):  # in A's precision: autocast would run the products in bfloat16
            return _expm_fixed(A)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, G: torch.Tensor) -> torch.Tensor:
        (A,) = ctx.saved_tensors
        n = A.shape[-1]
        scale = G.abs().amax(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(G.dtype).tiny)
        At = A.transpose(-1, -2)
        block = torch.cat([torch.cat([At, G / scale], -1), torch.cat([torch.zeros_like(At), At], -1)], -2)
        with _no_autocast(A):
            return _expm_fixed(block)[:, :n, n:] * scale


def expm(A: torch.Tensor) -> torch.Tensor:
    """Matrix exponential of a (..., n, n) real float tensor; differentiable once (see the module docstring)."""
    if A.dim() < 2 or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"expm expects square matrices (..., n, n), got shape {tuple(A.shape)}")
    if not A.is_floating_point():
        raise TypeError(f"expm expects a real floating-point tensor, got {A.dtype}")
    batch = A.shape[:-2]
    out = _Expm.apply(A.reshape(-1, *A.shape[-2:]))
    return out.reshape(*batch, *A.shape[-2:])
