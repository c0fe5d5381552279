# Tables and figures from the MLflow store (`rotrnn report`), into the suite's paths.reports.


rule report:
    input:
        [PLAN.metrics_path(t, m, s) for t, m, s in JOBS],
    output:
        PLAN.report_files(),
        directory(PLAN.figures_dir()),
    log:
        f"logs/{SUITE}/report.log",
    shell:
        "rotrnn report --params {PARAMS:q} --suite {SUITE:q} > {log:q} 2>&1"
