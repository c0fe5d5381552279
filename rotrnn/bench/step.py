"""`rotrnn bench step`: one training step of a paper configuration (forward, backward, AdamW) against its dense
floor, and the share of the step that data loading takes.

- **dense floor**: every matrix product the step runs (recorded once with a dispatch mode: ``mm``, ``addmm``,
  ``bmm``, ``baddbmm`` with their shapes) replayed alone on random tensors of the same shapes. The step's other work
  (the scan, norms, activations, the optimiser) is what the ratio step / floor measures. Step and floor alternate
  in each repeat, so both see the same machine load; the ratio is the median of the per-repeat ratios.
- **data loading**: the batches come from a prepared directory in the task's format (random tokens or pixels of the
  paper's shapes and dtypes; lengths uniform over the task's range): the time to collate one batch on the training
  thread, and the time the step waited for :class:`rotrnn.train.batches.Prefetcher` to hand over the next one, each
  as a share of the step.

Figures, not tests: they depend on the machine.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from rotrnn.bench.report import ms, percent, ratio_cell

# task -> how its prepared inputs look: kind, l_max, shortest length, vocabulary or channels, classes
TASK_DATA = {
    "listops": {"kind": "tokens", "l_max": 2048, "min_length": 500, "vocab_size": 18, "n_classes": 10},
    "imdb": {"kind": "tokens", "l_max": 4096, "min_length": 100, "vocab_size": 129, "n_classes": 2},
    "cifar": {"kind": "continuous", "l_max": 1024, "min_length": 1024, "in_dim": 1, "n_classes": 10},
    "pathfinder": {"kind": "continuous", "l_max": 1024, "min_length": 1024, "in_dim": 1, "n_classes": 2},
    "pathx": {"kind": "continuous", "l_max": 16384, "min_length": 16384, "in_dim": 1, "n_classes": 2},
    "speech35": {"kind": "continuous", "l_max": 16000, "min_length": 16000, "in_dim": 1, "n_classes": 35},
}


def register_step(bsub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = bsub.add_parser("step", help="a paper training step vs its dense floor, and the data-loading share")
    add_step_arguments(p)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.set_defaults(func=run_step_bench)
    return p


def add_step_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tasks", default="listops,cifar", help=f"comma-separated subset of {','.join(TASK_DATA)}")
    p.add_argument("--model", default="rotrnn", choices=["rotrnn", "lru", "dlr"])
    p.add_argument("--step-batch", type=int, default=16, help="batch size (the paper's is larger; see params.yaml)")
    p.add_argument("--step-repeats", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="also time torch.compile(model) (compile time apart)")


def paper_config(task: str, model: str) -> dict[str, Any]:
    """The resolved paper-suite configuration of (task, model) from the project's params.yaml."""
    from rotrnn.config.layers import load_params, resolve

    params = load_params(Path(__file__).resolve().parents[2] / "params.yaml")
    return resolve(params, "paper", task, model, 0)


def write_task_data(out: Path, task: str, n: int, seed: int = 0) -> Path:
    """A prepared split 'train' of ``n`` random examples in ``task``'s format (shapes, dtypes, length range)."""
    import numpy as np

    from rotrnn.data import PreparedWriter

    spec = TASK_DATA[task]
    rng = np.random.default_rng(seed)
    meta = {"task": task, "kind": spec["kind"], "l_max": spec["l_max"], "target": "class", "loss": "cross_entropy",
            "n_classes": spec["n_classes"], "preprocessing_version": "bench", "sources": {},
            "notes": "random examples in the task's prepared format, for `rotrnn bench step`"}
    lengths = rng.integers(spec["min_length"], spec["l_max"] + 1, size=n).astype(np.int64)
    with PreparedWriter(out, meta | ({"vocab_size": spec["vocab_size"]} if spec["kind"] == "tokens"
                                     else {"in_dim": spec["in_dim"], "input_scale": 1 / 255})) as w:
        if spec["kind"] == "tokens":
            x = w.array("train", "inputs", (n, spec["l_max"]), np.uint8)
            for i, L in enumerate(lengths):
                x[i, :L] = rng.integers(1, spec["vocab_size"], size=L)
        else:
            x = w.array("train", "inputs", (n, spec["l_max"], spec["in_dim"]), np.uint8)
            x[:] = rng.integers(0, 256, size=x.shape, dtype=np.uint8)
        w.put("train", "lengths", lengths)
        w.put("train", "labels", rng.integers(0, spec["n_classes"], size=n).astype(np.int64))
    return out


