"""Fused Triton scan, chunked: h_t = λ ⊙ h_{t∓1} + v_t walked sequentially in registers, lanes along channels.

Built the way the scans that approach copy bandwidth are (CUB's single-pass scan, Merrill and Garland 2016;
proger/accelerated-scan; mamba's selective scan): each thread owns a few complex channels of one batch row and
walks a chunk of consecutive time steps in registers, one complex multiply-add per step, with no associative scan,
no λ-power track and no exchange between lanes inside the chunk. A warp's lanes sit along the channels, so each step
of a warp is one coalesced row of 32·VEC complex channels, and each (re, im) pair is loaded and stored as one
machine word (float32 pairs as 64-bit integers, bfloat16 pairs as 32-bit; unpacked by bit casts). Only chunk totals
cross chunks, in three launches:

1. ``ends``: every chunk but the last in scan order walks its steps from a zero state and stores its end state;
2. ``carry``: one small sequential scan per (batch row, channel block) over the chunk ends with λ^CHUNK gives the
   state entering each chunk;
3. ``walk``: every chunk walks again from its carry and stores h.

A sequence that fits in one chunk needs only the third launch. The chunk grid keeps the device busy at short
lengths (ListOps: 2048 steps x 50 rows) where one program per row would leave most of it idle. The cost is one
extra read of v (the first launch), so the forward moves three tensors where two are unavoidable; a single pass with
decoupled look-back would save it, but its result depends on which predecessors had finished (not deterministic)
unless every chunk waits for its predecessor's inclusive state.

Steps are loaded UNROLL at a time before they are used, so each thread keeps several loads in flight (the walk
itself is a dependent chain). Every chunk walks exactly CHUNK steps; steps past the length are masked loads of
zero. In the forward direction they come after the last valid step of the last chunk (whose end state nobody reads,
and whose stores are masked); in reverse they come first in the walk of the first chunk in scan order, whose state
is still exactly zero, so λ·0 + 0 leaves it zero.

Backward (the mathematics of :mod:`.function`): the adjoint a is the same chunked walk over the output gradient g
with conj(λ) in the opposite direction, ∂/∂v = a, and ∂/∂λ = Σ_{b,t} conj(h_prev_t) a_t, h_prev being the state step
t read (h_{t-1}; h_{t+1} in reverse), re-read from the saved output during the third launch and summed per chunk
into float32 partials (B, chunks, C) that are summed afterwards: deterministic, no atomics.

Inputs are real pairs, ``torch.view_as_real`` of complex64, in float32 or bfloat16; the state and every product
are float32; outputs are in the input's dtype. The operators are registered with ``torch.library`` (see
:mod:`.triton_op`), so ``torch.compile`` traces through them without a graph break.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from .triton_op import on_complex, register

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16)
UNROLL = 4  # steps loaded before they are used: the loads a thread keeps in flight (the kernel spells out four)
_UNROLL = tl.constexpr(UNROLL)  # the same, as the kernel reads it


@triton.jit
def _unpack(w, WORD64: tl.constexpr):
    """One machine word -> (re, im) float32: float32 pairs in an int64, bfloat16 pairs in an int32 (re first)."""
    if WORD64:
        re_ = w.to(tl.int32).to(tl.float32, bitcast=True)
        im_ = (w >> 32).to(tl.int32).to(tl.float32, bitcast=True)
    else:  # a bfloat16 is the upper half of the float32 with the same value
        re_ = (w << 16).to(tl.float32, bitcast=True)
        im_ = ((w >> 16) << 16).to(tl.float32, bitcast=True)
    return re_, im_


@triton.jit
def _pack(re_, im_, WORD64: tl.constexpr):
    """(re, im) float32 -> one machine word (rounding to bfloat16, to nearest even, for 32-bit words)."""
    if WORD64:
        lo = re_.to(tl.int32, bitcast=True).to(tl.int64) & 0xFFFFFFFF
        hi = im_.to(tl.int32, bitcast=True).to(tl.int64) << 32
    else:
        lo = re_.to(tl.bfloat16).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
        hi = im_.to(tl.bfloat16).to(tl.int16, bitcast=True).to(tl.int32) << 16
    return lo | hi


@triton.jit
def _step(hr, hi, lr, li, w, WORD64: tl.constexpr):
    """h ↦ λ h + x for one step, x given as its packed word."""
    xr, xi = _unpack(w, WORD64)
    return lr * hr - li * hi + xr, lr * hi + li * hr + xi


@triton.jit
def _grad_step(accr, acci, hw, ar, ai, WORD64: tl.constexpr):
    """acc += conj(h_prev) · a."""
    pr, pi = _unpack(hw, WORD64)
    return accr + pr * ar + pi * ai, acci + pr * ai - pi * ar


@triton.jit
def _walk_kernel(lam_ptr, x_ptr, y_ptr, h_ptr, carry_ptr, end_ptr, part_ptr, L, C, n_chunks,
                 REVERSE: tl.constexpr, CONJ: tl.constexpr, STORE: tl.constexpr, CARRY: tl.constexpr,
                 END: tl.constexpr, GRAD: tl.constexpr, WORD64: tl.constexpr, CHUNK: tl.constexpr,
                 BLOCK_C: tl.constexpr):
    """One chunk of one batch row's BLOCK_C channels: walk x (packed words, (B, L, C)) with λ (or conj λ).

    Program (b, channel block, j), j the chunk's index in scan order. STORE: write the states to y; CARRY: start
    from carry[b, j] (else zero); END: write the end state to end[b, j]; GRAD (the backward's third launch): read
    h_prev from h and write this chunk's Σ conj(h_prev) a to part[b, j].
    """
    b = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    j = tl.program_id(2)
    cmask = cols < C
    lr = tl.load(lam_ptr + 2 * cols, mask=cmask, other=0.0)
    li = tl.load(lam_ptr + 2 * cols + 1, mask=cmask, other=0.0)
    if CONJ:
        li = -li
    chunk = (n_chunks - 1 - j) if REVERSE else j  # the chunk's index in time
    side = (b * n_chunks + j) * C + cols  # this program's row of the (B, chunks, C) side buffers
    if CARRY:
        hr = tl.load(carry_ptr + 2 * side, mask=cmask, other=0.0)
        hi = tl.load(carry_ptr + 2 * side + 1, mask=cmask, other=0.0)
    else:
        hr = tl.zeros((BLOCK_C,), dtype=tl.float32)
        hi = tl.zeros((BLOCK_C,), dtype=tl.float32)
    accr = tl.zeros((BLOCK_C,), dtype=tl.float32)
    acci = tl.zeros((BLOCK_C,), dtype=tl.float32)
    # the walk's first step and its direction; row pointers advance by one step of C words
    d = -1 if REVERSE else 1
    t0 = chunk * CHUNK + (CHUNK - 1 if REVERSE else 0)
    row = b * L * C + cols
    for i in tl.range(0, CHUNK, _UNROLL, loop_unroll_factor=1):  # a real loop: its body is the unit of work
        t = t0 + d * i
        ta, tb, tc, td = t, t + d, t + 2 * d, t + 3 * d
        # all UNROLL loads first, so that they are in flight together
        wa = tl.load(x_ptr + row + ta.to(tl.int64) * C, mask=cmask & (ta < L), other=0)
        wb = tl.load(x_ptr + row + tb.to(tl.int64) * C, mask=cmask & (tb < L), other=0)
        wc = tl.load(x_ptr + row + tc.to(tl.int64) * C, mask=cmask & (tc < L), other=0)
        wd = tl.load(x_ptr + row + td.to(tl.int64) * C, mask=cmask & (td < L), other=0)
        if GRAD:  # h_prev of step t is h at t + d (the forward scan's previous step); zero outside [0, L)
            pa = tl.load(h_ptr + row + (ta + d).to(tl.int64) * C, mask=cmask & (ta < L) & (ta + d >= 0) & (ta + d < L), other=0)
            pb = tl.load(h_ptr + row + (tb + d).to(tl.int64) * C, mask=cmask & (tb < L) & (tb + d >= 0) & (tb + d < L), other=0)
            pc = tl.load(h_ptr + row + (tc + d).to(tl.int64) * C, mask=cmask & (tc < L) & (tc + d >= 0) & (tc + d < L), other=0)
            pd = tl.load(h_ptr + row + (td + d).to(tl.int64) * C, mask=cmask & (td < L) & (td + d >= 0) & (td + d < L), other=0)
        hr, hi = _step(hr, hi, lr, li, wa, WORD64)
        if STORE:
            tl.store(y_ptr + row + ta.to(tl.int64) * C, _pack(hr, hi, WORD64), mask=cmask & (ta < L))
        if GRAD:
            accr, acci = _grad_step(accr, acci, pa, hr, hi, WORD64)
        hr, hi = _step(hr, hi, lr, li, wb, WORD64)
        if STORE:
            tl.store(y_ptr + row + tb.to(tl.int64) * C, _pack(hr, hi, WORD64), mask=cmask & (tb < L))
        if GRAD:
            accr, acci = _grad_step(accr, acci, pb, hr, hi, WORD64)
        hr, hi = _step(hr, hi, lr, li, wc, WORD64)
        if STORE:
            tl.store(y_ptr + row + tc.to(tl.int64) * C, _pack(hr, hi, WORD64), mask=cmask & (tc < L))
        if GRAD:
            accr, acci = _grad_step(accr, acci, pc, hr, hi, WORD64)
        hr, hi = _step(hr, hi, lr, li, wd, WORD64)
        if STORE:
            tl.store(y_ptr + row + td.to(tl.int64) * C, _pack(hr, hi, WORD64), mask=cmask & (td < L))
        if GRAD:
            accr, acci = _grad_step(accr, acci, pd, hr, hi, WORD64)
    if END:
        tl.store(end_ptr + 2 * side, hr, mask=cmask)
        tl.store(end_ptr + 2 * side + 1, hi, mask=cmask)
    if GRAD:
        tl.store(part_ptr + 2 * side, accr, mask=cmask)
        tl.store(part_ptr + 2 * side + 1, acci, mask=cmask)


@triton.jit
def _carry_kernel(lam_ptr, end_ptr, carry_ptr, C, n_chunks, CONJ: tl.constexpr, LOG2_CHUNK: tl.constexpr,
                  BLOCK_C: tl.constexpr):
    """carry[b, 0] = 0, carry[b, j] = λ^CHUNK carry[b, j-1] + end[b, j-1]: the state entering each chunk."""
    b = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < C
    pr = tl.load(lam_ptr + 2 * cols, mask=cmask, other=0.0)
    pi = tl.load(lam_ptr + 2 * cols + 1, mask=cmask, other=0.0)
    if CONJ:
        pi = -pi
    for _ in tl.static_range(LOG2_CHUNK):  # λ^CHUNK by squaring
        pr, pi = pr * pr - pi * pi, 2 * pr * pi
    cr = tl.zeros((BLOCK_C,), dtype=tl.float32)
    ci = tl.zeros((BLOCK_C,), dtype=tl.float32)
    j = 0
    while j < n_chunks:  # a while loop: the interpreter's runtime scalars cannot drive range() (NumPy >= 2.3)
        side = 2 * ((b * n_chunks + j) * C + cols)
        tl.store(carry_ptr + side, cr, mask=cmask)
        tl.store(carry_ptr + side + 1, ci, mask=cmask)
        er = tl.load(end_ptr + side, mask=cmask, other=0.0)
        ei = tl.load(end_ptr + side + 1, mask=cmask, other=0.0)
        cr, ci = pr * cr - pi * ci + er, pr * ci + pi * cr + ei
        j += 1


#: True when the kernels were decorated under TRITON_INTERPRET=1 (they then run on CPU tensors, slowly)
INTERPRETED = isinstance(_walk_kernel, InterpretedFunction)


@dataclass(frozen=True)
class Chunks:
    """Launch shape: CHUNK time steps per program (None: chosen from the problem, see :meth:`resolved`), VEC complex
    channels per thread, warps per program (a program covers 32 · VEC · warps channels of one batch row).

    VEC = 2 makes each load 128-bit for float32 pairs and 64-bit for bfloat16 pairs, and halves the loop's
    bookkeeping per element against VEC = 1.
    """

    chunk: int | None = None
    vec: int = 2
    num_warps: int = 2

    #: threads the automatic chunk length aims to fill (an H100/H200: 132 SMs x 2048 resident threads)
    TARGET_THREADS = 1 << 18

    def __post_init__(self):
        for name in ("chunk", "vec", "num_warps"):
            val = getattr(self, name)
            if name == "chunk" and val is None:
                continue
            low = UNROLL if name == "chunk" else 1
            if not isinstance(val, int) or val < low or val & (val - 1):
                raise ValueError(f"Chunks.{name} must be a power of two >= {low}, got {val!r}")

    @classmethod
    def parse(cls, text: str) -> Chunks:
        """'c64v2w2' (chunk 64, 2 channels per thread, 2 warps; any part optional, 'auto' chunk), or 'default'."""
        if text == "default":
            return cls()
        m = re.fullmatch(r"c(\d+|auto)(?:v(\d+))?(?:w(\d+))?", text)
        if not m:
            raise ValueError(f"chunk shape {text!r}: expected c<CHUNK|auto>[v<VEC>][w<WARPS>], e.g. c64v2w2, "
                             "or 'default'")
        d = cls()
        return cls(None if m[1] == "auto" else int(m[1]), int(m[2] or d.vec), int(m[3] or d.num_warps))

    def label(self) -> str:
        return f"c{self.chunk or 'auto'}v{self.vec}w{self.num_warps}"

    def block_c(self, C: int) -> int:
        """Channels per program, clipped to the problem (a few channels get one small program)."""
        return min(32 * self.vec * self.num_warps, triton.next_power_of_2(max(C, 2)))

    def resolved(self, B: int, L: int, C: int) -> int:
        """The chunk length for (B, L, C): given, or the power of two in [32, 1024] that makes about TARGET_THREADS
        threads; never longer than the sequence needs."""
        if self.chunk is not None:
            chunk = self.chunk
        else:
            rows = max(1, B * math.ceil(C / self.vec))  # threads per chunk of time
            want = max(1, self.TARGET_THREADS // rows)  # chunks wanted
            chunk = 1 << max(5, min(10, (max(1, L // want)).bit_length() - 1))
        return max(UNROLL, min(chunk, triton.next_power_of_2(max(L, UNROLL))))


DEFAULT_CHUNKS = Chunks()


def _empty(shape: tuple[int, ...], like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Every output buffer of this module comes from here (tests replace it to poison buffers with NaN)."""
    return torch.empty(shape, dtype=dtype or like.dtype, device=like.device)


def _words(x: torch.Tensor) -> torch.Tensor:
    """(B, L, C, 2) pairs -> (B, L, C) machine words over the same memory (int64 for float32, int32 for bfloat16)."""
    return x.contiguous().view(torch.int64 if x.dtype == torch.float32 else torch.int32).squeeze(-1)


def check(lam: torch.Tensor, v: torch.Tensor, vname: str = "v") -> None:
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
            "rotrnn.ops.scan is first imported (or use CUDA tensors)"
        )


