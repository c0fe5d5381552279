"""`rotrnn analysis report`: reports/analysis/ from the analysis suite's results and training runs.

One Markdown file per experiment (question, setup, seeds, wall time against its budget, the answer, tables,
figures), its tables as CSV, figures under figures/, and README.md with the index. Every answer is a template filled
from the numbers at report time: nothing in these files is written before the data is in. An experiment whose
results are missing gets a section saying so, naming the command that makes them.
"""
from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from rotrnn import atomic
from rotrnn.analysis.sections import Section, table_md
from rotrnn.analysis.common import EXPERIMENTS, REPORT_STEMS, result_path, results_dir, settings, training_runs
from rotrnn.machine import machine

# experiment -> (title, question)
QUESTIONS = {
    "norms": ("State-norm stability, RotRNN vs LRU",
              "Does RotRNN keep the hidden state's norm per head at its closed form 1 − γ^{2t} over time, depth "
              "and training, on white noise and on the real activations of a network, and more steadily than the "
              "LRU?"),
    "heads": ("Multi-head ablation",
              "With the total state size fixed, does splitting RotRNN's state into more heads (one decay γ each) "
              "help on a task that needs several time scales at once (leaky integrators with three time constants), "
              "and not on a control task with one time constant?"),
    "rescale": ("Zero-shot change of sampling rate",
                "Trained at rate 1, how well do RotRNN, LRU and DLR classify the same signals at rate 1/2 and 1/4, "
                "with the exact power-sum rescale, the transition power alone or no rescale, on decimated or "
                "band-limited resampled signals?"),
    "synthetic": ("DLR's synthetic tasks at CPU scale",
                  "At matched state size, is RotRNN's test MSE close to the better of LRU and DLR on those of DLR's "
                  "tasks (shift, cumsum, reverse, context_shift) that some model learns at a length that trains on 2 "
                  "CPU cores?"),
    "cost": ("Cost against sequence length",
             "How do forward and forward+backward time and memory of the RotRNN, LRU and DLR layers grow with "
             "length, per scan backend, against the memory-bound floor (the six projection matmuls plus one read "
             "and write of the state sequence)?"),
}


class MissingResult(LookupError):
    """An experiment's result file is not there yet: its report section says so."""


@dataclass
class Context:
    params: dict[str, Any]
    params_path: str
    suite: str
    plan: Any
    out: Path
    results: Path

    @property
    def figures(self) -> Path:
        return self.out / "figures"

    def settings(self, name: str) -> dict[str, Any]:
        return settings(self.params, self.suite, name, self.params_path)

    def result(self, name: str) -> dict[str, Any] | None:
        from rotrnn.analysis.common import read_result

        path = result_path(self.params, self.suite, name)
        return read_result(path) if path.is_file() else None

    def require(self, name: str) -> dict[str, Any]:
        """The experiment's result; MissingResult (the report says so) when it has not run."""
        res = self.result(name)
        if res is None:
            raise MissingResult(f"{result_path(self.params, self.suite, name)} is missing")
        return res

    def jobs_wall(self, tasks: list[str]) -> tuple[float, int, int]:
        """(Σ job wall seconds, finished jobs, planned jobs) over the suite's jobs of ``tasks``."""
        done = [r["wall_s"] for r in training_runs(self.plan, tasks) if not math.isnan(r["wall_s"])]
        return float(sum(done)), len(done), sum(t in tasks for t, _, _ in self.plan.jobs())


def _wall_line(ctx: Context, sec: Section, budget_min: float | None) -> tuple[str, float]:
    train_s, done, planned = ctx.jobs_wall(sec.train_tasks)
    # on 2 cores the pipeline runs two one-thread jobs at a time; a command with 2 threads has the machine alone
    two_core = train_s / 2 + sec.command_s * (1 if sec.command_threads >= 2 else 0.5)
    parts = []
    if sec.train_tasks:
        parts.append(f"training jobs {train_s / 60:.1f} min summed over {done}/{planned} jobs")
    parts.append(f"`rotrnn analysis {sec.name}` {sec.command_s:.0f} s")
    line = "; ".join(parts) + f"; about {two_core / 60:.1f} min of 2-core wall time"
    if budget_min is not None:
        line += f" (budget {budget_min:g} min{', over budget' if two_core / 60 > budget_min else ''})"
    return line, two_core


