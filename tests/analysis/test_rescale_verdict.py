"""Experiment 3's statistics and task: drops paired by seed, the verdict rules on (none − sum) and on (decimate −
resample) within the power sum, and the distractors that plain decimation folds onto the class bands."""
import json
import types

import numpy as np
import pandas as pd
import pytest

from rotrnn.analysis import rescale
from rotrnn.data import sines


def fake_rows(gap_none: float, gap_maker_sum: float, gap_maker_none: float = 0.0, seeds=range(5)):
    """Result rows (accuracy as a fraction) where, for every model and seed, the drop from rate 1 with `none` is
    the drop with `sum` plus ``gap_none`` pp, and on x[::s] the drop with `sum` is ``gap_maker_sum`` pp larger than
    on resampled signals (``gap_maker_none`` for `none`); per-seed noise keeps the intervals finite."""
    rng = np.random.default_rng(0)
    rows = []
    for m in ("rotrnn", "lru"):
        for seed in seeds:
            acc1 = 0.85 + 0.02 * rng.standard_normal()
            rows.append({"model": m, "seed": seed, "split": "test", "factor": 1, "method": "fine", "variant": "exact",
                         "accuracy": acc1, "loss": 0.5})
            for s in (2, 4):
                for meth in ("decimate", "resample"):
                    base = 0.05 + 0.01 * rng.standard_normal()
                    sum_drop = base + (gap_maker_sum / 100 if meth == "decimate" else 0.0)
                    drops = {"sum": sum_drop, "one": sum_drop + 0.03,
                             "none": base + gap_none / 100 + (gap_maker_none / 100 if meth == "decimate" else 0.0)}
                    for v, d in drops.items():
                        rows.append({"model": m, "seed": seed, "split": f"test_{meth[:3]}{s}", "factor": s,
                                     "method": meth, "variant": v, "accuracy": acc1 - d, "loss": 0.5 + d})
    return rows


def section(tmp_path, rows, seeds=5):
    res = {"experiment": "rescale", "suite": "analysis", "task": "sines", "wall_s": 1.0, "rows": rows,
           "settings": {"task": "sines", "smallest_effect": 10, "maker_boundary": 0}}
    plan = types.SimpleNamespace(data=lambda task: {"n_classes": 16})
    ctx = types.SimpleNamespace(require=lambda name: json.loads(json.dumps(res)), out=tmp_path,
                                figures=tmp_path / "figures", plan=plan)
    return rescale.report(ctx)


def test_drops_are_paired_with_the_same_run_at_rate_1():
    rows = pd.DataFrame(fake_rows(30, 5))
    rows["accuracy"] *= 100
    d = rescale.paired_drops(rows)
    fine = rows[rows["split"] == "test"].set_index(["model", "seed"])["accuracy"]
    r = d.iloc[7]
    assert r["acc_drop"] == pytest.approx(fine[r["model"], r["seed"]] - r["accuracy"])
    assert r["loss_drop"] == pytest.approx(r["loss"] - 0.5)
    # none − sum averaged over the four coarse splits: 30 pp by construction
    est = rescale.paired(d, "lru", "acc_drop", {"variant": "none"}, {"variant": "sum"})
    assert est.value == pytest.approx(30.0 - 5.0 / 2) and est.n == 5


@pytest.mark.parametrize("gap, verdict", [(40, "supports"), (-20, "contradicts")])
def test_main_verdict_follows_none_minus_sum_against_the_boundary(tmp_path, gap, verdict):
    sec = section(tmp_path, fake_rows(gap, 0))
    assert sec.verdict.verdict == verdict
    assert f"**{verdict}** (boundary 10 pp)" in sec.answer


def test_maker_comparison_ignores_the_no_rescale_variant(tmp_path):
    # decimation loses 15 pp more than resampling with the power sum; the no-rescale rows say the opposite (−60 pp)
    # and must not enter the second comparison
    sec = section(tmp_path, fake_rows(40, 15, gap_maker_none=-60))
    paired = pd.read_csv(tmp_path / "rescale_paired.csv")
    maker = paired[(paired["comparison"] == "decimate-resample") & (paired["metric"] == "acc_drop")]
    assert len(maker) == 4 and np.allclose(maker["value"], 15.0, atol=2.5)  # ±1 pp noise per split
    assert "x[::s]\" **supports**" in sec.answer


def test_a_missing_boundary_is_named(tmp_path):
    res = {"suite": "analysis", "settings": {"task": "sines"}}
    with pytest.raises(rescale.AnalysisError, match="experiments.rescale.smallest_effect"):
        rescale.setting(res, "smallest_effect")


def test_decimation_folds_a_distractor_onto_the_bands_and_resampling_removes_it():
    t = np.arange(1024)
    x = np.sin(2 * np.pi * 0.3 * t)[None]  # above the Nyquist frequency 0.25 of rate 1/2
    dec, rs = sines.coarse(x, 2, "decimate"), sines.coarse(x, 2, "resample")
    spec = np.abs(np.fft.rfft(dec[0])) ** 2
    # at rate 1/2 the tone appears at 0.5 − 0.3 = 0.2 cycles per fine sample = 0.4 cycles per coarse sample
    assert np.fft.rfftfreq(dec.shape[1])[spec.argmax()] == pytest.approx(0.4, abs=2 / dec.shape[1])
    assert dec.var() == pytest.approx(0.5, rel=0.05) and rs[:, 20:-20].var() < 1e-3


def test_distractors_lie_above_the_bands(tmp_path):
    edges = sines.band_edges(4, 0.02, 0.1)
    x0, y0, _ = sines.draw(np.random.default_rng(0), 8, 512, edges, 1, 0.0)
    x1, y1, _ = sines.draw(np.random.default_rng(0), 8, 512, edges, 1, 0.0, distractors=2,
                           distractor_band=(0.3, 0.4))
    assert (y0 == y1).all()
    spec = np.abs(np.fft.rfft(x1 - x0, axis=1)) ** 2
    f = np.fft.rfftfreq(512)
    assert spec[:, (f > 0.29) & (f < 0.41)].sum() > 0.95 * spec.sum()  # the added power sits in the distractor band
    with pytest.raises(ValueError, match="distractor_band"):
        sines.generate(tmp_path / "a", length=64, f_max=0.1, factors=[2], distractors=1, distractor_band=[0.05, 0.3],
                       n_train=2, n_val=0, n_test=2)
    meta = sines.generate(tmp_path / "b", length=64, f_max=0.1, factors=[2], distractors=1, n_train=2, n_val=0,
                          n_test=2)
    assert meta["generator"]["distractors"] == 1 and meta["preprocessing_version"] == "sines-2"
