"""`rotrnn config check` and `rotrnn config show`: params.yaml's validation by hand, and one job's resolved config."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="validate params.yaml or print a job's resolved config")
    csub = p.add_subparsers(dest="config_command", required=True)
    c = csub.add_parser("check", help="validate params.yaml and every job of a suite (default: every suite)")
    c.add_argument("--params", default="params.yaml")
    c.add_argument("--suite", default=None)
    c.set_defaults(func=_check)
    s = csub.add_parser("show", help="print one job's resolved config as YAML")
    s.add_argument("--params", default="params.yaml")
    s.add_argument("--suite", default=None, help="default: params.yaml's `suite:`")
    s.add_argument("--task", required=True)
    s.add_argument("--model", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    s.set_defaults(func=_show)


def _check(args: argparse.Namespace) -> int:
    from rotrnn.config.layers import check_plan, load_params
    from rotrnn.pipeline.plan import load_plan

    params = load_params(args.params)
    for suite in [args.suite] if args.suite else list(params["suites"]):
        plan = load_plan(args.params, suite)
        check_plan(plan)
        full = len(plan.tasks) * len(plan.models) * len(plan.seeds)
        narrowed = "" if full == len(plan.jobs()) else ", some tasks narrowed to fewer models or seeds"
        print(f"{args.params}: suite {suite}: {len(plan.jobs())} jobs ({len(plan.tasks)} tasks × "
              f"{len(plan.models)} models × {len(plan.seeds)} seeds{narrowed}) valid")
    return 0


def _show(args: argparse.Namespace) -> int:
    import yaml

    from rotrnn.config.layers import load_params, resolve

    config = resolve(load_params(args.params), args.suite, args.task, args.model, args.seed, args.overrides,
                     source=args.params)
    print(yaml.safe_dump(config, sort_keys=False), end="")
    return 0
