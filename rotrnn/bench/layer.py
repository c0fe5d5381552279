"""`rotrnn bench layer`: forward and forward+backward time of each layer per scan backend, against the floor set by
the six plain matrix products that the input and output projections need (forward and backward) at that shape.

Figures, not tests: they depend on the machine. Peak memory is measured on CUDA; on CPU the bytes that autograd
saves for backward are reported instead (the activation memory a training step holds).

After the layer table comes the scan alone at the layer's shape (batch, length, d_state/2 complex channels) as
achieved bandwidth: the bytes the scan must move (:func:`scan_bytes`) over its time, against the measured
device-to-device copy bandwidth. Backends are listed where they can run (``rotrnn.ops.scan.available_backends``):
``fused_recurrent`` and ``fused_chunk`` on CUDA, ``fused_cpu`` on CPU where it builds.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import TYPE_CHECKING, Any, Callable

from rotrnn.bench.report import ratio_cell

if TYPE_CHECKING:
    from rotrnn.ops.scan.fused_chunk import Chunks
    from rotrnn.ops.scan.fused_recurrent import Tiles


def add_layer_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=4096)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--d-state", type=int, default=256, help="real state size (LRU gets d_state/2 complex states)")
    p.add_argument("--heads", type=int, default=32, help="RotRNN heads")
    p.add_argument("--dlr-state", type=int, default=16, help="DLR complex states per feature")
    p.add_argument("--layers", default="rotrnn,lru", help="comma-separated subset of rotrnn,lru,dlr")
    p.add_argument("--backends", default=None, help="comma-separated scan backends (default: all but naive)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="bfloat16 runs the projections under autocast (the scan accumulates in float32)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-scan-table", dest="scan_table", action="store_false",
                   help="skip the table of the scan alone (achieved GB/s against the copy bandwidth)")


def _timeit(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _paired(first: Callable[[], object], second: Callable[[], object], repeats: int,
            sync: Callable[[], None]) -> list[tuple[float, float]]:
    """(time of first, time of second) per repeat, run back to back after one warm-up of each: a ratio of the two
    from the same repeat sees the same machine load (the CPU is shared; absolute times drift)."""
    first(), second()
    sync()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        first()
        sync()
        t1 = time.perf_counter()
        second()
        sync()
        out.append((t1 - t0, time.perf_counter() - t1))
    return out


def _saved_bytes(fn: Callable[[], object]) -> int:
    import torch

    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def scan_bytes(batch: int, length: int, channels: int, element_size: int, backward: bool) -> int:
    """Bytes a diagonal scan must move at the least, as real pairs of ``element_size`` bytes.

    Forward: read v, write h (2 passes over the (batch, length, channels) complex tensor) and read λ.
    Forward+backward adds read g, read h, write ∂v (3 passes) and read λ, write ∂λ; the λ terms are per channel.
    """
    for name, val in (("batch", batch), ("length", length), ("channels", channels), ("element_size", element_size)):
        if val < 1:
            raise ValueError(f"scan_bytes: {name} must be positive, got {val}")
    tensor = batch * length * channels * 2 * element_size
    lam = channels * 2 * 4  # λ and ∂λ are float32 pairs
    return 5 * tensor + 3 * lam if backward else 2 * tensor + lam


def matmul_floor(tokens: int, d: int, S: int, device, autocast) -> Callable[[], object]:
    """The floor under any layer of this size: the six matmuls of (tokens × d) and (d × S) shapes that the input and
    output projections need, forward and backward, as one call to time."""
    import torch

    u2 = torch.randn(tokens, d, device=device)
    x2 = torch.randn(tokens, S, device=device)
    W = torch.randn(S, d, device=device)

    def floor():
        with autocast:
            u2 @ W.T, x2 @ W, x2 @ W, x2.T @ u2, u2 @ W.T, u2.T @ x2

    return floor


def copy_bandwidth(device, nbytes: int, repeats: int) -> float:
    """Device-to-device copy bandwidth in bytes/s: a copy of ``nbytes`` reads and writes them (2 · nbytes moved)."""
    import torch

    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).normal_()
    dst = torch.empty_like(src)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    t = _timeit(lambda: dst.copy_(src), repeats, sync)
    return 2 * src.numel() * 4 / t


def time_scan(backend: str, batch: int, length: int, channels: int, device, dtype: str, repeats: int,
              reverse: bool = False, tiles: Tiles | Chunks | None = None) -> tuple[float, float]:
    """(forward, forward+backward) seconds of one scan with gradients for v and λ.

    float32 runs ``linear_scan`` on complex64, and the Triton backends (``fused_recurrent``, ``fused_chunk``) their
    real-pair entry points on the same data (a free view); bfloat16 exists only for those (bfloat16 pairs, float32
    state). ``tiles`` sets the Triton launch shape (``fused_recurrent.Tiles`` or ``fused_chunk.Chunks``) instead
    of its default.
    """
    import importlib

    import torch

    from rotrnn.ops.scan import TRITON_BACKENDS, linear_scan

    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    gen = torch.Generator(device=device).manual_seed(0)
    r = 0.9 + 0.0999 * torch.rand(channels, device=device, generator=gen)
    lam = torch.polar(r, 6.283 * torch.rand(channels, device=device, generator=gen))
    v = torch.randn(batch, length, channels, dtype=torch.complex64, device=device, generator=gen)
    g = torch.randn_like(v)
    if tiles is not None and backend not in TRITON_BACKENDS:
        raise ValueError(f"time_scan: launch shapes apply to the Triton backends only, not {backend!r}")
    if dtype not in ("float32", "bfloat16") or (dtype == "bfloat16" and backend not in TRITON_BACKENDS):
        raise ValueError(f"time_scan: dtype {dtype!r} is not supported by the {backend!r} backend")
    if backend in TRITON_BACKENDS:
        scan_pairs = importlib.import_module(f"rotrnn.ops.scan.{backend}").scan_pairs
        lam, v, g = (torch.view_as_real(x) for x in (lam, v, g))
        if dtype == "bfloat16":
            v, g = v.bfloat16(), g.bfloat16()

        def scan(a, b):
            return scan_pairs(a, b, reverse, tiles)
    else:
        def scan(a, b):
            return linear_scan(a, b, reverse=reverse, backend=backend)
    lam_g, v_g = lam.clone().requires_grad_(), v.clone().requires_grad_()

    def fwd():
        with torch.no_grad():
            scan(lam, v)

    def fwd_bwd():
        scan(lam_g, v_g).backward(g)
        lam_g.grad = v_g.grad = None

    return _timeit(fwd, repeats, sync), _timeit(fwd_bwd, repeats, sync)


def print_scan_table(backends: list[str], batch: int, length: int, channels: int, device, dtype: str,
                     repeats: int, emit: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """The scan alone per backend, as achieved GB/s against the copy bandwidth of the same device; returns the rows
    (times in seconds, bandwidths in bytes/s)."""
    import torch

    from rotrnn.ops.scan import TRITON_BACKENDS

    device = torch.device(device)
    element_size = 2 if dtype == "bfloat16" else 4
    copy_mb = 1024 if device.type == "cuda" else 256
    copy = copy_bandwidth(device, copy_mb * 2**20, repeats)
    emit(f"\n## scan alone: batch {batch}, length {length}, {channels} complex channels, {dtype}; "
         f"copy bandwidth {copy / 1e9:.1f} GB/s ({copy_mb} MiB device-to-device)\n")
    emit("| backend | fwd ms | fwd GB/s | fwd % copy | fwd+bwd ms | fwd+bwd GB/s | fwd+bwd % copy |")
    emit("|---|---|---|---|---|---|---|")
    rows = []
    for backend in backends:
        if dtype == "bfloat16" and backend not in TRITON_BACKENDS:
            continue  # the complex backends have no bfloat16 scan: their layers upcast to complex64
        t_f, t_fb = time_scan(backend, batch, length, channels, device, dtype, repeats)
        bf = scan_bytes(batch, length, channels, element_size, False) / t_f
        bfb = scan_bytes(batch, length, channels, element_size, True) / t_fb
        emit(f"| {backend} | {t_f * 1e3:.2f} | {bf / 1e9:.3g} | {100 * bf / copy:.3g} | {t_fb * 1e3:.2f} | "
             f"{bfb / 1e9:.3g} | {100 * bfb / copy:.3g} |")
        rows.append({"backend": backend, "fwd_s": t_f, "fwd_bwd_s": t_fb, "fwd_bytes_s": bf, "fwd_bwd_bytes_s": bfb,
                     "copy_bytes_s": copy})
    return rows


def run_layer_bench(args: argparse.Namespace, emit: Callable[[str], None] = print) -> dict[str, Any]:
    """Prints (through ``emit``) the layer table, then the scan table; returns their figures: ``rows`` (one per
    layer and backend; ``ratios`` are the per-pair fwd+bwd / floor), ``scan`` (:func:`print_scan_table`)."""
    import torch

    from rotrnn.train.allocator import keep_freed_memory

    if getattr(args, "keep_freed_memory", True):
        keep_freed_memory()

    from rotrnn.nn import DLR, LRU, RotRNN
    from rotrnn.ops.scan import available_backends

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    B, L, d, S = args.batch, args.length, args.d_model, args.d_state
    backends = args.backends.split(",") if args.backends else [b for b in available_backends(device) if b != "naive"]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")
    tokens = B * L

    emit(f"# rotrnn bench layer: batch {B}, length {L}, d_model {d}, d_state {S}, heads {args.heads}, "
         f"device {device}{' (' + torch.cuda.get_device_name(device) + ')' if cuda else ''}, "
         f"torch {torch.__version__}, threads {torch.get_num_threads()}, dtype {args.dtype}")

    floor = matmul_floor(tokens, d, S, device, autocast)
    t_floor = _timeit(floor, args.repeats, sync)
    emit(f"matmul floor (6 projections fwd+bwd): {t_floor * 1e3:.1f} ms (median of {args.repeats}); each row's "
         "'x floor' pairs every timed forward+backward with a floor run just before it (median, range)\n")
    emit("| layer | backend | fwd ms | fwd+bwd ms | tokens/s (fwd+bwd) | x floor | memory MB |")
    emit("|---|---|---|---|---|---|---|")
    rows = []
    makers = {
        "rotrnn": lambda: RotRNN(d, S, args.heads),
        "lru": lambda: LRU(d, S // 2),
        "dlr": lambda: DLR(d, args.dlr_state),
    }
    u = torch.randn(B, L, d, device=device, requires_grad=True)
    g = torch.randn(B, L, d, device=device)
    for name in args.layers.split(","):
        if name not in makers:
            raise SystemExit(f"--layers: unknown layer {name!r}; choose from {sorted(makers)}")
        torch.manual_seed(0)
        layer = makers[name]().to(device)
        for backend in backends:
            layer.backend = backend

            def fwd():
                with torch.no_grad(), autocast:
                    layer(u)

            def fwd_bwd():
                with autocast:
                    y = layer(u)
                y.backward(g)

            t_f = _timeit(fwd, args.repeats, sync)
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            pairs = _paired(floor, fwd_bwd, args.repeats, sync)
            t_fb = statistics.median(t for _, t in pairs)
            ratios = [t / f for f, t in pairs]
            if cuda:
                mem = f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f} peak"
            else:
                with autocast:
                    mem = f"{_saved_bytes(lambda: layer(u)) / 2**20:.0f} saved"
            emit(f"| {name} | {backend} | {t_f * 1e3:.1f} | {t_fb * 1e3:.1f} | {tokens / t_fb:,.0f} | "
                 f"{ratio_cell(ratios)} | {mem} |")
            rows.append({"layer": name, "backend": backend, "fwd_s": t_f, "fwd_bwd_s": t_fb, "ratios": ratios})
    scan = print_scan_table(backends, B, L, S // 2, device, args.dtype, args.repeats, emit) if args.scan_table else []
    return {"device": str(device), "floor_s": t_floor, "rows": rows, "scan": scan}