def _missing(ctx: Context, name: str, why: str) -> Section:
    return Section(name, "–", "–", f"No answer: {why}. Run `rotrnn analysis {name} --suite {ctx.suite}` "
                   "(or `snakemake --config suite=" + ctx.suite + "`).")


def build(params_path: str = "params.yaml", suite: str = "analysis", out: str | Path | None = None) -> list[Path]:
    from rotrnn.analysis import cost, heads, norms, predictions, rescale
    from rotrnn.pipeline import load_plan
    from rotrnn.train.tracking import git_commit

    plan = load_plan(params_path, suite)
    params = plan.params
    out = Path(out or plan.reports_dir)
    ctx = Context(params, str(params_path), suite, plan, out, results_dir(params, suite))
    ctx.figures.mkdir(parents=True, exist_ok=True)
    makers: dict[str, Callable[[Context], Section]] = {
        "norms": norms.report, "heads": heads.report, "rescale": rescale.report,
        "synthetic": predictions.report, "cost": cost.report}
    full_commit = git_commit()  # before this command writes anything (its own outputs would mark the tree dirty)
    commit = full_commit[:12]
    stamp = f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC"
    written: list[Path] = []
    index_rows, undecided = [], []
    total = 0.0
    for name in EXPERIMENTS:
        title, question = QUESTIONS[name]
        try:
            sec = makers[name](ctx)
        except MissingResult as e:
            sec = _missing(ctx, name, str(e))
        budget = ctx.settings(name).get("budget_minutes")
        wall, two_core = _wall_line(ctx, sec, budget)
        total += two_core
        v = sec.verdict
        verdict_lines = ([f"**Claim.** {v.claim}", f"**Verdict: {v.verdict}.** {v.effect}"]
                         + ([f"**Not decided at this budget.** {v.undecided}"] if v.undecided else [])) if v else []
        text = "\n\n".join([
            f"# {title}",
            f"Suite `{suite}`, regenerated {stamp} by `rotrnn analysis report` at commit {commit}.",
            f"**Question.** {question}", *verdict_lines, f"**Setup.** {sec.setup}", f"**Seeds.** {sec.seeds}",
            f"**Wall time.** {wall}.", f"**Answer (read off the data below).** {sec.answer}", *sec.body]) + "\n"
        path = out / f"{REPORT_STEMS[name]}.md"
        atomic.write_text(path, text)
        written += [path, *sec.files]
        link = f"[{title}]({REPORT_STEMS[name]}.md)"
        index_rows.append({"experiment": link, "paper's claim": v.claim if v else "–",
                           "verdict": f"**{v.verdict}**" if v else "no result",
                           "effect (95% interval over seeds)": v.effect if v else sec.answer,
                           "2-core wall (min)": f"{two_core / 60:.1f}",
                           "budget (min)": "–" if budget is None else f"{budget:g}"})
        if v and v.undecided:
            undecided.append(f"- {link}: {v.undecided}")
    index = "\n\n".join([
        "# Analysis suite: what 2 CPU cores can settle about RotRNN",
        f"Suite `{suite}` of params.yaml, regenerated {stamp} by `rotrnn analysis report` at commit {commit}; "
        f"machine: {machine()}. Every number below comes from this suite's runs (MLflow experiment "
        f"`rotrnn-{suite}`, result files in `{ctx.results}`); every verdict is computed from those numbers when "
        "the report is written (rotrnn/analysis/stats.py: *supports* when the whole 95% interval lies where the "
        "claim puts the effect, *contradicts* when it lies where the claim does not, *cannot tell* otherwise; each "
        "claim's boundary is declared in params.yaml next to its experiment).",
        measured_wall(ctx, total),
        table_md(pd.DataFrame(index_rows)),
        *(["## What this suite cannot decide on 2 cores", "\n".join(undecided)] if undecided else [])]) + "\n"
    atomic.write_text(out / "README.md", index)
    written = [out / "README.md", *written]
    # the record reports/README.md (rotrnn.report.index) is written from, as `rotrnn report` leaves one
    from rotrnn.report.provenance import write_provenance
    from rotrnn.train.tracking import experiment_name

    provenance = {"suite": suite, "command": f"rotrnn analysis report --suite {suite}", "commit": full_commit,
                  "generated_utc": stamp.removesuffix(" UTC"),
                  "runs": sum(Path(plan.metrics_path(*job)).is_file() for job in plan.jobs()),
                  "experiment": experiment_name({"suite": suite, "tracking": params["tracking"]}),
                  "runs_command": f"snakemake --config suite={suite}", "runs_commits": run_commits(plan, params, suite)}
    return [*written, write_provenance(out, provenance, written)]


