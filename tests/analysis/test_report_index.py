"""reports/analysis/README.md quotes the measured wall time of the Snakemake command that made the results (from
the Snakefile's start record to the last experiment's end), says when that command resumed an earlier one, and
never quotes a time the records cannot support."""
import datetime as dt
import json
from types import SimpleNamespace

from rotrnn.analysis.common import EXPERIMENTS, record_start, result_path, write_result
from rotrnn.analysis.report import measured_wall


def _ctx(tmp_path):
    params = {"paths": {"runs": str(tmp_path / "runs"), "reports": str(tmp_path / "reports")},
              "suites": {"analysis": {}}}

    def result(name):
        path = result_path(params, "analysis", name)
        return json.loads(path.read_text()) if path.is_file() else None

    return SimpleNamespace(params=params, suite="analysis", result=result)


class _Plan:
    def __init__(self, tmp_path, done):
        self.params, self.suite, self.tmp, self.done = _ctx(tmp_path).params, "analysis", tmp_path, done

    def jobs(self):
        return [("task", "rotrnn", s) for s in range(4)]

    def metrics_path(self, task, model, seed):
        run = self.tmp / "runs" / "analysis" / task / model / str(seed)
        run.mkdir(parents=True, exist_ok=True)
        if seed < self.done:
            (run / "metrics.json").write_text(json.dumps({"status": "finished"}))
        return str(run / "metrics.json")


def _shift(path, minutes):
    """Move a record's stamp back in time (the clock cannot be waited on in a test)."""
    data = json.loads(path.read_text())
    key = "started_utc" if "started_utc" in data else "finished_utc"
    data[key] = (dt.datetime.fromisoformat(data[key]) - dt.timedelta(minutes=minutes)).isoformat()
    path.write_text(json.dumps(data))


def test_wall_time_runs_from_the_start_record_to_the_last_experiment(tmp_path):
    ctx = _ctx(tmp_path)
    start = record_start(_Plan(tmp_path, done=0), "snakemake --config suite=analysis")
    _shift(start, 61.5)
    for i, name in enumerate(EXPERIMENTS):
        write_result(result_path(ctx.params, "analysis", name), {"experiment": name})
        _shift(result_path(ctx.params, "analysis", name), 10 * (len(EXPERIMENTS) - 1 - i))  # the last one ends now
    text = measured_wall(ctx, 3000.0)
    assert "`snakemake --config suite=analysis`: **61.5 min**" in text
    assert "from nothing" in text and "50.0 min" in text


def test_a_resumed_command_says_what_was_already_done(tmp_path):
    ctx = _ctx(tmp_path)
    write_result(result_path(ctx.params, "analysis", "cost"), {"experiment": "cost"})
    record_start(_Plan(tmp_path, done=3), "snakemake --config suite=analysis")
    for name in EXPERIMENTS:
        write_result(result_path(ctx.params, "analysis", name), {"experiment": name})
    text = measured_wall(ctx, 60.0)
    assert "resumed with 3 of 4 training jobs and 1 of 5 experiments already done" in text


def test_no_start_record_or_older_results_quote_no_time(tmp_path):
    ctx = _ctx(tmp_path)
    for name in EXPERIMENTS:
        write_result(result_path(ctx.params, "analysis", name), {"experiment": name})
    assert "not recorded (no Snakemake start record)" in measured_wall(ctx, 60.0)
    record_start(_Plan(tmp_path, done=0), "snakemake")  # a later start: the results predate it
    for name in EXPERIMENTS:
        _shift(result_path(ctx.params, "analysis", name), 5)
    assert "not recorded (the results predate the last start record)" in measured_wall(ctx, 60.0)


def test_an_unreadable_start_record_quotes_no_time(tmp_path):
    """A start record with a key missing or a date that is not one (torn, or written by something else) gives the
    'not recorded' line naming why, never a traceback."""
    ctx = _ctx(tmp_path)
    start = record_start(_Plan(tmp_path, done=0), "snakemake")
    for name in EXPERIMENTS:
        write_result(result_path(ctx.params, "analysis", name), {"experiment": name})
    good = json.loads(start.read_text())
    for broken in ({k: v for k, v in good.items() if k != "jobs"}, good | {"started_utc": "yesterday"},
                   good | {"jobs_done_before": None}):
        start.write_text(json.dumps(broken))
        assert "not recorded (the start or end records are unreadable" in measured_wall(ctx, 60.0)
