"""The analysis suite's keys in the params.yaml schema: typos and wrong values are errors naming file, line and key;
a suite task's models/seeds narrow the jobs and never reach a job's config."""
from pathlib import Path

import pytest

from rotrnn.config import ConfigError, load_params, resolve
from rotrnn.pipeline import load_plan

ROOT = Path(__file__).resolve().parents[2]


def _edited(tmp_path, old, new):
    text = (ROOT / "params.yaml").read_text()
    assert text.count(old) == 1, old
    path = tmp_path / "params.yaml"
    path.write_text(text.replace(old, new))
    return path


@pytest.mark.parametrize("old,new,key,expected", [
    ("        budget_minutes: 12\n        networks:", "        budget_minute: 12\n        networks:",
     "suites.analysis.experiments.norms.budget_minute", "did you mean `budget_minutes`"),
    ("        band: [0.9, 1.1]", "        band: 0.9", "suites.analysis.experiments.norms.band", "should be a list"),
    ("      heads16: {models: [rotrnn],", "      heads16: {models: [rotrn],", "suites.analysis.tasks.heads16.models",
     "unknown model 'rotrn'"),
    ("        reference_max_length: 512", "        reference_max_length: many",
     "suites.analysis.experiments.cost.reference_max_length", "is not an integer"),
    ("    data: {generate: sines,", "    data: {generate: sine,", "tasks.sines.data.generate", "is not one of"),
])
def test_analysis_keys_are_checked(tmp_path, old, new, key, expected):
    with pytest.raises(ConfigError, match=rf"{key}: .*{expected}"):
        load_params(_edited(tmp_path, old, new))


def test_suite_task_subsets_narrow_jobs_not_configs():
    params = load_params(ROOT / "params.yaml")
    plan = load_plan(ROOT / "params.yaml", "analysis")
    assert plan.task_models("heads16") == ["rotrnn"] and plan.task_seeds("listops") == [0, 1, 2]
    assert plan.task_models("shift") == plan.models and plan.task_seeds("shift") == plan.block["seeds"]
    assert plan.task_seeds("sines") == [0, 1, 2, 3, 4]
    # a task may list more seeds than the suite's (the heads verdict's groups): the suite's seeds are then the union
    assert plan.task_seeds("heads1_single") == [0, 1, 2, 3, 4] and set(plan.seeds) >= {0, 1, 2, 3, 4}
    config = resolve(params, "analysis", "listops", "lru", 0)
    assert "models" not in config and "seeds" not in config
    assert config["layer"] == {**config["layer"], "d_state": 128, "r_min": 0.9, "r_max": 0.999}
    assert resolve(params, "analysis", "heads64", "rotrnn", 2)["layer"]["n_heads"] == 64
