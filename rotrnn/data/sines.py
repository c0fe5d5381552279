"""Band classification of sinusoid mixtures, with coarse test splits for zero-shot changes of sampling rate.

A signal at rate 1 (time in samples) is

    x_t = Σ_{k<K} a_k sin(2π f_k t + φ_k) / sqrt(Σ_k a_k²/2)
        + Σ_{k<D} b_k sin(2π g_k t + ψ_k) / sqrt(Σ_k b_k²/2) + σ ε_t,     ε_t ~ N(0, 1)

with the K frequencies f_k drawn log-uniformly inside band c, one of ``n_classes`` log-spaced bands between f_min
and f_max cycles per sample; the label is c. With f_max below 1/(2·s_max) every class sinusoid stays under the
Nyquist frequency of the coarsest rate, so the class survives any coarse grid. The D ``distractors`` g_k, drawn
uniformly in ``distractor_band`` (above the coarse Nyquist frequencies, unit power like the class part), carry no
label: at rate 1 a model can filter them out, but plain decimation folds them back onto the class bands (at rate 1/s
a sinusoid at g appears at |g − round(g·s)/s|), like the part of real audio above a coarse Nyquist frequency; the
white noise is broadband and folds back too (its variance unchanged, its in-band density s times larger).

Besides train/val/test at rate 1, each factor s in ``factors`` adds two test splits of the same test signals at rate
1/s (``meta["step"]`` = s for both):

- ``test_dec{s}``: plain decimation ``x[::s]`` (the protocol S4 and RotRNN use for 8 kHz Speech Commands): the noise
  above the new Nyquist frequency folds back into the band (aliasing), its variance unchanged;
- ``test_rs{s}``: band-limited resampling with ``torchaudio.functional.resample`` (windowed-sinc low-pass), which
  removes what lies above the new Nyquist frequency before keeping one sample in s.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rotrnn.data.prepared import PreparedWriter

PREPROCESSING_VERSION = "sines-2"
CHUNK = 256
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


def band_edges(n_classes: int, f_min: float, f_max: float) -> np.ndarray:
    """(n_classes + 1,) log-spaced band edges in cycles per sample."""
    if n_classes < 2:
        raise ValueError(f"sines: n_classes must be >= 2, got {n_classes}")
    if not 0 < f_min < f_max < 0.5:
        raise ValueError(f"sines: need 0 < f_min < f_max < 0.5 cycles/sample, got f_min={f_min}, f_max={f_max}")
    return np.geomspace(f_min, f_max, n_classes + 1)


def _mixture(rng: np.random.Generator, freqs: np.ndarray, length: int) -> np.ndarray:
    """(b, length): Σ_k a_k sin(2π f_k t + φ_k), a_k ~ U(0.5, 1), φ_k ~ U(0, 2π), scaled to unit power."""
    amps = rng.uniform(0.5, 1.0, freqs.shape)
    phases = rng.uniform(0, 2 * np.pi, freqs.shape)
    t = np.arange(length)
    waves = amps[:, :, None] * np.sin(2 * np.pi * freqs[:, :, None] * t + phases[:, :, None])
    return waves.sum(1) / np.sqrt((amps**2).sum(1, keepdims=True) / 2)


def draw(rng: np.random.Generator, b: int, length: int, edges: np.ndarray, components: int, noise: float,
         distractors: int = 0, distractor_band: Sequence[float] = (0.25, 0.45)
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(signals (b, length), labels (b,), class frequencies (b, components))."""
    labels = rng.integers(0, len(edges) - 1, size=b)
    lo, hi = np.log(edges[labels]), np.log(edges[labels + 1])
    freqs = np.exp(lo[:, None] + rng.random((b, components)) * (hi - lo)[:, None])
    x = _mixture(rng, freqs, length)
    if distractors:
        x = x + _mixture(rng, rng.uniform(*distractor_band, (b, distractors)), length)
    return x + noise * rng.standard_normal((b, length)), labels, freqs


