"""The one prepared device check: everything the CUDA path needs verified and measured, in one call of <= 9 minutes.

    python benchmarks/gpu_check.py              # on one H100/H200: writes reports/perf/gpu-<device>.md and .csv
    python benchmarks/gpu_check.py --dry-run    # anywhere: the plan (sections, shapes, time budget), nothing run
    python benchmarks/gpu_check.py --tiny --device cpu   # every section at toy sizes on CPU (exercises the code)

Sections, in order (each stops early when its time budget is spent, and says so in the report):

1. kernels: the Triton scan tests (``tests/ops/test_scan_fused_{recurrent,chunk}.py``) compiled, not interpreted;
2. scan: achieved bandwidth of both Triton scans (``fused_recurrent``, today's default, and ``fused_chunk``) as a
   share of the measured device copy bandwidth, forward and forward+backward, float32 and bfloat16, at the Path-X
   and ListOps shapes;
3. layer: RotRNN forward+backward per scan backend against the six-matmul floor at L = 1024 and 16384;
4. tasks: per paper-suite task, the paper config at its paper batch size: step time (also with ``fused_chunk``),
   tokens/s, peak memory, and the loss of 20 steps under bf16 autocast against float32 from the same start and
   batches;
5. compile: per paper task (ListOps and Path-X first, the rest while the budget lasts), the step eager, under
   torch.compile and under torch.compile(mode="reduce-overhead") (CUDA graphs): compile time, step time, and the
   loss of the first steps against eager;
6. listops: with the time that is left (at most --minutes), the paper ListOps configuration trained on the full
   generated ListOps (96k/2k/2k by LRA's generator, written by parallel workers): the learning curve.

Each section has a time budget (BUDGET_S; 8.5 minutes in all with start-up), so the call ends in about 9 minutes on
an H100/H200 by construction. ``--tiny`` runs every section's code at toy sizes, the compile section with the
``aot_eager`` backend (Dynamo and AOTAutograd trace the step as on the device; Inductor's code generation, minutes
on a CPU, is left out) on two tasks.

Without CUDA (and without --dry-run or --tiny) it refuses in one line.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere: this checkout's rotrnn first

PAPER_TASKS = ("listops", "imdb", "aan", "cifar", "pathfinder", "pathx", "speech35", "cumsum", "shift")
# (kind, l_max, vocab_size or in_dim, n_classes or out_dim, target, dual); shapes of the prepared data
TASK_SHAPES = {
    "listops": ("tokens", 2048, 18, 10, "class", False),
    "imdb": ("tokens", 4096, 135, 2, "class", False),
    "aan": ("tokens", 4000, 100, 2, "class", True),
    "cifar": ("continuous", 1024, 1, 10, "class", False),
    "pathfinder": ("continuous", 1024, 1, 2, "class", False),
    "pathx": ("continuous", 16384, 1, 2, "class", False),
    "speech35": ("continuous", 16000, 1, 35, "class", False),
    "cumsum": ("continuous", 4096, 3, 1, "sequence", False),
    "shift": ("continuous", 4096, 3, 16, "sequence", False),
}
# the scan shapes of sections 2: (name, batch, length, complex channels) = paper batch, length, d_state / 2
SCAN_SHAPES = (("pathx", 32, 16384, 128), ("listops", 50, 2048, 128))
LAYER_LENGTHS = (1024, 16384)
BUDGET_S = {"kernels": 75, "scan": 60, "layer": 35, "tasks": 100, "compile": 150, "listops": 90}
START_S = 30  # imports, CUDA start-up, writing the report
COMPILE_MODES = ("eager", "default", "reduce-overhead")
COMPILE_TASKS = ("listops", "pathx") + tuple(t for t in PAPER_TASKS if t not in ("listops", "pathx"))
LISTOPS_SIZES = (96_000, 2_000, 2_000)  # LRA's ListOps: train, val, test


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    p.add_argument("--tiny", action="store_true", help="toy sizes (any device): exercises every section's code")
    p.add_argument("--device", default="cuda")
    p.add_argument("--minutes", type=float, default=1.0,
                   help="the most wall time of the ListOps training run (section 6; less if its budget is spent)")
    p.add_argument("--sections", default=",".join(BUDGET_S))
    p.add_argument("--commit", default=None, help="the commit measured (default: git rev-parse, where .git exists)")
    p.add_argument("--out", type=Path, default=None, help="report path (default reports/perf/gpu-<device>.md)")
    args = p.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    if bad := [s for s in args.sections if s not in BUDGET_S]:
        p.error(f"--sections: unknown {bad}; choose from {list(BUDGET_S)}")
    return args


def plan(args: argparse.Namespace) -> str:
    lines = [f"gpu_check plan (device {args.device}{', tiny sizes' if args.tiny else ''}; total budget "
             f"{sum(BUDGET_S[s] for s in args.sections) + START_S} s):"]
    text = {
        "kernels": "pytest tests/ops/test_scan_fused_recurrent.py tests/ops/test_scan_fused_chunk.py with "
                   "TRITON_INTERPRET=0 (compiled kernels)",
        "scan": "fused_recurrent vs fused_chunk, fwd and fwd+bwd, float32 and bfloat16, as % of copy bandwidth at "
                + ", ".join(f"{n} (batch {b}, L {L}, {C} complex channels)" for n, b, L, C in SCAN_SHAPES),
        "layer": f"RotRNN (d_model 128, d_state 256, 32 heads) fwd+bwd per backend vs six-matmul floor at L = "
                 f"{', '.join(map(str, LAYER_LENGTHS))}",
        "tasks": "per paper task (" + ", ".join(PAPER_TASKS) + "): step time (auto and fused_chunk scans), "
                 "tokens/s, peak memory at the paper batch size; 20 steps bf16 autocast vs float32 loss",
        "compile": "per paper task (" + ", ".join(COMPILE_TASKS) + ", while the budget lasts): "
                   + ", ".join(COMPILE_MODES) + " (torch.compile modes): compile time, step time, first losses vs "
                   "eager",
        "listops": "full generated ListOps ({}k/{}k/{}k) at the paper config, trained for what is left (at most "
                   "{:g} min): train/val accuracy vs time".format(*(n // 1000 for n in LISTOPS_SIZES), args.minutes),
    }
    for s in args.sections:
        lines.append(f"  {s} (<= {BUDGET_S[s]} s): {text[s]}")
    lines.append(f"  report: {report_path(args, 'DEVICE')} and .csv")
    return "\n".join(lines)


def report_path(args: argparse.Namespace, slug: str) -> Path:
    return args.out or REPO / "reports" / "perf" / f"gpu-{slug}.md"


def gpu_slug(name: str) -> str:
    m = re.search(r"\b([A-Z]{1,3}\d{2,4}[A-Z]?)\b", name)
    return m[1].lower() if m else re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


class Report:
    def __init__(self) -> None:
        self.md: list[str] = []
        self.rows: list[dict[str, Any]] = []

    def table(self, section: str, header: list[str], rows: list[list[Any]]) -> None:
        self.md += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r in rows:
            self.md.append("| " + " | ".join(_fmt(x) for x in r) + " |")
            self.rows.append({"section": section, **dict(zip(header, r))})
        self.md.append("")


def _fmt(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)


class Budget:
    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds

    def left(self) -> bool:
        return time.perf_counter() < self.end


# -- sections ----------------------------------------------------------------------------------------------------
def section_kernels(args, device, rep: Report, budget: Budget) -> None:
    env = {**os.environ, "TRITON_INTERPRET": "0" if device.type == "cuda" else "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider",
           *(str(REPO / "tests" / "ops" / f"test_scan_fused_{k}.py") for k in ("recurrent", "chunk")), "-k", "kernel"]
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=max(10.0, budget.end - time.perf_counter()))
        summary = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        summary, rc = "timed out", -1
    mode = "compiled" if device.type == "cuda" else "interpreted (no CUDA: not the check the GPU run makes)"
    rep.md += [f"Triton kernel tests, {mode}: exit {rc}: `{summary}`", ""]
    rep.rows.append({"section": "kernels", "exit": rc, "summary": summary})


def section_scan(args, device, rep: Report, budget: Budget) -> None:
    import torch

    from rotrnn.bench import layer as bench
    from rotrnn.ops.scan import TRITON_BACKENDS, available_backends

    copy_bw = bench.copy_bandwidth(device, (16 if args.tiny else 2048) * 2**20, 3 if args.tiny else 10)
    rep.md += [f"Copy bandwidth: {copy_bw / 1e9:.1f} GB/s (device-to-device; a copy moves twice its size). "
               "fused_chunk moves one more read of its input than the bytes counted (its end-state pass).", ""]
    backends = [b for b in TRITON_BACKENDS if b in available_backends(device)] or ["recurrent"]
    rows = []
    for (name, B, L, C), dtype, backend in [(shape, dtype, backend) for shape in SCAN_SHAPES
                                            for dtype in ("float32", "bfloat16") for backend in backends]:
        if args.tiny:
            B, L, C = 2, 64, 8
        if dtype == "bfloat16" and backend not in TRITON_BACKENDS:
            continue
        if not budget.left():
            rows.append([name, backend, dtype, B, L, C, "budget spent", "", "", ""])
            continue
        t_f, t_fb = bench.time_scan(backend, B, L, C, device, dtype, 3 if args.tiny else 10)
        size = 2 if dtype == "bfloat16" else 4
        bf = bench.scan_bytes(B, L, C, size, False) / t_f
        bfb = bench.scan_bytes(B, L, C, size, True) / t_fb
        rows.append([name, backend, dtype, B, L, C, t_f * 1e3, 100 * bf / copy_bw, t_fb * 1e3,
                     100 * bfb / copy_bw])
        torch.cuda.empty_cache() if device.type == "cuda" else None
    rep.table("scan", ["shape", "backend", "dtype", "batch", "length", "channels", "fwd ms", "fwd % copy",
                       "fwd+bwd ms", "fwd+bwd % copy"], rows)


def _sync(device) -> Callable[[], None]:
    import torch

    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def section_layer(args, device, rep: Report, budget: Budget) -> None:
    import torch

    from rotrnn.bench import layer as bench
    from rotrnn.nn import RotRNN
    from rotrnn.ops.scan import available_backends

    sync = _sync(device)
    d, S, H, B = (8, 16, 2, 2) if args.tiny else (128, 256, 32, 8)
    rows = []
    for L in ((16, 64) if args.tiny else LAYER_LENGTHS):
        x2, u2 = torch.randn(B * L, S, device=device), torch.randn(B * L, d, device=device)
        W = torch.randn(S, d, device=device)

        def floor():
            u2 @ W.T, x2 @ W, x2 @ W, x2.T @ u2, u2 @ W.T, u2.T @ x2

        torch.manual_seed(0)
        layer = RotRNN(d, S, H).to(device)
        u = torch.randn(B, L, d, device=device, requires_grad=True)
        g = torch.randn_like(u)
        for backend in [b for b in available_backends(device) if b != "naive"]:
            if not budget.left() or (backend == "chunk" and L > 4096 and device.type != "cuda"):
                rows.append([L, backend, "skipped", "", "", ""])
                continue
            layer.backend = backend

            def fwd_bwd():
                layer(u).backward(g)

            pairs = bench._paired(floor, fwd_bwd, 3 if args.tiny else 10, sync)
            f = sorted(p[0] for p in pairs)[len(pairs) // 2]
            t = sorted(p[1] for p in pairs)[len(pairs) // 2]
            ratios = sorted(p[1] / p[0] for p in pairs)
            rows.append([L, backend, t * 1e3, f * 1e3, ratios[len(ratios) // 2], B * L / t])
    rep.table("layer", ["length", "backend", "fwd+bwd ms", "six-matmul floor ms", "x floor (median)",
                        "tokens/s"], rows)


def task_meta(task: str, l_max: int | None = None) -> dict[str, Any]:
    kind, L, width, classes, target, dual = TASK_SHAPES[task]
    meta = {"task": task, "kind": kind, "l_max": l_max or L, "target": target, "dual": dual,
            "loss": "cross_entropy" if target == "class" else "mse"}
    meta["vocab_size" if kind == "tokens" else "in_dim"] = width
    meta["n_classes" if target == "class" else "out_dim"] = classes
    return meta


def random_batch(meta: dict[str, Any], B: int, device, seed: int) -> dict[str, Any]:
    """A full-length batch of random inputs and labels with the task's shapes."""
    import torch

    g = torch.Generator().manual_seed(seed)
    L = meta["l_max"]

    def inputs():
        if meta["kind"] == "tokens":
            return torch.randint(1, meta["vocab_size"], (B, L), generator=g)
        return torch.randn(B, L, meta["in_dim"], generator=g)

    batch = {"inputs": inputs(), "lengths": torch.full((B,), L)}
    if meta["dual"]:
        batch |= {"inputs2": inputs(), "lengths2": torch.full((B,), L)}
    if meta["target"] == "class":
        batch["labels"] = torch.randint(0, meta["n_classes"], (B,), generator=g)
    else:
        batch["labels"] = torch.randn(B, L, meta["out_dim"], generator=g)
        batch["label_mask"] = torch.ones(B, L, dtype=torch.bool)
    return {k: v.to(device) for k, v in batch.items()}


