"""The layers derive their eigenbasis matrices once per forward call (P = expm(M - Mᵀ) once per training step)."""
import pytest
import torch

import rotrnn.nn.rotrnn as rotrnn_module
from rotrnn.nn import LRU, RotRNN


@pytest.mark.parametrize("bidirectional", [False, True])
def test_rotrnn_builds_P_once_per_forward(monkeypatch, bidirectional):
    layer = RotRNN(8, 8, 2, bidirectional=bidirectional).double()
    u = torch.randn(2, 5, 8, dtype=torch.float64)
    calls = []
    real = rotrnn_module.expm
    monkeypatch.setattr(rotrnn_module, "expm", lambda x: calls.append(1) or real(x))
    layer(u).sum().backward()
    assert len(calls) == 1


@pytest.mark.parametrize("cls", [RotRNN, LRU])
def test_given_projections_equal_recomputed_ones(cls):
    """encode/decode with the maps of one projections() call equal the calls that recompute them."""
    torch.manual_seed(0)
    layer = (RotRNN(6, 8, 2, bidirectional=True) if cls is RotRNN else LRU(6, 4, bidirectional=True)).double()
    u = torch.randn(2, 7, 6, dtype=torch.float64)
    maps = layer.projections()
    v = layer.encode(u, maps)
    torch.testing.assert_close(v, layer.encode(u), rtol=0, atol=0)
    h = layer.eigen_states(u)
    for backward in (False, True):
        torch.testing.assert_close(layer.decode(h, backward, maps), layer.decode(h, backward), rtol=0, atol=0)
