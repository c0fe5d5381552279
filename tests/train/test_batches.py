"""The prefetching loader: the same batches in the same order as collating in the loop, exact resume from a
mid-epoch position, no draws from the global RNG, and a worker thread that stops on exceptions and early exits."""
from __future__ import annotations

import threading

import pytest
import torch

from rotrnn.data import load_dataset
from rotrnn.train.batches import Prefetcher, collate, epoch_batches, epoch_order


def same_batch(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_epoch_order_is_the_seeded_permutation():
    g = torch.Generator().manual_seed(3 * 1_000_003 + 2)
    assert epoch_order(50, 3, 2) == torch.randperm(50, generator=g).tolist()
    batches = epoch_batches(50, 16, 3, 2, None)
    assert [len(b) for b in batches] == [16, 16, 16, 2] and sum(batches, []) == epoch_order(50, 3, 2)
    assert epoch_batches(50, 16, 3, 2, 2) == batches[:2]


@pytest.mark.parametrize("depth", [1, 3])
def test_prefetched_batches_equal_synchronous_collation(majority_data, depth):
    ds = load_dataset(majority_data, "train")
    batches = epoch_batches(len(ds), 16, 0, 1, None)
    want = [ds.collate([ds[i] for i in b]) for b in batches]
    rng_before = torch.get_rng_state()
    with Prefetcher(ds, batches, depth=depth) as loader:
        got = list(loader)
    assert [b for b, _ in got] == list(range(len(batches)))
    assert all(same_batch(g, w) for (_, g), w in zip(got, want))
    assert torch.equal(torch.get_rng_state(), rng_before)  # collation draws no random numbers


def test_resume_from_a_mid_epoch_position(majority_data):
    ds = load_dataset(majority_data, "train")
    batches = epoch_batches(len(ds), 16, 0, 0, None)
    with Prefetcher(ds, batches) as loader:
        full = list(loader)
    with Prefetcher(ds, batches, start=5) as loader:
        resumed = list(loader)
    assert [b for b, _ in resumed] == list(range(5, len(batches)))
    assert all(same_batch(a, b) for (_, a), (_, b) in zip(resumed, full[5:]))
    with Prefetcher(ds, batches, start=len(batches)) as loader:
        assert list(loader) == []
    with pytest.raises(ValueError, match="start"):
        Prefetcher(ds, batches, start=len(batches) + 1)


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "rotrnn-prefetch"]


def test_early_exit_and_consumer_exception_stop_the_thread(majority_data):
    ds = load_dataset(majority_data, "train")
    batches = epoch_batches(len(ds), 4, 0, 0, None)
    with Prefetcher(ds, batches, depth=2) as loader:
        for b, _ in loader:
            if b == 1:
                break  # the thread is blocked on a full queue now
    assert not loader.alive
    with pytest.raises(RuntimeError, match="step failed"):
        with Prefetcher(ds, batches, depth=2) as loader:
            for _ in loader:
                raise RuntimeError("step failed")
    assert not loader.alive and not prefetch_threads()


def test_collation_error_reaches_the_consumer(majority_data):
    ds = load_dataset(majority_data, "train")
    batches = epoch_batches(len(ds), 16, 0, 0, None)
    batches[2] = [10**9]  # an index out of range: the dataset raises IndexError in the thread
    with pytest.raises(IndexError, match="out of range"):
        with Prefetcher(ds, batches) as loader:
            for _ in loader:
                pass
    assert not loader.alive


def test_pinned_collation_when_asked(majority_data):
    ds = load_dataset(majority_data, "train")
    if not torch.cuda.is_available():
        pytest.skip("pinned memory needs a CUDA driver")
    batch = collate(ds, [0, 1, 2], pin_memory=True)
    assert all(t.is_pinned() for t in batch.values())
