"""`rotrnn report` on a populated MLflow store: the expected rows, columns and numbers, and readable figures."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient
from PIL import Image

from rotrnn.report.build import build_reports

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"
LRA = ["listops", "imdb", "aan", "cifar", "pathfinder", "pathx"]


def add_run(client, exp, task, model, seed, best, metric="accuracy", status="FINISHED", layers=2, epochs=3,
            extra_tags=None):
    run = client.create_run(exp, run_name=f"{task}/{model}/{seed}")
    rid = run.info.run_id
    tags = {"task": task, "model": model, "seed": str(seed), "metric": metric, **(extra_tags or {})}
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, 10 * epochs) for k, v in best.items()]
    for e in range(1, epochs + 1):
        metrics.append(Metric("val/accuracy" if metric == "accuracy" else "val/loss", 0.1 * e + 0.01 * seed, now, 10 * e))
        for i in range(layers):
            metrics.append(Metric(f"state_norm/layer_{i}", (1.0 if model == "rotrnn" else 10.0 * (i + 1)) + 0.01 * e,
                                  now, 10 * e))
    client.log_batch(rid, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])
    client.set_terminated(rid, status=status)
    return rid


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("rotrnn-smoke")
    rng = np.random.default_rng(0)
    truth = {}
    for task in LRA + ["speech35"]:
        for model in ("rotrnn", "lru", "dlr"):
            if model == "dlr" and task == "pathx":
                continue  # DLR misses Path-X: no average for it
            for seed in (0, 1):
                acc, acc8 = rng.uniform(0.3, 0.9), rng.uniform(0.2, 0.8)
                best = {"best/test/accuracy": acc, "best/val/accuracy": acc}
                if task == "speech35":
                    best["best/test_8k/accuracy"] = acc8
                add_run(client, exp, task, model, seed, best)
                truth[task, model, seed] = (acc, acc8)
    for model in ("rotrnn", "lru", "dlr"):
        for seed in (0, 1):
            mse = rng.uniform(0.01, 0.1)
            add_run(client, exp, "cumsum", model, seed, {"best/test/loss": mse, "best/val/loss": mse}, metric="loss")
            truth["cumsum", model, seed] = (mse, None)
    # diverged runs (FAILED with the tag the training loop sets) are results: shown, not averaged
    diverged = {"diverged_at_step": "7"}
    for model, seed, status in (("rotrnn", 0, "d"), ("rotrnn", 1, "d"), ("lru", 0, "f"), ("lru", 1, "d")):
        if status == "d":
            add_run(client, exp, "shift", model, seed, {}, metric="loss", status="FAILED", extra_tags=diverged)
        else:
            add_run(client, exp, "shift", model, seed, {"best/test/loss": 0.25, "best/val/loss": 0.25}, metric="loss")
    # a failed run and an older duplicate must not count
    add_run(client, exp, "listops", "rotrnn", 0, {"best/test/accuracy": 0.0}, status="FAILED")
    # newest finished run per task/model/seed wins: re-run seed 1 of cifar/lru
    time.sleep(0.01)
    add_run(client, exp, "cifar", "lru", 1, {"best/test/accuracy": 0.5, "best/val/accuracy": 0.5})
    truth["cifar", "lru", 1] = (0.5, None)
    out = root / "reports"
    written = build_reports(PARAMS, "smoke", out, uri)
    return {"uri": uri, "out": out, "truth": truth, "written": written}


def test_diverged_runs_are_shown_not_averaged(store):
    text = (store["out"] / "synthetic.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    cells = {m: [c.strip() for c in rows[m].split("|")[1:-1]] for m in ("RotRNN", "LRU")}
    header = [c.strip() for c in rows["model"].split("|")[1:-1]]
    shift = header.index("shift")
    assert cells["RotRNN"][shift] == "diverged (2/2 seeds)"
    assert cells["LRU"][shift] == "0.25 (1), diverged (1/2 seeds)"


def test_lra_table_rows_columns_numbers(store):
    df = pd.read_csv(store["out"] / "lra.csv")
    truth = store["truth"]
    ours = df[df["source"] == "this pipeline"]
    assert list(dict.fromkeys(ours["model"])) == ["RotRNN", "LRU", "DLR"]
    assert list(dict.fromkeys(df["column"])) == ["ListOps", "Text", "Retrieval", "Image", "Pathfinder", "Path-X", "Avg"]
    for model, key in (("RotRNN", "rotrnn"), ("LRU", "lru")):
        for task, col in zip(LRA, ["ListOps", "Text", "Retrieval", "Image", "Pathfinder", "Path-X"]):
            vals = np.array([truth[task, key, s][0] for s in (0, 1)]) * 100
            row = ours[(ours["model"] == model) & (ours["column"] == col)].iloc[0]
            assert row["mean"] == pytest.approx(vals.mean(), rel=1e-5)
            assert row["std"] == pytest.approx(vals.std(ddof=1), rel=1e-4)
            assert row["n"] == 2
        avg = ours[(ours["model"] == model) & (ours["column"] == "Avg")].iloc[0]["mean"]
        expected = np.mean([np.mean([truth[t, key, s][0] for s in (0, 1)]) * 100 for t in LRA])
        assert avg == pytest.approx(expected, rel=1e-5)
    dlr = ours[ours["model"] == "DLR"].set_index("column")
    assert dlr.loc["Path-X", "n"] == 0 and math.isnan(dlr.loc["Path-X", "mean"]) and math.isnan(dlr.loc["Avg", "mean"])
    s5 = df[df["model"] == "S5"].set_index("column")
    assert s5.loc["ListOps", "mean"] == 62.15 and s5.loc["Avg", "mean"] == pytest.approx(87.46, abs=0.01)
    assert df[df["model"] == "S5"]["source"].iloc[0].startswith("published")
    assert (df["suite"] == "smoke").all()


def test_markdown_states_suite_runs_and_marks_published(store):
    md = (store["out"] / "lra.md").read_text()
    n_finished = len(store["truth"]) + 1  # + the one finished shift run
    assert f"Suite `smoke`: {n_finished} finished runs and 3 diverged" in md
    assert "Smoke suite:" in md and "say nothing about the paper" in md
    header = next(line for line in md.splitlines() if line.startswith("| model"))
    assert header.split(" | ")[2:9] == ["ListOps", "Text", "Retrieval", "Image", "Pathfinder", "Path-X", "Avg"]
    rot = next(line for line in md.splitlines() if line.startswith("| RotRNN"))
    v = np.array([store["truth"]["listops", "rotrnn", s][0] for s in (0, 1)]) * 100
    assert f"{v.mean():.2f} ± {v.std(ddof=1):.2f} (2)" in rot
    assert "| LRU | published: Orvieto et al. 2023, Table 3 |" in md
    tex = (store["out"] / "lra.tex").read_text()
    assert r"\begin{tabular}" in tex and r"S5$^\dagger$" in tex and r"$\pm$" in tex


def test_speech_and_synthetic_tables(store):
    truth = store["truth"]
    sc = pd.read_csv(store["out"] / "speech_commands.csv")
    row8 = sc[(sc["model"] == "RotRNN") & (sc["column"] == "8kHz")].iloc[0]
    assert row8["mean"] == pytest.approx(np.mean([truth["speech35", "rotrnn", s][1] for s in (0, 1)]) * 100, rel=1e-5)
    assert set(sc["column"]) == {"16kHz", "8kHz", "8kHz resampled"}
    syn = pd.read_csv(store["out"] / "synthetic.csv")
    row = syn[(syn["model"] == "LRU") & (syn["column"] == "cumsum")].iloc[0]
    assert row["mean"] == pytest.approx(np.mean([truth["cumsum", "lru", s][0] for s in (0, 1)]), rel=1e-5)
    assert row["note"] == "test MSE"
    shift = syn[syn["column"] == "shift"]
    # RotRNN: both seeds diverged; LRU: one finished, one diverged; DLR: no runs, shown as missing, not invented
    assert shift["n"].tolist() == [0, 1, 0] and shift["diverged"].tolist() == [2, 1, 0]


def test_figures_are_images(store):
    figs = sorted(p for p in store["written"] if p.suffix == ".png")
    names = {p.name for p in figs}
    assert "learning_curves_listops.png" in names and "state_norm_listops.png" in names
    assert "learning_curves_cumsum.png" in names
    for p in figs:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 100


def test_no_run_yet_writes_published_rows_and_says_so(tmp_path):
    """A suite with no run (no experiment in the store): the tables still hold the published rows, this pipeline's
    rows are empty, and the header says no run exists and names the one command that produces them."""
    out = tmp_path / "r"
    build_reports(PARAMS, "paper", out, f"sqlite:///{tmp_path / 'empty.db'}")
    md = (out / "lra.md").read_text()
    assert "No `paper` suite run exists yet" in md
    assert "`snakemake --profile slurm --config suite=paper`" in md
    assert "Suite `paper`: 0 finished runs" in md
    lra = pd.read_csv(out / "lra.csv")
    ours = lra[lra["source"] == "this pipeline"]
    assert list(dict.fromkeys(ours["model"])) == ["RotRNN", "LRU", "DLR"]
    assert ours["mean"].isna().all() and (ours["n"] == 0).all() and (lra["runs_in_suite"] == 0).all()
    s5 = lra[lra["model"] == "S5"].set_index("column")
    assert s5.loc["ListOps", "mean"] == 62.15
    speech = pd.read_csv(out / "speech_commands.csv")
    assert speech[speech["source"] == "this pipeline"]["mean"].isna().all()
    assert (speech[speech["model"] == "S5"]["mean"] == [96.52, 94.53]).all()
    assert "No `paper` suite run exists yet" in (out / "speech_commands.md").read_text()
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["runs"] == 0 and prov["command"] == "rotrnn report --suite paper"
    assert prov["runs_command"] == "snakemake --profile slurm --config suite=paper"


def test_committed_paper_tables_are_what_the_command_writes(tmp_path):
    """reports/ holds the paper suite's tables as `rotrnn report --suite paper` wrote them: while the committed
    record says no run exists, regenerating from an empty store gives the same CSVs byte for byte and the same
    Markdown (the line naming time and commit aside); and reports/README.md indexes every suite's folder."""
    root = PARAMS.parent
    prov = json.loads((root / "reports/provenance.json").read_text())
    assert prov["suite"] == "paper"
    if prov["runs"] == 0:
        out = tmp_path / "r"
        build_reports(PARAMS, "paper", out, f"sqlite:///{tmp_path / 'empty.db'}")
        for name in ("lra.csv", "speech_commands.csv", "synthetic.csv", "runs.csv"):
            assert (out / name).read_text() == (root / "reports" / name).read_text(), name
        for name in ("lra.md", "speech_commands.md"):
            def body(text):
                return [line for line in text.splitlines() if not line.startswith("Suite `paper`:")]
            assert body((out / name).read_text()) == body((root / "reports" / name).read_text()), name
    index = (root / "reports/README.md").read_text()
    assert "## Suite `paper`: `reports/`" in index and f"at commit `{prov['commit']}`" in index
    assert "[lra.md](lra.md)" in index
    smoke = root / "reports/smoke/provenance.json"
    if smoke.is_file():
        sp = json.loads(smoke.read_text())
        assert f"at commit `{sp['commit']}`" in index and "[smoke/lra.md](smoke/lra.md)" in index
        for fig in (f for f in sp["files"] if f.startswith("figures/")):
            assert f"(smoke/{fig})" in index and (root / "reports/smoke" / fig).is_file()
