"""The deep model around the layer: block structure, pooling with padding, dropout shared over time, retrieval."""
import pytest
import torch

from rotrnn.models import ACTIVATIONS, RetrievalClassifier, SequenceClassifier, TimeSharedDropout

LAYER_KW = {"rotrnn": dict(d_state=16, n_heads=4), "lru": dict(d_state=8), "dlr": dict(d_state=4)}


def classifier(layer="rotrnn", bidirectional=False, seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(d_model=16, n_layers=2, tokens=True, layer_kwargs=dict(LAYER_KW[layer], bidirectional=bidirectional))
    args.update(kw)
    d_input = args.pop("d_input", 11)
    return SequenceClassifier(layer, d_input, 5, **args)


@pytest.mark.parametrize("layer", ["rotrnn", "lru", "dlr"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("norm,prenorm", [("batch", True), ("layer", False)])
def test_padded_batch_gives_each_examples_logits(layer, bidirectional, norm, prenorm):
    model = classifier(layer, bidirectional, norm=norm, prenorm=prenorm).double().eval()
    lengths = torch.tensor([20, 7, 13])
    x = torch.randint(0, 11, (3, 20))
    x[1, 7:] = 0
    x[2, 13:] = 0
    with torch.no_grad():
        batched = model(x, lengths)
        alone = torch.cat([model(x[i : i + 1, : lengths[i]], lengths[i : i + 1]) for i in range(3)])
        # padding content is irrelevant
        x_noise = x.clone()
        x_noise[1, 7:] = torch.randint(0, 11, (13,))
        noisy = model(x_noise, lengths)
    torch.testing.assert_close(batched, alone, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(noisy, batched, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activations_train_and_shapes(activation):
    model = classifier(activation=activation, dropout=0.1, tokens=False, d_input=3)
    x = torch.randn(4, 9, 3)
    out = model(x)
    assert out.shape == (4, 5)
    out.logsumexp(-1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing


def test_per_position_outputs_are_causal():
    model = classifier(pooling="none", tokens=False, d_input=2, norm="layer").eval()
    x = torch.randn(2, 12, 2)
    x2 = x.clone()
    x2[:, 8:] += 1.0
    with torch.no_grad():
        y, y2 = model(x), model(x2)
    assert y.shape == (2, 12, 5)
    torch.testing.assert_close(y[:, :8], y2[:, :8])


def test_last_pooling_reads_the_true_last_step():
    model = classifier(pooling="last").double().eval()
    x = torch.randint(0, 11, (2, 10))
    with torch.no_grad():
        full = model.backbone(x)
        logits = model(x, torch.tensor([10, 4]))
    torch.testing.assert_close(logits[0], model.decoder(full[0, 9]))
    torch.testing.assert_close(logits[1], model.decoder(model.backbone(x[1:, :4])[0, 3]))


def test_dropout_mask_is_shared_over_time():
    drop = TimeSharedDropout(0.5).train()
    x = torch.ones(8, 50, 16)
    y = drop(x)
    # each (example, feature) is either dropped at every step or kept (scaled by 2) at every step
    assert ((y == 0).all(1) | (y == 2).all(1)).all()
    assert 0 < (y == 0).float().mean() < 1
    assert torch.equal(drop.eval()(x), x)


def test_retrieval_dual_encoder_features():
    torch.manual_seed(0)
    model = RetrievalClassifier("lru", 11, 2, d_model=8, n_layers=1, tokens=True,
                                layer_kwargs=dict(d_state=4)).double().eval()
    a, b = torch.randint(0, 11, (3, 12)), torch.randint(0, 11, (3, 9))
    la, lb = torch.tensor([12, 5, 8]), torch.tensor([9, 9, 2])
    with torch.no_grad():
        o0, o1 = model.encode(a, la), model.encode(b, lb)
        expected = model.head(torch.cat([o0, o1, o0 - o1, o0 * o1], -1))
        torch.testing.assert_close(model(a, la, b, lb), expected)


def test_model_argument_errors():
    with pytest.raises(ValueError, match="unknown layer 'gru'"):
        SequenceClassifier("gru", 4, 2)
    with pytest.raises(ValueError, match="unknown activation 'relu'"):
        classifier(activation="relu")
    with pytest.raises(ValueError, match="unknown pooling"):
        classifier(pooling="max")
    model = classifier()
    with pytest.raises(ValueError, match="integer inputs"):
        model(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"lengths must be a \(batch,\) tensor with values in \[1, 5\]"):
        model(torch.randint(0, 11, (2, 5)), torch.tensor([6, 2]))


def test_batch_norm_is_over_batch_and_time():
    """Norm('batch') normalises each feature over batch and time, as BatchNorm1d on the (B, d, L) layout does:
    outputs, input gradients and running statistics equal, in training and in evaluation, float64."""
    from rotrnn.models.sequence import Norm

    torch.manual_seed(0)
    norm = Norm("batch", 5, bn_momentum=0.9).double()
    reference = torch.nn.BatchNorm1d(5, momentum=0.1).double()
    reference.load_state_dict(norm.norm.state_dict())
    x = (torch.randn(3, 11, 5, dtype=torch.float64) * 2 + 1).requires_grad_()
    xr = x.detach().clone().requires_grad_()
    g = torch.randn(3, 11, 5, dtype=torch.float64)
    y, yr = norm(x), reference(xr.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(y, yr, rtol=1e-12, atol=1e-12)
    y.backward(g)
    yr.backward(g)
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(norm.norm.running_mean, reference.running_mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(norm.norm.running_var, reference.running_var, rtol=1e-12, atol=1e-12)
    norm.eval(), reference.eval()
    torch.testing.assert_close(norm(x), reference(x.transpose(1, 2)).transpose(1, 2), rtol=1e-12, atol=1e-12)
    # per feature, over batch and time: zero mean and unit (biased) variance in training mode
    out = Norm("batch", 5).double()(x.detach())
    torch.testing.assert_close(out.mean((0, 1)), torch.zeros(5, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(out.var((0, 1), unbiased=False), torch.ones(5, dtype=torch.float64), rtol=0, atol=1e-4)


@pytest.mark.parametrize("layer", ["rotrnn", "lru"])
def test_model_traces_as_one_graph(layer):
    """torch.compile sees the whole model as one graph (fullgraph raises at a break): no host reads of the lengths,
    no data-dependent branches, the scan an operator. A break costs a compiled model, and a CUDA graph, its span."""
    import torch._dynamo

    torch.manual_seed(0)
    model = classifier(layer, bidirectional=True)
    x, lengths = torch.randint(1, 11, (2, 6)), torch.tensor([6, 4])
    want = model(x, lengths)
    compiled = torch.compile(model, backend="eager", fullgraph=True, dynamic=True)
    got = compiled(x, lengths)
    got.sum().backward()
    torch.testing.assert_close(got, want)
    # batches of other lengths reuse the graph (training compiles with dynamic=True; variable-length tasks would
    # otherwise recompile every step)
    torch._dynamo.utils.counters.clear()
    for L in (5, 9, 7):
        compiled(torch.randint(1, 11, (3, L)), torch.tensor([L, L - 1, 2]))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 0, dict(torch._dynamo.utils.counters["stats"])
    torch._dynamo.reset()
