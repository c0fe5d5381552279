"""`rotrnn bench`: the command group of the benchmarks (`layer`, `step`, `all`, `prepare`); the benchmarks live in
`layer.py`, `step.py` and `prepare.py`, the report that `--out` writes in `report.py`."""
from __future__ import annotations

import argparse
from typing import Any, Callable


def register(sub: argparse._SubParsersAction) -> None:
    from rotrnn.bench.layer import add_layer_arguments
    from rotrnn.bench.prepare import add_prepare_arguments, run_prepare_bench
    from rotrnn.bench.step import add_step_arguments, register_step

    bench = sub.add_parser("bench", help="benchmarks that print figures (no BENCH: layer, then the ListOps and Image steps)")
    bench.add_argument("--no-keep-freed-memory", dest="keep_freed_memory", action="store_false",
                       help="leave glibc's allocator as it is (see rotrnn.train.allocator.keep_freed_memory)")
    bsub = bench.add_subparsers(dest="bench", required=False, metavar="BENCH")
    p = bsub.add_parser("layer", help="layer forward / forward+backward per scan backend vs the matmul floor")
    add_layer_arguments(p)
    add_out_argument(p)
    p.set_defaults(func=command(layer))
    p = register_step(bsub)
    add_out_argument(p)
    p.set_defaults(func=command(step))
    p = bsub.add_parser("prepare", help="`rotrnn data prepare` on raw trees of the upstream sizes: time, memory, "
                        "disk per task (not part of `all`: it writes gigabytes and takes about an hour)")
    add_prepare_arguments(p)
    p.set_defaults(func=run_prepare_bench)
    both = bsub.add_parser("all", help="the layer bench, then the training step bench")
    add_layer_arguments(both)
    add_step_arguments(both)
    add_out_argument(both)
    both.set_defaults(func=command(run_all))

    def default(args: argparse.Namespace) -> int:  # bare `rotrnn bench`: every default of `bench all`
        return command(run_all)(both.parse_args([], argparse.Namespace(keep_freed_memory=args.keep_freed_memory)))

    bench.set_defaults(func=default)


def add_out_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, metavar="FILE",
                   help="also write the whole Markdown report there: header (command, commit, date, wall time, "
                   "machine), the targets read off the figures, then the printed tables")


# a bench: (args, emit) -> its figures under its name; emit prints a line of its tables
Bench = Callable[[argparse.Namespace, Callable[[str], None]], dict[str, Any]]


def layer(args: argparse.Namespace, emit: Callable[[str], None]) -> dict[str, Any]:
    from rotrnn.bench.layer import run_layer_bench

    return {"layer": run_layer_bench(args, emit)}


def step(args: argparse.Namespace, emit: Callable[[str], None]) -> dict[str, Any]:
    from rotrnn.bench.step import run_step_bench

    return {"step": run_step_bench(args, emit)}


def run_all(args: argparse.Namespace, emit: Callable[[str], None]) -> dict[str, Any]:
    return layer(args, emit) | step(args, emit)


def command(bench: Bench) -> Callable[[argparse.Namespace], int]:
    """The command running ``bench``: it prints its tables, and with --out also writes the report."""
    def run(args: argparse.Namespace) -> int:
        if args.out is None:
            bench(args, print)
        else:
            from rotrnn.bench.report import run_with_report

            run_with_report(args, bench)
        return 0

    return run
