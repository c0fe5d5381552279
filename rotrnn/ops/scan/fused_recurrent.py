"""Fused Triton scan: h_t = λ ⊙ h_{t∓1} + v_t in one pass over v, forward and backward as their own kernels.

Triton has no complex type, so everything here works on real pairs: λ (C, 2), v and h (B, L, C, 2) with the last
axis (re, im), exactly ``torch.view_as_real`` of complex64 tensors. Inputs may be float32 or bfloat16; the state
and every product are float32, and outputs are written in the input's dtype.

One program owns one batch row and BLOCK_C channels and walks the length in tiles of BLOCK_L steps (any L: the
last tile is masked). Within a tile, ``tl.associative_scan`` over (λ-power, state) pairs gives every step's state
from a zero start together with λ^{distance}; adding λ^{distance} · carry completes it, and the tile's last state
(first, in reverse) is the carry into the next tile. The backward kernel runs the same tile scan over the output
gradient g with conj(λ) in the opposite direction (that is ∂/∂v) and, in the same pass, accumulates
Σ_t conj(h_prev_t) · a_t per program, h_prev being the state step t read (h_{t-1}; h_{t+1} in reverse), re-read
from the saved output rather than stored. Only λ and h are saved for backward; the λ-gradient partials are (B, C). The forward and backward are
``torch.library`` operators (``triton_op.py``), so ``torch.compile`` traces through them.
The launch shape (tile, warps, load pipeline depth) is a :class:`Tiles`. λ = γ e^{iθ} and the rotation by P stay
outside the kernel (worth fusing only if timing shows a clear gain; not timed on a GPU yet).

The kernels are decorated when this module is imported, so whether they are compiled or run by Triton's
interpreter is fixed then, by ``TRITON_INTERPRET`` (see ``INTERPRETED``); CPU tensors need the interpreter.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from .triton_op import on_complex, register

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16)


@triton.jit
def _combine(ar1, ai1, br1, bi1, ar2, ai2, br2, bi2):
    # (a1, b1) earlier in scan order, then (a2, b2): h ↦ a2 (a1 h + b1) + b2, all complex as (re, im)
    return (
        ar2 * ar1 - ai2 * ai1,
        ar2 * ai1 + ai2 * ar1,
        ar2 * br1 - ai2 * bi1 + br2,
        ar2 * bi1 + ai2 * br1 + bi2,
    )


@triton.jit
def _tile_scan(lr, li, xr, xi, cr, ci, valid, REVERSE: tl.constexpr):
    """States of one (BLOCK_L, BLOCK_C) tile given the carry (cr, ci) entering it; invalid steps are identities."""
    ar = tl.where(valid, lr[None, :], 1.0)
    ai = tl.where(valid, li[None, :], 0.0)
    pr, pi, hr, hi = tl.associative_scan((ar, ai, xr, xi), 0, _combine, reverse=REVERSE)
    # pr + i·pi is λ^(number of valid steps from the tile edge up to and including this one)
    hr = hr + pr * cr[None, :] - pi * ci[None, :]
    hi = hi + pr * ci[None, :] + pi * cr[None, :]
    return hr, hi


@triton.jit
def _edge_row(xr, xi, rows, ROW: tl.constexpr):
    """Row ROW of a (BLOCK_L, BLOCK_C) tile as two (BLOCK_C,) vectors."""
    pick = (rows == ROW)[:, None]
    return tl.sum(tl.where(pick, xr, 0.0), axis=0), tl.sum(tl.where(pick, xi, 0.0), axis=0)


@triton.jit
def _tile_offsets(b, i, n_tiles, L, C, cols, cmask, REVERSE: tl.constexpr, BLOCK_L: tl.constexpr):
    """Tile i in scan order: its time steps t, the (BLOCK_L, BLOCK_C) mask and the offsets of the pairs' real parts."""
    start = (n_tiles - 1 - i) * BLOCK_L if REVERSE else i * BLOCK_L
    t = start + tl.arange(0, BLOCK_L)
    valid = (t < L)[:, None] & cmask[None, :]
    offs = b * L * C * 2 + (t.to(tl.int64)[:, None] * C + cols[None, :]) * 2
    return t, valid, offs