MATMULS = ("mm", "addmm", "bmm", "baddbmm")


def record_matmuls(fn: Callable[[], object], counts: dict[str, int] | None = None
                   ) -> list[tuple[str, list[tuple[int, ...]], Any]]:
    """(op, operand shapes, dtype) of every matrix product ``fn`` dispatches, forward and backward.

    ``counts``, when given, receives ``kernels``: how many non-view operators ``fn`` dispatched. On a GPU each is a
    kernel launch, so it is the step's fixed cost there, whatever the sizes.
    """
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    seen: list[tuple[str, list[tuple[int, ...]], Any]] = []
    n_kernels = 0

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            nonlocal n_kernels
            name = func.overloadpacket.__name__
            n_kernels += not func.is_view
            if name in MATMULS:
                tensors = [a for a in args if isinstance(a, torch.Tensor)]
                seen.append((name, [tuple(t.shape) for t in tensors], tensors[-1].dtype))
            return func(*args, **(kwargs or {}))

    with Record():
        fn()
    if counts is not None:
        counts["kernels"] = n_kernels
    return seen


def replay_matmuls(ops: list[tuple[str, list[tuple[int, ...]], Any]], device) -> Callable[[], None]:
    """A function running the recorded products on contiguous random tensors of the same shapes."""
    import torch

    calls = []
    for name, shapes, dtype in ops:
        dtype = dtype if dtype.is_floating_point else torch.float32
        tensors = [torch.randn(s, device=device, dtype=dtype) for s in shapes]
        calls.append((getattr(torch, name), tensors))

    def run() -> None:
        for fn, tensors in calls:
            fn(*tensors)

    return run


def flops(ops: list[tuple[str, list[tuple[int, ...]], Any]]) -> float:
    total = 0.0
    for name, shapes, _ in ops:
        a, b = shapes[-2], shapes[-1]
        total += 2.0 * (a[0] if len(a) == 3 else 1) * a[-2] * a[-1] * b[-1]
    return total