def _walk(lam: torch.Tensor, x: torch.Tensor, reverse: bool, conj: bool, cfg: Chunks,
          h: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The three launches over pairs x (B, L, C, 2): (states in x's dtype, ∂λ partials (B, chunks, C, 2) when ``h``
    (in x's dtype) is given, i.e. for the backward pass)."""
    B, L, C, _ = x.shape
    out = _empty(tuple(x.shape), x)
    chunk = cfg.resolved(B, L, C)
    n = triton.cdiv(L, chunk)
    block_c = cfg.block_c(C)
    lam32 = lam.float().contiguous()
    xw, yw = _words(x), _words(out)
    hw = _words(h) if h is not None else xw
    side = (B, n, C, 2)
    part = _empty(side, x, torch.float32) if h is not None else lam32
    carry = end = lam32  # unused pointers when one chunk covers the length
    flags = dict(REVERSE=bool(reverse), CONJ=conj, WORD64=x.dtype == torch.float32, CHUNK=chunk, BLOCK_C=block_c,
                 num_warps=cfg.num_warps)
    grid_c = triton.cdiv(C, block_c)
    if n > 1:
        end, carry = _empty(side, x, torch.float32), _empty(side, x, torch.float32)
        _walk_kernel[(B, grid_c, n - 1)](lam32, xw, yw, hw, carry, end, part, L, C, n, STORE=False, CARRY=False,
                                         END=True, GRAD=False, **flags)
        _carry_kernel[(B, grid_c)](lam32, end, carry, C, n, CONJ=conj, LOG2_CHUNK=chunk.bit_length() - 1,
                                   BLOCK_C=block_c, num_warps=cfg.num_warps)
    _walk_kernel[(B, grid_c, n)](lam32, xw, yw, hw, carry, end, part, L, C, n, STORE=True, CARRY=n > 1, END=False,
                                 GRAD=h is not None, **flags)
    return out, (part if h is not None else None)


def chunk_scan_forward(lam: torch.Tensor, v: torch.Tensor, reverse: bool = False, cfg: Chunks | None = None
                       ) -> torch.Tensor:
    """h (B, L, C, 2) in v's dtype from lam (C, 2) and v (B, L, C, 2); no autograd."""
    check(lam, v)
    if v.numel() == 0:
        return _empty(tuple(v.shape), v)
    return _walk(lam, v, reverse, False, cfg or DEFAULT_CHUNKS)[0]


def chunk_scan_backward(lam: torch.Tensor, h: torch.Tensor, g: torch.Tensor, reverse: bool = False,
                        cfg: Chunks | None = None, dv_dtype: torch.dtype | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(∂/∂v in ``dv_dtype`` (default g's), ∂/∂λ (C, 2) float32) from the saved output h and the output gradient g.

    No autograd. Gradients follow PyTorch's convention for complex numbers as pairs: (∂L/∂re, ∂L/∂im).
    """
    check(lam, g, "g")
    if h.shape != g.shape or h.device != g.device:
        raise ValueError(f"h and g must match: got h {tuple(h.shape)} on {h.device}, g {tuple(g.shape)} on {g.device}")
    C = g.shape[2]
    if g.numel() == 0:
        return _empty(tuple(g.shape), g, dv_dtype), torch.zeros((C, 2), dtype=torch.float32, device=g.device)
    dv, part = _walk(lam, g.to(h.dtype), not reverse, True, cfg or DEFAULT_CHUNKS, h=h)
    return dv.to(dv_dtype or g.dtype), part.sum((0, 1))


#: the differentiable scan on real pairs (lam (C, 2), v (B, L, C, 2) -> h), the operators ``rotrnn::scan_fused_chunk``
#: and ``..._backward`` (registered with torch.library so that torch.compile traces through it; see
#: ``triton_op.py``)
scan_pairs = register("scan_fused_chunk", chunk_scan_forward, chunk_scan_backward, Chunks.parse)

#: the ``fused_chunk`` backend of ``linear_scan`` on complex64
scan_fused_chunk = on_complex("fused_chunk", scan_pairs)