@triton.jit
def _fwd_tile(lam_r, lam_i, v_ptr, h_ptr, b, i, n_tiles, L, C, cols, cmask, cr, ci, REVERSE: tl.constexpr,
              BLOCK_L: tl.constexpr):
    """One tile of the forward kernel: load v, scan, store h; returns the carry into the next tile."""
    t, valid, offs = _tile_offsets(b, i, n_tiles, L, C, cols, cmask, REVERSE, BLOCK_L)
    pairs = offs[:, :, None] + tl.arange(0, 2)[None, None, :]
    xr, xi = tl.split(tl.load(v_ptr + pairs, mask=valid[:, :, None], other=0.0).to(tl.float32))
    hr, hi = _tile_scan(lam_r, lam_i, xr, xi, cr, ci, valid, REVERSE)
    tl.store(h_ptr + pairs, tl.join(hr, hi).to(h_ptr.dtype.element_ty), mask=valid[:, :, None])
    return _edge_row(hr, hi, tl.arange(0, BLOCK_L), 0 if REVERSE else BLOCK_L - 1)


@triton.jit
def _scan_fwd_kernel(lam_ptr, v_ptr, h_ptr, L, C, n_tiles, REVERSE: tl.constexpr, BLOCK_L: tl.constexpr,
                     BLOCK_C: tl.constexpr, NUM_STAGES: tl.constexpr, INTERPRET: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < C
    lam_r = tl.load(lam_ptr + 2 * cols, mask=cmask, other=0.0).to(tl.float32)
    lam_i = tl.load(lam_ptr + 2 * cols + 1, mask=cmask, other=0.0).to(tl.float32)
    cr = tl.zeros((BLOCK_C,), dtype=tl.float32)
    ci = tl.zeros((BLOCK_C,), dtype=tl.float32)
    if INTERPRET:
        # the interpreter keeps scalar arguments as 1-element arrays, which NumPy >= 2.3 no longer lets range()
        # read; a while loop only needs their truth value. Compiled, tl.range with num_stages makes Triton prefetch
        # the next tiles' loads (asynchronous copies into shared memory) while this tile is scanned.
        i = 0
        while i < n_tiles:
            cr, ci = _fwd_tile(lam_r, lam_i, v_ptr, h_ptr, b, i, n_tiles, L, C, cols, cmask, cr, ci, REVERSE,
                               BLOCK_L)
            i += 1
    else:
        for i in tl.range(n_tiles, num_stages=NUM_STAGES):
            cr, ci = _fwd_tile(lam_r, lam_i, v_ptr, h_ptr, b, i, n_tiles, L, C, cols, cmask, cr, ci, REVERSE,
                               BLOCK_L)


@triton.jit
def _bwd_tile(lam_r, lam_i, g_ptr, h_ptr, dv_ptr, b, i, n_tiles, L, C, cols, cmask, cr, ci, accr, acci,
              REVERSE: tl.constexpr, BLOCK_L: tl.constexpr):
    """One tile of the backward kernel (REVERSE is the forward scan's direction; the adjoint runs against it)."""
    t, valid, offs = _tile_offsets(b, i, n_tiles, L, C, cols, cmask, not REVERSE, BLOCK_L)
    pairs = offs[:, :, None] + tl.arange(0, 2)[None, None, :]
    gr, gi = tl.split(tl.load(g_ptr + pairs, mask=valid[:, :, None], other=0.0).to(tl.float32))
    ar, ai = _tile_scan(lam_r, lam_i, gr, gi, cr, ci, valid, not REVERSE)
    tl.store(dv_ptr + pairs, tl.join(ar, ai).to(dv_ptr.dtype.element_ty), mask=valid[:, :, None])
    # h_prev, the state step t read, sits one step back in the forward direction; zero outside [0, L)
    step = -1 if REVERSE else 1
    tp = t - step
    pvalid = valid & ((tp >= 0) & (tp < L))[:, None]
    hp = tl.load(h_ptr + pairs - 2 * C * step, mask=pvalid[:, :, None], other=0.0).to(tl.float32)
    hpr, hpi = tl.split(hp)
    accr += tl.sum(hpr * ar + hpi * ai, axis=0)
    acci += tl.sum(hpr * ai - hpi * ar, axis=0)
    cr, ci = _edge_row(ar, ai, tl.arange(0, BLOCK_L), BLOCK_L - 1 if REVERSE else 0)
    return cr, ci, accr, acci


@triton.jit
def _scan_bwd_kernel(lam_ptr, g_ptr, h_ptr, dv_ptr, dlam_ptr, L, C, n_tiles, REVERSE: tl.constexpr,
                     BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr, NUM_STAGES: tl.constexpr,
                     INTERPRET: tl.constexpr):
    """dv = scan of g with conj(λ) against the forward direction; dlam[b, c] = Σ_t conj(h_prev_t) dv_t."""
    b = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < C
    lam_r = tl.load(lam_ptr + 2 * cols, mask=cmask, other=0.0).to(tl.float32)
    lam_i = -tl.load(lam_ptr + 2 * cols + 1, mask=cmask, other=0.0).to(tl.float32)  # conj(λ)
    cr = tl.zeros((BLOCK_C,), dtype=tl.float32)
    ci = tl.zeros((BLOCK_C,), dtype=tl.float32)
    accr = tl.zeros((BLOCK_C,), dtype=tl.float32)
    acci = tl.zeros((BLOCK_C,), dtype=tl.float32)
    if INTERPRET:  # see _scan_fwd_kernel
        i = 0
        while i < n_tiles:
            cr, ci, accr, acci = _bwd_tile(lam_r, lam_i, g_ptr, h_ptr, dv_ptr, b, i, n_tiles, L, C, cols, cmask,
                                           cr, ci, accr, acci, REVERSE, BLOCK_L)
            i += 1
    else:
        for i in tl.range(n_tiles, num_stages=NUM_STAGES):
            cr, ci, accr, acci = _bwd_tile(lam_r, lam_i, g_ptr, h_ptr, dv_ptr, b, i, n_tiles, L, C, cols, cmask,
                                           cr, ci, accr, acci, REVERSE, BLOCK_L)
    dl = (b * C + cols) * 2
    tl.store(dlam_ptr + dl, accr, mask=cmask)
    tl.store(dlam_ptr + dl + 1, acci, mask=cmask)


#: True when the kernels were decorated under TRITON_INTERPRET=1 (they then run on CPU tensors, slowly)
INTERPRETED = isinstance(_scan_fwd_kernel, InterpretedFunction)


@dataclass(frozen=True)
class Tiles:
    """Launch shape: BLOCK_L steps x BLOCK_C channels per tile, warps per program, pipeline stages of the loads.

    The defaults are the fastest of twelve launch shapes timed on an H200 (``reports/perf/scan-h200.md``: float32,
    batch 50, 128 complex channels): 32x8 ran forward+backward in 1.01 ms at L = 2048 and 5.52 ms at L = 16384,
    against 1.13 and 6.88 ms for the 32x16 used before; it compiles for sm_90 in 72-91 registers without spills.
    Splitting the length into segments run in parallel (an extra pass for the segments' end states; tried at commit
    28fce78 and removed) was slower at every segment length tried (8-12 % of copy bandwidth against 11-18 %): the
    in-tile scan's arithmetic, not the number of programs, bounds the kernel. ``benchmarks/scan_gpu.py`` times
    alternatives on a GPU, and ``ROTRNN_SCAN_TILES`` sets another default (:data:`DEFAULT_TILES`).
    Block sizes are clipped to the problem (a short sequence or few channels get smaller tiles).
    """

    block_l: int = 32
    block_c: int = 8
    num_warps: int = 4
    num_stages: int = 3

    def __post_init__(self):
        for name in ("block_l", "block_c", "num_warps"):
            val = getattr(self, name)
            if not isinstance(val, int) or val < (2 if name != "num_warps" else 1) or val & (val - 1):
                low = 2 if name != "num_warps" else 1
                raise ValueError(f"Tiles.{name} must be a power of two >= {low}, got {val!r}")
        if not isinstance(self.num_stages, int) or self.num_stages < 1:
            raise ValueError(f"Tiles.num_stages must be a positive integer, got {self.num_stages!r}")

    @classmethod
    def parse(cls, text: str) -> Tiles:
        """'32x16' or '32x16w4s3' (BLOCK_L x BLOCK_C, optional warps and stages); 'default' for the defaults."""
        if text == "default":
            return cls()
        m = re.fullmatch(r"(\d+)x(\d+)(?:w(\d+))?(?:s(\d+))?", text)
        if not m:
            raise ValueError(f"tile shape {text!r}: expected LxC[wW][sS], e.g. 32x16 or 64x32w8s2, or 'default'")
        d = cls()
        return cls(int(m[1]), int(m[2]), int(m[3] or d.num_warps), int(m[4] or d.num_stages))

    def label(self) -> str:
        return f"{self.block_l}x{self.block_c}w{self.num_warps}s{self.num_stages}"

    def clipped(self, L: int, C: int) -> Tiles:
        return replace(self, block_l=min(self.block_l, triton.next_power_of_2(max(L, 2))),
                       block_c=min(self.block_c, triton.next_power_of_2(max(C, 2))))


def _default_tiles() -> Tiles:
    text = os.environ.get("ROTRNN_SCAN_TILES", "").strip()
    try:
        return Tiles.parse(text) if text else Tiles()
    except ValueError as e:
        raise ValueError(f"ROTRNN_SCAN_TILES: {e}") from None


#: the launch shape when none is given: ROTRNN_SCAN_TILES (e.g. "64x8w4s3"; read at import) or Tiles()'s defaults
DEFAULT_TILES = _default_tiles()


def _empty(shape: tuple[int, ...], like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Every output buffer of this module comes from here (tests replace it to poison buffers with NaN)."""
    return torch.empty(shape, dtype=dtype or like.dtype, device=like.device)


def _check(lam: torch.Tensor, v: torch.Tensor, vname: str = "v") -> None:
    if v.dim() != 4 or v.shape[-1] != 2 or lam.shape != (v.shape[2], 2):
        raise ValueError(
            f"fused scan needs real pairs lam (C, 2) and {vname} (B, L, C, 2); "
            f"got lam {tuple(lam.shape)}, {vname} {tuple(v.shape)}"
        )
    if v.dtype not in SUPPORTED_DTYPES or lam.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"fused scan supports float32 and bfloat16 pairs, got lam {lam.dtype}, {vname} {v.dtype}")
    if lam.device != v.device:
        raise ValueError(f"lam and {vname} are on different devices: {lam.device} and {v.device}")
    if v.device.type != "cuda" and not INTERPRETED:
        raise RuntimeError(
            f"fused scan on {v.device} tensors needs Triton's interpreter: set TRITON_INTERPRET=1 before "
            "rotrnn.ops.scan.fused_recurrent is first imported (or use CUDA tensors)"
        )


def fused_scan_forward(lam: torch.Tensor, v: torch.Tensor, reverse: bool = False, tiles: Tiles | None = None
                       ) -> torch.Tensor:
    """h (B, L, C, 2) in v's dtype from lam (C, 2) and v (B, L, C, 2); no autograd."""
    _check(lam, v)
    B, L, C, _ = v.shape
    h = _empty(tuple(v.shape), v)
    if h.numel() == 0:
        return h
    t = (tiles or DEFAULT_TILES).clipped(L, C)
    _scan_fwd_kernel[(B, triton.cdiv(C, t.block_c))](
        lam.float().contiguous(), v.contiguous(), h, L, C, triton.cdiv(L, t.block_l), REVERSE=bool(reverse),
        BLOCK_L=t.block_l, BLOCK_C=t.block_c, NUM_STAGES=t.num_stages, INTERPRET=INTERPRETED, num_warps=t.num_warps)
    return h


def fused_scan_backward(lam: torch.Tensor, h: torch.Tensor, g: torch.Tensor, reverse: bool = False,
                        tiles: Tiles | None = None, dv_dtype: torch.dtype | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(∂/∂v in ``dv_dtype`` (default g's), ∂/∂λ (C, 2) float32) from the saved output h and the output gradient g.

    No autograd. Gradients follow PyTorch's convention for complex numbers as pairs: (∂L/∂re, ∂L/∂im).
    """
    _check(lam, g, "g")
    if h.shape != g.shape or h.device != g.device:
        raise ValueError(f"h and g must match: got h {tuple(h.shape)} on {h.device}, g {tuple(g.shape)} on {g.device}")
    B, L, C, _ = g.shape
    dv = _empty(tuple(g.shape), g, dv_dtype)
    partial = _empty((B, C, 2), g, torch.float32)
    if g.numel() == 0:
        return dv, torch.zeros((C, 2), dtype=torch.float32, device=g.device)
    t = (tiles or DEFAULT_TILES).clipped(L, C)
    _scan_bwd_kernel[(B, triton.cdiv(C, t.block_c))](
        lam.float().contiguous(), g.contiguous(), h.contiguous(), dv, partial, L, C, triton.cdiv(L, t.block_l),
        REVERSE=bool(reverse), BLOCK_L=t.block_l, BLOCK_C=t.block_c, NUM_STAGES=t.num_stages,
        INTERPRET=INTERPRETED, num_warps=t.num_warps)
    return dv, partial.sum(0)


#: the differentiable scan on real pairs (lam (C, 2), v (B, L, C, 2) -> h), the operators ``rotrnn::scan_fused_recurrent``
#: and ``..._backward`` (registered with torch.library so that torch.compile traces through it; see
#: ``triton_op.py``)
scan_pairs = register("scan_fused_recurrent", fused_scan_forward, fused_scan_backward, Tiles.parse)

#: the ``fused_recurrent`` backend of ``linear_scan`` on complex64
scan_fused_recurrent = on_complex("fused_recurrent", scan_pairs)
