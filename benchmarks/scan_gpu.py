"""Scan kernel figures on one GPU, written to reports/perf/scan-<gpu>.md.

    python benchmarks/scan_gpu.py                     # on a CUDA machine: the figures issue 3 asks for
    TRITON_INTERPRET=1 python benchmarks/scan_gpu.py --device cpu --batch 1 --lengths 8 ...   # dry run, tiny

Measures, on the same device: the device-to-device copy bandwidth; the scan alone, forward and forward+backward, per
backend, length, channel count, dtype and (for fused_recurrent) tile shape, as achieved GB/s of the bytes it must move
(``rotrnn.bench.scan_bytes``) and as a share of the copy bandwidth; and the whole RotRNN layer forward+backward per
backend. Every figure is the median of --repeats timed runs after one warm-up run (which also compiles).
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import sys
import tempfile
from pathlib import Path

import torch

from rotrnn.bench import layer as bench
from rotrnn.bench.provenance import commit_label
from rotrnn.ops.scan import TRITON, available_backends

REPO = Path(__file__).resolve().parents[1]
SCAN_GOAL = 60.0  # % of copy bandwidth
LAYER_GOAL = 5.0  # x faster than the chunk backend at the longest length


def int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def tile_list(text: str):
    """'default,32x32w8,64x16s2' -> triton launch shapes (``fused_recurrent.Tiles``)."""
    from rotrnn.ops.scan.fused_recurrent import Tiles

    try:
        return [Tiles.parse(item.strip()) for item in text.split(",")]
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda, or cpu for a dry run under TRITON_INTERPRET=1")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lengths", type=int_list, default=[1024, 16384])
    p.add_argument("--channels", type=int_list, default=[256, 1024], help="complex channels of the scan")
    p.add_argument("--dtypes", default="float32,bfloat16", help="float32 (all backends) and/or bfloat16 (fused_recurrent)")
    p.add_argument("--tiles", type=tile_list, default="default,16x32,32x32w8,16x64w8,64x32w8,32x16s2,32x16s4",
                   help="triton launch shapes to time: BLOCK_LxBLOCK_C[wWARPS][sSTAGES] or 'default'")
    p.add_argument("--scan-backends", default="fused_recurrent,chunk,recurrent")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--copy-mib", type=int, default=2048, help="size of the copy for the bandwidth reference")
    p.add_argument("--layer-batch", type=int, default=32)
    p.add_argument("--layer-lengths", type=int_list, default=[1024, 16384])
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--d-state", type=int, default=512, help="real state size: d_state/2 complex channels")
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--bidirectional", action="store_true", help="the Path-X layer is bidirectional")
    p.add_argument("--layer-backends", default="fused_recurrent,chunk,recurrent")
    p.add_argument("--out", type=Path, default=None, help="default: reports/perf/scan-<gpu>.md in the repository")
    p.add_argument("--commit", default=None, help="the commit measured (default: git rev-parse, where .git exists)")
    args = p.parse_args(argv)
    args.dtypes = [d.strip() for d in args.dtypes.split(",")]
    if bad := [d for d in args.dtypes if d not in ("float32", "bfloat16")]:
        p.error(f"--dtypes: unknown {bad}; choose from float32, bfloat16")
    if args.repeats < 1 or args.copy_mib < 1 or args.batch < 1 or args.layer_batch < 1:
        p.error("--repeats, --copy-mib, --batch and --layer-batch must be positive")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here (use --device cpu with TRITON_INTERPRET=1 for a dry run)")
    for flag in ("scan_backends", "layer_backends"):
        names = [n.strip() for n in getattr(args, flag).split(",") if n.strip()]
        if missing := [n for n in names if n not in available_backends(device)]:
            p.error(f"--{flag.replace('_', '-')}: {missing} cannot run on {device} "
                    f"(available: {available_backends(device)})")
        setattr(args, flag, names)
    return args


def gpu_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'h100'; unknown names become a lower-case slug."""
    m = re.search(r"\b([A-Z]{1,3}\d{2,4}[A-Z]?)\b", name)
    return m[1].lower() if m else re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or 'host'})"


def guarded(fn):
    """Run a measurement; an out-of-memory case becomes a row saying so instead of ending the run."""
    try:
        return fn()
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return None


