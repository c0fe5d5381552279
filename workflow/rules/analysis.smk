# The analysis suite's experiments (`rotrnn analysis <name>`, rotrnn/analysis/) and its report, for a suite with an
# `experiments:` block (suites.analysis). Each experiment reads the finished training runs of its tasks (their
# metrics.json are its inputs) and writes its result JSON last, under paths.runs/<suite>/_experiments/; what it keeps
# along the way (the cost sweep's cost_partial.json) is not declared, so an interrupted experiment continues where it
# stopped when the same `snakemake` command runs again. `rotrnn analysis report` writes paths.reports (Markdown, CSV,
# figures) from those results.
import json

from rotrnn.analysis.common import (EXPERIMENTS, REPORT_STEMS, experiment_tasks, result_path, settings)

if ANALYSIS:

    def _experiment_inputs(wc):
        tasks = set(experiment_tasks(PLAN.params, SUITE, wc.experiment))
        return [PLAN.metrics_path(t, m, s) for t, m, s in JOBS if t in tasks] + [PLAN.tracking_marker()]

    rule analysis:
        input:
            _experiment_inputs,
        output:
            str(result_path(PLAN.params, SUITE, "{experiment}")),
        wildcard_constraints:
            experiment="|".join(EXPERIMENTS),
        params:
            # rerun an experiment when its settings change (Snakemake's params trigger)
            settings=lambda wc: json.dumps(settings(PLAN.params, SUITE, wc.experiment), sort_keys=True),
        log:
            f"logs/{SUITE}/analysis/{{experiment}}.log",
        # the cost sweep times layers with the threads its settings name and must have the machine to itself
        threads: lambda wc: int(settings(PLAN.params, SUITE, "cost").get("threads", 2)) if wc.experiment == "cost" else 1
        shell:
            "OMP_NUM_THREADS={threads} rotrnn analysis {wildcards.experiment:q} --params {PARAMS:q} "
            "--suite {SUITE:q} > {log:q} 2>&1"

    rule analysis_report:
        input:
            [str(result_path(PLAN.params, SUITE, name)) for name in EXPERIMENTS],
        output:
            report_targets(PLAN.params, SUITE),
        log:
            f"logs/{SUITE}/analysis/report.log",
        shell:
            "rotrnn analysis report --params {PARAMS:q} --suite {SUITE:q} > {log:q} 2>&1"
