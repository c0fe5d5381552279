"""One entry point for the diagonal complex recurrence h_t = λ ⊙ h_{t∓1} + v_t shared by RotRNN, LRU and DLR.

Backends are named after the files that hold them (flash-linear-attention's convention: ``naive.py`` is the ground
truth every fast path is tested against): ``naive`` (sequential loop), ``chunk`` (blockwise closed form: powers of λ
and a Toeplitz matrix product within a chunk, a short recurrence across chunks), ``recurrent`` (all chunks stepped in
parallel with PyTorch operations, then the same carry), ``fused_cpu`` (one C++ pass per direction, built on first use;
see ``fused_cpu.py``), ``fused_recurrent`` (one fused Triton kernel per direction, an associative scan over
tiles; complex64 only) and ``fused_chunk`` (Triton, each thread walking a chunk of time steps in registers with a
carry between chunks; see ``fused_chunk.py``).
The Triton backends are offered where they can run: on CUDA tensors when Triton imports, and on CPU tensors only
under ``TRITON_INTERPRET=1`` (Triton's slow interpreter, for tests); ``fused_cpu`` on CPU tensors where it builds.
``auto`` picks :data:`TRITON_DEFAULT` for complex64 CUDA tensors, ``fused_cpu`` for CPU tensors (``recurrent``
where it does not build) and ``recurrent`` otherwise (measured: ``rotrnn bench layer``); ``ROTRNN_SCAN_BACKEND``
overrides it globally.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from typing import Callable

import torch

from .chunk import scan_chunk
from .recurrent import scan_recurrent
from .naive import scan_naive

BACKENDS: dict[str, Callable[..., torch.Tensor]] = {
    "naive": scan_naive,
    "chunk": scan_chunk,
    "recurrent": scan_recurrent,
}


TRITON = "fused_recurrent"  # the tile-scan Triton backend, offered only where it can run
CHUNKED = "fused_chunk"  # the chunked-walk Triton backend, likewise
TRITON_BACKENDS = (TRITON, CHUNKED)
# auto's choice on CUDA: stays on the tile scan until a device run shows fused_chunk faster (issue 22; `make
# gpu-check` measures both)
TRITON_DEFAULT = TRITON
CPU = "fused_cpu"  # the C++ backend, offered on CPU tensors where it builds


@functools.cache
def _import_triton() -> bool:
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        importlib.import_module("triton")
    except ImportError:  # e.g. a Triton build that does not match this platform
        return False
    return True


# torch.compile asks once instead of tracing importlib (a graph break in every step; issue 22). Not on the cached
# function itself: Dynamo unwraps functools.cache before it looks for the mark
@torch.compiler.assume_constant_result
def _triton_importable() -> bool:
    return _import_triton()


def _interpreter_on() -> bool:
    # the same spellings Triton's own knob accepts
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in {"1", "true", "on", "yes"}


def triton_available(device: torch.device | str = "cpu") -> bool:
    """Whether the fused Triton backend can run on tensors of ``device``: CUDA, or CPU under TRITON_INTERPRET=1."""
    kind = torch.device(device).type
    if kind != "cuda" and not (kind == "cpu" and _interpreter_on()):
        return False
    return _triton_importable()


def cpu_available(device: torch.device | str = "cpu") -> bool:
    """Whether the fused C++ backend can run on tensors of ``device`` (builds it on the first call)."""
    from . import fused_cpu

    return torch.device(device).type == "cpu" and fused_cpu.available()


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    return [*BACKENDS, *([CPU] if cpu_available(device) else []),
            *(TRITON_BACKENDS if triton_available(device) else ())]


def _resolve(backend: str, v: torch.Tensor) -> str:
    if backend == "auto":
        backend = os.environ.get("ROTRNN_SCAN_BACKEND", "auto")
    if backend == "auto":
        if v.device.type == "cuda" and v.dtype == torch.complex64 and triton_available(v.device):
            return TRITON_DEFAULT
        return CPU if v.device.type == "cpu" and cpu_available() else "recurrent"
    if backend == CPU:
        if v.device.type != "cpu":
            raise ValueError(f"scan backend '{CPU}' runs on CPU tensors; got tensors on {v.device}")
        from . import fused_cpu

        if not torch.compiler.is_compiling():  # checked when eager; torch.compile must not trace the build
            fused_cpu.extension()  # raises BuildError naming why it cannot be built
        return backend
    if backend in TRITON_BACKENDS:
        if not triton_available(v.device):
            raise ValueError(
                f"scan backend '{backend}' needs Triton and CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors); "
                f"got tensors on {v.device}{'' if _triton_importable() else ' and Triton does not import'}"
            )
        return backend
    if backend not in BACKENDS:
        raise ValueError(f"unknown scan backend {backend!r}; choose one of {['auto', *BACKENDS, CPU, *TRITON_BACKENDS]}")
    return backend


def _triton_scan(name: str) -> Callable[..., torch.Tensor]:
    # imported on first use: importing decorates the kernels, which fixes compiled vs interpreted mode
    if name == CHUNKED:
        from .fused_chunk import scan_fused_chunk

        return scan_fused_chunk
    from .fused_recurrent import scan_fused_recurrent

    return scan_fused_recurrent


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
    name = _resolve(backend, v)
    if name == CPU:
        from .fused_cpu import scan_fused_cpu

        return scan_fused_cpu(lam, v, reverse=reverse)
    scan = _triton_scan(name) if name in TRITON_BACKENDS else BACKENDS[name]
    return scan(lam, v, reverse=reverse)


__all__ = ["linear_scan", "scan_naive", "scan_chunk", "scan_recurrent", "BACKENDS", "TRITON", "CHUNKED",
           "TRITON_BACKENDS", "TRITON_DEFAULT", "CPU",
           "available_backends", "triton_available", "cpu_available"]
