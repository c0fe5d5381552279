"""`rotrnn` command line. Each command group lives in its own module and registers its parsers here; heavy imports
happen inside the commands so that `rotrnn --help` stays instant.

One error path: an expected error (:class:`rotrnn.errors.UserError`: bad configuration, missing data, a bad argument,
a run directory in use) prints one line naming the file, key or argument and exits 2, without a traceback; any other
exception is a bug and keeps its traceback."""
from __future__ import annotations

import argparse
import importlib
import sys

# modules exposing register(subparsers): each adds its sub-commands with set_defaults(func=...)
COMMAND_MODULES = [
    "rotrnn.bench.cli",
    "rotrnn.config.cli",
    "rotrnn.data.cli",
    "rotrnn.train.cli",
    "rotrnn.pipeline.cli",
    "rotrnn.report.build",
    "rotrnn.analysis.cli",
]
USER_ERROR_EXIT = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rotrnn", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from rotrnn.errors import UserError
    from rotrnn.train.allocator import keep_freed_memory

    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # the arguments as typed, for a report to name the command that made it (rotrnn bench --out)
    if args.command != "bench":  # the benchmarks decide for themselves (--no-keep-freed-memory compares)
        keep_freed_memory()  # training steps re-fault their large temporaries otherwise (see rotrnn/train/allocator.py)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"rotrnn {args.command}: error: {e}", file=sys.stderr)
        return USER_ERROR_EXIT


if __name__ == "__main__":
    sys.exit(main())
