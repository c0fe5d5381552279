"""`rotrnn report`: regenerate a suite's tables (Markdown, LaTeX, CSV) and figures from MLflow."""
from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

from rotrnn.atomic import write_text
from rotrnn.errors import UserError
from rotrnn.report.provenance import write_provenance

if TYPE_CHECKING:  # pandas and matplotlib load inside the command, so `rotrnn --help` stays instant
    import pandas as pd

SMOKE_WARNING = ("**Smoke suite:** tiny models trained for a few steps on fixture and small generated data. "
                 "These numbers test the pipeline; they say nothing about the paper's results.")


def run_command(params: dict, suite: str) -> str:
    """The one command that produces a suite's runs: downloaded data and the paper's sizes need a GPU cluster."""
    if params["suites"][suite].get("data") == "download":
        return f"snakemake --profile slurm --config suite={suite}"
    return f"snakemake --config suite={suite}"


def _csv(path: Path, table: pd.DataFrame, suite: str, n_runs: int) -> None:
    write_text(path, table.assign(suite=suite, runs_in_suite=n_runs).to_csv(index=False, float_format="%.6g"))


def build_reports(params_path: str | Path, suite: str | None = None, out: str | Path | None = None,
                  uri: str | None = None) -> list[Path]:
    from rotrnn.report import figures
    from rotrnn.report.runs import load_runs, load_runs_empty
    from rotrnn.report.tables import lra_table, speech_table, synthetic_table, to_latex, to_markdown
    from rotrnn.config import load_params, suite_name, suite_paths, suite_tracking
    from rotrnn.train.tracking import experiment_name, git_commit, tracking_uri

    params = load_params(params_path)
    suite = suite_name(params, suite, str(params_path))
    s = params["suites"][suite]
    tasks = list(s["tasks"])
    tracking = suite_tracking(params, suite)
    uri = uri or tracking_uri(tracking["uri"])
    experiment = experiment_name({"suite": suite, "tracking": tracking})
    out = Path(out or suite_paths(params, suite)["reports"])
    (out / "figures").mkdir(parents=True, exist_ok=True)

    try:
        runs = load_runs(uri, experiment)
    except LookupError:  # no run of the suite yet: the tables still show the published rows, and say so
        runs = load_runs_empty()
    runs = runs[runs["task"].isin(tasks)]
    n = len(runs)
    n_finished = int((runs["status"] == "finished").sum())
    n_diverged = n - n_finished
    diverged_text = f" and {n_diverged} diverged (shown as such, not averaged)" if n_diverged else ""
    commit = git_commit()
    synthetic = [t for t in tasks if (params["tasks"][t].get("data") or {}).get("generate") == "synthetic"]
    header_lines = [
        f"Suite `{suite}`: {n_finished} finished runs{diverged_text} in MLflow experiment `{experiment}` "
        f"(models {', '.join(s.get('models', []))}; seeds {s.get('seeds', [])}). "
        f"Regenerated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC by `rotrnn report --suite {suite}` at "
        f"commit {commit[:12]}.",
        "This pipeline: the test figure at the best validation epoch, mean ± std over seeds (number of runs); "
        "published rows are cited from the papers, not run here.",
    ]
    if n == 0:
        header_lines.append(f"**No `{suite}` suite run exists yet:** the rows of this pipeline (RotRNN, LRU, DLR) are "
                            f"empty (–) until its runs finish. They are produced by `{run_command(params, suite)}` "
                            "(README, Pipeline), which trains every job and regenerates these tables.")
    if suite == "smoke":
        header_lines.append(SMOKE_WARNING)
    header = "\n\n".join(header_lines)
    written: list[Path] = []

    lra = lra_table(runs)
    write_text(out / "lra.md", to_markdown(lra, f"Long Range Arena test accuracy (%), suite `{suite}`", header))
    write_text(out / "lra.tex", to_latex(lra, f"LRA test accuracy (%), suite {suite}, {n} runs; mean ± std over seeds "
                                     "(runs). Rows marked † are published numbers.", f"tab:lra-{suite}"))
    _csv(out / "lra.csv", lra, suite, n)
    written += [out / "lra.md", out / "lra.tex", out / "lra.csv"]

    speech = speech_table(runs)
    write_text(out / "speech_commands.md", to_markdown(
        speech, f"Speech Commands 35 test accuracy (%), 16 kHz and 8 kHz zero-shot, suite `{suite}`",
        header + "\n\n8 kHz: the 16 kHz model evaluated on every second sample with the layers' exact `step=2` "
        "rescaling; 8 kHz resampled: the same, on the test set resampled to 8 kHz with torchaudio's band-limited "
        "resampling instead of decimation."))
    write_text(out / "speech_commands.tex", to_latex(
        speech, f"Speech Commands 35 test accuracy (%), trained at 16 kHz, zero-shot at 8 kHz; suite {suite}, {n} "
        "runs. Rows marked † are published numbers (unconfirmed citations).", f"tab:sc-{suite}"))
    _csv(out / "speech_commands.csv", speech, suite, n)
    written += [out / "speech_commands.md", out / "speech_commands.tex", out / "speech_commands.csv"]

    syn = synthetic_table(runs, synthetic)
    write_text(out / "synthetic.md", to_markdown(syn, f"DLR synthetic tasks, suite `{suite}`",
                                             header + "\n\nCells: test MSE (regression tasks).", "{:.4g}"))
    _csv(out / "synthetic.csv", syn, suite, n)
    written += [out / "synthetic.md", out / "synthetic.csv"]

    for task in tasks:
        metric = runs.loc[runs["task"] == task, "metric"]
        select = "loss" if len(metric) and (metric == "loss").all() else "accuracy"
        for path in (figures.learning_curves(uri, runs, task, select, out / "figures"),
                     figures.state_norms(uri, runs, task, out / "figures")):
            if path is not None:
                written.append(path)
    runs_csv = out / "runs.csv"
    _csv(runs_csv, runs, suite, n)
    written.append(runs_csv)
    provenance = {"suite": suite, "command": f"rotrnn report --suite {suite}", "commit": commit,
                  "generated_utc": f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M}", "runs": n,
                  "experiment": experiment, "runs_command": run_command(params, suite)}
    written.append(write_provenance(out, provenance, written))
    return written


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="regenerate a suite's tables and figures from MLflow")
    p.add_argument("--suite", default=None, help="suite in params.yaml (default: params.yaml's `suite`)")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--out", default=None, help="output directory (default: the suite's paths.reports)")
    p.add_argument("--tracking-uri", default=None, help="MLflow store (default: $MLFLOW_TRACKING_URI or params)")
    p.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    try:
        written = build_reports(args.params, args.suite, args.out, args.tracking_uri)
    except LookupError as e:
        raise UserError(str(e.args[0] if e.args else e)) from e
    for p in written:
        print(p)
    if args.out is None:  # the suite's own folder: refresh the index of every suite's reports
        from rotrnn.report.index import write_index

        print(write_index(args.params))
    return 0
