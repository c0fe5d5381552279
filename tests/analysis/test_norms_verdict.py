"""Experiment 1's verdict rules on made-up levels: each part of the claim, the pairing of a trained network with its
own initialisation, and the combination."""
import numpy as np
import pandas as pd

from rotrnn.analysis import stats
from rotrnn.analysis.norms import drifts, verdict_parts


def _levels(rot_trained_real: float, lru_trained: float, layers: int = 2) -> pd.DataFrame:
    """Per-seed ratios for one 'deep' network: 10 init seeds (0..9; 0..2 trained), 3 trained seeds, white and real;
    RotRNN at 1 ± 1% except its trained real ratio; the LRU at 1 except its trained ratio (both inputs)."""
    rng = np.random.default_rng(0)
    rows = []
    for model in ("rotrnn", "lru"):
        for stage, seeds in (("init", range(10)), ("trained", range(3))):
            for s in seeds:
                for inp in ("white", "real"):
                    for ell in range(layers):
                        r = 1.0
                        if stage == "trained" and model == "rotrnn" and inp == "real":
                            r = rot_trained_real
                        if stage == "trained" and model == "lru":
                            r = lru_trained
                        r *= float(np.exp(rng.normal(0, 0.01)))
                        rows.append({"network": "deep", "model": model, "stage": stage, "seed": s, "input": inp,
                                     "layer": ell, "level": r, "closed": 1.0, "ratio": r,
                                     "trained": stage == "trained" or s < 3})
    return pd.DataFrame(rows)


def _by(parts, **key):
    return [p for p in parts if all(p[k] == v for k, v in key.items())]


def test_a_normalisation_that_holds_is_supported():
    parts = verdict_parts(_levels(1.0, 1.3), ["deep"], (0.9, 1.1))
    assert len(parts) == 2 * (1 + 2) + 2  # (white + 2 layers) x 2 stages, 2 drifts
    assert stats.combine([p["verdict"] for p in parts]) == "supports"
    white = _by(parts, part="drift", input="white")[0]["est"]
    assert white.hi < 0 and abs(white.value + np.log(1.3)) < 0.02  # RotRNN drifts ~0, the LRU log 1.3
    assert _by(parts, part="level", stage="init", input="white")[0]["est"].n == 10


def test_a_level_outside_the_band_contradicts():
    parts = verdict_parts(_levels(4.0, 1.3), ["deep"], (0.9, 1.1))
    real = _by(parts, part="level", stage="trained", input="real")
    assert [p["verdict"] for p in real] == ["contradicts", "contradicts"]
    assert stats.combine([p["verdict"] for p in parts]) == "contradicts"


def test_equal_drifts_cannot_tell():
    parts = verdict_parts(_levels(1.0, 1.0), ["deep"], (0.9, 1.1))
    assert _by(parts, part="drift", input="white")[0]["verdict"] == "cannot tell"


def test_drift_pairs_each_trained_network_with_its_own_initialisation():
    lv = _levels(1.0, 1.0, layers=1)
    sel = (lv["model"] == "lru") & (lv["input"] == "white")
    lv.loc[sel & (lv["stage"] == "init") & (lv["seed"] == 1), "ratio"] = 2.0  # seed 1's own init only
    d = drifts(lv, "deep", "lru", "white")
    assert list(d.index) == [0, 1, 2]
    assert abs(d[1] - np.log(2)) < 0.05 and d[0] < 0.05 and d[2] < 0.05  # init seeds 3..9 play no part