def measured_wall(ctx: Context, estimate_s: float) -> str:
    """The measured wall time of the `snakemake` command that made the results: from its start (recorded by the
    Snakefile's onstart, rotrnn.analysis.common.record_start) to the last experiment's end (each result records when
    it finished); and whether that command resumed an earlier one."""
    from rotrnn.analysis.common import read_start

    start = read_start(ctx.params, ctx.suite)
    ends = [r.get("finished_utc") for r in (ctx.result(n) for n in EXPERIMENTS) if r]
    est = f"the sum of the experiments' 2-core estimates below is {estimate_s / 60:.1f} min"
    if start is None or not ends or not all(ends):
        return f"Measured wall time of the whole suite: not recorded (no Snakemake start record); {est}."
    try:
        t0, t1 = dt.datetime.fromisoformat(start["started_utc"]), max(dt.datetime.fromisoformat(e) for e in ends)
        done, results, jobs, command = (int(start[k]) if k != "command" else str(start[k])
                                        for k in ("jobs_done_before", "results_before", "jobs", "command"))
    except (KeyError, TypeError, ValueError) as e:  # a record torn or written by something else: no figure from it
        return (f"Measured wall time of the whole suite: not recorded (the start or end records are unreadable: "
                f"{type(e).__name__} {e}); {est}.")
    if t1 < t0:
        return f"Measured wall time of the whole suite: not recorded (the results predate the last start record); {est}."
    what = (f"resumed with {done} of {jobs} training jobs and {results} of {len(EXPERIMENTS)} experiments already "
            "done, so it covers the rest only" if done or results
            else "from nothing: every training job and experiment ran in it")
    return (f"Measured wall time of `{command}`: **{(t1 - t0).total_seconds() / 60:.1f} min** (started "
            f"{t0:%Y-%m-%d %H:%M:%S} UTC, last experiment finished {t1:%H:%M:%S} UTC; {what}); {est}.")


def run_commits(plan, params: dict[str, Any], suite: str) -> list[str]:
    """The commits the suite's finished training runs were made at (their MLflow runs' git_commit tags)."""
    from mlflow.tracking import MlflowClient

    from rotrnn.config import suite_tracking
    from rotrnn.train.tracking import tracking_uri

    ids = []
    for job in plan.jobs():
        path = Path(plan.metrics_path(*job))
        if path.is_file():
            ids.append(json.loads(path.read_text()).get("mlflow_run_id"))
    client, commits = MlflowClient(tracking_uri=tracking_uri(suite_tracking(params, suite).get("uri"))), set()
    for run_id in filter(None, ids):
        try:
            commits.add(client.get_run(run_id).data.tags.get("git_commit", "unknown"))
        except Exception:  # a run recorded in another store: its commit is not known here
            commits.add("unknown")
    return sorted(commits)
