"""The sync-free matrix exponential against torch.linalg.matrix_exp, in float64 where the bounds are stated."""
import pytest
import torch

from rotrnn.ops.expm import S_MAX, expm


def _skew(K, n, scale, seed=0):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(K, n, n, generator=g, dtype=torch.float64) * scale
    return M - M.mT


@pytest.mark.parametrize("scale", [0.0, 1e-4, 0.05, 0.5, 5.0, 50.0, 300.0])
@pytest.mark.parametrize("n", [2, 6, 8, 16])
def test_matches_torch_matrix_exp_in_float64(scale, n):
    """Skew-symmetric inputs with ‖A‖₁ from 0 to about 2^S_MAX: error at float64 rounding times the condition."""
    A = _skew(32, n, scale / n**0.5)
    assert A.abs().sum(-2).amax() < 2**S_MAX
    ref = torch.linalg.matrix_exp(A)
    # the squarings amplify rounding by about ‖A‖₁ (Higham 2008, §10.3): allow eps · (1 + ‖A‖₁) · n
    norm = float(A.abs().sum(-2).amax())
    tol = 2.2e-16 * (1 + norm) * n * 4
    torch.testing.assert_close(expm(A), ref, rtol=0, atol=tol)


def test_general_matrices_and_batch_shapes():
    """Not only skew-symmetric inputs, and any leading batch shape (including none and an empty batch)."""
    g = torch.Generator().manual_seed(1)
    A = torch.randn(3, 2, 5, 5, generator=g, dtype=torch.float64)
    torch.testing.assert_close(expm(A), torch.linalg.matrix_exp(A), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(expm(A[0, 0]), torch.linalg.matrix_exp(A[0, 0]), rtol=1e-13, atol=1e-13)
    assert expm(torch.zeros(0, 4, 4)).shape == (0, 4, 4)


def test_orthogonal_with_unit_determinant_in_float32():
    """expm of a skew-symmetric matrix is in SO(n): RotRNN's P, in the training precision."""
    A = _skew(64, 8, 0.3).float()
    P = expm(A)
    eye = torch.eye(8).expand_as(P)
    torch.testing.assert_close(P @ P.mT, eye, rtol=0, atol=2e-6)
    torch.testing.assert_close(torch.linalg.det(P.double()), torch.ones(64, dtype=torch.float64), rtol=0, atol=1e-5)


def test_gradient_passes_gradcheck():
    A = _skew(3, 4, 0.7).requires_grad_()
    assert torch.autograd.gradcheck(expm, (A,))


@pytest.mark.parametrize("grad_scale", [1e-6, 1.0, 1e6])
def test_gradient_matches_torch_for_any_gradient_size(grad_scale):
    """The Fréchet derivative is linear in G: scaling G scales the result and nothing else.

    The reference is torch's derivative for G of unit size, scaled: torch puts G itself into the block matrix, so
    a large G raises the block's norm, adds squarings and costs it accuracy (3.6e-7 relative at 1e6, measured).
    """
    A = _skew(16, 8, 2.0).requires_grad_()
    G = torch.randn(16, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    (got,) = torch.autograd.grad(expm(A), A, G * grad_scale)
    (want,) = torch.autograd.grad(torch.linalg.matrix_exp(A), A, G)
    torch.testing.assert_close(got, want * grad_scale, rtol=1e-11, atol=1e-11 * grad_scale)


def test_autocast_does_not_lower_the_precision():
    """Under bf16 autocast the matrix products would run in bfloat16 (3 significant digits); expm keeps float32."""
    A = _skew(8, 8, 0.3).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        P = expm(A)
    assert P.dtype == torch.float32
    torch.testing.assert_close(P, torch.linalg.matrix_exp(A), rtol=0, atol=1e-6)


def test_no_host_synchronisation_off_the_cpu():
    """Off the CPU (meta tensors stand in for CUDA here) no operation reads a tensor's value on the host."""
    from torch.utils._python_dispatch import TorchDispatchMode

    seen = []

    class Watch(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.__name__.startswith(("_local_scalar_dense", "item", "is_nonzero")):
                seen.append(func.__name__)
            return func(*args, **(kwargs or {}))

    A = _skew(4, 6, 1.0).to("meta").requires_grad_()
    with Watch():
        expm(A).sum().backward()
    assert seen == [] and A.grad.shape == A.shape
    with Watch():  # the watch itself sees a host read (CPU tensors: expm reads max(s) there)
        expm(_skew(4, 6, 1.0))
    assert seen


def test_cpu_shortcut_gives_the_same_bits_as_the_fixed_sequence(monkeypatch):
    """On the CPU only the squarings some matrix needs run; the masked ones it skips are exact identities."""
    A = _skew(16, 8, 3.0).requires_grad_()
    G = torch.randn(16, 8, 8, dtype=torch.float64)
    short = expm(A)
    (g_short,) = torch.autograd.grad(short, A, G)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # what torch.compile and CUDA tensors get
    fixed = expm(A)
    (g_fixed,) = torch.autograd.grad(fixed, A, G)
    assert torch.equal(short, fixed) and torch.equal(g_short, g_fixed)


def test_torch_compile_traces_it_whole():
    """No graph break (a break would split a compiled RotRNN model, and a CUDA graph, at every layer)."""
    import torch._dynamo

    def f(M):
        return expm(M - M.mT).sum()

    M = _skew(2, 4, 1.0).float().requires_grad_()
    assert torch._dynamo.explain(f)(M).graph_break_count == 0
    torch._dynamo.reset()


def test_nan_in_nan_out():
    """A diverged model's NaN parameters give NaN (what the training loop's divergence check looks for), no error."""
    A = _skew(3, 4, 1.0)
    A[1, 0, 1] = float("nan")
    A.requires_grad_()
    P = expm(A)
    assert P[1].isnan().any() and P[[0, 2]].isfinite().all()
    P.sum().backward()
    assert A.grad[1].isnan().any()


def test_bad_input_names_the_shape_and_dtype():
    with pytest.raises(ValueError, match=r"square matrices.*\(3, 4\)"):
        expm(torch.zeros(3, 4))
    with pytest.raises(TypeError, match="torch.int64"):
        expm(torch.zeros(2, 2, dtype=torch.long))
