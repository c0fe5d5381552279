"""Effect sizes with 95% intervals over seeds, and the verdict they give on a claim.

Every experiment of the analysis suite ends in one :class:`Verdict`: the paper's claim, put as a statement about one
effect (a difference, a paired difference, a level), the effect's estimate with its interval, and

- **supports**: the whole interval lies where the claim says the effect is,
- **contradicts**: the whole interval lies where the claim says it is not,
- **cannot tell**: the interval straddles the boundary (at this budget, the seeds do not separate the two).

The boundary is part of the claim and is declared in params.yaml next to the experiment (e.g. "at least 10% lower
MSE", "within 5% of the closed form"): with a boundary of 0 any effect in the claimed direction counts. Intervals are
Student-t intervals over independent seeds (``mean_interval``, ``paired_difference``) or Welch's for two groups of
seeds (``welch_difference``); on logarithms they give ratios (``log=True``). Below the experiments and the report.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

VERDICTS = ("supports", "contradicts", "cannot tell")
LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """An effect and its 95% interval; ``n`` independent seeds (or pairs) behind it; ``ratio``: estimated on logs
    and reported as a factor (value, lo, hi are then factors)."""

    value: float
    lo: float
    hi: float
    n: int
    ratio: bool = False

    def text(self, fmt: str = "{:.3g}", unit: str = "") -> str:
        if self.n < 2 or not math.isfinite(self.lo):
            return f"{fmt.format(self.value)}{unit} (n = {self.n}, no interval)"
        mark = "×" if self.ratio else unit
        return (f"{fmt.format(self.value)}{mark} [95% CI {fmt.format(self.lo)}{mark}, {fmt.format(self.hi)}{mark}], "
                f"n = {self.n}")


def _clean(x) -> np.ndarray:
    a = np.asarray(list(x), dtype=float)
    return a[np.isfinite(a)]


def _t(df: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + LEVEL / 2, df))


def mean_interval(x, log: bool = False) -> Estimate:
    """Mean of independent values with its Student-t interval (geometric mean and factor interval when ``log``)."""
    a = _clean(x)
    if log:
        a = np.log(a[a > 0])
    n = len(a)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, log)
    m = float(a.mean())
    h = _t(n - 1) * float(a.std(ddof=1)) / math.sqrt(n) if n > 1 else math.nan
    est = (m, m - h, m + h)
    return Estimate(*(math.exp(v) for v in est), n, True) if log else Estimate(*est, n, False)


def paired_difference(a, b, log: bool = False) -> Estimate:
    """a − b paired by position (same seed), with the t interval of the mean difference; a / b when ``log``."""
    a, b = np.asarray(list(a), dtype=float), np.asarray(list(b), dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired_difference: {a.shape} against {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b) & ((a > 0) & (b > 0) if log else True)
    d = np.log(a[keep]) - np.log(b[keep]) if log else a[keep] - b[keep]
    est = mean_interval(d)
    if log:
        return Estimate(math.exp(est.value), math.exp(est.lo), math.exp(est.hi), est.n, True)
    return est


def welch_contrast(groups, weights) -> Estimate:
    """Σ_i w_i · mean(groups[i]) over independent groups of seeds, with the Welch–Satterthwaite interval:
    se² = Σ w_i² s_i² / n_i, df = se⁴ / Σ (w_i² s_i² / n_i)² / (n_i − 1). Weights (1, −1) give a difference of two
    means (:func:`welch_difference`), (1, −1, −1, 1) a difference of differences. ``n`` is the smallest group;
    missing and non-finite values are left out."""
    gs = [_clean(v for v in g if v is not None) for g in groups]
    if len(gs) != len(weights):
        raise ValueError(f"welch_contrast: {len(gs)} groups against {len(weights)} weights")
    n = min(len(g) for g in gs)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    value = float(sum(w * g.mean() for w, g in zip(weights, gs)))
    if n < 2:
        return Estimate(value, math.nan, math.nan, n)
    parts = [w * w * g.var(ddof=1) / len(g) for w, g in zip(weights, gs)]
    se2 = sum(parts)
    df = se2**2 / sum(q * q / (len(g) - 1) for q, g in zip(parts, gs)) if se2 > 0 else 1e9
    h = _t(df) * math.sqrt(se2)
    return Estimate(value, value - h, value + h, n)


def welch_difference(a, b, log: bool = False) -> Estimate:
    """mean(a) − mean(b) for two independent groups, Welch–Satterthwaite interval; ratio of geometric means when
    ``log``. ``n`` is the smaller group."""
    a, b = _clean(a), _clean(b)
    if log:
        a, b = np.log(a[a > 0]), np.log(b[b > 0])
    est = welch_contrast([a, b], [1, -1])
    return Estimate(math.exp(est.value), math.exp(est.lo), math.exp(est.hi), est.n, True) if log else est


def above(est: Estimate, boundary: float = 0.0) -> str:
    """Verdict on "the effect is above ``boundary``" (for a ratio: a factor, e.g. 1)."""
    if not (math.isfinite(est.lo) and math.isfinite(est.hi)):
        return "cannot tell"
    if est.lo > boundary:
        return "supports"
    if est.hi < boundary:
        return "contradicts"
    return "cannot tell"


def below(est: Estimate, boundary: float = 0.0) -> str:
    """Verdict on "the effect is below ``boundary``"."""
    return {"supports": "contradicts", "contradicts": "supports"}.get(above(est, boundary), "cannot tell")


def within(est: Estimate, low: float, high: float) -> str:
    """Verdict on "the effect lies in [low, high]" (e.g. a level that stays at its closed form)."""
    if not (math.isfinite(est.lo) and math.isfinite(est.hi)):
        return "cannot tell"
    if low <= est.lo and est.hi <= high:
        return "supports"
    if est.hi < low or est.lo > high:
        return "contradicts"
    return "cannot tell"


def combine(verdicts: list[str]) -> str:
    """One verdict from several parts of a claim that must all hold: contradicts if any part is contradicted,
    supports if every part is supported, otherwise cannot tell."""
    if any(v == "contradicts" for v in verdicts):
        return "contradicts"
    if verdicts and all(v == "supports" for v in verdicts):
        return "supports"
    return "cannot tell"


@dataclass(frozen=True)
class Verdict:
    """What an experiment decides: ``claim`` (the paper's, in one sentence, with its boundary), ``verdict`` (one of
    VERDICTS), ``effect`` (the estimate and interval it rests on, in words), ``undecided`` (what this budget could
    not decide)."""

    claim: str
    verdict: str
    effect: str
    undecided: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
