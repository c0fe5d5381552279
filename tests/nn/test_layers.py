"""Properties all three layers share: causality, the bidirectional construction, the step rescale, gradients,
and each baseline against its own defining equation."""
import pytest
import torch

from rotrnn.nn import DLR, LRU, RotRNN

pytestmark = pytest.mark.usefixtures("float64_default")

BACK_TO_FORWARD = {  # the reverse half's output map -> the forward one
    RotRNN: {"C_back": "C"},
    LRU: {"C_back_re": "C_re", "C_back_im": "C_im"},
    DLR: {"W_back_re": "W_re", "W_back_im": "W_im"},
}


def build(cls, seed=0, bidirectional=False, d_model=5):
    torch.manual_seed(seed)
    kw = dict(d_state=8, n_heads=2) if cls is RotRNN else dict(d_state=6)
    return cls(d_model, bidirectional=bidirectional, **kw).double()


@pytest.mark.parametrize("cls", [RotRNN, LRU, DLR])
def test_unidirectional_layers_are_causal(cls):
    layer = build(cls)
    u = torch.randn(2, 30, 5)
    u2 = u.clone()
    u2[:, 17:] = torch.randn(2, 13, 5)
    with torch.no_grad():
        y, y2 = layer(u), layer(u2)
    # DLR convolves by FFT: the future leaks only at float64 round-off; the scans are exactly causal
    torch.testing.assert_close(y[:, :17], y2[:, :17], rtol=0, atol=1e-13 if cls is DLR else 0)
    assert (y[:, 17:] - y2[:, 17:]).abs().max() > 1e-3


