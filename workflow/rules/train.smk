# Training: one job per task x model x seed, on one GPU on a cluster (the slurm profile sets gpu=1 for this rule).
#
# Requeue: `rotrnn train` checkpoints and exits 75 on SIGTERM/SIGUSR1 (the slurm profile asks Slurm for SIGUSR1
# before the time limit). Snakemake counts exit 75 as a failed attempt and, with `retries`, runs the job again; it
# resumes from checkpoints/last.pt. So the checkpoints are not declared as outputs here: Snakemake deletes a failed
# job's outputs and any declared output before a job starts, which would throw the resume state away. The output is
# metrics.json, written last, which names the best checkpoint; the suite's DVC file tracks the checkpoint folders
# (rule dvc_commit records them).


# Each job's time limit per attempt, host memory and the rule's retries are computed from measurements by
# rotrnn/pipeline/sizing.py (GPU suites: the device report reports/perf/gpu-<gpu>.csv, the split sizes and the epochs;
# CPU suites: their own recorded runs), at the partition's time limit: --config time_limit=MINUTES (default 1440)
# gpu=NAME (default h200). `rotrnn pipeline plan --suite S` prints the same numbers and where they come from.
from rotrnn.pipeline.sizing import DEFAULT_TIME_LIMIT_MIN, retries as retries_for, suite_sizes

TIME_LIMIT = int(config.get("time_limit", DEFAULT_TIME_LIMIT_MIN))
TRAIN_SIZES = {(s.task, s.model, s.seed): s for s in suite_sizes(PLAN, str(config.get("gpu", "h200")), TIME_LIMIT)}


def train_size(wc):
    return TRAIN_SIZES[(wc.task, wc.model, int(wc.seed))]


rule tracking_init:
    # the MLflow store and the suite's experiment, created once before parallel jobs (concurrent first use of a
    # fresh SQLite store breaks its schema migration); the marker names the suite and experiment, not the store, so
    # the training stages DVC records do not depend on where MLflow is
    output:
        PLAN.tracking_marker(),
    log:
        f"logs/{SUITE}/tracking_init.log",
    shell:
        "rotrnn stage tracking --params {PARAMS:q} --suite {SUITE:q} > {log:q} 2>&1"


rule train:
    input:
        data=PLAN.prepared_dir("{task}"),
        tracking=PLAN.tracking_marker(),
    output:
        PLAN.metrics_path("{task}", "{model}", "{seed}"),
    params:
        # rerun a job when its resolved config changes (Snakemake's params trigger; the DVC stage declares the
        # params.yaml keys this digest covers); `rotrnn stage train` then starts it over instead of resuming
        config=lambda wc: PLAN.config_digest(wc.task, wc.model, int(wc.seed)),
    log:
        f"logs/{SUITE}/train/{{task}}-{{model}}-seed{{seed}}.log",
    threads: 1
    # enough attempts for the longest job at the time limit (each resumes from the last one's checkpoint)
    retries: retries_for(TRAIN_SIZES.values())
    resources:
        runtime=lambda wc: train_size(wc).runtime_min,
        mem_mb=lambda wc: train_size(wc).mem_mb,
    shell:
        "rotrnn stage train --params {PARAMS:q} --suite {SUITE:q} --task {wildcards.task:q} "
        "--model {wildcards.model:q} --seed {wildcards.seed:q} > {log:q} 2>&1"
