"""Multi-scale regression targets: a task that needs several time scales at once (the multi-head ablation).

Two kernels, each a sum over the scales s_k (default 2, 32, 512) with x_t ~ N(0, 1) i.i.d. and x_{t<0} = 0:

    delay:  y_t = Σ_k x_{t − s_k}                                     (delayed copies)
    ema:    y_t = Σ_k √(1 − a_k²) Σ_{u ≤ t} a_k^{t−u} x_u,  a_k = exp(−1/s_k)   (leaky integrators, time constant s_k)

One input channel, one output channel. The loss is scored (``label_mask``) only where every scale reaches inside
the sequence, t ≥ max s, or from ``score_from`` on (≥ max s): a single-scale control task scored at the same positions
as the multi-scale one. ``unit_variance`` divides y by the square root of its mean variance over the scored positions
(:func:`target_variance`), so that tasks with one or several scales have the same target scale (E[y²] = 1). RotRNN's argument for heads (Dolga et al. 2024 §3): a single decay γ per head gives every
mode of that head the envelope γ^ℓ, so one head cannot be fast at scale 2 and slow at scale 512.

The two kernels ask different things of a state of size n. A delayed copy of white noise at lag ℓ is a memory of ℓ
independent numbers: no linear state much smaller than ℓ holds it, whatever its decays. A leaky integrator is one
real mode of decay a_k: the ema target is exactly a linear recurrence with one state per scale, and what is hard
about it is only that its decays differ. The ema kernel is therefore the one that isolates the time-scale question.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rotrnn.data.prepared import PreparedWriter

PREPROCESSING_VERSION = "multiscale-3"  # 3: score_from, unit_variance
CHUNK = 256  # examples per random stream: the bytes depend only on the arguments
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
DEFAULT_SCALES = (2, 32, 512)
KERNELS = ("delay", "ema")


def check_scales(scales: Sequence[int], length: int, kernel: str = "ema") -> tuple[int, ...]:
    if kernel not in KERNELS:
        raise ValueError(f"multiscale: kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
    scales = tuple(int(x) for x in scales)
    low = 0 if kernel == "delay" else 1
    if not scales or any(x < low for x in scales) or len(set(scales)) != len(scales):
        raise ValueError(f"multiscale: scales must be distinct integers >= {low} for kernel {kernel}, got "
                         f"{list(scales)}")
    if max(scales) >= length:
        raise ValueError(f"multiscale: the largest scale {max(scales)} must be shorter than length={length}")
    return scales


def decays(scales: Sequence[int]) -> np.ndarray:
    """a_k = exp(−1/s_k): the per-step decay of a leaky integrator with time constant s_k."""
    return np.exp(-1.0 / np.asarray(scales, dtype=np.float64))


def delayed_sum(x: np.ndarray, lags: Sequence[int]) -> np.ndarray:
    """(b, T) -> (b, T): Σ_k x shifted right by ℓ_k with zeros in front."""
    y = np.zeros_like(x)
    for lag in lags:
        y[:, lag:] += x[:, : x.shape[1] - lag]
    return y


def ema_sum(x: np.ndarray, scales: Sequence[int]) -> np.ndarray:
    """(b, T) -> (b, T): Σ_k h^k with h^k_t = a_k h^k_{t−1} + √(1 − a_k²) x_t, h^k_{−1} = 0 (float64 recurrence)."""
    a = decays(scales)
    h = np.zeros((x.shape[0], len(a)))
    y = np.empty(x.shape, dtype=np.float64)
    gain = np.sqrt(1.0 - a * a)
    for t in range(x.shape[1]):
        h = a * h + gain * x[:, t, None]
        y[:, t] = h.sum(axis=1)
    return y


def check_score_from(score_from: int | None, scales: Sequence[int], length: int) -> int:
    """The first scored position: max s by default; never before max s (every scale must reach inside) nor at the end."""
    first = max(scales) if score_from is None else int(score_from)
    if not max(scales) <= first < length:
        raise ValueError(f"multiscale: score_from must lie in [max scale {max(scales)}, length={length}), got {first}")
    return first


def target_variance(kernel: str, scales: Sequence[int], length: int, score_from: int | None = None) -> float:
    """E[y_t²] averaged over the scored positions t ≥ score_from (default max s): the test MSE of predicting zero (the
    mean), before any ``unit_variance`` scaling.
    delay: len(scales). ema: the integrators are driven by the same x, so E[y_t²] = Σ_jk g_j g_k (1 − (a_j a_k)^(t+1))
    / (1 − a_j a_k) with g = √(1 − a²)."""
    scales = check_scales(scales, length, kernel)
    if kernel == "delay":
        return float(len(scales))
    a, t = decays(scales), np.arange(check_score_from(score_from, scales, length), length)
    g = np.sqrt(1.0 - a * a)
    aa = np.outer(a, a)
    per_t = (np.outer(g, g)[..., None] * (1.0 - aa[..., None] ** (t + 1)) / (1.0 - aa)[..., None]).sum(axis=(0, 1))
    return float(per_t.mean())


def generate(out_dir: str | Path, *, length: int = 1024, kernel: str = "ema", scales: Sequence[int] = DEFAULT_SCALES,
             n_train: int = 4000, n_val: int = 400, n_test: int = 400, score_from: int | None = None,
             unit_variance: bool = False, seed: int = 0) -> dict[str, Any]:
    """Write the task under ``out_dir`` in the prepared format; returns its meta (``target_variance``: the mean of y²
    over the scored positions as written, 1 with ``unit_variance``; ``raw_variance``: before the scaling)."""
    scales = check_scales(scales, length, kernel)
    T = int(length)
    first = check_score_from(score_from, scales, T)
    raw = target_variance(kernel, scales, T, first)
    gain = 1.0 / np.sqrt(raw) if unit_variance else 1.0
    var = raw * gain**2
    formula = ("sum of x_(t-s)" if kernel == "delay" else "sum of unit-variance leaky integrators of x with time "
               "constants s")
    meta = {
        "task": "multiscale", "kind": "continuous", "in_dim": 1, "l_max": T, "target": "sequence", "loss": "mse",
        "out_dim": 1, "dual": False, "preprocessing_version": PREPROCESSING_VERSION, "sources": {},
        "generator": {"length": T, "kernel": kernel, "scales": list(scales), "score_from": first,
                      "unit_variance": bool(unit_variance), "seed": seed},
        "target_variance": var, "raw_variance": raw,
        "notes": f"y_t = {f'{gain:.4g} × ' if unit_variance else ''}{formula} for s in {list(scales)}, x standard normal; "
                 f"scored for t >= {first} "
                 f"(label_mask), where the mean target variance is {var:.4g}.",
    }
    target = delayed_sum if kernel == "delay" else ema_sum
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
                y[start:start + b, :, 0] = gain * target(xc, scales)
            mask = np.zeros((n, T), dtype=bool)
            mask[:, first:] = True
            w.put(split, "lengths", np.full(n, T, dtype=np.int64))
            w.put(split, "label_mask", mask)
    return w.meta
