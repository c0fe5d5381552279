"""Training batches: the epoch's order, and a loader that collates them ahead of the training step.

The order of epoch e is ``randperm(n)`` from a generator seeded with ``seed · 1 000 003 + e`` (nothing else draws
from it), cut into batches of ``batch_size``; a resumed job restarts the same list at the saved batch index. So the
batches, and the global RNG streams the step consumes (dropout), do not depend on how or where batches are collated.

:class:`Prefetcher` collates batches on one background thread, ``depth`` batches ahead of the step, into pinned
memory when the step runs on CUDA (so the copy to the device can be ``non_blocking``). Collation is numpy slicing
of memory-mapped arrays and ``torch.from_numpy``; it draws no random numbers. A thread, not DataLoader worker
processes: the arrays are memory-mapped once, nothing is pickled, and an exception or an early exit of the loop
stops and joins the thread (:meth:`Prefetcher.close`, also on ``with`` exit and garbage collection).
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Iterator, Protocol

import torch


class Collatable(Protocol):
    def __getitem__(self, i: int) -> Any: ...

    def collate(self, examples: list[Any]) -> dict[str, torch.Tensor]: ...


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=g).tolist()


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, max_steps: int | None) -> list[list[int]]:
    """The example indices of every training batch of ``epoch``, in order (at most ``max_steps`` batches)."""
    order = epoch_order(n, seed, epoch)
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    return batches[:max_steps] if max_steps else batches


def collate(dataset: Collatable, indices: list[int], pin_memory: bool = False) -> dict[str, torch.Tensor]:
    """The batch of ``indices`` as the dataset collates it, optionally in pinned (page-locked) host memory."""
    batch = dataset.collate([dataset[i] for i in indices])
    return {k: v.pin_memory() for k, v in batch.items()} if pin_memory else batch


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Copy a batch to ``device``; asynchronous for pinned host tensors going to CUDA."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


_DONE = object()


class Prefetcher:
    """Iterate ``(index, batch)`` over ``batches[start:]``, each collated ``depth`` batches ahead on a thread.

    >>> with Prefetcher(train_set, epoch_batches(len(train_set), 50, seed, epoch, None), start=state["batch"],
    ...                 pin_memory=device.type == "cuda") as batches:
    ...     for b, host_batch in batches:
    ...         batch = to_device(host_batch, device)
    ...         ...

    ``wait_s`` accumulates the time the consumer spent blocked waiting for a batch (the loader's cost that the
    step did not hide); ``collate_s`` the time the thread spent collating.
    """

    def __init__(self, dataset: Collatable, batches: list[list[int]], start: int = 0, depth: int = 2,
                 pin_memory: bool = False):
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        if not 0 <= start <= len(batches):
            raise ValueError(f"start must lie in [0, {len(batches)}], got {start}")
        self.dataset, self.batches, self.start, self.pin_memory = dataset, batches, start, pin_memory
        self.wait_s = self.collate_s = 0.0
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="rotrnn-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        import time

        try:
            for b in range(self.start, len(self.batches)):
                if self._stop.is_set():
                    return
                t0 = time.perf_counter()
                batch = collate(self.dataset, self.batches[b], self.pin_memory)
                self.collate_s += time.perf_counter() - t0
                if not self._put((b, batch)):
                    return
            self._put(_DONE)
        except BaseException as e:  # handed to the consumer, raised there
            self._put(e)

    def __iter__(self) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
        import time

        while True:
            t0 = time.perf_counter()
            item = self._queue.get()
            self.wait_s += time.perf_counter() - t0
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                self.close()
                raise item
            yield item

    def close(self) -> None:
        """Stop the thread and wait for it; batches still queued are dropped. Safe to call twice."""
        self._stop.set()
        while True:  # unblock a put that is waiting for room
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_thread", None) is not None and self._thread.is_alive():
            self.close()
