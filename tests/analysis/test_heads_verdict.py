"""Experiment 2's statistic and verdict rule: the Welch contrast over four groups of seeds, the verdict on the
difference of differences, failed runs kept out of the intervals; and the single-scale control's generator options."""
import math

import numpy as np
import pytest

from rotrnn.analysis import heads
from rotrnn.analysis.stats import Estimate, welch_contrast, welch_difference
from rotrnn.data import multiscale


def test_two_group_contrast_is_welchs_t_interval():
    """Weights (1, −1): the difference of means with scipy's Welch interval (welch_difference is this contrast)."""
    from scipy import stats

    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 0.3, 5), rng.normal(0.2, 0.05, 6)
    want = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    for got in (welch_contrast([a, b], [1, -1]), welch_difference(a, b)):
        assert (got.value, got.lo, got.hi, got.n) == pytest.approx((a.mean() - b.mean(), want.low, want.high, 5))


def test_difference_of_differences_with_equal_spreads_has_pooled_degrees_of_freedom():
    """Four groups of n with the same variance s²: se² = 4 s² / n and Satterthwaite's df = 4 (n − 1)."""
    from scipy import stats

    base = np.array([-1.0, 0.0, 1.0, 2.0, -2.0])  # variance 2.5
    groups = [base + 0.5, base + 0.1, base + 0.2, base + 0.1]
    est = welch_contrast(groups, [1, -1, -1, 1])
    assert est.value == pytest.approx((0.5 - 0.1) - (0.2 - 0.1))
    half = stats.t.ppf(0.975, 4 * 4) * math.sqrt(4 * 2.5 / 5)
    assert (est.lo, est.hi, est.n) == pytest.approx((est.value - half, est.value + half, 5))


@pytest.mark.parametrize("gap, did, verdict", [
    ((0.03, 0.02, 0.04), (0.028, 0.018, 0.038), "supports"),       # DiD above the boundary, multi gap > 0
    ((0.03, 0.02, 0.04), (0.028, 0.005, 0.05), "cannot tell"),      # DiD straddles the boundary 0.01
    ((0.03, 0.02, 0.04), (0.001, -0.004, 0.006), "contradicts"),    # heads help as much on one scale
    ((-0.03, -0.04, -0.02), (0.02, 0.015, 0.025), "contradicts"),   # heads hurt on several scales
])
def test_verdict_rule(gap, did, verdict):
    assert heads.verdict_of(Estimate(*gap, 5), Estimate(*did, 5), 0.01) == verdict


def _res(rows, failed_above=0.5):
    return {"settings": {"failed_above": failed_above}, "rows": rows}


def test_failed_runs_are_counted_apart_and_do_not_set_the_spread():
    rows = []
    for kind, h, u in [("multi", 1, [0.030, 0.031, 0.029, 0.032, 0.028]), ("multi", 64, [0.002, 0.003, 0.002, 0.9]),
                       ("single", 1, [0.001, 0.002, 0.001, 0.002, 0.001]), ("single", 64, [0.001] * 4)]:
        rows += [{"scales": kind, "n_heads": h, "seed": s, "task": f"{kind}{h}", "test_mse": v * 2.0,
                  "target_variance": 2.0, "diverged": False} for s, v in enumerate(u)]
    rows.append({"scales": "single", "n_heads": 64, "seed": 9, "task": "single64", "test_mse": None,
                 "target_variance": 2.0, "diverged": True})
    every = heads.table(_res(rows))
    assert every["failed"].sum() == 2  # u = 0.9 > 0.5 and the diverged run
    assert every.loc[every["failed"] & ~every["diverged"], "unexplained"].item() == pytest.approx(0.9)
    est = heads.estimates(every, [1, 64])
    assert est["gap_multi"].value == pytest.approx(0.030 - 0.007 / 3)
    assert est["gap_multi"].hi - est["gap_multi"].lo < 0.01  # the 0.9 run would have made it ~1 wide
    assert heads.verdict_of(est["gap_multi"], est["did"], 0.01) == "supports"


def test_control_generator_scores_late_and_has_unit_variance(tmp_path):
    """score_from moves the first scored position; unit_variance divides y by √E[y²] over the scored positions."""
    meta = multiscale.generate(tmp_path / "c", length=64, kernel="ema", scales=[4], score_from=30, unit_variance=True,
                               n_train=400, n_val=0, n_test=0, seed=2)
    raw = multiscale.target_variance("ema", [4], 64, 30)
    assert meta["target_variance"] == pytest.approx(1.0) and meta["raw_variance"] == pytest.approx(raw)
    x = np.load(tmp_path / "c" / "train.inputs.npy")[..., 0].astype(np.float64)
    y = np.load(tmp_path / "c" / "train.labels.npy")[..., 0]
    np.testing.assert_allclose(y, multiscale.ema_sum(x, [4]) / math.sqrt(raw), rtol=0, atol=1e-5)
    mask = np.load(tmp_path / "c" / "train.label_mask.npy")
    assert not mask[:, :30].any() and mask[:, 30:].all()
    assert float((y[:, 30:] ** 2).mean()) == pytest.approx(1.0, rel=0.1)
    with pytest.raises(ValueError, match=r"score_from must lie in \[max scale 16, length=64\), got 8"):
        multiscale.check_score_from(8, [2, 16], 64)
