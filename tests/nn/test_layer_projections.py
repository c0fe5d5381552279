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


@pytest.mark.parametrize("bidirectional", [False, True])
def test_projections_of_equal_each_layers_own(bidirectional):
    """One batched call for several layers gives each layer's projections() and the same parameter gradients."""
    torch.manual_seed(0)
    layers = [RotRNN(6, 8, 2, bidirectional=bidirectional).double() for _ in range(3)]
    together = RotRNN.projections_of(layers)
    alone = [m.projections() for m in layers]
    weights = {name: torch.randn_like(W) for name, W in alone[0].items()}
    grads = []
    for maps in (together, alone):
        loss = sum((W * weights[name]).sum() for m in maps for name, W in m.items())
        grads.append(torch.autograd.grad(loss, [p for m in layers for p in m.parameters() if p.requires_grad],
                                         allow_unused=True))
    for a, b in zip(together, alone):
        assert a.keys() == b.keys()
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=1e-14, atol=1e-14)
    for ga, gb in zip(*grads):
        if ga is None or gb is None:
            assert ga is None and gb is None
        else:
            torch.testing.assert_close(ga, gb, rtol=1e-13, atol=1e-14)


def test_projections_of_mixed_layers_fall_back_to_one_call_each():
    layers = [RotRNN(6, 8, 2), RotRNN(6, 8, 4), RotRNN(6, 8, 2, bidirectional=True)]
    for got, layer in zip(RotRNN.projections_of(layers), layers):
        for name, W in layer.projections().items():
            torch.testing.assert_close(got[name], W, rtol=0, atol=0)


@pytest.mark.parametrize("n_layers", [1, 4])
def test_model_runs_one_expm_per_forward_for_all_layers(monkeypatch, n_layers):
    """The backbone asks for every layer's maps at once: one expm per step however deep the model."""
    from rotrnn.models import SequenceClassifier

    torch.manual_seed(0)
    model = SequenceClassifier("rotrnn", 3, 2, d_model=8, n_layers=n_layers,
                               layer_kwargs={"d_state": 8, "n_heads": 2, "bidirectional": True})
    calls = []
    real = rotrnn_module.expm
    monkeypatch.setattr(rotrnn_module, "expm", lambda x: calls.append(x.shape) or real(x))
    model(torch.randn(2, 5, 3)).sum().backward()
    assert calls == [(n_layers, 2, 4, 4)]  # (layers, heads, N, N): every layer's P in the one call
