"""Experiment 4's decision rules: which tasks count as learned, which rival RotRNN is compared with, the verdict
on "RotRNN's MSE is at most boundary × the better of LRU and DLR", the matched state sizes, the convergence count."""
from pathlib import Path

import pandas as pd
import pytest

from rotrnn.analysis.common import AnalysisError
from rotrnn.analysis.predictions import best_at_last, decide, matched_state, real_state
from rotrnn.pipeline import load_plan

ROOT = Path(__file__).resolve().parents[2]


def _runs(per_task: dict[str, dict[str, list[float]]]) -> pd.DataFrame:
    return pd.DataFrame([{"task": t, "model": m, "seed": s, "test/loss": v}
                         for t, models in per_task.items() for m, vals in models.items() for s, v in enumerate(vals)])


def test_close_to_the_better_rival_supports_and_far_behind_contradicts():
    close = {"rotrnn": [0.0100, 0.0104, 0.0098], "lru": [0.0099, 0.0101, 0.0100], "dlr": [0.05, 0.06, 0.055]}
    rows, cmp, verdict = decide(_runs({"a": close}), {"a": 0.1}, 0.5, 1.5, ["a"])
    assert rows[0]["learned_by"] == ["rotrnn", "lru"] and cmp[0]["rival"] == "lru"
    assert 0.9 < cmp[0]["ratio"].value < 1.1 and cmp[0]["ratio"].ratio and verdict == "supports"
    behind = {"rotrnn": [0.050, 0.052, 0.049], "lru": [0.0099, 0.0101, 0.0100], "dlr": [0.05, 0.06, 0.055]}
    _, cmp, verdict = decide(_runs({"a": close, "b": behind}), {"a": 0.1, "b": 0.1}, 0.5, 1.5, ["a", "b"])
    assert [c["verdict"] for c in cmp] == ["supports", "contradicts"] and verdict == "contradicts"


def test_a_task_at_the_baseline_is_not_compared():
    flat = {m: [0.099, 0.101, 0.1] for m in ("rotrnn", "lru", "dlr")}
    rows, cmp, verdict = decide(_runs({"a": flat}), {"a": 0.1}, 0.5, 1.5, ["a"])
    assert rows[0]["learned_by"] == [] and cmp == [] and verdict == "cannot tell"
    # learned needs the whole interval below the share: one lucky seed does not make a task learned
    wide = {"rotrnn": [0.01, 0.09, 0.1], "lru": [0.1, 0.1, 0.1], "dlr": [0.1, 0.1, 0.1]}
    rows, _, _ = decide(_runs({"a": wide}), {"a": 0.1}, 0.5, 1.5, ["a"])
    assert rows[0]["learned_by"] == []


def test_overlapping_seeds_cannot_tell():
    noisy = {"rotrnn": [0.005, 0.02, 0.01], "lru": [0.01, 0.011, 0.009], "dlr": [0.05, 0.06, 0.055]}
    _, cmp, verdict = decide(_runs({"a": noisy}), {"a": 0.1}, 0.5, 1.5, ["a"])
    assert cmp[0]["ratio"].lo < 1.5 < cmp[0]["ratio"].hi and verdict == "cannot tell"


def test_state_sizes_are_matched_in_the_analysis_suite():
    plan = load_plan(str(ROOT / "params.yaml"), "analysis")
    cfg = plan.params["suites"]["analysis"]["experiments"]["synthetic"]
    for task in cfg["tasks"]:
        assert matched_state(plan, task, "params.yaml", "analysis") == 256
    # DLR keeps d_state complex states per feature: 2 x d_model x d_state real numbers
    assert real_state("dlr", {"layer": {"d_state": 2}, "net": {"d_model": 64}}) == 256
    assert real_state("lru", {"layer": {"d_state": 128}, "net": {"d_model": 64}}) == 256


def test_unmatched_state_is_one_line_naming_the_key(tmp_path):
    import yaml

    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["suites"]["analysis"]["tasks"]["reverse"]["layers"]["dlr"]["d_state"] = 64
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(p))
    with pytest.raises(AnalysisError, match=r"suites\.analysis\.tasks\.reverse\.layers.*'dlr': 8192"):
        matched_state(load_plan(str(path), "analysis"), "reverse", str(path), "analysis")


def test_the_shift_figure_shows_a_lagged_channel():
    import yaml

    from rotrnn.data.synthetic import shifts

    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    suite = p["suites"]["analysis"]
    c = suite["experiments"]["synthetic"]["plot_channels"]["shift"]
    assert shifts(suite["tasks"]["shift"]["data"]["length"], 8)[c] > 0


def test_best_at_last_and_the_last_epoch_gain():
    hist = [{"val/loss": v} for v in (1.0, 0.5, 0.4, 0.38)]
    last, gain = best_at_last(hist)
    assert last and gain == pytest.approx(0.05)
    last, gain = best_at_last(hist + [{"val/loss": 0.39}])
    assert not last and gain == 0.0
