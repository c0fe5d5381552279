"""Pieces of a training step that never wait for the device.

Reading a CUDA tensor on the host (``float(loss)``, ``bool(torch.isfinite(loss))``, ``int(mask.sum())``) blocks
until the GPU has run everything queued, so the host cannot run ahead and prepare the next step: with steps of a
few milliseconds the GPU then idles for the Python overhead of every step. Here the running sums stay on the device
(:class:`RunningSums`), a non-finite loss or parameter is recorded on the device with the step where it first
occurred (:class:`FiniteWatch`), and both are read at the loop's log and checkpoint boundaries only; token counts come from
the host copy of the lengths (:func:`host_tokens`).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


def objective(out: torch.Tensor, batch: dict[str, torch.Tensor], meta: dict[str, Any]
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean loss, correct predictions, scored targets), all 0-d tensors on the device; MSE tasks count 0 correct.

    Loss: cross-entropy of the class (or of every masked position for sequence targets), or the masked mean
    squared error; the same values as the loop's ``objective``, without reading them on the host.
    """
    labels = batch["labels"]
    out = out.float()
    if meta["target"] == "class":
        loss = nn.functional.cross_entropy(out, labels)
        return loss, (out.argmax(-1) == labels).sum(), torch.tensor(labels.numel(), device=out.device)
    mask = batch["label_mask"][:, : out.shape[1]]
    labels = labels[:, : out.shape[1]]
    count = mask.sum()
    n = count.clamp_min(1)
    if meta["loss"] == "cross_entropy":
        per = nn.functional.cross_entropy(out.transpose(1, 2), labels.clamp_min(0), reduction="none")
        return (per * mask).sum() / n, ((out.argmax(-1) == labels) & mask).sum(), count
    per = ((out - labels.float()) ** 2).mean(-1)
    return (per * mask).sum() / n, torch.zeros((), device=out.device, dtype=torch.long), count


def host_tokens(host_batch: dict[str, torch.Tensor]) -> int:
    """Tokens in a batch, from its host (pre-transfer) lengths: no device read."""
    return int(host_batch["lengths"].sum()) + int(host_batch["lengths2"].sum() if "lengths2" in host_batch else 0)


class RunningSums:
    """Σ loss·n, Σ correct, Σ n and the step count since the last :meth:`read`, accumulated on the device."""

    def __init__(self, device: torch.device | str):
        self._sums = torch.zeros(3, dtype=torch.float64, device=device)
        self.steps = 0

    def add(self, loss: torch.Tensor, correct: torch.Tensor, count: torch.Tensor) -> None:
        n = count.to(torch.float64)
        self._sums += torch.stack([loss.detach().to(torch.float64) * n, correct.to(torch.float64), n])
        self.steps += 1

    def read(self) -> dict[str, float]:
        """{'loss': mean loss per target, 'accuracy': correct / targets, 'count': targets}; one device read; reset."""
        loss_n, correct, n = self._sums.tolist()
        self._sums.zero_()
        self.steps = 0
        return {"loss": loss_n / max(n, 1), "accuracy": correct / max(n, 1), "count": n}


class FiniteWatch:
    """Divergence, watched on the device: the first step whose loss, or whose updated parameters, were not finite,
    and the last finite loss before it. Read it (one device read) before saving or logging."""

    def __init__(self, device: torch.device | str):
        self._first = torch.full((), -1, dtype=torch.long, device=device)
        self._last_loss = torch.full((), float("nan"), dtype=torch.float64, device=device)
        self._last_step = torch.full((), -1, dtype=torch.long, device=device)

    def _mark(self, bad: torch.Tensor, step: int) -> None:
        self._first = torch.where(bad & (self._first < 0), torch.full_like(self._first, step), self._first)

    def observe(self, loss: torch.Tensor, step: int) -> None:
        loss = loss.detach()
        finite = torch.isfinite(loss)
        self._mark(~finite, step)
        keep = finite & (self._first < 0)
        self._last_loss = torch.where(keep, loss.to(torch.float64), self._last_loss)
        self._last_step = torch.where(keep, torch.full_like(self._last_step, step), self._last_step)

    def observe_parameters(self, params: list[torch.Tensor], step: int) -> None:
        """After the update of ``step``: a non-finite parameter anywhere makes the sum of the norms non-finite
        (one fused reduction per step, no host read)."""
        norms = torch._foreach_norm([p.detach() for p in params])
        self._mark(~torch.isfinite(torch.stack(norms).sum()), step)

    def first_bad_step(self) -> int | None:
        """The step (as passed to :meth:`observe`) of the first non-finite loss or parameters, or None."""
        first = int(self._first)
        return None if first < 0 else first

    def last_finite(self) -> tuple[int | None, float | None]:
        """(step, loss) of the last finite loss before the first bad step."""
        step = int(self._last_step)
        return (None, None) if step < 0 else (step, float(self._last_loss))
