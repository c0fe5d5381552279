"""`rotrnn stage ...` and `rotrnn pipeline ...`: the commands the Snakemake rules and DVC stages call."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from rotrnn.errors import UserError
from rotrnn.pipeline import stages
from rotrnn.pipeline.plan import Plan, load_plan


def register(sub: argparse._SubParsersAction) -> None:
    stage = sub.add_parser("stage", help="pipeline stages (called by Snakemake and DVC)",
                           description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ssub = stage.add_subparsers(dest="stage", required=True, metavar="STAGE")

    def common(p: argparse.ArgumentParser, task: bool = True) -> None:
        p.add_argument("--suite", default=None, help="suite in params.yaml (default: its `suite:` key)")
        p.add_argument("--params", default="params.yaml", help="configuration file (default: %(default)s)")
        if task:
            p.add_argument("--task", required=True)

    p = ssub.add_parser("raw", help="fixture, generated or downloaded raw tree of one task (+ completion marker)")
    common(p)
    p.add_argument("--mirror", default=os.environ.get("ROTRNN_DATA_MIRROR"),
                   help="local directory or base URL holding the archives (default: $ROTRNN_DATA_MIRROR)")
    p.set_defaults(func=_cmd_raw)

    p = ssub.add_parser("prepare", help="prepared data of one task in paths.prepared/SUITE/TASK")
    common(p)
    p.add_argument("--fetch", action="store_true", help="run the raw stage first when the task has one "
                   "(DVC runs both as one stage per task)")
    p.add_argument("--mirror", default=os.environ.get("ROTRNN_DATA_MIRROR"))
    p.set_defaults(func=_cmd_prepare)

    p = ssub.add_parser("tracking", help="the suite's MLflow experiment, once before the training jobs (+ marker)")
    common(p, task=False)
    p.set_defaults(func=_cmd_tracking)

    p = ssub.add_parser("train", help="one training job (resumes; exit 75 = checkpointed, run again)")
    common(p)
    p.add_argument("--model", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--device", default=None)
    p.set_defaults(func=_cmd_train)

    p = ssub.add_parser("jobs", help="the suite's task/model/seed jobs")
    common(p, task=False)
    p.add_argument("--format", choices=["lines", "json"], default="lines",
                   help="lines: 'task model seed' per job; json: jobs and every stage path")
    p.set_defaults(func=_cmd_jobs)

    pipe = sub.add_parser("pipeline", help="the DVC files of the suites and DVC's record of what Snakemake made")
    psub = pipe.add_subparsers(dest="pipeline_command", required=True, metavar="COMMAND")
    p = psub.add_parser("dvc-yaml", help="write each suite's dvc.yaml from params.yaml and the plan",
                        description="Write the DVC file of a suite (default: every suite of params.yaml): dvc.yaml "
                        "for the default suite, workflow/dvc/<suite>/dvc.yaml for the others.")
    p.add_argument("--suite", default=None, help="one suite (default: all)")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--check", action="store_true", help="write nothing; exit 2 naming every file that differs")
    p.set_defaults(func=_cmd_dvc_yaml)

    p = psub.add_parser("plan", help="what a suite costs on a cluster, per job and in total; --check: the preflight",
                        description="Per training job and in total: steps, estimated wall time and GPU-hours, Slurm "
                        "attempts at the time limit, memory, and the disk that prepared data, checkpoints and the "
                        "MLflow store take, each with the report (and commit) it comes from (rotrnn/pipeline/"
                        "sizing.py). --check refuses what would fail on the cluster.")
    p.add_argument("--suite", default=None)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--gpu", default="h200", help="the device report reports/perf/gpu-GPU.csv (default: %(default)s)")
    p.add_argument("--time-limit", type=int, default=None, metavar="MIN",
                   help="the partition's time limit in minutes (default: 1440; `sinfo -o '%%P %%l'`)")
    p.add_argument("--profile", default="profiles/slurm", help="the Slurm profile folder (default: %(default)s)")
    p.add_argument("--check", action="store_true", help="preflight: exit 2 naming the first problem")
    p.set_defaults(func=_cmd_plan)

    p = psub.add_parser("dvc-commit", help="record in the suite's dvc.lock the stages whose outputs Snakemake made",
                        description="Record (`dvc commit`) the suite's DVC stages of a Snakemake run: the prepare "
                        "stages of its tasks, the tracking stage, the training stages of its jobs, and the report "
                        "stage once every training job of the suite has its metrics. The suite's DVC file must be "
                        "the generated one. Called by the Snakemake rule dvc_commit.")
    p.add_argument("--suite", default=None)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--tasks", default=None, help="comma-separated subset (default: the suite's)")
    p.add_argument("--models", default=None)
    p.add_argument("--seeds", default=None)
    p.set_defaults(func=_cmd_dvc_commit)


def _plan(args: argparse.Namespace) -> Plan:
    return load_plan(args.params, args.suite)


def _data_errors():
    """Errors of the data stages that are the user's to fix (a missing archive, a malformed raw file: the message
    names the file); anything else is a bug and keeps its traceback."""
    from rotrnn.data.download import DownloadError

    return (FileNotFoundError, ValueError, DownloadError)


def _cmd_raw(args: argparse.Namespace) -> int:
    plan = _plan(args)
    try:
        raw = stages.stage_raw(plan, args.task, args.mirror)
    except UserError:
        raise
    except _data_errors() as e:
        raise UserError(str(e)) from e
    print(f"{args.task}: raw tree ready in {raw}")
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    plan = _plan(args)
    try:
        if args.fetch and plan.raw_kind(args.task) is not None:
            stages.stage_raw(plan, args.task, args.mirror)
        meta = stages.stage_prepare(plan, args.task)
    except UserError:
        raise
    except _data_errors() as e:
        raise UserError(str(e)) from e
    print(f"{args.task}: prepared {plan.prepared_dir(args.task)}: splits {meta['splits']}, "
          f"checksum {meta['checksum'][:16]}")
    return 0


def _cmd_tracking(args: argparse.Namespace) -> int:
    plan = _plan(args)
    info = stages.stage_tracking(plan)
    print(f"MLflow store {info['uri']}: experiment {info['experiment']!r} (id {info['id']}); marker "
          f"{plan.tracking_marker()}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    return stages.stage_train(_plan(args), args.task, args.model, args.seed, args.device)


def _cmd_jobs(args: argparse.Namespace) -> int:
    plan = _plan(args)
    jobs = plan.jobs()
    if args.format == "lines":
        for t, m, s in jobs:
            print(t, m, s)
        return 0
    doc = {
        "suite": plan.suite, "tasks": plan.tasks, "models": plan.models, "seeds": plan.seeds,
        "raw": {t: plan.raw_dir(t) for t in plan.tasks}, "prepared": {t: plan.prepared_dir(t) for t in plan.tasks},
        "jobs": [{"task": t, "model": m, "seed": s, "metrics": plan.metrics_path(t, m, s)} for t, m, s in jobs],
        "reports": plan.report_files(),
    }
    print(json.dumps(doc, indent=2))
    return 0


def _cmd_dvc_yaml(args: argparse.Namespace) -> int:
    from rotrnn import atomic
    from rotrnn.pipeline import dvcfile

    if args.check:
        problems = dvcfile.stale(args.params)
        if args.suite:
            plan = _plan(args)
            problems = [p for p in problems if p.startswith(plan.dvc_file() + ":")]
        if problems:
            raise UserError("; ".join(problems) + f" (run `{dvcfile.COMMAND}`)")
        print("DVC files up to date")
        return 0
    plans = [_plan(args)] if args.suite else list(dvcfile.suite_files(args.params).values())
    for plan in plans:
        path = Path(plan.dvc_file())
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(path, dvcfile.render(plan))
        print(f"{path}: suite {plan.suite}, {len(dvcfile.stages(plan))} stages")
    return 0


def _cmd_dvc_commit(args: argparse.Namespace) -> int:
    from rotrnn.pipeline import dvcfile

    plan = _plan(args)
    committed = dvcfile.commit(plan, _subset(args.tasks, plan.tasks), _subset(args.models, plan.models),
                               _subset(args.seeds, plan.seeds, int))
    print(f"{plan.dvc_lock()}: recorded {len(committed)} stages: {' '.join(committed)}")
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from rotrnn.config.layers import check_plan
    from rotrnn.pipeline import cost, sizing

    plan = _plan(args)
    check_plan(plan)
    limit = args.time_limit or sizing.DEFAULT_TIME_LIMIT_MIN
    sizes = sizing.suite_sizes(plan, args.gpu, limit)
    if args.check:
        from rotrnn.train.tracking import tracking_uri
        from rotrnn.config import suite_tracking

        sizing.preflight(plan, sizes, sizing.slurm_profile(args.profile), args.profile,
                         tracking_uri(suite_tracking(plan.params, plan.suite)["uri"]))
        print(f"preflight: suite {plan.suite}: {len(sizes)} jobs fit {sizing.retries(sizes) + 1} attempts of at "
              f"most {limit} min; partition set; MLflow store not on a network filesystem")
        return 0
    print(cost.render(plan, sizes, args.gpu, limit, sizing.slurm_profile(args.profile).get("jobs", 50)
                      if Path(args.profile, "config.yaml").is_file() else 50))
    return 0


def _subset(value: str | None, allowed: list, cast=str) -> list:
    if value is None:
        return list(allowed)
    chosen = [cast(v.strip()) for v in value.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in allowed]
    if unknown:
        raise UserError(f"{unknown} not in the suite ({', '.join(map(str, allowed))})")
    return [v for v in allowed if v in chosen]