def run_step_bench(args: argparse.Namespace, emit: Callable[[str], None] = print) -> dict[str, Any]:
    """Prints (through ``emit``) each task's step table and data-loading line (and with --compile the compiled
    step's line); returns their figures per task, times in seconds: ``step_s``, ``floor_s`` and ``ratios`` per
    repeat, ``collate_s`` per batch, ``wait_share`` (the prefetch wait over the step time), ``compiled``."""
    import torch

    from rotrnn.data import load_dataset
    from rotrnn.train.batches import Prefetcher, collate, epoch_batches, to_device
    from rotrnn.train.loop import autocast, build_model
    from rotrnn.train.optim import build_optimizer
    from rotrnn.train.step import objective
    from rotrnn.train.allocator import keep_freed_memory

    if getattr(args, "keep_freed_memory", True):
        keep_freed_memory()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    results: dict[str, dict[str, Any]] = {}
    for task in args.tasks.split(","):
        if task not in TASK_DATA:
            raise SystemExit(f"--tasks: unknown {task!r}; choose from {sorted(TASK_DATA)}")
        config = paper_config(task, args.model)
        net, layer = config["net"], config["layer"]
        B, repeats = args.step_batch, args.step_repeats
        with tempfile.TemporaryDirectory(prefix="rotrnn-bench-") as tmp:
            data = write_task_data(Path(tmp) / task, task, n=B * (2 * repeats + 3))
            ds = load_dataset(data, "train")
            meta = ds.meta
            torch.manual_seed(0)
            model = build_model(config, meta).to(device)
            opt, _ = build_optimizer(model, config["train"])
            batches = epoch_batches(len(ds), B, 0, 0, None)
            precision = config["train"].get("precision", "auto")

            def step(batch: dict[str, torch.Tensor], m=model) -> None:
                with autocast(device, precision):
                    out = m(batch["inputs"], batch["lengths"])
                loss, _, _ = objective(out, batch, meta)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            emit(f"\n# rotrnn bench step: paper {task}, {args.model}: {net['n_layers']} layers, d_model "
                 f"{net['d_model']}, layer {layer}, batch {B}, l_max {meta['l_max']}, device {device}, "
                 f"threads {torch.get_num_threads()}\n")
            first = to_device(collate(ds, batches[0]), device)
            step(first)  # warm-up (and the optimiser state)
            sync()
            counts: dict[str, int] = {}
            ops = record_matmuls(lambda: step(first), counts)
            floor = replay_matmuls(ops, device)
            floor()
            # step and floor alternate; the step runs on the prefetched batches (their real lengths)
            t_step, t_floor, ratios = [], [], []
            pin = device.type == "cuda"
            with Prefetcher(ds, batches, start=1, depth=2, pin_memory=pin) as loader:
                it = iter(loader)
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    floor()
                    sync()
                    t1 = time.perf_counter()
                    _, host = next(it)
                    step(to_device(host, device))
                    sync()
                    t2 = time.perf_counter()
                    t_floor.append(t1 - t0)
                    t_step.append(t2 - t1)
                    ratios.append((t2 - t1) / (t1 - t0))
                wait = loader.wait_s
            sync_collate = [_timed(lambda b=b: collate(ds, b)) for b in batches[1:repeats + 1]]
            med_step = statistics.median(t_step)
            tokens = sum(int(collate(ds, b)["lengths"].sum()) for b in batches[1:repeats + 1]) / repeats
            emit("| step ms (median, range) | tokens/s | dense floor ms | step / floor (median, range) | "
                 "matmul GFLOP | matmuls | operators |")
            emit("|---|---|---|---|---|---|---|")
            emit(f"| {ms(med_step)} ({ms(min(t_step))}-{ms(max(t_step))}) | "
                 f"{tokens / med_step:,.0f} | {ms(statistics.median(t_floor))} | {ratio_cell(ratios)} | "
                 f"{flops(ops) / 1e9:.1f} | {len(ops)} | {counts['kernels']} |")
            emit("\n(operators: the non-view ATen operators one step dispatches, each a kernel launch on a GPU)")
            emit(f"\ndata loading: collating one batch on the training thread takes "
                 f"{statistics.median(sync_collate) * 1e3:.2f} ms = "
                 f"{100 * statistics.median(sync_collate) / med_step:.3f} % of a step; with the prefetching "
                 f"thread the step waited {1e3 * wait / repeats:.3f} ms per batch = "
                 f"{percent(wait / sum(t_step))} % of the step time")
            results[task] = {"step_s": t_step, "floor_s": t_floor, "ratios": ratios, "collate_s": sync_collate,
                             "wait_share": wait / sum(t_step), "operators": counts["kernels"], "compiled": None}
            if args.compile:
                results[task]["compiled"] = _compiled_rows(model, step, first, ds, batches, repeats, device, sync,
                                                           med_step, emit)
    return {"device": str(device), "tasks": results}


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _compiled_rows(model, step, first, ds, batches, repeats, device, sync, eager_s, emit) -> dict[str, Any]:
    import torch

    from rotrnn.train.batches import collate, to_device

    compiled = torch.compile(model, dynamic=True)
    t0 = time.perf_counter()
    step(first, compiled)
    sync()
    compile_s = time.perf_counter() - t0
    times = []
    for b in batches[1:repeats + 1]:
        batch = to_device(collate(ds, b), device)
        t0 = time.perf_counter()
        step(batch, compiled)
        sync()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    emit(f"\ntorch.compile(model, dynamic=True): first step (compiling) {compile_s:.1f} s, then "
         f"{ms(med)} ms median ({ms(min(times))}-{ms(max(times))}) against eager "
         f"{ms(eager_s)} ms: {eager_s / med:.2f}x")
    return {"compile_s": compile_s, "step_s": times}


__all__ = ["register_step", "add_step_arguments", "run_step_bench", "record_matmuls", "replay_matmuls",
           "write_task_data", "TASK_DATA"]
