"""`rotrnn` command line. Each command group lives in its own module and registers its parsers here; heavy imports
happen inside the commands so that `rotrnn --help` stays instant."""
from __future__ import annotations

import argparse
import importlib
import sys

# modules exposing register(subparsers): each adds its sub-commands with set_defaults(func=...)
COMMAND_MODULES = [
    "rotrnn.bench",
    "rotrnn.data.cli",
    "rotrnn.train.cli",
    "rotrnn.pipeline",
    "rotrnn.report.build",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rotrnn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
