"""SASS figures of the Triton scans' time loops on sm_90, compiled here (no GPU needed): reports/perf/scan-sass.md.

    python benchmarks/scan_sass.py [--out reports/perf/scan-sass.md]

Per launch and dtype (forward direction; the reverse compiles to the same counts): instructions in the time loop per
warp per iteration, the complex elements a warp handles in that iteration, their ratio, shuffles, barriers, shared
loads, the global load forms, local-memory instructions (spills) and registers. See ``rotrnn/bench/sass.py``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "reports" / "perf" / "scan-sass.md")
    args = p.parse_args(argv)
    import triton

    from rotrnn import atomic
    from rotrnn.bench import sass
    from rotrnn.ops.scan import fused_chunk, fused_recurrent

    lines = ["# Triton scans on sm_90: the time loop in SASS", "",
             f"Compiled on a CPU-only machine with Triton {triton.__version__} for sm_90 (`python "
             "benchmarks/scan_sass.py`), pointers 16-byte aligned and the channel count a multiple of 16 as at the "
             f"paper shapes ({sass.CHANNELS} complex channels). fused_recurrent at its default tiles "
             f"({fused_recurrent.Tiles().label()}); fused_chunk at {fused_chunk.Chunks(64).label()} (the chunk "
             "length changes only the trip count). Per element = loop instructions / complex elements per warp "
             "per iteration. fused_chunk's forward is two walks over v (`fwd-ends` then `fwd-walk`), its backward "
             "two over g (`bwd-walk` also reads h and sums the λ-gradient partials).", "",
             "| backend | launch | dtype | loop instructions | elements / warp / iteration | per element | SHFL | "
             "BAR | LDS | global loads | LDL/STL | spill bytes | registers |", "|" + "---|" * 13]
    totals: dict[tuple[str, str, str], float] = {}
    for dtype in ("fp32", "bf16"):
        for launch in sass.recurrent_launches(dtype) + sass.chunk_launches(dtype):
            f = sass.loop_figures(launch)
            loads = ", ".join(f"{op} x{n}" for op, n in sorted(f.global_loads.items()))
            lines.append(f"| {f.backend} | {f.name} | {dtype} | {f.instructions} | {f.elements} | "
                         f"{f.per_element:.2f} | {f.shuffles} | {f.barriers} | {f.shared_loads} | {loads} | "
                         f"{f.local_memory} | {f.spill_bytes} | {f.registers} |")
            key = (f.backend, dtype, f.name.split("-")[0])
            totals[key] = totals.get(key, 0.0) + f.per_element
            print(lines[-1], flush=True)
    lines += ["", "Warp instructions per complex element over a whole pass (the sum of its time loops):", "",
              "| backend | dtype | forward | backward |", "|---|---|---|---|"]
    for backend in ("fused_recurrent", "fused_chunk"):
        for dtype in ("fp32", "bf16"):
            lines.append(f"| {backend} | {dtype} | {totals[(backend, dtype, 'fwd')]:.2f} | "
                         f"{totals[(backend, dtype, 'bwd')]:.2f} |")
    atomic.write_text(args.out, "\n".join(lines) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
