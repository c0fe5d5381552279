"""One entry point for the diagonal complex recurrence h_t = λ ⊙ h_{t∓1} + v_t shared by RotRNN, LRU and DLR.

Backends: ``reference`` (sequential loop, the ground truth), ``chunked`` (blockwise closed form: powers of λ and a
Toeplitz matrix product within a chunk, a short recurrence across chunks) and ``recurrent`` (all chunks stepped in
parallel, then the same carry; measured fastest on CPU, see ``rotrnn bench layer``). ``auto`` picks the best
available for the tensors' device; ``ROTRNN_SCAN_BACKEND`` overrides it globally.
"""
from __future__ import annotations

import os
from typing import Callable

import torch

from .chunk import scan_chunk
from .recurrent import scan_recurrent
from .naive import scan_naive

BACKENDS: dict[str, Callable[..., torch.Tensor]] = {
    "reference": scan_naive,
    "chunked": scan_chunk,
    "recurrent": scan_recurrent,
}


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    return list(BACKENDS)


def _resolve(backend: str, device: torch.device) -> str:
    if backend == "auto":
        backend = os.environ.get("ROTRNN_SCAN_BACKEND", "auto")
    if backend == "auto":
        return "recurrent"
    if backend not in BACKENDS:
        raise ValueError(f"unknown scan backend {backend!r}; choose one of {['auto', *BACKENDS]}")
    return backend


def linear_scan(lam: torch.Tensor, v: torch.Tensor, reverse: bool = False, backend: str = "auto") -> torch.Tensor:
    """h_t = lam ⊙ h_{t-1} + v_t (or h_{t+1} with ``reverse``), from a zero state.

    lam: (C,) complex, constant over time; v: (B, L, C) complex of the same dtype. Returns h, shaped like v.
    """
    if not (lam.is_complex() and v.is_complex()):
        raise TypeError(f"linear_scan needs complex lam and v, got {lam.dtype} and {v.dtype}")
    if v.dim() != 3 or lam.dim() != 1 or lam.shape[0] != v.shape[-1]:
        raise ValueError(f"linear_scan needs lam (C,) and v (B, L, C); got lam {tuple(lam.shape)}, v {tuple(v.shape)}")
    if lam.dtype != v.dtype:
        raise TypeError(f"lam and v must share a dtype, got {lam.dtype} and {v.dtype}")
    return BACKENDS[_resolve(backend, v.device)](lam, v, reverse=reverse)


__all__ = ["linear_scan", "scan_naive", "scan_chunk", "scan_recurrent", "BACKENDS", "available_backends"]
