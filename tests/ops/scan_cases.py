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


# -- checks both Triton backends run on their own launch shapes (test_scan_fused_recurrent.py, test_scan_fused_chunk.py)
def poison_empty(monkeypatch, module) -> None:
    """Every buffer ``module`` allocates through ``_empty`` starts as NaN, so an element a kernel fails to write
    shows up in :func:`rel_err`."""
    real_empty = module._empty
    monkeypatch.setattr(module, "_empty", lambda shape, like, dtype=None: real_empty(shape, like, dtype)
                        .fill_(float("nan")))


def run_complex(scan, lam, v, grad_out, reverse, device, *launch):
    """h, ∂v, ∂λ of ``scan(lam, v, reverse, *launch)`` on complex64 copies of the problem."""
    a = lam.to(torch.complex64).to(device).requires_grad_()
    b = v.to(torch.complex64).to(device).requires_grad_()
    h = scan(a, b, reverse, *launch)
    h.backward(grad_out.to(torch.complex64).to(device))
    return h, b.grad, a.grad


def check_float32(scan, B, L, C, reverse, device, *launch, r_min=0.5, r_max=0.999, seed=None) -> None:
    """complex64 outputs and gradients within 1e-5 of the float64 reference; ∂λ exactly zero at length 1 (no step
    reads a previous state)."""
    lam, v, g = problem(B, L, C, r_min=r_min, r_max=r_max, seed=L + C if seed is None else seed)
    h_ref, dv_ref, dlam_ref = reference(lam, v, g, reverse)
    h, dv, dlam = run_complex(scan, lam, v, g, reverse, device, *launch)
    assert h.dtype == dv.dtype == dlam.dtype == torch.complex64
    assert rel_err(h, h_ref) < 1e-5
    assert rel_err(dv, dv_ref) < 1e-5
    if L == 1:
        assert torch.equal(dlam.cpu(), torch.zeros_like(dlam.cpu()))
    else:
        assert rel_err(dlam, dlam_ref) < 1e-5


def check_bfloat16_pairs(scan_pairs, reverse, lam_dtype, device, *launch) -> None:
    """bfloat16 inputs as real pairs: outputs and ∂v in bfloat16, ∂λ in λ's dtype, within 1e-2 of the reference."""
    lam, v, g = problem(2, 11, 5, seed=3, exact=bf16_exact)
    h_ref, dv_ref, dlam_ref = reference(lam, v, g, reverse)
    a = torch.view_as_real(lam).to(lam_dtype).to(device).requires_grad_()
    b = torch.view_as_real(v).bfloat16().to(device).requires_grad_()
    h = scan_pairs(a, b, reverse, *launch)
    h.backward(torch.view_as_real(g).bfloat16().to(device))
    assert h.dtype == b.grad.dtype == torch.bfloat16 and a.grad.dtype == lam_dtype
    assert rel_err(h, h_ref) < 1e-2
    assert rel_err(b.grad, dv_ref) < 1e-2
    assert rel_err(a.grad, dlam_ref) < 1e-2


def check_saves_only_lambda_and_output(scan, device) -> None:
    """Nothing of shape (B, L, C) is kept for backward except h itself."""
    lam, v, _ = problem(2, 5, 3)
    a = lam.to(torch.complex64).to(device).requires_grad_()
    b = v.to(torch.complex64).to(device).requires_grad_()
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        h = scan(a, b)
    big = [t for t in saved if t.numel() >= h.numel() * 2]
    assert len(big) == 1 and big[0].data_ptr() == torch.view_as_real(h).data_ptr()


def check_layer_matches_recurrent(backend, length, device) -> None:
    """A bidirectional RotRNN layer on ``backend``: the same outputs and parameter gradients as on ``recurrent``."""
    from rotrnn.nn import RotRNN

    torch.manual_seed(0)
    layer = RotRNN(4, 8, 2, bidirectional=True).to(device)
    u = torch.randn(2, length, 4, device=device)
    results = {}
    for name in ("recurrent", backend):
        layer.zero_grad()
        layer.backend = name
        y = layer(u)
        y.square().sum().backward()
        results[name] = (y.detach(), {n: p.grad.clone() for n, p in layer.named_parameters()})
    (y_r, g_r), (y_t, g_t) = results["recurrent"], results[backend]
    torch.testing.assert_close(y_t, y_r, rtol=1e-5, atol=1e-5)
    for name in g_r:
        torch.testing.assert_close(g_t[name], g_r[name], rtol=1e-4, atol=1e-5, msg=name)


def run_kernel_tests_under_interpreter(test_file: str, timeout: int) -> None:
    """Rerun ``test_file``'s ``test_kernel_*`` tests in a child pytest with TRITON_INTERPRET=1 from the start (Triton
    fixes interpreted vs compiled mode process-wide when it is imported); every one must pass, none skipped."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "TRITON_INTERPRET": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "-k", "test_kernel_",
           str(Path(test_file).resolve())]
    proc = subprocess.run(cmd, env=env, cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True,
                          timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    summary = out.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and not re.search("skipped|failed|error", summary), summary
