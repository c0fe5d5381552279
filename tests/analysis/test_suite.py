"""The analysis suite end to end at a tiny scale (tests/analysis/scaled.py): prepare, train every job, every
`rotrnn analysis` command, the report. Checks the machinery (files, structure, consistency of the answers with the
tables, resumption, MLflow records), never the numbers."""
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from rotrnn.analysis.common import REPORT_STEMS
from rotrnn.cli import main
from rotrnn.pipeline import load_plan

from .scaled import scaled_params

EXPERIMENTS = ["norms", "heads", "rescale", "synthetic", "cost"]


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    # the store is the one params names: no MLFLOW_TRACKING_URI left behind by another test (mlflow.set_tracking_uri
    # exports it); module scope, so the variable stays unset for every test of this module
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        work = tmp_path_factory.mktemp("cwd")
        mp.chdir(work)  # MLflow's SQLite store keeps artifacts under ./mlruns: not in the project
        yield _run_suite(tmp_path_factory)


def _run_suite(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("analysis")
    params = str(scaled_params(tmp))
    plan = load_plan(params, "analysis")
    for task in plan.tasks:
        assert main(["stage", "prepare", "--params", params, "--suite", "analysis", "--task", task, "--fetch"]) == 0
    assert main(["tracking", "init", "--params", params, "--suite", "analysis"]) == 0
    for task, model, seed in plan.jobs():
        assert main(["stage", "train", "--params", params, "--suite", "analysis", "--task", task, "--model", model,
                     "--seed", str(seed)]) == 0, (task, model, seed)
    for name in EXPERIMENTS:
        assert main(["analysis", name, "--params", params]) == 0, name
    assert main(["analysis", "report", "--params", params]) == 0
    return tmp, params, plan


def test_jobs_follow_the_per_task_subsets(suite):
    _, _, plan = suite
    jobs = plan.jobs()
    assert {(t, m) for t, m, _ in jobs if t.startswith("heads")} == {(f"heads{h}", "rotrnn") for h in (1, 4, 16, 64)} | {
        (f"heads{h}_single", "rotrnn") for h in (1, 64)}
    # the verdict's head counts list their own seeds (scaled: the first two of them)
    assert {s for t, _, s in jobs if t == "heads64_single"} == {0, 1}
    assert {s for t, _, s in jobs if t == "listops"} == {0, 1}
    assert {m for t, m, _ in jobs if t == "listops"} == {"rotrnn", "lru"}
    assert {m for t, m, _ in jobs if t == "sines"} == {"rotrnn", "lru", "dlr"}


def test_report_files_and_sections(suite):
    tmp, _, _ = suite
    out = tmp / "reports"
    for name in EXPERIMENTS:
        text = (out / f"{REPORT_STEMS[name]}.md").read_text()
        for head in ("**Question.**", "**Setup.**", "**Seeds.**", "**Wall time.**", "**Answer (read off the data"):
            assert head in text, (name, head)
        assert "No answer" not in text
        assert not re.search(r"\bnan\b", text, re.I), name  # a cell with no measurement reads "–"
        for fig in re.findall(r"\(figures/([^)]+)\)", text):
            assert (out / "figures" / fig).stat().st_size > 0
    for csv in ("norms_ratio.csv", "heads.csv", "rescale.csv", "dlr_tasks.csv", "cost.csv"):
        assert len(pd.read_csv(out / csv)) > 0
    index = (out / "README.md").read_text()
    assert all(f"({REPORT_STEMS[name]}.md)" in index for name in EXPERIMENTS)


def test_answers_are_read_off_the_tables(suite):
    tmp, _, plan = suite
    out = tmp / "reports"
    heads = pd.read_csv(out / "heads.csv")
    text = (out / "heads.md").read_text()
    ok = heads[~heads["failed"]]
    multi = ok[ok["scales"] == "multi"].groupby("n_heads")["unexplained"].median()
    lowest = re.search(r"the median was lowest with (\d+) head\(s\) \((-?[\d.]+)%\)", text)
    assert int(lowest[1]) == multi.idxmin() and float(lowest[2]) / 100 == pytest.approx(multi.min(), abs=1e-4)
    assert f"{int(heads['failed'].sum())} of {len(heads)} runs failed" in text
    u = ok.groupby(["scales", "n_heads"])["unexplained"].mean()
    did = (u["multi", 1] - u["multi", 64]) - (u["single", 1] - u["single", 64])
    stated = re.search(r"The difference of differences is (-?[\d.]+)", text)
    assert float(stated[1]) == pytest.approx(did, abs=2e-4)  # heads.csv keeps 6 significant digits
    assert re.search(r"the data (supports the claim|contradicts the claim|cannot tell)\.", text)
    cost = pd.read_csv(out / "cost.csv")
    # the sequential reference stops at reference_max_length (32 in the scaled suite); every row says how much of
    # the machine other processes took while it was measured
    assert set(cost.loc[cost["backend"] == "naive", "length"]) == {32}
    assert cost["other_cores"].notna().all() and (cost["other_cores"] >= 0).all()
    assert "Other processes used" in (out / "cost.md").read_text()
    # every layer timing has its floor from the same repeat, and the verdict recomputes from those pairs
    from rotrnn.analysis.cost import decide

    cfg = plan.params["suites"]["analysis"]["experiments"]["cost"]
    reps = pd.read_csv(out / "cost_repeats.csv")
    assert (reps.groupby(["layer", "backend", "length"]).size() == cfg["repeats"]).all()
    assert len(reps) == len(cost) * cfg["repeats"] and reps["floor_s"].gt(0).all()
    d = decide(reps, cfg)
    text = (out / "cost.md").read_text()
    assert d["backend"] is not None and f"Verdict: **{d['verdict']}**" in text
    assert f"layer / floor = {d['ratio'].text('{:.2f}')}" in text and f"k = {d['k'].text('{:.2f}')}" in text
    rescale = pd.read_csv(out / "rescale.csv")
    n_models_seeds = len(rescale[["model", "seed"]].drop_duplicates())
    assert len(rescale) == n_models_seeds * (1 + 4 * 3)  # rate 1 + (2 factors x 2 makers) x 3 variants
    dlr = pd.read_csv(out / "dlr_tasks.csv")
    text = (out / "dlr_tasks.md").read_text()
    assert f"{int(dlr['best_at_last'].astype(bool).sum())} of {len(dlr)} runs" in text
    assert any(f"**{v}.**" in text for v in ("supports", "contradicts", "cannot tell"))
    assert (dlr["relative_mse"] - dlr["test/loss"] / dlr["baseline"]).abs().max() < 1e-4
    # norms: the verdict is the combination of its parts in the CSV, and the answer quotes the parts' estimates
    from rotrnn.analysis import stats

    parts = pd.read_csv(out / "norms_verdict.csv")
    text = (out / "norms.md").read_text()
    verdict = stats.combine(list(parts["verdict"]))
    supported = int((parts["verdict"] == "supports").sum())
    assert f"**{verdict}** ({supported} of {len(parts)} parts of the claim supported" in text
    white = parts[(parts["part"] == "level") & (parts["network"] == "deep") & (parts["stage"] == "trained")
                  & (parts["input"] == "white")].iloc[0]
    assert stats.within(stats.Estimate(white["value"], white["lo"], white["hi"], int(white["n"]), True), 0.9,
                        1.1) == white["verdict"]
    assert f"{white['value']:.3g}× [95% CI {white['lo']:.3g}×, {white['hi']:.3g}×], n = {int(white['n'])}" in text
    drift = parts[(parts["part"] == "drift") & (parts["network"] == "deep") & (parts["input"] == "white")].iloc[0]
    assert f"white noise {drift['value']:.3g} [95% CI {drift['lo']:.3g}, {drift['hi']:.3g}]" in text
    # the levels behind the white-noise part: one row per (seed, layer) in the run's CSV, 2 training seeds
    ratio = pd.read_csv(out / "norms_ratio.csv")
    assert set(ratio["n"][ratio["stage"] == "trained"]) == {2}


def test_commands_log_to_mlflow(suite):
    tmp, _, _ = suite
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
    exp = client.get_experiment_by_name("rotrnn-analysis")
    runs = client.search_runs([exp.experiment_id], "tags.analysis != ''")
    assert {r.data.tags["analysis"] for r in runs} == set(EXPERIMENTS)
    assert all(r.info.status == "FINISHED" and "wall_s" in r.data.metrics for r in runs)


def test_rerun_continues_instead_of_repeating(suite):
    tmp, params, plan = suite
    partial = tmp / "runs" / "analysis" / "_experiments" / "cost_partial.json"
    before = json.loads(partial.read_text())
    assert main(["analysis", "cost", "--params", params]) == 0
    after = json.loads(partial.read_text())
    assert after["rows"] == before["rows"]  # every measurement was kept, none taken again
    task, model, seed = plan.jobs()[0]
    metrics = Path(plan.metrics_path(task, model, seed))
    stamp = metrics.stat().st_mtime_ns
    assert main(["stage", "train", "--params", params, "--suite", "analysis", "--task", task, "--model", model,
                 "--seed", str(seed)]) == 0
    assert metrics.stat().st_mtime_ns == stamp  # a finished job is not run again


def test_missing_settings_and_runs_are_named(tmp_path, suite, capsys):
    import yaml

    _, params, _ = suite
    p = yaml.safe_load(Path(params).read_text())
    del p["suites"]["analysis"]["experiments"]["heads"]
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(p))
    assert main(["analysis", "heads", "--params", str(bad)]) == 2
    assert "suites.analysis.experiments has no 'heads' block" in capsys.readouterr().err
    p = yaml.safe_load(Path(params).read_text())
    p["paths"]["runs"] = str(tmp_path / "empty")
    bad.write_text(yaml.safe_dump(p))
    assert main(["analysis", "rescale", "--params", str(bad)]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_a_diverged_run_is_reported_not_fatal(suite):
    """Last in this module (it changes the runs): a heads run that diverged before its first epoch ended (status
    diverged, no best.pt) is counted in the answer, and the other experiments still run."""
    tmp, params, plan = suite
    run = Path(plan.run_dir("heads4", "rotrnn", 1))
    m = json.loads((run / "metrics.json").read_text())
    m.update(status="diverged", best=None)
    (run / "metrics.json").write_text(json.dumps(m))
    (run / "checkpoints" / "best.pt").unlink()
    for name in ("heads", "rescale", "synthetic"):
        assert main(["analysis", name, "--params", params]) == 0, name
    assert main(["analysis", "report", "--params", params]) == 0
    assert "1 run(s) diverged before their first epoch ended" in (tmp / "reports" / "heads.md").read_text()


def test_position_mean_mse_fits_the_training_split_per_position_and_channel(tmp_path):
    """The DLR-task baseline: each (position, channel)'s mean over the training split's scored targets, scored on the
    test split like the loop's objective (squared error averaged over channels, then over scored positions)."""
    import numpy as np

    from rotrnn.analysis.predictions import position_mean_mse

    rng = np.random.default_rng(0)
    masks = {}
    for split, n in (("train", 50), ("test", 7)):
        y = rng.normal(size=(n, 6, 2)) + np.arange(6)[None, :, None] * [1.0, -2.0]  # a mean that moves with t
        masks[split] = rng.random((n, 6)) > 0.3
        np.save(tmp_path / f"{split}.labels.npy", y.astype(np.float32))
        np.save(tmp_path / f"{split}.label_mask.npy", masks[split])
    y_tr = np.load(tmp_path / "train.labels.npy").astype(np.float64)
    y_te = np.load(tmp_path / "test.labels.npy").astype(np.float64)
    mu = np.stack([y_tr[masks["train"][:, t], t].mean(0) for t in range(6)])  # (T, C) over train examples scoring t
    err = [np.mean((y_te[i, t] - mu[t]) ** 2) for i in range(7) for t in range(6) if masks["test"][i, t]]
    assert abs(position_mean_mse(tmp_path) - np.mean(err)) < 1e-9
    # the global mean would charge the positional drift as error: the per-position baseline is far below it
    scored = y_te[masks["test"]]
    assert position_mean_mse(tmp_path) < 0.2 * np.mean((scored - scored.mean(0)) ** 2)
