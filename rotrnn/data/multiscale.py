"""Multi-scale delayed copies: a regression that needs several time scales at once (the multi-head ablation).

    y_t = Σ_k x_{t − ℓ_k},    x_t ~ N(0, 1) i.i.d.,  x_{t<0} = 0,    lags ℓ = (2, 32, 512) by default

One input channel, one output channel. The loss is scored (``label_mask``) only where every lag reaches inside the
sequence, t ≥ max ℓ, so that each scored target has variance len(lags) and a model must hold all three delays. A
single decay γ per head gives every kernel of that head the envelope γ^ℓ: one head cannot be sharp at lag 2 and
keep a copy alive at lag 512 (RotRNN's argument for heads, Dolga et al. 2024 §3).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rotrnn.data.prepared import PreparedWriter

PREPROCESSING_VERSION = "multiscale-1"
CHUNK = 256  # examples per random stream: the bytes depend only on the arguments
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
DEFAULT_LAGS = (2, 32, 512)


def check_lags(lags: Sequence[int], length: int) -> tuple[int, ...]:
    lags = tuple(int(x) for x in lags)
    if not lags or any(x < 0 for x in lags) or len(set(lags)) != len(lags):
        raise ValueError(f"multiscale: lags must be distinct non-negative integers, got {list(lags)}")
    if max(lags) >= length:
        raise ValueError(f"multiscale: the largest lag {max(lags)} must be shorter than length={length}")
    return lags


def delayed_sum(x: np.ndarray, lags: Sequence[int]) -> np.ndarray:
    """(b, T) -> (b, T): Σ_k x shifted right by ℓ_k with zeros in front."""
    y = np.zeros_like(x)
    for lag in lags:
        y[:, lag:] += x[:, : x.shape[1] - lag]
    return y


def generate(out_dir: str | Path, *, length: int = 1024, lags: Sequence[int] = DEFAULT_LAGS, n_train: int = 4000,
             n_val: int = 400, n_test: int = 400, seed: int = 0) -> dict[str, Any]:
    """Write the task under ``out_dir`` in the prepared format; returns its meta."""
    lags = check_lags(lags, length)
    T, first = int(length), max(lags)
    meta = {
        "task": "multiscale", "kind": "continuous", "in_dim": 1, "l_max": T, "target": "sequence", "loss": "mse",
        "out_dim": 1, "dual": False, "preprocessing_version": PREPROCESSING_VERSION, "sources": {},
        "generator": {"length": T, "lags": list(lags), "seed": seed},
        "notes": f"y_t = sum of x_(t-lag) for lags {list(lags)}, x standard normal; scored for t >= {first} "
                 f"(label_mask), where the target variance is {len(lags)}.",
    }
    with PreparedWriter(out_dir, meta) as w:
        for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
            if n <= 0:
                continue
            x = w.array(split, "inputs", (n, T, 1), np.float32)
            y = w.array(split, "labels", (n, T, 1), np.float32)
            for c, start in enumerate(range(0, n, CHUNK)):
                b = min(CHUNK, n - start)
                xc = np.random.default_rng([seed, SPLIT_IDS[split], c]).standard_normal((b, T))
                x[start:start + b, :, 0] = xc
                y[start:start + b, :, 0] = delayed_sum(xc, lags)
            mask = np.zeros((n, T), dtype=bool)
            mask[:, first:] = True
            w.put(split, "lengths", np.full(n, T, dtype=np.int64))
            w.put(split, "label_mask", mask)
    return w.meta
