"""`rotrnn bench layer`: forward and forward+backward time of each layer per scan backend, against the floor set by
the six plain matrix products that the input and output projections need (forward and backward) at that shape.

Figures, not tests: they depend on the machine. Peak memory is measured on CUDA; on CPU the bytes that autograd
saves for backward are reported instead (the activation memory a training step holds).
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable


def register(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="benchmarks that print figures")
    bsub = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    p = bsub.add_parser("layer", help="layer forward / forward+backward per scan backend vs the matmul floor")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=4096)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--d-state", type=int, default=256, help="real state size (LRU gets d_state/2 complex states)")
    p.add_argument("--heads", type=int, default=32, help="RotRNN heads")
    p.add_argument("--dlr-state", type=int, default=16, help="DLR complex states per feature")
    p.add_argument("--layers", default="rotrnn,lru", help="comma-separated subset of rotrnn,lru,dlr")
    p.add_argument("--backends", default=None, help="comma-separated scan backends (default: all but reference)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="bfloat16 runs the projections under autocast (the scan accumulates in float32)")
    p.add_argument("--repeats", type=int, default=5)
    p.set_defaults(func=run_layer_bench)


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


def run_layer_bench(args: argparse.Namespace) -> int:
    import torch

    from rotrnn.nn import DLR, LRU, RotRNN
    from rotrnn.ops.scan import available_backends

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    B, L, d, S = args.batch, args.length, args.d_model, args.d_state
    backends = args.backends.split(",") if args.backends else [b for b in available_backends(device) if b != "reference"]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")
    tokens = B * L

    print(f"# rotrnn bench layer: batch {B}, length {L}, d_model {d}, d_state {S}, heads {args.heads}, "
          f"device {device}{' (' + torch.cuda.get_device_name(device) + ')' if cuda else ''}, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}, dtype {args.dtype}")

    # the floor: six matmuls of (B·L × d) and (d × S) shapes, forward and backward of both projections
    u2 = torch.randn(tokens, d, device=device)
    x2 = torch.randn(tokens, S, device=device)
    W = torch.randn(S, d, device=device)

    def floor():
        with autocast:
            u2 @ W.T, x2 @ W, x2 @ W, x2.T @ u2, u2 @ W.T, u2.T @ x2

    t_floor = _timeit(floor, args.repeats, sync)
    print(f"matmul floor (6 projections fwd+bwd): {t_floor * 1e3:.1f} ms\n")
    print("| layer | backend | fwd ms | fwd+bwd ms | tokens/s (fwd+bwd) | x floor | memory MB |")
    print("|---|---|---|---|---|---|---|")
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
            t_fb = _timeit(fwd_bwd, args.repeats, sync)
            if cuda:
                mem = f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f} peak"
            else:
                with autocast:
                    mem = f"{_saved_bytes(lambda: layer(u)) / 2**20:.0f} saved"
            print(f"| {name} | {backend} | {t_f * 1e3:.1f} | {t_fb * 1e3:.1f} | {tokens / t_fb:,.0f} | "
                  f"{t_fb / t_floor:.2f} | {mem} |")
    return 0
