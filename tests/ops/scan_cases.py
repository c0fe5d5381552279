"""Problems and the float64 reference shared by the Triton scan tests (``test_scan_fused_*.py``)."""
from __future__ import annotations

import torch

from rotrnn.ops.scan import scan_naive


def f32_exact(z: torch.Tensor) -> torch.Tensor:
    """Round complex128 to complex64 and back: inputs the float32 kernel receives exactly."""
    return z.to(torch.complex64).to(torch.complex128)


def bf16_exact(z: torch.Tensor) -> torch.Tensor:
    return torch.view_as_complex(torch.view_as_real(z).bfloat16().double().contiguous())


def problem(B, L, C, r_min=0.5, r_max=0.999, seed=0, exact=f32_exact):
    g = torch.Generator().manual_seed(seed)
    r = r_min + (r_max - r_min) * torch.rand(C, generator=g, dtype=torch.float64)
    lam = exact(torch.polar(r, 2 * torch.pi * torch.rand(C, generator=g, dtype=torch.float64)))
    v = exact(torch.randn(B, L, C, generator=g, dtype=torch.complex128))
    grad_out = exact(torch.randn(B, L, C, generator=g, dtype=torch.complex128))
    return lam, v, grad_out


def reference(lam, v, grad_out, reverse):
    """float64 h, ∂v, ∂λ from autograd through the sequential loop."""
    a, b = lam.clone().requires_grad_(), v.clone().requires_grad_()
    h = scan_naive(a, b, reverse)
    h.backward(grad_out)
    return h.detach(), b.grad, a.grad


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    got = got.detach().cpu()
    if got.dtype != torch.complex128:
        got = torch.view_as_complex(got.double().contiguous()) if not got.is_complex() else got.to(torch.complex128)
    assert not torch.isnan(torch.view_as_real(got)).any(), "unwritten (NaN) elements in the kernel's output"
    return ((got - ref).abs().norm() / ref.abs().norm()).item()
