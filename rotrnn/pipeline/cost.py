"""`rotrnn pipeline plan`: a suite's cost on a cluster as text, from the job sizes of :mod:`rotrnn.pipeline.sizing`:
per (task, model) and in total the estimated wall time, GPU-hours, Slurm attempts and memory; the suite's wall
time with the profile's concurrent jobs; the disk that prepared data, checkpoints and the MLflow store take; and
where each figure comes from."""
from __future__ import annotations

import heapq
import json
from pathlib import Path

from rotrnn.pipeline import sizing
from rotrnn.pipeline.plan import Plan

CHECKPOINT_COPIES = 2     # last.pt and best.pt
STATE_PER_PARAM = 3 * 4   # float32 weights and Adam's two moments
MLFLOW_ROW_BYTES = 200    # one metric value in MLflow's SQLite store, indexes included: not measured
LOGGED_METRICS = 4        # per log step: loss, accuracy, learning rate, throughput


def suite_wall_min(sizes: list[sizing.JobSize], slots: int) -> float:
    """Wall time of the jobs on ``slots`` concurrent jobs (longest first, each on the slot free first)."""
    free = [0.0] * max(1, slots)
    for s in sorted(sizes, key=lambda s: -s.estimate_min):
        heapq.heappush(free, heapq.heappop(free) + s.estimate_min)
    return max(free)


def parameter_count(plan: Plan, task: str, model: str) -> int | None:
    """Trainable parameters of the job's model, built on the CPU from the prepared meta.json or the task's shape
    (rotrnn.bench.step.TASK_DATA); None where neither is known."""
    from rotrnn.bench.step import TASK_DATA

    path = Path(plan.prepared_dir(task)) / "meta.json"
    if path.is_file():
        meta = json.loads(path.read_text())
    elif task in TASK_DATA:
        spec = TASK_DATA[task]
        meta = {"task": task, "kind": spec["kind"], "l_max": spec["l_max"], "target": "class",
                "n_classes": spec["n_classes"], "loss": "cross_entropy"}
        meta.update({"vocab_size": spec["vocab_size"]} if spec["kind"] == "tokens" else {"in_dim": spec["in_dim"]})
    else:
        return None
    from rotrnn.train.loop import build_model

    return sum(p.numel() for p in build_model(plan.config(task, model, plan.task_seeds(task)[0]), meta).parameters())


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def render(plan: Plan, sizes: list[sizing.JobSize], gpu: str, limit: int, slots: int) -> str:
    out = [f"Suite {plan.suite}: {len(sizes)} training jobs, time limit {limit} min per attempt, {slots} jobs at once "
           f"(safety factor {sizing.SAFETY}, evaluation at {sizing.EVAL_COST:.2f} of a training example, "
           f"{sizing.STARTUP_MIN}+{sizing.SIGNAL_MIN} min per attempt to start and checkpoint)", ""]
    gpu_suite = any(s.gpu for s in sizes)
    out.append("| task | model | jobs | steps | estimate h | attempts x limit min | mem GB | GPU-h |")
    out.append("|---|---|---|---|---|---|---|---|")
    groups: dict[tuple[str, str], list[sizing.JobSize]] = {}
    for s in sizes:
        groups.setdefault((s.task, s.model), []).append(s)
    for (task, model), group in groups.items():
        s = group[0]
        out.append(f"| {task} | {model} | {len(group)} | {s.steps} | {s.estimate_min / 60:.2f} | {s.attempts} x "
                   f"{s.runtime_min} | {s.mem_mb / 1000:.1f} | {sum(g.gpu_hours for g in group):.1f} |")
    total_h = sum(s.estimate_min for s in sizes) / 60
    out += ["", f"Total: {sum(s.gpu_hours for s in sizes):.1f} GPU-hours" if gpu_suite else
            f"Total: {total_h:.2f} CPU job-hours (no GPU)",
            f"Wall time with {slots} jobs at once: {suite_wall_min(sizes, slots) / 60:.1f} h (queue waits not "
            f"included); Snakemake retries for rule train: {sizing.retries(sizes)} "
            f"({sizing.SPARE_ATTEMPTS} spare for preemption)", ""]
    # disk
    prep, prep_source = sizing.prepare_costs(plan)
    prepared = [(t, prep.get(t)) for t in plan.tasks]
    known = [int(r["prepared_bytes"]) for _, r in prepared if r and r.get("prepared_bytes")]
    missing = [t for t, r in prepared if not (r and r.get("prepared_bytes"))]
    out.append("Disk:")
    out.append(f"- prepared data: {_gb(sum(known))} for {len(known)} task(s) ({prep_source})"
               + (f"; not measured at this size: {', '.join(missing)}" if missing else ""))
    jobs_h = [(t, r) for t, r in prepared if r and r.get("wall_s")]
    if jobs_h:
        out.append("- preparation jobs: " + ", ".join(
            f"{t} {float(r['wall_s']) / 60:.0f} min / {float(r['peak_rss_mb']) / 1000:.1f} GB" for t, r in jobs_h)
            + f" ({prep_source}, 2 cores)")
    ckpt, unknown = 0, set()
    for (task, model), group in groups.items():
        n = parameter_count(plan, task, model)
        if n is None:
            unknown.add(task)
        else:
            ckpt += n * STATE_PER_PARAM * CHECKPOINT_COPIES * len(group)
    out.append(f"- checkpoints: {_gb(ckpt)} (parameters of each model built at its config x {STATE_PER_PARAM} bytes "
               f"x {CHECKPOINT_COPIES} files)" + (f"; not estimated: {', '.join(sorted(unknown))}" if unknown else ""))
    rows = 0
    for s in sizes:
        tcfg = plan.config(s.task, s.model, s.seed)["train"]
        rows += s.steps // max(1, int(tcfg["log_every"])) * LOGGED_METRICS + int(tcfg["epochs"]) * 3 * 2
    out.append(f"- MLflow store: {_gb(rows * MLFLOW_ROW_BYTES)} ({rows} metric values x {MLFLOW_ROW_BYTES} bytes, "
               "not measured)")
    out += ["", "Sources:"]
    what: dict[str, list[str]] = {}
    for s in sizes:
        for source, gives in s.sources:
            if gives not in what.setdefault(source, []):
                what[source].append(gives)
    out += [f"- {source}: {'; '.join(gives)}" for source, gives in what.items()]
    if gpu_suite and any(s.model != "rotrnn" for s in sizes):
        out.append("- LRU and DLR jobs use RotRNN's measured step time (the device check measures RotRNN only)")
    return "\n".join(out)
