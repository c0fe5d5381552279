"""`rotrnn analysis ...`: the analysis suite's experiments that are not plain training runs, and its report.

    rotrnn analysis norms     --suite analysis     state norms over time, depth and training (experiment 1)
    rotrnn analysis heads     --suite analysis     learned γ per head of the multi-head ablation (experiment 2)
    rotrnn analysis rescale   --suite analysis     zero-shot sampling-rate change, three rescale variants (experiment 3)
    rotrnn analysis synthetic --suite analysis     prediction vs target on DLR's tasks (experiment 4)
    rotrnn analysis cost      --suite analysis     time and memory against length (experiment 5)
    rotrnn analysis report    --suite analysis     reports/analysis/: Markdown, CSV, figures

Settings: ``suites.<suite>.experiments.<name>`` in params.yaml. Results: ``paths.runs/<suite>/_experiments/``.
Errors (bad settings, a missing run or result) print one line naming the file, key or run and exit 2.
"""
from __future__ import annotations

import argparse

COMMANDS = {
    "norms": "state norms over time, depth and training, RotRNN vs LRU (experiment 1)",
    "heads": "learned decays and test MSE of the multi-head ablation (experiment 2)",
    "rescale": "zero-shot change of sampling rate: rescale variants x coarse-signal makers (experiment 3)",
    "synthetic": "prediction vs target on DLR's synthetic tasks (experiment 4)",
    "cost": "forward / forward+backward time and memory against length, per backend (experiment 5)",
}

MODULES = {"synthetic": "predictions"}  # experiment -> module of rotrnn.analysis, where the names differ


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analysis", help="the analysis suite's experiments and report", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    asub = p.add_subparsers(dest="analysis_command", required=True, metavar="EXPERIMENT")
    for name, help_ in COMMANDS.items():
        c = asub.add_parser(name, help=help_)
        _common(c)
        if name == "cost":
            c.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
        c.set_defaults(func=_run, experiment=name)
    r = asub.add_parser("report", help="write the suite's reports (Markdown, CSV, figures) from the results")
    _common(r)
    r.add_argument("--out", default=None, help="output directory (default: the suite's paths.reports)")
    r.set_defaults(func=_report)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", default="analysis", help="suite in params.yaml (default: %(default)s)")
    p.add_argument("--params", default="params.yaml", help="configuration file (default: %(default)s)")


def _run(args: argparse.Namespace) -> int:
    import importlib

    from rotrnn.analysis.common import settings
    from rotrnn.config import load_params

    params = load_params(args.params)
    cfg = settings(params, args.suite, args.experiment, args.params)
    module = importlib.import_module(f"rotrnn.analysis.{MODULES.get(args.experiment, args.experiment)}")
    if args.experiment == "cost":
        result = module.run(params, args.suite, cfg, args.device)
    else:
        result = module.run(params, args.suite, cfg, args.params)
    print(f"{args.experiment}: done in {result['wall_s']:.1f} s")
    return 0


def _report(args: argparse.Namespace) -> int:
    from rotrnn.analysis.report import build

    written = build(args.params, args.suite, args.out)
    for p in written:
        print(p)
    if args.out is None:  # the suite's own folder: refresh the index of every suite's reports
        from rotrnn.report.index import write_index

        print(write_index(args.params))
    return 0
