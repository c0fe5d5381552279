"""Chunk-parallel recurrence: the fastest exact scan on CPU.

The first L - L mod T steps (the last ones for the reverse scan) are cut into n chunks of T steps. T sequential
steps advance every chunk at once from a zero state (each step an elementwise multiply-add over (B, n, C)); the
chunk-boundary states E_k = λ^T E_{k∓1} + S_k come from the same routine recursively; one fused pass adds
λ^{distance} E of the neighbouring chunk while writing the output. The remaining L mod T steps continue
sequentially from the last full chunk. O(L) work and about T + n + (L mod T) Python-level steps, against the
O(L·T) of the matrix form in ``chunk.py``.

Memory layout, for CPU caches: the local states are kept time-major, (T, B, n, C), so that every one of the T
steps reads and writes one contiguous slab (measured about 2.5x faster than stepping through a (B, n, T, C)
tensor with stride T·C), and the input is read through a view: no padding copy when T does not divide L.
"""
from __future__ import annotations

import torch

from .function import make_scan, powers

DEFAULT_CHUNK = 64


def _chunks(lam: torch.Tensor, x: torch.Tensor, out: torch.Tensor, reverse: bool, chunk: int) -> None:
    """Scan x (B, n, T, C), a view, chunk by chunk into out (B, n, T, C), a view of the same shape."""
    B, n, T, C = x.shape
    local = x.new_empty(T, B, n, C)  # states within each chunk from a zero start, time-major
    order = range(T - 1, -1, -1) if reverse else range(T)
    prev = None
    for t in order:
        if prev is None:
            local[t].copy_(x[:, :, t])
        else:
            torch.addcmul(x[:, :, t], lam, local[prev], out=local[t])
        prev = t
    by_chunk = local.permute(1, 2, 0, 3)  # (B, n, T, C) view
    if n == 1:
        out.copy_(by_chunk)
        return
    pw = powers(lam, T)
    if reverse:  # E_k is the state entering chunk k-1 from its right; λ^{T-t} reaches step t
        carry = recurrent_kernel(pw[T], local[0, :, 1:].contiguous(), True, chunk)
        torch.addcmul(by_chunk[:, :-1], carry.unsqueeze(2), pw[1:].flip(0), out=out[:, :-1])
        out[:, -1].copy_(by_chunk[:, -1])
    else:
        carry = recurrent_kernel(pw[T], local[T - 1, :, :-1].contiguous(), False, chunk)
        torch.addcmul(by_chunk[:, 1:], carry.unsqueeze(2), pw[1:], out=out[:, 1:])
        out[:, 0].copy_(by_chunk[:, 0])


def recurrent_kernel(lam: torch.Tensor, v: torch.Tensor, reverse: bool, chunk: int) -> torch.Tensor:
    B, L, C = v.shape
    h = torch.empty_like(v)
    if L == 0:
        return h
    T = min(chunk, L)
    n, rest = divmod(L, T)
    main = slice(rest, L) if reverse else slice(0, L - rest)
    _chunks(lam, v[:, main].view(B, n, T, C), h[:, main].view(B, n, T, C), reverse, chunk)
    # the L mod T steps left over continue from the neighbouring full chunk, one at a time
    steps = range(rest - 1, -1, -1) if reverse else range(L - rest, L)
    for t in steps:
        torch.addcmul(v[:, t], lam, h[:, t + 1 if reverse else t - 1], out=h[:, t])
    return h


scan_recurrent = make_scan(recurrent_kernel, DEFAULT_CHUNK)