@pytest.mark.parametrize("cls", [RotRNN, LRU, DLR])
def test_backward_half_is_the_forward_computation_on_reversed_input(cls):
    bi = build(cls, bidirectional=True)
    fwd_only = build(cls)  # same parameters, forward output map
    back_only = build(cls)  # forward computation with the reverse half's output map and no D
    sd = bi.state_dict()
    fwd_only.load_state_dict({k: v for k, v in sd.items() if k not in BACK_TO_FORWARD[cls]})
    back_sd = {k: v for k, v in sd.items() if k not in BACK_TO_FORWARD[cls]}
    for back, fwd in BACK_TO_FORWARD[cls].items():
        back_sd[fwd] = sd[back]
    back_sd["D"] = torch.zeros_like(sd["D"])
    back_only.load_state_dict(back_sd)
    u = torch.randn(3, 23, 5)
    with torch.no_grad():
        expected = fwd_only(u) + back_only(u.flip(1)).flip(1)
        torch.testing.assert_close(bi(u), expected, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("cls", [RotRNN, LRU, DLR])
def test_all_parameters_receive_gradients_and_backends_agree(cls):
    layer = build(cls, bidirectional=True)
    u = torch.randn(2, 19, 5)
    grads = {}
    for backend in ("naive", "chunk", "recurrent"):
        layer.zero_grad()
        layer.backend = backend
        layer(u).pow(2).sum().backward()
        grads[backend] = {n: p.grad.clone() for n, p in layer.named_parameters()}
        assert all(g.abs().sum() > 0 for g in grads[backend].values())
    for backend in ("chunk", "recurrent"):
        for n in grads["naive"]:
            torch.testing.assert_close(grads[backend][n], grads["naive"][n], atol=1e-10, rtol=1e-10)


def test_lru_is_its_defining_complex_recurrence():
    """x_t = λ ⊙ x_{t-1} + γ ⊙ (B u_t), y = Re(C x) + D ⊙ u with λ = exp(-exp(ν) + i exp(θ))."""
    layer = build(LRU)
    u = torch.randn(2, 15, 5)
    lam = torch.exp(torch.complex(-torch.exp(layer.nu_log), torch.exp(layer.theta_log)))
    Bc = torch.complex(layer.B_re, layer.B_im) * torch.exp(layer.gamma_log)[:, None]
    Cc = torch.complex(layer.C_re, layer.C_im)
    x = torch.zeros(2, 6, dtype=torch.complex128)
    ys = []
    for t in range(15):
        x = lam * x + u[:, t].to(torch.complex128) @ Bc.T
        ys.append((x @ Cc.T).real + layer.D * u[:, t])
    torch.testing.assert_close(layer(u), torch.stack(ys, 1), atol=1e-12, rtol=1e-12)


def test_lru_ring_initialisation():
    torch.manual_seed(0)
    layer = LRU(4, 20000, r_min=0.4, r_max=0.9, max_phase=0.5)
    mod = torch.exp(-torch.exp(layer.nu_log))
    assert mod.min() >= 0.4 - 1e-6 and mod.max() <= 0.9 + 1e-6
    # |λ|² uniform on [r_min², r_max²]: its mean is the midpoint
    assert abs((mod**2).mean().item() - (0.16 + 0.81) / 2) < 0.01
    assert torch.exp(layer.theta_log).max() <= 0.5
    torch.testing.assert_close(torch.exp(layer.gamma_log), torch.sqrt(1 - mod**2))


def test_dlr_is_the_convolution_with_its_kernel():
    """y = K * u + D ⊙ u with K[h, ℓ] = Re Σ_n W[h, n] λ_n^ℓ (causal convolution per feature)."""
    layer = build(DLR)
    L = 25
    u = torch.randn(2, L, 5)
    K = layer.kernel(L)  # (d, L)
    conv = torch.zeros(2, L, 5)
    for t in range(L):
        conv[:, t] = (u[:, : t + 1].flip(1) * K[:, : t + 1].T).sum(1)
    torch.testing.assert_close(layer(u), conv + layer.D * u, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("step", [1.0, 2.0])
def test_dlr_fft_convolution_equals_its_recurrence(float64_default, bidirectional, step):
    """The default FFT path and the scan of the states agree in value and in every parameter's gradient."""
    torch.manual_seed(0)
    fft = DLR(5, 6, dt_min=1e-3, dt_max=0.3, bidirectional=bidirectional)
    scan = DLR(5, 6, bidirectional=bidirectional, mode="scan")
    scan.load_state_dict(fft.state_dict())
    u = torch.randn(3, 37, 5)
    outs = []
    for layer in (fft, scan):
        y = layer(u, step=step)
        (y * torch.linspace(-1, 1, 37)[:, None]).sum().backward()
        outs.append((y, {n: p.grad.clone() for n, p in layer.named_parameters()}))
    torch.testing.assert_close(outs[0][0], outs[1][0], atol=1e-10, rtol=1e-10)
    for n in outs[0][1]:
        torch.testing.assert_close(outs[0][1][n], outs[1][1][n], atol=1e-9, rtol=1e-9)
    with pytest.raises(ValueError, match="mode must be 'fft' or 'scan'"):
        DLR(4, 4, mode="conv")


def test_dlr_omega_initialisation():
    torch.manual_seed(0)
    layer = DLR(3, 8, dt_min=1e-3, dt_max=1e-1)
    Lam = layer.log_lambda()
    torch.testing.assert_close(Lam.imag, 2 * torch.pi * torch.arange(8) / 8)
    dt = -2 * Lam.real
    assert dt.min() >= 1e-3 - 1e-12 and dt.max() <= 1e-1 + 1e-12


@pytest.mark.parametrize("cls", [LRU, DLR])
def test_step_rescale_for_baselines_uses_exact_powers(cls):
    """λ^s = exp(s log λ): an impulse decays as λ^{ks} under step s."""
    layer = build(cls)
    imp = torch.zeros(1, 5, 5)
    imp[0, 0] = 1.0
    s = 1.5
    h = layer.eigen_states(imp, step=s)
    lam_s = torch.exp(s * layer.log_lambda())
    for k in range(1, 5):
        torch.testing.assert_close(h[:, k], h[:, 0] * lam_s**k)


def test_baseline_argument_errors():
    with pytest.raises(ValueError, match="r_min <= r_max < 1"):
        LRU(4, 4, r_min=0.5, r_max=1.0)
    with pytest.raises(ValueError, match="dt_min <= dt_max"):
        DLR(4, 4, dt_min=0.1, dt_max=0.01)
    with pytest.raises(ValueError, match=r"expects u of shape \(batch, length, d_model=4\)"):
        DLR(4, 4)(torch.randn(3, 4))
