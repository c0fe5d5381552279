"""Host-sync-free step pieces: the objective against a per-example computation, device-side sums, non-finite watch."""
from __future__ import annotations

import math

import pytest
import torch

from rotrnn.train.step import FiniteWatch, RunningSums, host_tokens, objective

CLASS = {"target": "class", "loss": "cross_entropy"}
SEQ_CE = {"target": "sequence", "loss": "cross_entropy"}
SEQ_MSE = {"target": "sequence", "loss": "mse"}


def cases():
    g = torch.Generator().manual_seed(0)
    yield CLASS, torch.randn(5, 3, generator=g), {"labels": torch.tensor([0, 2, 1, 1, 0])}
    mask = torch.rand(4, 6, generator=g) > 0.3
    yield SEQ_CE, torch.randn(4, 6, 3, generator=g), {"labels": torch.randint(0, 3, (4, 6), generator=g),
                                                      "label_mask": mask}
    yield SEQ_MSE, torch.randn(4, 6, 2, generator=g), {"labels": torch.randn(4, 6, 2, generator=g),
                                                       "label_mask": mask}


def reference(out, batch, meta):
    """Loss averaged over scored targets, correct count and target count, one target at a time in float64."""
    out, labels = out.double(), batch["labels"]
    if meta["target"] == "class":
        targets = [(out[i], labels[i]) for i in range(len(labels))]
    else:
        mask = batch["label_mask"]
        targets = [(out[i, t], labels[i, t]) for i in range(mask.shape[0]) for t in range(mask.shape[1]) if mask[i, t]]
    losses, correct = [], 0
    for o, y in targets:
        if meta["loss"] == "cross_entropy":
            losses.append(float(torch.logsumexp(o, 0) - o[y]))
            correct += int(o.argmax() == y)
        else:
            losses.append(float(((o - y.double()) ** 2).mean()))
    return sum(losses) / len(losses), correct, len(targets)


@pytest.mark.parametrize("meta,out,batch", list(cases()))
def test_objective_equals_a_per_example_computation(meta, out, batch):
    want_loss, want_correct, want_n = reference(out, batch, meta)
    loss, correct, n = objective(out, batch, meta)
    assert float(loss) == pytest.approx(want_loss, rel=1e-6)
    assert float(correct) == (want_correct if meta["loss"] == "cross_entropy" else 0) and float(n) == want_n


def test_running_sums_match_host_arithmetic():
    sums = RunningSums("cpu")
    values = [(0.5, 3, 4), (1.5, 1, 2), (0.25, 5, 6)]
    for loss, c, n in values:
        sums.add(torch.tensor(loss), torch.tensor(c), torch.tensor(n))
    got = sums.read()
    total = sum(n for *_, n in values)
    assert math.isclose(got["loss"], sum(l * n for l, _, n in values) / total)
    assert got["accuracy"] == sum(c for _, c, _ in values) / total and got["count"] == total
    assert sums.read() == {"loss": 0.0, "accuracy": 0.0, "count": 0.0}  # reset after reading


def test_finite_watch_keeps_the_first_bad_step():
    watch = FiniteWatch("cpu")
    watch.observe(torch.tensor(1.0), 1)
    assert watch.first_bad_step() is None
    watch.observe(torch.tensor(float("nan")), 2)
    watch.observe(torch.tensor(float("inf")), 3)
    assert watch.first_bad_step() == 2
    assert watch.last_finite() == (1, 1.0)


def test_finite_watch_sees_a_non_finite_parameter_after_an_update():
    watch = FiniteWatch("cpu")
    params = [torch.ones(3), torch.zeros(2, 2)]
    watch.observe(torch.tensor(0.5), 1)
    watch.observe_parameters(params, 1)
    assert watch.first_bad_step() is None
    params[1][0, 1] = float("nan")
    watch.observe(torch.tensor(0.25), 2)  # the loss of step 2 was still finite; its update was not
    watch.observe_parameters(params, 2)
    assert watch.first_bad_step() == 2
    assert watch.last_finite() == (2, 0.25)


def test_host_tokens():
    assert host_tokens({"lengths": torch.tensor([3, 4])}) == 7
    assert host_tokens({"lengths": torch.tensor([3, 4]), "lengths2": torch.tensor([1, 1])}) == 9
