"""Experiment 3's rescale variants against the reference computation in float64: the dense recurrence of the
layer's own transition matrix, stepped at the coarse rate."""
import pytest
import torch

from rotrnn.analysis.rescale import step_input
from rotrnn.nn import DLR, LRU, RotRNN
from rotrnn.nn.base import step_input_gain


def coarse_reference(A_s: torch.Tensor, G: torch.Tensor, Bu: torch.Tensor) -> torch.Tensor:
    """x_t = A_s x_{t−1} + G (Bu)_t per head; A_s, G (H, N, N), Bu (B, L, H, N)."""
    x = torch.zeros(Bu.shape[0], Bu.shape[2], Bu.shape[3], dtype=Bu.dtype)
    out = []
    for t in range(Bu.shape[1]):
        x = torch.einsum("hnm,bhm->bhn", A_s, x) + torch.einsum("hnm,bhm->bhn", G, Bu[:, t])
        out.append(x)
    return torch.stack(out, 1)


@pytest.mark.parametrize("mode", ["sum", "one"])
@pytest.mark.parametrize("s", [2, 3])
def test_rotrnn_variants_match_dense_recurrence(float64_default, mode, s):
    torch.manual_seed(0)
    layer = RotRNN(5, 8, 2, r_min=0.6, r_max=0.95)
    u = torch.randn(3, 12, 5)
    layer.step_input = mode
    got = layer.states(u, step=float(s))
    Bu = torch.einsum("hnd,bld->blhn", layer.xi()[:, None, None] * layer.B, u)
    powers = [layer.transition(j) for j in range(s)]
    G = sum(powers) if mode == "sum" else torch.eye(4).expand(2, 4, 4)
    want = coarse_reference(layer.transition(s), G, Bu)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("mode", ["sum", "one"])
def test_lru_variants_match_recurrence(float64_default, mode):
    torch.manual_seed(1)
    layer = LRU(4, 6, r_min=0.5, r_max=0.9)
    layer.step_input = mode
    u = torch.randn(2, 10, 4)
    lam = torch.exp(layer.log_lambda())
    v = layer.encode(u)
    g = (1 - lam**3) / (1 - lam) if mode == "sum" else torch.ones_like(lam)
    h, hs = torch.zeros(2, 6, dtype=v.dtype), []
    for t in range(10):
        h = lam**3 * h + g * v[:, t]
        hs.append(h)
    torch.testing.assert_close(layer.eigen_states(u, step=3.0), torch.stack(hs, 1), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("mode", ["sum", "one"])
def test_dlr_fft_variants_match_scan(float64_default, mode):
    torch.manual_seed(2)
    fft = DLR(3, 5, dt_min=0.05, dt_max=0.3)
    scan = DLR(3, 5, mode="scan")
    scan.load_state_dict(fft.state_dict())
    u = torch.randn(2, 16, 3)
    for layer in (fft, scan):
        layer.step_input = mode
    torch.testing.assert_close(fft(u, step=2.0), scan(u, step=2.0), rtol=1e-9, atol=1e-10)


def test_step_input_context_restores_and_none_is_step_one():
    from rotrnn.models import SequenceClassifier

    model = SequenceClassifier("rotrnn", 1, 3, d_model=4, n_layers=2, layer_kwargs={"d_state": 4, "n_heads": 2})
    layers = [b.layer for b in model.backbone.blocks]
    with step_input(model, "one"):
        assert all(layer.step_input == "one" for layer in layers)
    assert all(layer.step_input == "sum" for layer in layers)
    with pytest.raises(ValueError, match="step_input must be one of"):
        step_input_gain(torch.zeros(2, dtype=torch.complex64), 2.0, "half")
