# Training: one job per task x model x seed, on one GPU on a cluster (the slurm profile sets gpu=1 for this rule).
#
# Requeue: `rotrnn train` checkpoints and exits 75 on SIGTERM/SIGUSR1 (the slurm profile asks Slurm for SIGUSR1
# before the time limit). Snakemake counts exit 75 as a failed attempt and, with `retries`, runs the job again; it
# resumes from checkpoints/last.pt. So the checkpoints are not declared as outputs here: Snakemake deletes a failed
# job's outputs and any declared output before a job starts, which would throw the resume state away. The output is
# metrics.json, written last, which names the best checkpoint; the suite's DVC file tracks the checkpoint folders
# (rule dvc_commit records them).


# One attempt's wall time (minutes) and host memory (MB) per task for the paper suite on one GPU. Starting points
# sized from the epochs and dataset sizes in params.yaml, not measured: a job that runs out of time checkpoints on
# SIGUSR1 and continues in its next attempt, so a short limit costs a requeue, not the run.
PAPER_TRAIN_RESOURCES = {
    "listops": (360, 16000),
    "imdb": (360, 16000),
    "aan": (720, 24000),
    "cifar": (720, 16000),
    "pathfinder": (720, 24000),
    "pathx": (1440, 48000),
    "speech35": (720, 32000),
    "cumsum": (240, 16000),
    "shift": (240, 16000),
}
SMOKE_TRAIN_RESOURCES = (15, 2000)


def train_resources(task):
    if SUITE == "smoke":
        return SMOKE_TRAIN_RESOURCES
    return PAPER_TRAIN_RESOURCES.get(task, (720, 32000))


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
    retries: 3
    resources:
        runtime=lambda wc: train_resources(wc.task)[0],
        mem_mb=lambda wc: train_resources(wc.task)[1],
    shell:
        "rotrnn stage train --params {PARAMS:q} --suite {SUITE:q} --task {wildcards.task:q} "
        "--model {wildcards.model:q} --seed {wildcards.seed:q} > {log:q} 2>&1"
