"""`rotrnn data ...`: download, prepare, fixtures and generators (the commands the pipeline calls).

    rotrnn data download TASK --raw-root DIR [--mirror DIR_OR_URL]
    rotrnn data prepare TASK --raw-root DIR --out DIR
    rotrnn data fixtures OUT [--tasks a,b,..] [--seed S]          (writes OUT/<task>/ raw trees)
    rotrnn data generate listops --out RAWDIR [--n-train 96000 --n-val 2000 --n-test 2000 --seed S ...]
    rotrnn data generate synthetic --task NAME --out DIR [--length L --n-train .. --n-val .. --n-test .. --seed S]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _task_names() -> list[str]:
    from rotrnn.data.tasks import TASKS

    return list(TASKS)


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="download, prepare, fixtures and generators for the datasets")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    tasks = _task_names()

    p = dsub.add_parser("download", help="fetch a task's archive (resumable, checksummed) and unpack it")
    p.add_argument("task", choices=tasks)
    p.add_argument("--raw-root", required=True, type=Path, help="where the archive is kept and unpacked")
    p.add_argument("--mirror", default=None, help="local directory or base URL holding the archive")
    p.add_argument("--retries", type=int, default=5)
    p.set_defaults(func=cmd_download)

    p = dsub.add_parser("prepare", help="raw tree -> prepared arrays + meta.json")
    p.add_argument("task", choices=tasks)
    p.add_argument("--raw-root", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=cmd_prepare)

    p = dsub.add_parser("fixtures", help="tiny raw trees in the exact upstream layouts, one folder per task")
    p.add_argument("out", type=Path)
    p.add_argument("--tasks", default=",".join(tasks), help="comma-separated subset (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_fixtures)

    p = dsub.add_parser("generate", help="offline generators")
    gsub = p.add_subparsers(dest="generator", required=True, metavar="GENERATOR")
    g = gsub.add_parser("listops", help="LRA ListOps TSVs (the real task, generated offline)")
    g.add_argument("--out", required=True, type=Path, help="raw root; TSVs go to lra_release/lra_release/listops-1000")
    g.add_argument("--n-train", type=int, default=96_000)
    g.add_argument("--n-val", type=int, default=2_000)
    g.add_argument("--n-test", type=int, default=2_000)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--min-length", type=int, default=500, help="exclusive lower bound on tokens (LRA 500)")
    g.add_argument("--max-length", type=int, default=2000, help="exclusive upper bound on tokens (LRA 2000)")
    g.add_argument("--max-depth", type=int, default=10)
    g.add_argument("--max-args", type=int, default=10)
    g.set_defaults(func=cmd_generate_listops)

    g = gsub.add_parser("synthetic", help="DLR's synthetic sequence tasks, written as prepared data")
    # names checked when the command runs (importing the generator here would slow down `rotrnn --help`)
    g.add_argument("--task", required=True, help="shift, cumsum, cummax, reverse, sort, context_shift, "
                   "masked_select, masked_select_fixed, solve, solve_fixed or mips")
    g.add_argument("--out", required=True, type=Path)
    g.add_argument("--length", type=int, default=4096, help="DLR's L (input length depends on the task)")
    g.add_argument("--n-train", type=int, default=16_000)
    g.add_argument("--n-val", type=int, default=1_600)
    g.add_argument("--n-test", type=int, default=1_600)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--num-shifts", type=int, default=8, help="shift: number of output channels H")
    g.add_argument("--mem", type=int, default=32, help="masked_select: number of marked tokens M")
    g.add_argument("--dim", type=int, default=4, help="mips: vector dimension D")
    g.set_defaults(func=cmd_generate_synthetic)


def _fail(msg: str) -> int:
    print(f"rotrnn data: error: {msg}", file=sys.stderr)
    return 2


def _summary(meta: dict) -> str:
    return f"{meta['task']}: splits {meta['splits']}, l_max {meta['l_max']}, checksum {meta['checksum'][:16]}"


def cmd_download(args: argparse.Namespace) -> int:
    from rotrnn.data.download import DownloadError, download_task

    try:
        paths = download_task(args.task, args.raw_root, args.mirror, progress=sys.stderr.isatty(),
                              retries=args.retries)
    except DownloadError as e:
        return _fail(str(e))
    for p in paths:
        print(f"{args.task}: {p.name} ready, unpacked under {args.raw_root}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from rotrnn.data.tasks import get_task

    try:
        meta = get_task(args.task).prepare(args.raw_root, args.out)
    except (FileNotFoundError, ValueError) as e:  # bad or missing raw input: the message names file and line
        return _fail(str(e))
    print(_summary(meta))
    return 0


def cmd_fixtures(args: argparse.Namespace) -> int:
    from rotrnn.data.fixtures import write_fixtures

    names = [t for t in args.tasks.split(",") if t]
    try:
        written = write_fixtures(args.out, names, args.seed)
    except KeyError as e:
        return _fail(str(e.args[0]))
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


def cmd_generate_listops(args: argparse.Namespace) -> int:
    from rotrnn.data.listops import generate_raw

    try:
        d = generate_raw(args.out, args.n_train, args.n_val, args.n_test, args.seed, min_length=args.min_length,
                         max_length=args.max_length, max_depth=args.max_depth, max_args=args.max_args)
    except ValueError as e:
        return _fail(str(e))
    print(f"listops: wrote {args.n_train}/{args.n_val}/{args.n_test} examples to {d}")
    return 0


def cmd_generate_synthetic(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from rotrnn.data.synthetic import generate

    total = max(0, args.n_train) + max(0, args.n_val) + max(0, args.n_test)
    try:
        with tqdm(total=total, unit="ex", desc=args.task, disable=not sys.stderr.isatty()) as bar:
            meta = generate(args.task, args.out, length=args.length, n_train=args.n_train, n_val=args.n_val,
                            n_test=args.n_test, seed=args.seed, num_shifts=args.num_shifts, mem=args.mem,
                            dim=args.dim, progress=bar.update)
    except ValueError as e:
        return _fail(str(e))
    print(_summary(meta))
    print(json.dumps(meta["generator"]))
    return 0
