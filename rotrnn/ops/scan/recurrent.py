"""Chunk-parallel recurrence: the fastest exact scan on CPU.

The sequence is cut into n chunks of T steps; T sequential steps advance every chunk at once (each step an
elementwise multiply-add over (B, n, C)), the chunk-boundary states E_k = λ^T E_{k∓1} + S_k come from the same
routine recursively, and one fused pass adds λ^{distance} E of the neighbouring chunk. O(L) work and about
T + n Python-level steps, against the O(L·T) of the matrix form in ``chunk.py``.
"""
from __future__ import annotations

import torch

from .function import make_scan, powers, split_chunks

DEFAULT_CHUNK = 64


def recurrent_kernel(lam: torch.Tensor, v: torch.Tensor, reverse: bool, chunk: int) -> torch.Tensor:
    B, L, C = v.shape
    if L == 0:
        return v.clone()
    x, T, pad = split_chunks(v, chunk)
    if pad and reverse:  # padding must sit before the first step the reverse scan takes: shift it to the front
        x = torch.cat([x.new_zeros(B, pad, C), v], 1).reshape(x.shape)
    n = x.shape[1]
    h = torch.empty_like(x)
    order = range(T - 1, -1, -1) if reverse else range(T)
    prev = None
    for t in order:
        if prev is None:
            h[:, :, t] = x[:, :, t]
        else:
            torch.addcmul(x[:, :, t], lam, h[:, :, prev], out=h[:, :, t])
        prev = t
    if n > 1:
        pw = powers(lam, T)
        first = 0 if reverse else T - 1
        if reverse:  # E_k is the state entering chunk k-1 from the right; λ^{T-t} reaches step t
            carry = recurrent_kernel(pw[T], h[:, 1:, first].contiguous(), True, chunk)
            h[:, :-1].addcmul_(carry.unsqueeze(2), pw[1:].flip(0))
        else:
            carry = recurrent_kernel(pw[T], h[:, :-1, first].contiguous(), False, chunk)
            h[:, 1:].addcmul_(carry.unsqueeze(2), pw[1:])
    h = h.reshape(B, n * T, C)
    if pad:
        h = h[:, pad:] if reverse else h[:, :L]
    return h


scan_recurrent = make_scan(recurrent_kernel, DEFAULT_CHUNK)