def shorter(batch: dict[str, Any], L: int) -> dict[str, Any]:
    """The batch cut to its first L steps (inputs, lengths and, for sequence targets, labels and mask)."""
    out = dict(batch)
    for key in ("inputs", "inputs2", "label_mask"):
        if key in out:
            out[key] = out[key][:, :L]
    if out["labels"].dim() > 1:
        out["labels"] = out["labels"][:, :L]
    for key in ("lengths", "lengths2"):
        if key in out:
            out[key] = out[key].clamp(max=L)
    return out


def paper_setup(task: str, tiny: bool) -> tuple[dict[str, Any], int, dict[str, Any]]:
    """(config, batch size, meta) of the paper config of ``task`` for RotRNN; ``tiny`` shrinks model and data."""
    from rotrnn.bench.step import paper_config

    config = paper_config(task, "rotrnn")
    B, meta = int(config["train"]["batch_size"]), task_meta(task)
    if tiny:
        B, meta = 2, task_meta(task, 32)
        shrink(config)
    return config, B, meta


def shrink(config: dict[str, Any]) -> None:
    """--tiny: a two-layer model of width 8 (the code paths of the paper config, none of its cost)."""
    config["net"] |= {"d_model": 8, "n_layers": 2}
    config["layer"] |= {"d_state": 8, "n_heads": 2}