def scan_rows(args, device, copy_bw: float) -> tuple[list[str], list[dict]]:
    lines = ["| backend | dtype | length | channels | tile | fwd ms | fwd GB/s | fwd % copy | fwd+bwd ms | "
             "fwd+bwd GB/s | fwd+bwd % copy |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    records = []
    for L in args.lengths:
        for C in args.channels:
            for dtype in args.dtypes:
                size = 2 if dtype == "bfloat16" else 4
                for backend in args.scan_backends:
                    if dtype == "bfloat16" and backend != TRITON:
                        continue  # no bfloat16 complex scan outside the fused kernel
                    for tiles in (args.tiles if backend == TRITON else [None]):
                        times = guarded(lambda: bench.time_scan(backend, args.batch, L, C, device, dtype,
                                                                args.repeats, tiles=tiles))
                        tile = tiles.clipped(L, C).label() if tiles else "-"
                        if times is None:
                            lines.append(f"| {backend} | {dtype} | {L} | {C} | {tile} | OOM | | | | | |")
                            continue
                        t_f, t_fb = times
                        bf = bench.scan_bytes(args.batch, L, C, size, False) / t_f
                        bfb = bench.scan_bytes(args.batch, L, C, size, True) / t_fb
                        rec = dict(backend=backend, dtype=dtype, length=L, channels=C, tile=tile,
                                   fwd_pct=100 * bf / copy_bw, fwd_bwd_pct=100 * bfb / copy_bw)
                        records.append(rec)
                        lines.append(f"| {backend} | {dtype} | {L} | {C} | {tile} | {t_f * 1e3:.3f} | "
                                     f"{bf / 1e9:.3g} | {rec['fwd_pct']:.3g} | {t_fb * 1e3:.3f} | {bfb / 1e9:.3g} | "
                                     f"{rec['fwd_bwd_pct']:.3g} |")
    return lines, records


def layer_rows(args, device) -> tuple[list[str], dict]:
    from rotrnn.nn import RotRNN

    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    lines = ["| backend | length | fwd ms | fwd+bwd ms | fwd+bwd speed-up vs chunk | peak memory MB |",
             "|---|---|---|---|---|---|"]
    times: dict[tuple[str, int], float] = {}
    for L in args.layer_lengths:
        torch.manual_seed(0)
        layer = RotRNN(args.d_model, args.d_state, args.heads, bidirectional=args.bidirectional).to(device)
        u = torch.randn(args.layer_batch, L, args.d_model, device=device, requires_grad=True)
        g = torch.randn_like(u)
        rows = []
        for backend in args.layer_backends:
            layer.backend = backend

            def fwd():
                with torch.no_grad():
                    layer(u)

            def fwd_bwd():
                layer(u).backward(g)

            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            measured = guarded(lambda: (bench._timeit(fwd, args.repeats, sync),
                                        bench._timeit(fwd_bwd, args.repeats, sync)))
            layer.zero_grad(set_to_none=True)
            u.grad = None
            if measured is None:
                rows.append((backend, L, None, None, "OOM"))
                continue
            peak = f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f}" if cuda else "-"
            times[(backend, L)] = measured[1]
            rows.append((backend, L, *measured, peak))
        for backend, L_, t_f, t_fb, peak in rows:
            if t_f is None:
                lines.append(f"| {backend} | {L_} | OOM | OOM | | |")
                continue
            ref = times.get(("chunk", L_))
            speed = f"{ref / t_fb:.2f}x" if ref else "-"
            lines.append(f"| {backend} | {L_} | {t_f * 1e3:.2f} | {t_fb * 1e3:.2f} | {speed} | {peak} |")
    return lines, times


def goals(args, records: list[dict], layer_times: dict) -> list[str]:
    out = []
    L = max(args.lengths)
    fused = [r for r in records if r["backend"] == TRITON and r["length"] == L and r["dtype"] == "float32"]
    if fused:
        best_f = max(r["fwd_pct"] for r in fused)
        best_fb = max(r["fwd_bwd_pct"] for r in fused)
        verdict = "met" if min(best_f, best_fb) >= SCAN_GOAL else "not met"
        out.append(f"- scan at >= {SCAN_GOAL:.0f} % of copy bandwidth (float32, length {L}, best over tile shapes "
                   f"and channel counts): forward {best_f:.3g} %, forward+backward {best_fb:.3g} % -> "
                   f"{verdict}")
    else:
        out.append(f"- scan bandwidth goal: no float32 fused_recurrent measurement at length {L}")
    Ll = max(args.layer_lengths)
    tri, chk = layer_times.get((TRITON, Ll)), layer_times.get(("chunk", Ll))
    if tri and chk:
        verdict = "met" if chk / tri >= LAYER_GOAL else "not met"
        out.append(f"- RotRNN layer forward+backward >= {LAYER_GOAL:.0f}x faster than chunk at length {Ll}: "
                   f"{chk / tri:.2f}x -> {verdict}")
    else:
        out.append(f"- layer goal: fused_recurrent and chunk were not both measured at length {Ll}")
    return out


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    import triton

    name = device_name(device)
    out = args.out or REPO / "reports" / "perf" / f"scan-{gpu_slug(name) if device.type == 'cuda' else 'cpu'}.md"
    copy_bw = bench.copy_bandwidth(device, args.copy_mib * 2**20, args.repeats)
    print(f"{name}: copy bandwidth {copy_bw / 1e9:.1f} GB/s", file=sys.stderr)
    scan_lines, records = scan_rows(args, device, copy_bw)
    layer_lines, layer_times = layer_rows(args, device)
    extra = ""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        extra = f" (compute capability {props.major}.{props.minor}, {props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"
    report = [
        f"# Scan kernel figures: {name}",
        "",
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- commit: {commit_label(args.commit, REPO)}",
        f"- device: {name}{extra}",
        f"- torch {torch.__version__}, triton {triton.__version__}, python {platform.python_version()}"
        + (" (Triton interpreter: a dry run, not a measurement)" if device.type != "cuda" else ""),
        f"- command: `python benchmarks/scan_gpu.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
        f"- copy bandwidth: {copy_bw / 1e9:.1f} GB/s ({args.copy_mib} MiB device-to-device; a copy moves twice its size)",
        f"- timings: median of {args.repeats} runs after a warm-up run",
        "",
        f"## Scan alone (batch {args.batch})",
        "",
        "Bytes it must move: forward reads v and writes h; forward+backward also reads g and h and writes dv "
        "(5 passes over the (batch, length, channels) pairs), plus λ. bfloat16 rows have 2-byte elements "
        "(float32 state). Backends other than fused_recurrent run complex64 through `linear_scan`.",
        "",
        *scan_lines,
        "",
        f"## RotRNN layer forward+backward (batch {args.layer_batch}, d_model {args.d_model}, d_state "
        f"{args.d_state}, heads {args.heads}, bidirectional {args.bidirectional}, float32)",
        "",
        *layer_lines,
        "",
        "## Goals",
        "",
        *goals(args, records, layer_times),
        "",
    ]
    write_atomically(out, "\n".join(report))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
