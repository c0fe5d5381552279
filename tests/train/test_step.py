"""Host-sync-free step pieces: the same loss and counts as the loop's objective, device-side sums, non-finite watch."""
from __future__ import annotations

import math

import pytest
import torch

from rotrnn.train import loop
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


@pytest.mark.parametrize("meta,out,batch", list(cases()))
def test_objective_equals_the_loops(meta, out, batch):
    want_loss, want_correct, want_n = loop.objective(out, batch, meta)
    loss, correct, n = objective(out, batch, meta)
    torch.testing.assert_close(loss, want_loss, rtol=0, atol=0)
    assert float(correct) == want_correct and float(n) == want_n


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


def test_host_tokens():
    assert host_tokens({"lengths": torch.tensor([3, 4])}) == 7
    assert host_tokens({"lengths": torch.tensor([3, 4]), "lengths2": torch.tensor([1, 1])}) == 9
