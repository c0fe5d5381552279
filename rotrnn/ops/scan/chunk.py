"""Chunked scan, blockwise closed form (matrix products within a chunk, a short recurrence across chunks).

The sequence is cut into chunks of T steps. Within a chunk the states from a zero start are h = W v with the
triangular Toeplitz matrix W[t, s] = λ^{t-s} (s ≤ t; s ≥ t and λ^{s-t} in reverse), one per channel: a batched
matrix product, O(L·T) work. The chunk-boundary states obey E_k = λ^T E_{k∓1} + S_k, itself a scan with λ^T over
L/T steps, solved by this routine recursively; each chunk then adds λ^{distance} E of its neighbour.
"""
from __future__ import annotations

import torch

from .function import make_scan, powers

DEFAULT_CHUNK = 32


def split_chunks(v: torch.Tensor, chunk: int) -> tuple[torch.Tensor, int, int]:
    """(B, L, C) -> zero-padded (B, n, T, C) with T = min(chunk, L); returns it with T and the padding."""
    B, L, C = v.shape
    T = max(1, min(chunk, L))
    n = -(-L // T)
    pad = n * T - L
    if pad:
        v = torch.nn.functional.pad(v, (0, 0, 0, pad))
    return v.reshape(B, n, T, C), T, pad


def chunk_kernel(lam: torch.Tensor, v: torch.Tensor, reverse: bool, chunk: int) -> torch.Tensor:
    B, L, C = v.shape
    if L == 0:
        return v.clone()
    x, T, pad = split_chunks(v.flip(1) if reverse else v, chunk)
    n = x.shape[1]
    pw = powers(lam, T)  # (T+1, C)
    idx = torch.arange(T, device=v.device)
    diff = idx[:, None] - idx[None, :]
    W = pw[diff.clamp(min=0)].permute(2, 0, 1) * (diff >= 0).to(pw.dtype)  # (C, T, T): W[c,t,s] = λ_c^{t-s}
    # channels are the batch of the matrix product: (B, n, T, C) -> (C, T, B·n)
    local = torch.bmm(W, x.permute(3, 2, 0, 1).reshape(C, T, B * n)).reshape(C, T, B, n).permute(2, 3, 1, 0)
    local = local.contiguous()
    if n > 1:
        carry = chunk_kernel(pw[T], local[:, :-1, T - 1, :].contiguous(), False, chunk)  # E_0 … E_{n-2}
        local[:, 1:].addcmul_(carry.unsqueeze(2), pw[1:])
    h = local.reshape(B, n * T, C)[:, :L]
    return h.flip(1) if reverse else h


scan_chunk = make_scan(chunk_kernel, DEFAULT_CHUNK)
