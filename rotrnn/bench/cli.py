"""`rotrnn bench`: the command group of the benchmarks (`layer`, `step`, `all`, `prepare`); the benchmarks live in
`layer.py`, `step.py` and `prepare.py`."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from rotrnn.bench.layer import add_layer_arguments, run_layer_bench
    from rotrnn.bench.prepare import add_prepare_arguments, run_prepare_bench
    from rotrnn.bench.step import add_step_arguments, register_step

    bench = sub.add_parser("bench", help="benchmarks that print figures (no BENCH: layer, then the ListOps and Image steps)")
    bench.add_argument("--no-keep-freed-memory", dest="keep_freed_memory", action="store_false",
                       help="leave glibc's allocator as it is (see rotrnn.train.allocator.keep_freed_memory)")
    bsub = bench.add_subparsers(dest="bench", required=False, metavar="BENCH")
    p = bsub.add_parser("layer", help="layer forward / forward+backward per scan backend vs the matmul floor")
    add_layer_arguments(p)
    p.set_defaults(func=run_layer_bench)
    register_step(bsub)
    p = bsub.add_parser("prepare", help="`rotrnn data prepare` on raw trees of the upstream sizes: time, memory, "
                        "disk per task (not part of `all`: it writes gigabytes and takes about an hour)")
    add_prepare_arguments(p)
    p.set_defaults(func=run_prepare_bench)
    both = bsub.add_parser("all", help="the layer bench, then the training step bench")
    add_layer_arguments(both)
    add_step_arguments(both)
    both.set_defaults(func=run_all)

    def default(args: argparse.Namespace) -> int:  # bare `rotrnn bench`: every default of `bench all`
        return run_all(both.parse_args([], argparse.Namespace(keep_freed_memory=args.keep_freed_memory)))

    bench.set_defaults(func=default)


def run_all(args: argparse.Namespace) -> int:
    from rotrnn.bench.layer import run_layer_bench
    from rotrnn.bench.step import run_step_bench

    return run_layer_bench(args) or run_step_bench(args)
