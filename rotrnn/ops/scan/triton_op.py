"""The Triton scans as ``torch.library`` operators: forward and backward ops with shape functions and autograd.

Registered operators are opaque to ``torch.compile``: Dynamo records one call instead of tracing the Python that
launches the kernels (buffer allocation, launch grids, Triton's launcher), so a model step that runs a Triton scan
compiles to one graph with no break (``fullgraph=True``), AOTAutograd puts the backward op into the backward graph,
and the ``reduce-overhead`` mode can capture the step as one CUDA graph. The same pattern as the CPU scan
(``fused_cpu.py``), shared by both Triton backends (``fused_recurrent.py``, ``fused_chunk.py``).

Each backend supplies, on real pairs (``torch.view_as_real`` of complex64; float32 or bfloat16):

    forward(lam (C, 2), v (B, L, C, 2), reverse, launch) -> h like v
    backward(lam, h, g, reverse, launch, dv_dtype=...) -> (∂/∂v like h, ∂/∂λ (C, 2) float32)
    parse(text) -> launch

``launch`` is the backend's launch shape (``Tiles``, ``Chunks``; None for its default). The operators carry it as
text (its ``label()``; "" for the default), since an operator's schema takes only tensors and plain values. Only λ
and h are saved for backward.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16)

Forward = Callable[[torch.Tensor, torch.Tensor, bool, Any], torch.Tensor]
Backward = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def register(name: str, forward: Forward, backward: Backward, parse: Callable[[str], Any]
             ) -> Callable[..., torch.Tensor]:
    """Register ``rotrnn::<name>`` and ``rotrnn::<name>_backward``; returns the differentiable
    ``scan(lam, v, reverse=False, launch=None) -> h`` on real pairs."""

    def launch_of(config: str) -> Any:
        return parse(config) if config else None

    @torch.library.custom_op(f"rotrnn::{name}", mutates_args=())
    def _forward(lam: torch.Tensor, v: torch.Tensor, reverse: bool, config: str) -> torch.Tensor:
        return forward(lam, v, reverse, launch_of(config))

    @_forward.register_fake
    def _(lam: torch.Tensor, v: torch.Tensor, reverse: bool, config: str) -> torch.Tensor:
        return torch.empty_like(v)

    @torch.library.custom_op(f"rotrnn::{name}_backward", mutates_args=())
    def _backward(lam: torch.Tensor, h: torch.Tensor, g: torch.Tensor, reverse: bool, config: str
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        return backward(lam, h, g, reverse, launch_of(config), dv_dtype=h.dtype)

    @_backward.register_fake
    def _(lam: torch.Tensor, h: torch.Tensor, g: torch.Tensor, reverse: bool, config: str
          ) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.empty_like(h), lam.new_empty(lam.shape, dtype=torch.float32)

    def setup_context(ctx, inputs, output) -> None:
        lam, _, reverse, config = inputs
        ctx.save_for_backward(lam, output)
        ctx.reverse, ctx.config = reverse, config

    def grad(ctx, g):
        lam, h = ctx.saved_tensors
        dv, dlam = _backward(lam, h, g.to(h.dtype).contiguous(), ctx.reverse, ctx.config)
        return dlam.to(lam.dtype), dv, None, None

    _forward.register_autograd(grad, setup_context=setup_context)

    def scan(lam: torch.Tensor, v: torch.Tensor, reverse: bool = False, launch: Any = None) -> torch.Tensor:
        """Differentiable scan on real pairs: lam (C, 2), v (B, L, C, 2), float32 or bfloat16 -> h like v."""
        return _forward(lam, v.contiguous(), reverse, launch.label() if launch is not None else "")

    scan.forward_op, scan.backward_op = _forward, _backward
    return scan


def on_complex(name: str, scan_pairs: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """The backend ``name`` of ``linear_scan`` from its scan on real pairs: lam (C,) and v (B, L, C) complex64 ->
    h (B, L, C) complex64; the launch shape (``Tiles``/``Chunks``, or None for the default) is passed through."""

    def scan(lam: torch.Tensor, v: torch.Tensor, reverse: bool = False, launch=None) -> torch.Tensor:
        if lam.dtype != torch.complex64 or v.dtype != torch.complex64:
            raise TypeError(
                f"the {name} scan backend takes complex64 (float32 pairs), got lam {lam.dtype} and v {v.dtype}; "
                "use backend 'recurrent' or 'chunk' for complex128"
            )
        return torch.view_as_complex(scan_pairs(torch.view_as_real(lam), torch.view_as_real(v.contiguous()), reverse,
                                                launch))

    scan.__name__ = scan.__qualname__ = f"scan_{name}"
    scan.__doc__ = f"The ``{name}`` backend of ``linear_scan``: lam (C,) and v (B, L, C) complex64 -> h (B, L, C)."
    return scan