def coarse(x: np.ndarray, factor: int, method: str) -> np.ndarray:
    """(b, T) at rate 1 -> (b, T // factor) at rate 1/factor, by ``"decimate"`` (x[::s]) or ``"resample"``."""
    if method == "decimate":
        return x[:, ::factor][:, : x.shape[1] // factor]
    if method == "resample":
        import torch
        import torchaudio.functional as AF

        y = AF.resample(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)), orig_freq=factor, new_freq=1)
        return y.numpy()[:, : x.shape[1] // factor]
    raise ValueError(f"coarse: method must be 'decimate' or 'resample', got {method!r}")


def generate(out_dir: str | Path, *, length: int = 512, n_classes: int = 6, f_min: float = 0.01, f_max: float = 0.1,
             components: int = 3, noise: float = 0.3, distractors: int = 0,
             distractor_band: Sequence[float] = (0.25, 0.45), factors: Sequence[int] = (2, 4), n_train: int = 4000,
             n_val: int = 500, n_test: int = 500, seed: int = 0) -> dict[str, Any]:
    """Write the task under ``out_dir`` in the prepared format; returns its meta."""
    edges = band_edges(n_classes, f_min, f_max)
    factors = tuple(int(s) for s in factors)
    if any(s < 2 or length % s for s in factors):
        raise ValueError(f"sines: factors must be integers >= 2 dividing length={length}, got {list(factors)}")
    if factors and f_max >= 0.5 / max(factors):
        raise ValueError(f"sines: f_max={f_max} must lie below the coarsest Nyquist frequency 1/(2*{max(factors)})")
    if components < 1 or noise < 0:
        raise ValueError(f"sines: need components >= 1 and noise >= 0, got {components}, {noise}")
    band = tuple(float(g) for g in distractor_band)
    if distractors < 0 or len(band) != 2 or not f_max < band[0] < band[1] < 0.5:
        raise ValueError(f"sines: need distractors >= 0 and f_max < distractor_band[0] < distractor_band[1] < 0.5, "
                         f"got {distractors}, {list(distractor_band)}")
    coarse_splits = {f"test_{tag}{s}": (s, method) for s in factors
                     for tag, method in (("dec", "decimate"), ("rs", "resample"))}
    meta = {
        "task": "sines", "kind": "continuous", "in_dim": 1, "l_max": int(length), "target": "class",
        "loss": "cross_entropy", "n_classes": int(n_classes), "dual": False,
        "preprocessing_version": PREPROCESSING_VERSION, "sources": {},
        "step": {name: s for name, (s, _) in coarse_splits.items()},
        "band_edges": [float(e) for e in edges],
        "generator": {"length": int(length), "n_classes": int(n_classes), "f_min": f_min, "f_max": f_max,
                      "components": int(components), "noise": noise, "distractors": int(distractors),
                      "distractor_band": list(band), "factors": list(factors), "seed": seed},
        "notes": "Sinusoid mixtures classified by frequency band, plus unlabelled distractor sinusoids above the coarse "
                 "Nyquist frequency; test_dec<s> = test signals x[::s], test_rs<s> = "
                 "torchaudio.functional.resample(x, s, 1) (band-limited), both evaluated with step s.",
    }
    with PreparedWriter(out_dir, meta) as w:
        for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
            if n <= 0:
                continue
            x = w.array(split, "inputs", (n, length, 1), np.float32)
            labels = np.empty(n, dtype=np.int64)
            # stored at l_max like every split (zeros beyond length/s); `lengths` says where each coarse signal ends
            extra = {name: w.array(name, "inputs", (n, length, 1), np.float32)
                     for name, (s, _) in coarse_splits.items()} if split == "test" else {}
            for c, start in enumerate(range(0, n, CHUNK)):
                b = min(CHUNK, n - start)
                xc, yc, _ = draw(np.random.default_rng([seed, SPLIT_IDS[split], c]), b, length, edges, components,
                                 noise, distractors, band)
                x[start:start + b, :, 0] = xc
                labels[start:start + b] = yc
                for name, (s, method) in coarse_splits.items() if extra else ():
                    extra[name][start:start + b, : length // s, 0] = coarse(xc, s, method)
            w.put(split, "lengths", np.full(n, length, dtype=np.int64))
            w.put(split, "labels", labels)
            for name, (s, _) in coarse_splits.items():
                if split == "test":
                    w.put(name, "lengths", np.full(n, length // s, dtype=np.int64))
                    w.put(name, "labels", labels)
    return w.meta