def step_loss(run, batch: dict[str, Any], meta: dict[str, Any], device, precision: str):
    """The training objective of one batch through ``run`` (a model or its compiled wrapper)."""
    from rotrnn.train.loop import autocast, forward
    from rotrnn.train.step import objective

    with autocast(device, precision):
        out = forward(run, batch)
    return objective(out, batch, meta)[0]


def timed_steps(run, opt, batches: list[dict[str, Any]], n_steps: int, meta: dict[str, Any], device,
                precision: str, losses: list[Any], times: list[float]) -> None:
    """``n_steps`` optimiser steps cycling over ``batches``, appending each loss (detached) and each step's wall time
    to ``losses`` and ``times`` as it goes (a step that raises leaves the completed ones there)."""
    sync = _sync(device)
    for s in range(n_steps):
        batch = batches[s % len(batches)]
        t0 = time.perf_counter()
        loss = step_loss(run, batch, meta, device, precision)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach().clone())  # CUDA-graph outputs are overwritten by the next replay
        sync()
        times.append(time.perf_counter() - t0)


def step_with_backend(backend: str, config: dict[str, Any], meta: dict[str, Any], batches: list[dict[str, Any]],
                      steps: int, device) -> float:
    """Median bf16 step ms of the task's model with every scan on ``backend`` (ROTRNN_SCAN_BACKEND, restored)."""
    import torch

    from rotrnn.train.loop import build_model
    from rotrnn.train.optim import build_optimizer

    old = os.environ.get("ROTRNN_SCAN_BACKEND")
    os.environ["ROTRNN_SCAN_BACKEND"] = backend
    try:
        torch.manual_seed(0)
        model = build_model(config, meta).to(device)
        opt, _ = build_optimizer(model, config["train"])
        losses, times = [], []
        timed_steps(model, opt, batches, steps, meta, device, "bf16", losses, times)
    finally:
        os.environ.pop("ROTRNN_SCAN_BACKEND") if old is None else os.environ.__setitem__("ROTRNN_SCAN_BACKEND", old)
    rest = sorted(times[1:] or times)
    return rest[len(rest) // 2] * 1e3


def section_tasks(args, device, rep: Report, budget: Budget) -> None:
    import torch

    from rotrnn.bench.step import record_matmuls
    from rotrnn.ops.scan import CHUNKED, available_backends
    from rotrnn.train.loop import build_model
    from rotrnn.train.optim import build_optimizer

    cuda = device.type == "cuda"
    chunked = CHUNKED in available_backends(device)
    rows = []
    for task in PAPER_TASKS:
        if not budget.left():
            rows.append([task, "budget spent", "", "", "", "", "", ""])
            continue
        config, B, meta = paper_setup(task, args.tiny)
        steps = 3 if args.tiny else 20
        batches = [random_batch(meta, B, device, seed=s) for s in range(2)]
        losses: dict[str, list[float]] = {}
        step_s, peak, counts = float("nan"), float("nan"), {"kernels": ""}
        try:
            for precision in ("bf16", "fp32"):
                torch.manual_seed(0)
                model = build_model(config, meta).to(device)
                opt, _ = build_optimizer(model, config["train"])
                if cuda:
                    torch.cuda.reset_peak_memory_stats(device)
                out_losses, times = [], []
                timed_steps(model, opt, batches, steps, meta, device, precision, out_losses, times)
                losses[precision] = [float(x) for x in out_losses]
                if precision == "bf16":  # the training configuration on CUDA: its speed and memory
                    step_s = sorted(times[1:] or times)[len(times[1:] or times) // 2]
                    peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else float("nan")

                    def one_step(batch=batches[0], model=model, opt=opt):
                        step_loss(model, batch, meta, device, precision).backward()
                        opt.zero_grad(set_to_none=True)

                    record_matmuls(one_step, counts)
                del model, opt
                if cuda:
                    torch.cuda.empty_cache()
            chunk_ms = step_with_backend(CHUNKED, config, meta, batches, steps, device) if chunked else ""
        except torch.cuda.OutOfMemoryError:
            rows.append([task, B, "OOM", "", "", "", "", ""])
            torch.cuda.empty_cache()
            continue
        # against the first loss: a relative difference at a loss near 0 (a memorised batch) says nothing
        diff = max(abs(a - b) for a, b in zip(losses["bf16"], losses["fp32"])) / abs(losses["fp32"][0])
        tokens = B * meta["l_max"] * (2 if meta["dual"] else 1)
        rows.append([task, B, step_s * 1e3, chunk_ms, tokens / step_s, peak, counts["kernels"], diff,
                     f"{losses['fp32'][0]:.4f}->{losses['fp32'][-1]:.4f}",
                     f"{losses['bf16'][0]:.4f}->{losses['bf16'][-1]:.4f}"])
    rep.md += [f"{steps} steps alternating two random batches, from the same initialisation; operators: non-view "
               "ATen operators in one forward+backward (each a kernel launch); loss difference: the largest "
               "|bf16 - fp32| over the steps divided by the first fp32 loss.", ""]
    rep.table("tasks", ["task", "batch", "bf16 step ms", "bf16 step ms (fused_chunk)", "tokens/s", "peak GiB", "operators fwd+bwd",
                        "max loss diff / first loss", "fp32 loss first->last", "bf16 loss first->last"], rows)


GEN_WORKERS = 16  # processes generating ListOps (the device machine has 16 cores; serial: ~3 ms per example)


def _listops_rows(n: int, seed: int, lengths: dict[str, int]) -> list[tuple[str, int]]:
    import random

    from rotrnn.data import listops

    return listops.generate(n, random.Random(seed), **lengths)


def generate_listops_parallel(raw: Path, sizes: tuple[int, int, int], lengths: dict[str, int]) -> None:
    """The LRA raw layout of ListOps (train, val, test) from GEN_WORKERS processes, each LRA's generator with its own
    seed: the full 100k examples in seconds instead of minutes."""
    from concurrent.futures import ProcessPoolExecutor

    from rotrnn.data import listops

    total = sum(sizes)
    share = [total // GEN_WORKERS + (i < total % GEN_WORKERS) for i in range(GEN_WORKERS)]
    with ProcessPoolExecutor(GEN_WORKERS) as pool:
        rows = [r for part in pool.map(_listops_rows, share, range(GEN_WORKERS), [lengths] * GEN_WORKERS)
                for r in part]
    d = raw / listops.SUBDIR
    start = 0
    for split, n in zip(("train", "val", "test"), sizes):
        listops.write_tsv(d / listops.SPLITS[split], rows[start:start + n])
        start += n


def section_listops(args, device, rep: Report, budget: Budget) -> None:
    import torch

    from rotrnn.bench.step import paper_config
    from rotrnn.data import load_dataset
    from rotrnn.data import listops
    from rotrnn.train.batches import Prefetcher, epoch_batches, to_device
    from rotrnn.train.loop import autocast, build_model, evaluate, forward
    from rotrnn.train.optim import build_optimizer
    from rotrnn.train.step import RunningSums, objective

    with tempfile.TemporaryDirectory(prefix="gpu-check-listops-") as tmp:
        n_train, n_val, n_test = (64, 16, 16) if args.tiny else LISTOPS_SIZES
        t0 = time.perf_counter()
        raw = Path(tmp) / "raw"
        lengths = {"min_length": 20, "max_length": 60, "max_depth": 3} if args.tiny else {}
        generate_listops_parallel(raw, (n_train, n_val, n_test), lengths)
        listops.prepare(raw, Path(tmp) / "prepared")
        gen_s = time.perf_counter() - t0
        train_set = load_dataset(Path(tmp) / "prepared", "train")
        val_set = load_dataset(Path(tmp) / "prepared", "val")
        meta = train_set.meta
        config = paper_config("listops", "rotrnn")
        if args.tiny:
            shrink(config)
            config["train"]["batch_size"] = 8
        B = int(config["train"]["batch_size"])
        torch.manual_seed(0)
        model = build_model(config, meta).to(device)
        opt, _ = build_optimizer(model, config["train"])
        precision = config["train"].get("precision", "auto")
        sync = _sync(device)
        # what is left of the budget (an evaluation's worth kept back), at most --minutes
        end = time.perf_counter() + (5 if args.tiny else min(60 * args.minutes, budget.end - time.perf_counter() - 15))
        start, rows, step, epoch = time.perf_counter(), [], 0, 0
        sums = RunningSums(device)
        while time.perf_counter() < end:
            batches = epoch_batches(len(train_set), B, 0, epoch, None)
            with Prefetcher(train_set, batches, pin_memory=device.type == "cuda") as loader:
                for _, host in loader:
                    batch = to_device(host, device)
                    with autocast(device, precision):
                        out = forward(model, batch)
                    loss, correct, count = objective(out, batch, meta)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sums.add(loss, correct, count)
                    step += 1
                    if time.perf_counter() >= end:
                        break
            sync()
            train = sums.read()
            val = evaluate(model, val_set, meta, B, device, precision)
            epoch += 1
            rows.append([epoch, step, time.perf_counter() - start, train["loss"], train["accuracy"], val["loss"],
                         val["accuracy"]])
            if args.tiny:
                break
    rep.md += [f"Generated ListOps: {n_train} train / {n_val} val / {n_test} test examples in {gen_s:.0f} s (LRA's "
               f"generator and lengths, {GEN_WORKERS} workers with seeds 0..{GEN_WORKERS - 1}); paper config, batch "
               f"{B}, {precision} precision, trained {(rows[-1][2] if rows else 0):.0f} s.", ""]
    rep.table("listops", ["epoch", "steps", "wall s", "train loss", "train acc", "val loss", "val acc"], rows)


def section_compile(args, device, rep: Report, budget: Budget) -> None:
    import torch

    from rotrnn.train.loop import build_model
    from rotrnn.train.optim import build_optimizer

    precision = "bf16" if device.type == "cuda" else "fp32"
    n_steps = 3 if args.tiny else 10
    # --tiny: aot_eager traces the step as the device does (Dynamo, AOTAutograd, the scan operators) without
    # Inductor's code generation (minutes on a CPU); reduce-overhead is Inductor's mode, so it is the same there
    backend = "aot_eager" if args.tiny else "inductor"
    rows = []
    for task in COMPILE_TASKS[:2] if args.tiny else COMPILE_TASKS:
        config, B, meta = paper_setup(task, args.tiny)
        # two lengths, as a variable-length task feeds the training step (which compiles with dynamic=True)
        full = meta["l_max"]
        batches = [shorter(random_batch(meta, B, device, seed=s), full - s * (full // 8)) for s in range(2)]
        eager_losses, eager_ms = None, float("nan")
        for mode in COMPILE_MODES:
            if not budget.left():
                rows.append([task, mode, "budget spent", "", "", "", ""])
                continue
            if mode != "eager" and eager_losses is None:
                rows.append([task, mode, "no eager run to compare", "", "", "", ""])
                continue
            torch.manual_seed(0)
            model = build_model(config, meta).to(device)
            opt, _ = build_optimizer(model, config["train"])
            run = model if mode == "eager" else torch.compile(
                model, mode=None if mode == "default" or args.tiny else mode, backend=backend, dynamic=True)
            losses, times = [], []
            try:
                timed_steps(run, opt, batches, n_steps, meta, device, precision, losses, times)
            except Exception as e:  # a mode that does not compile is a finding, not the end of the check
                rows.append([task, mode, f"failed at step {len(times)}: {type(e).__name__}: {str(e)[:200]}", "",
                             "", "", ""])
                continue
            finally:
                torch._dynamo.reset()
            values = [float(x) for x in losses]
            med = sorted(times[2:])[len(times[2:]) // 2]
            if mode == "eager":
                eager_losses, eager_ms = values, med * 1e3
            agree = max(abs(a - b) for a, b in zip(values, eager_losses)) / abs(eager_losses[0])
            rows.append([task, mode, times[0], med * 1e3, eager_ms / (med * 1e3), agree,
                         f"{values[0]:.4f}->{values[-1]:.4f}"])
            del model, opt, run
            if device.type == "cuda":
                torch.cuda.empty_cache()
    rep.md += [f"Paper configs at their paper batch sizes, {precision}, {n_steps} steps alternating two random "
               "batches of the full length and 7/8 of it from one initialisation, compiled with dynamic=True as "
               f"training does (backend {backend}); step time is the median after the first two steps.", ""]
    rep.table("compile", ["task", "mode", "first step s (compiles)", "step ms", "speed-up vs eager",
                          "max loss diff vs eager / first loss", "loss first->last"], rows)


SECTIONS = {"kernels": section_kernels, "scan": section_scan, "layer": section_layer, "tasks": section_tasks,
            "compile": section_compile, "listops": section_listops}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        print(plan(args))
        return 0
    import torch

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; nothing run (use --dry-run for the plan, or --tiny --device cpu)",
              file=sys.stderr)
        return 2
    from rotrnn.bench.provenance import commit_label
    from rotrnn.train.allocator import keep_freed_memory

    keep_freed_memory()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu-{platform.machine()}"
    slug = gpu_slug(name) if device.type == "cuda" else ("cpu-tiny" if args.tiny else "cpu")
    out = report_path(args, slug)
    rep = Report()
    t_start = time.perf_counter()
    rep.md += [f"# Device check: {name}", "",
               f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
               f"- commit: {commit_label(args.commit, REPO)}",
               f"- torch {torch.__version__}, CUDA {torch.version.cuda}, python {platform.python_version()}",
               f"- command: `python benchmarks/gpu_check.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
               f"- sizes: {'TINY (code paths only, no figures)' if args.tiny else 'paper'}", ""]
    for s in args.sections:
        t0 = time.perf_counter()
        rep.md += [f"## {s}", ""]
        print(f"gpu_check: {s} ...", file=sys.stderr, flush=True)
        try:
            SECTIONS[s](args, device, rep, Budget(BUDGET_S[s]))
        except Exception as e:  # one failing section must not cost the others their (scarce) device time
            rep.md += [f"**failed**: `{type(e).__name__}: {e}`", ""]
            rep.rows.append({"section": s, "error": f"{type(e).__name__}: {e}"})
        rep.md += [f"({s}: {time.perf_counter() - t0:.0f} s)", ""]
        _write(out, rep)  # after every section: a run cut short still leaves what it measured
    rep.md.append(f"Total: {time.perf_counter() - t_start:.0f} s.")
    _write(out, rep)
    print(f"wrote {out} and {out.with_suffix('.csv')}", file=sys.stderr)
    return 1 if any("error" in r for r in rep.rows) else 0


def _write(out: Path, rep: Report) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(rep.md) + "\n")
    keys: list[str] = []
    for r in rep.rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rep.rows)
    out.with_suffix(".csv").write_text(buf.getvalue())


if __name__ == "__main__":
    sys.exit(main())
