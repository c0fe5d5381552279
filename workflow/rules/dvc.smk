# DVC versions what Snakemake made: once the suite's (or subset's) outputs exist, `rotrnn pipeline dvc-commit`
# records the matching stages of the suite's DVC file (dvc.yaml for the default suite, workflow/dvc/<suite>/dvc.yaml
# otherwise) in its dvc.lock and caches the prepared data, checkpoints and metrics. Then `dvc status` is clean,
# `dvc repro` reruns nothing and `dvc push` sends them to the remote.
#
# The lock is this rule's output so that Snakemake runs the rule again only when an output is newer than the lock;
# `dvc repro` writes the lock after its stages, so a `snakemake` after `dvc repro` finds nothing to do. It is
# flagged update(): Snakemake would delete a plain output before the job, and with it the records of other stages
# (other subsets, `dvc repro` runs); the update flag keeps it and restores it if the job fails.

TASKS_ARG, MODELS_ARG, SEEDS_ARG = (",".join(map(str, xs)) for xs in (TASKS, MODELS, SEEDS))


rule dvc_commit:
    input:
        [PLAN.prepared_dir(t) for t in TASKS],
        PLAN.tracking_marker(),
        [PLAN.metrics_path(t, m, s) for t, m, s in JOBS],
        report_targets(PLAN.params, SUITE) if ANALYSIS else [PLAN.report_files(), PLAN.figures_dir()],
    output:
        update(PLAN.dvc_lock()),
    log:
        f"logs/{SUITE}/dvc_commit.log",
    shell:
        "rotrnn pipeline dvc-commit --params {PARAMS:q} --suite {SUITE:q} --tasks {TASKS_ARG:q} "
        "--models {MODELS_ARG:q} --seeds {SEEDS_ARG:q} > {log:q} 2>&1"
