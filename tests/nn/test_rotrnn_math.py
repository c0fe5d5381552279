"""RotRNN against the paper's mathematics (float64 wherever the property is exact)."""
import math

import pytest
import torch

from rotrnn.nn import LRU, RotRNN

pytestmark = pytest.mark.usefixtures("float64_default")


def make_rotrnn(seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(d_model=6, d_state=12, n_heads=2)
    args.update(kw)
    return RotRNN(**args).double()


def test_P_is_special_orthogonal():
    layer = make_rotrnn(d_state=24, n_heads=3)
    P = layer.orthogonal()
    eye = torch.eye(layer.N).expand_as(P)
    torch.testing.assert_close(P @ P.transpose(-1, -2), eye, rtol=0, atol=1e-13)
    torch.testing.assert_close(torch.linalg.det(P), torch.ones(3), rtol=0, atol=1e-12)


def test_transition_is_a_power_semigroup():
    layer = make_rotrnn(d_state=16, n_heads=2)
    A1 = layer.transition(1)
    for a, b in [(1, 1), (0.5, 0.5), (0.3, 2.2), (3, 4)]:
        torch.testing.assert_close(layer.transition(a) @ layer.transition(b), layer.transition(a + b), atol=1e-13,
                                   rtol=1e-12)
    for k in range(6):
        torch.testing.assert_close(layer.transition(k), torch.linalg.matrix_power(A1, k), atol=1e-13, rtol=1e-12)
    # A = γ P Θ Pᵀ: its singular values all equal γ (a scaled rotation)
    sv = torch.linalg.svdvals(A1)
    torch.testing.assert_close(sv, layer.gamma[:, None].expand_as(sv), atol=1e-13, rtol=0)


def test_layer_computes_the_papers_recurrence():
    """x_t = γ P Θ Pᵀ x_{t-1} + ξ B u_t from x_0 = 0, y = C x + D ⊙ u, with dense matrices, step by step."""
    layer = make_rotrnn(d_model=5, d_state=12, n_heads=3)
    u = torch.randn(2, 17, 5)
    A = layer.transition(1)
    xi_B = layer.xi()[:, None, None] * layer.B
    x = torch.zeros(2, 3, layer.N)
    xs, ys = [], []
    for t in range(u.shape[1]):
        x = torch.einsum("hnm,bhm->bhn", A, x) + torch.einsum("hnd,bd->bhn", xi_B, u[:, t])
        xs.append(x)
        ys.append(x.reshape(2, -1) @ layer.C.T + layer.D * u[:, t])
    torch.testing.assert_close(layer.states(u), torch.stack(xs, 1), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(layer(u), torch.stack(ys, 1), atol=1e-12, rtol=1e-12)
    # ξ² ‖B_h‖_F² = 1 - γ²
    torch.testing.assert_close(layer.xi() ** 2 * layer.B.pow(2).sum((1, 2)), 1 - layer.gamma**2)


def test_normalisation_law_from_zero_and_from_unit_norm():
    """White-noise input: E‖x_t‖² = 1 - γ^{2t} per head from x_0 = 0, and E‖x_t‖² = 1 from a unit-norm x_0.

    Monte-Carlo over 4000 sequences; each comparison must lie within 5 standard errors.
    """
    layer = make_rotrnn(seed=3, d_model=8, d_state=16, n_heads=2, r_min=0.9, r_max=0.98)
    S, L = 4000, 60
    g = torch.Generator().manual_seed(0)
    u = torch.randn(S, L, 8, generator=g)
    with torch.no_grad():
        x = layer.states(u)  # (S, L, H, N)
        gamma = layer.gamma
        t = torch.arange(1, L + 1, dtype=torch.float64)
        expected = 1 - gamma[None, :] ** (2 * t[:, None])  # (L, H)
        sq = x.pow(2).sum(-1)
        mean, stderr = sq.mean(0), sq.std(0) / math.sqrt(S)
        assert ((mean - expected).abs() <= 5 * stderr).all(), (mean - expected).abs().max()
        # the law is not trivially satisfied: early steps are far below 1
        assert (expected[0] < 0.2).all()

        # start from a unit-norm state per head: x_t = A^t x_0 + (states from zero)
        x0 = torch.randn(layer.n_heads, layer.N, generator=g)
        x0 = x0 / x0.norm(dim=-1, keepdim=True)
        free = torch.stack([torch.einsum("hnm,hm->hn", layer.transition(k), x0) for k in range(1, L + 1)])  # (L,H,N)
        sq1 = (x + free).pow(2).sum(-1)
        mean1, stderr1 = sq1.mean(0), sq1.std(0) / math.sqrt(S)
        assert ((mean1 - 1).abs() <= 5 * stderr1).all(), (mean1 - 1).abs().max()


@pytest.mark.parametrize("bidirectional", [False, True])
def test_heads_of_size_two_are_an_LRU(bidirectional):
    """RotRNN with N = 2 and unit-norm B blocks equals an LRU with λ_j = γ_j e^{iθ_j}, normaliser sqrt(1 - |λ_j|²),
    B̃ = Pᵀ B read as complex rows and C̃ = C P read as C_re - i C_im (each 2×2 rotation block is one complex eigenvalue)."""
    H, d = 5, 4
    rot = make_rotrnn(seed=1, d_model=d, d_state=2 * H, n_heads=H, bidirectional=bidirectional)
    with torch.no_grad():
        rot.B /= rot.B.norm(dim=(1, 2), keepdim=True)
    torch.manual_seed(2)
    lru = LRU(d, H, bidirectional=bidirectional).double()
    P = rot.orthogonal().detach()
    with torch.no_grad():
        lru.nu_log.copy_(rot.gamma_log)
        lru.theta_log.copy_(torch.log(rot.theta[:, 0]))
        lru.gamma_log.copy_(0.5 * torch.log1p(-rot.gamma**2))
        B_eig = P.transpose(-1, -2) @ rot.B  # (H, 2, d)
        lru.B_re.copy_(B_eig[:, 0])
        lru.B_im.copy_(B_eig[:, 1])
        for C, (C_re, C_im) in [(rot.C, (lru.C_re, lru.C_im))] + (
            [(rot.C_back, (lru.C_back_re, lru.C_back_im))] if bidirectional else []
        ):
            C_eig = torch.einsum("dhn,hnm->dhm", C.view(d, H, 2), P)
            C_re.copy_(C_eig[..., 0])
            C_im.copy_(-C_eig[..., 1])
        lru.D.copy_(rot.D)
    u = torch.randn(3, 40, d)
    torch.testing.assert_close(lru(u), rot(u), atol=1e-10, rtol=0)


def test_step_rescale_matches_fine_sampling_within_bound():
    """For slowly varying u, layer(u[:, ::2], step=2) ≈ layer(u)[:, ::2].

    Coarse step k uses A² and (I + A) ξ B u_{2k}; the fine recurrence has A ξ B u_{2k-1} + ξ B u_{2k}. The error
    e_k = A² e_{k-1} + A ξ B (u_{2k} - u_{2k-1}) (u_{-1} = 0), so per head ‖e‖ ≤ γ ξ ‖B_h‖₂ δ / (1 - γ²) with
    δ = max_k ‖u_{2k} - u_{2k-1}‖, and ‖y error‖ ≤ Σ_h ‖C_h‖₂ γ_h ξ_h ‖B_h‖₂ δ / (1 - γ_h²).
    """
    layer = make_rotrnn(seed=4, d_model=4, d_state=12, n_heads=3, r_min=0.9, r_max=0.99)
    L = 4000
    t = torch.arange(L, dtype=torch.float64)
    freqs = torch.tensor([1.0, 2.0, 3.0, 0.5]) * 2 * math.pi / 1500
    u = torch.sin(t[:, None] * freqs).unsqueeze(0)  # starts at 0: the first coarse step has no jump
    with torch.no_grad():
        fine = layer(u)[:, ::2]
        coarse = layer(u[:, ::2], step=2.0)
        naive = layer(u[:, ::2])  # no rescaling: the timescale is wrong by a factor 2
        prev = torch.cat([torch.zeros(1, 1, 4), u[:, 1::2]], 1)[:, : u[:, ::2].shape[1]]
        delta = (u[:, ::2] - prev).norm(dim=-1).max()
        gamma, xi = layer.gamma, layer.xi()
        B_norm = torch.linalg.matrix_norm(layer.B, ord=2)
        C_norm = torch.linalg.matrix_norm(layer.C.view(4, 3, layer.N).permute(1, 0, 2), ord=2)
        bound = (C_norm * gamma * xi * B_norm / (1 - gamma**2)).sum() * delta
        err = (coarse - fine).norm(dim=-1).max()
    assert err <= bound
    assert bound < 0.05 * fine.norm(dim=-1).max()
    assert (naive - fine).norm(dim=-1).max() > 10 * err


def test_step_one_is_the_default_and_fractional_steps_compose():
    layer = make_rotrnn(seed=5)
    u = torch.randn(2, 30, 6)
    with torch.no_grad():
        torch.testing.assert_close(layer(u, step=1.0), layer(u))
        # λ^s from (γ^s, sθ): transition(s) and the scan agree for a fractional step (impulse response)
        s = 0.7
        imp = torch.zeros(1, 4, 6)
        imp[0, 0, 0] = 1.0
        x = layer.states(imp, step=s)
        x0 = x[0, 0]
        for k in range(1, 4):
            torch.testing.assert_close(x[0, k], torch.einsum("hnm,hm->hn", layer.transition(k * s), x0))


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match=r"N = d_state/n_heads = 12/4 = 3 must be even"):
        RotRNN(8, 12, 4)
    with pytest.raises(ValueError, match="d_state=10 must be a positive multiple of n_heads=4"):
        RotRNN(8, 10, 4)
    with pytest.raises(ValueError, match="r_min <= r_max < 1"):
        RotRNN(8, 8, 2, r_min=0.99, r_max=0.9)
    layer = RotRNN(8, 8, 2)
    with pytest.raises(ValueError, match=r"expects u of shape \(batch, length, d_model=8\), got \(5, 8\)"):
        layer(torch.randn(5, 8))
    with pytest.raises(ValueError, match=r"got \(2, 5, 7\)"):
        layer(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match="step must be positive"):
        layer(torch.randn(2, 5, 8), step=0)
