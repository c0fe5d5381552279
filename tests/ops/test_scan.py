"""Every fast scan backend against the naive sequential loop: outputs and gradients, both directions, odd lengths."""
import warnings

import pytest
import torch

from rotrnn.ops.scan import BACKENDS, fused_cpu, linear_scan, scan_chunk, scan_naive, scan_recurrent


def _fused_cpu(lam, v, reverse=False, chunk=None):  # no chunk: one sequential pass per (batch, channel block)
    return fused_cpu.scan_fused_cpu(lam, v, reverse)


FAST = {"chunk": scan_chunk, "recurrent": scan_recurrent, "fused_cpu": _fused_cpu}


def random_lambda(C, dtype=torch.float64, r_min=0.5, r_max=0.999, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = r_min + (r_max - r_min) * torch.rand(C, generator=g, dtype=dtype)
    phase = 2 * torch.pi * torch.rand(C, generator=g, dtype=dtype)
    return torch.polar(r, phase)


def random_v(B, L, C, dtype=torch.complex128, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, L, C, generator=g, dtype=dtype)


@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("L,chunk", [(1, 4), (2, 4), (7, 4), (37, 8), (64, 8), (100, 16), (129, 2)])
def test_backend_equals_reference(name, reverse, L, chunk):
    lam, v = random_lambda(6), random_v(3, L, 6)
    h = FAST[name](lam, v, reverse, chunk)
    torch.testing.assert_close(h, scan_naive(lam, v, reverse), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize("reverse", [False, True])
def test_backend_gradcheck(name, reverse):
    lam = random_lambda(3).requires_grad_()
    v = random_v(2, 11, 3).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: FAST[name](a, b, reverse, 4), (lam, v))


@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize("reverse", [False, True])
def test_backend_gradients_equal_reference_autograd(name, reverse):
    lam64, v64 = random_lambda(5, r_max=0.9999), random_v(2, 203, 5)
    g = random_v(2, 203, 5, seed=7)
    grads = []
    for fn in (lambda a, b: scan_naive(a, b, reverse), lambda a, b: FAST[name](a, b, reverse, 16)):
        a, b = lam64.clone().requires_grad_(), v64.clone().requires_grad_()
        torch.autograd.backward(fn(a, b), g)
        grads.append((a.grad, b.grad))
    for ref, got in zip(*grads):
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


def rel_err(a, b):
    return ((a.to(torch.complex128) - b).abs().norm() / b.abs().norm()).item()


@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize("reverse", [False, True])
def test_float32_long_sequence_accuracy(name, reverse):
    """float32 relative error < 1e-5 at length 4096 against the float64 reference, outputs and gradients.

    The inputs are float32-representable, so the figure measures the backend's rounding, not the (large, at
    |λ| ≈ 1 and t ≈ 4096) sensitivity of λ^t to rounding λ itself.
    """
    L, C = 4096, 16
    f32 = lambda z: z.to(torch.complex64).to(torch.complex128)
    lam64 = f32(random_lambda(C, r_min=0.9, r_max=0.9999))
    v64, g64 = f32(random_v(2, L, C)), f32(random_v(2, L, C, seed=3))
    a64, b64 = lam64.clone().requires_grad_(), v64.clone().requires_grad_()
    h64 = scan_naive(a64, b64, reverse)
    torch.autograd.backward(h64, g64)
    a32 = lam64.to(torch.complex64).requires_grad_()
    b32 = v64.to(torch.complex64).requires_grad_()
    h32 = FAST[name](a32, b32, reverse)
    torch.autograd.backward(h32, g64.to(torch.complex64))
    assert rel_err(h32, h64.detach()) < 1e-5
    assert rel_err(b32.grad, b64.grad) < 1e-5
    assert rel_err(a32.grad, a64.grad) < 1e-5


@pytest.mark.parametrize("name", FAST)
def test_zero_and_unit_modulus_eigenvalues(name):
    """λ = 0 passes v through unchanged; |λ| = 1 with λ = 1 is a running sum: exact edge cases of the powers."""
    v = random_v(1, 50, 2)
    lam = torch.tensor([0.0, 1.0], dtype=torch.complex128)
    h = FAST[name](lam, v, False, 8)
    torch.testing.assert_close(h[..., 0], v[..., 0])
    torch.testing.assert_close(h[..., 1], v[..., 1].cumsum(1))


def test_entry_point_dispatch_and_errors(monkeypatch):
    lam, v = random_lambda(4), random_v(2, 9, 4)
    for name in [*BACKENDS, "fused_cpu"]:
        torch.testing.assert_close(linear_scan(lam, v, backend=name), scan_naive(lam, v))
    with pytest.raises(TypeError, match="complex"):
        linear_scan(lam.real, v.real)
    with pytest.raises(ValueError, match=r"lam \(C,\) and v \(B, L, C\)"):
        linear_scan(lam[:3], v)
    with pytest.raises(ValueError, match="unknown scan backend 'fft'"):
        linear_scan(lam, v, backend="fft")
    with pytest.raises(ValueError, match="chunk must be at least 2"):
        scan_recurrent(lam, v, False, 1)
    monkeypatch.setenv("ROTRNN_SCAN_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="nonsense"):
        linear_scan(lam, v)


@pytest.mark.parametrize("reverse", [False, True])
def test_grad_lambda_blocks_equal_one_product(reverse):
    """The cache-sized blocks of the λ-gradient sum give the one-product formula Σ conj(h_prev) a."""
    from rotrnn.ops.scan.function import grad_lambda

    h, a = random_v(3, 50, 4), random_v(3, 50, 4, seed=5)
    h_prev, a_next = (h[:, 1:], a[:, :-1]) if reverse else (h[:, :-1], a[:, 1:])
    want = (h_prev.conj() * a_next).sum((0, 1))
    for block_bytes in (1, 7 * 4 * 16, 1 << 20):  # one row per block, ragged blocks, one block per example
        torch.testing.assert_close(grad_lambda(h, a, reverse, block_bytes), want, rtol=1e-12, atol=1e-12)
    assert torch.equal(grad_lambda(h[:, :1], a[:, :1], reverse), torch.zeros(4, dtype=h.dtype))


def test_recurrent_reads_a_strided_input_without_changing_it():
    """The recurrent kernel reads v through views (no padding copy): v is left untouched, odd lengths included."""
    from rotrnn.ops.scan.recurrent import recurrent_kernel

    lam, v = random_lambda(3), random_v(2, 70, 3)
    before = v.clone()
    for reverse in (False, True):
        torch.testing.assert_close(recurrent_kernel(lam, v, reverse, 16), scan_naive(lam, v, reverse),
                                   rtol=1e-12, atol=1e-12)
    assert torch.equal(v, before)


@pytest.mark.parametrize("batch", [5, 1])  # batch 1: two threads split the channels into blocks, one thread does not
def test_fused_cpu_is_auto_on_cpu_and_thread_count_does_not_change_it(monkeypatch, batch):
    monkeypatch.delenv("ROTRNN_SCAN_BACKEND", raising=False)
    lam, v = random_lambda(40).to(torch.complex64), random_v(batch, 300, 40).to(torch.complex64)
    lam.requires_grad_(), v.requires_grad_()
    called = []
    real = fused_cpu.scan_fused_cpu
    monkeypatch.setattr(fused_cpu, "scan_fused_cpu", lambda *a, **k: called.append(1) or real(*a, **k))
    g = random_v(batch, 300, 40, seed=4).to(torch.complex64)
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            h = linear_scan(lam, v)
            dlam, dv = torch.autograd.grad(h, (lam, v), g)
            results.append((h, dlam, dv))
    finally:
        torch.set_num_threads(threads)
    assert called
    for a, b in zip(*results):  # each (batch, channel block) is one sequential task: bit-equal at any thread count
        assert torch.equal(a, b)


def test_fused_cpu_build_failure_falls_back_with_one_warning(monkeypatch):
    """No compiler: auto warns once and uses 'recurrent'; asking for fused_cpu by name says why it cannot run."""
    monkeypatch.delenv("ROTRNN_SCAN_BACKEND", raising=False)
    failure = fused_cpu.BuildError("could not build the fused CPU scan from fused_cpu.cpp: c++: not found")
    monkeypatch.setattr(fused_cpu, "_build", lambda: failure)
    fused_cpu._warn_once.cache_clear()
    lam, v = random_lambda(4), random_v(2, 9, 4)
    with pytest.warns(RuntimeWarning, match="c\\+\\+: not found; scans on CPU use the 'recurrent' backend"):
        torch.testing.assert_close(linear_scan(lam, v), scan_recurrent(lam, v), rtol=0, atol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call does not warn again
        linear_scan(lam, v)
    with pytest.raises(fused_cpu.BuildError, match="c\\+\\+: not found"):
        linear_scan(lam, v, backend="fused_cpu")
    fused_cpu._warn_once.cache_clear()


@pytest.mark.parametrize("reverse", [False, True])
def test_fused_cpu_operator_registration(reverse):
    """The C++ scan is a registered operator (shape function, autograd), as torch.compile needs it to be."""
    lam = random_lambda(5).requires_grad_()
    v = random_v(2, 13, 5).requires_grad_()
    torch.library.opcheck(fused_cpu._forward, (lam, v, reverse))
