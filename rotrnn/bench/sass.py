"""What the Triton scans compile to on an H100/H200 (sm_90), checked without a GPU: SASS structure of the time loop.

Triton compiles a kernel for a target it is not running on (``triton.compile`` with ``GPUTarget("cuda", 90, 32)``),
and its NVIDIA backend ships ``ptxas`` and ``cuobjdump``, so the machine code of the loop that walks the time
steps can be read on a CPU-only machine. :func:`loop_figures` finds that loop (the largest span closed by a
backward branch), and counts, per warp and per iteration: instructions, shuffles (SHFL), barriers (BAR), shared
memory loads (LDS), the widths of the global loads (LDG.E, .64, .128; LDGSTS for asynchronous copies), and
local-memory traffic (LDL/STL: register spills) anywhere in the kernel, with ptxas's own spill report.
Instructions per complex element = loop instructions / complex elements a warp handles per iteration: the figure
that bounds how close to copy bandwidth a kernel can get once the loads are in flight.

Every launch is compiled the way the real launches are specialised: pointers 16-byte aligned and the channel count
divisible by 16 (paper shapes: 128 complex channels). Used by ``tests/ops/test_scan_sass.py`` and
``benchmarks/scan_sass.py`` (which writes ``reports/perf/scan-sass.md``).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SM = 90
CHANNELS = 128  # the complex channel count the launch shapes are taken at (paper: d_state 256)


@dataclass(frozen=True)
class Launch:
    """One kernel variant to compile: the backend, a name, the kernel, its pointer types, constexprs, warps, the
    integer arguments known to be multiples of 16, and the complex elements one warp handles per loop iteration."""

    backend: str
    name: str
    kernel: Any
    pointers: dict[str, str]
    constexprs: dict[str, Any]
    num_warps: int
    aligned_ints: tuple[str, ...]
    elements_per_warp: int


@dataclass(frozen=True)
class LoopFigures:
    backend: str
    name: str
    instructions: int  # in the loop body, per warp per iteration
    elements: int  # complex elements per warp per iteration
    shuffles: int
    barriers: int
    shared_loads: int
    global_loads: dict[str, int]  # opcode (LDG.E..., LDGSTS...) -> count in the loop
    local_memory: int  # LDL/STL anywhere in the kernel
    spill_bytes: int  # ptxas -v: spill stores + spill loads
    registers: int

    @property
    def per_element(self) -> float:
        return self.instructions / self.elements

    @property
    def vectorised(self) -> bool:
        """Some global load in the loop is 64-bit or wider, or an asynchronous copy."""
        return any(re.search(r"\.(64|128)\b", op) or op.startswith("LDGSTS") for op in self.global_loads)


def tool(name: str) -> str:
    """A CUDA binary tool shipped with Triton's NVIDIA backend (else on PATH)."""
    import triton

    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    found = str(path) if path.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} (shipped with Triton's NVIDIA backend) not found")
    return found


def compile_sm90(launch: Launch):
    """The compiled kernel (ttgir, ptx, cubin in ``.asm``) for sm_90, on any machine."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn, names = launch.kernel, launch.kernel.arg_names
    signature = {n: launch.pointers.get(n, "i32") for n in names if n not in launch.constexprs}
    signature.update({n: "constexpr" for n in launch.constexprs})
    aligned = [*launch.pointers, *launch.aligned_ints]
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in aligned}
    src = ASTSource(fn=fn, signature=signature, attrs=attrs,
                    constexprs={(names.index(n),): v for n, v in launch.constexprs.items()})
    return triton.compile(src, target=GPUTarget("cuda", SM, 32), options={"num_warps": launch.num_warps})


def ptxas_report(ptx: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        proc = subprocess.run([tool("ptxas"), "-v", f"--gpu-name=sm_{SM}a", str(src), "-o", str(Path(tmp) / "k.o")],
                              capture_output=True, text=True, check=True)
    return proc.stderr


def disassemble(cubin: bytes) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.cubin"
        path.write_bytes(cubin)
        return subprocess.run([tool("cuobjdump"), "-sass", str(path)], capture_output=True, text=True,
                              check=True).stdout


_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")


def instructions(sass: str) -> list[tuple[int, str, str]]:
    """(address, opcode with modifiers, operands) per instruction of a cuobjdump listing."""
    return [(int(m[1], 16), m[3], m[4].strip()) for m in _LINE.finditer(sass)]


def time_loop(instrs: list[tuple[int, str, str]]) -> list[tuple[int, str, str]]:
    """The instructions of the largest loop: from a backward branch's target to the branch."""
    best: tuple[int, int] | None = None
    for addr, op, args in instrs:
        m = re.search(r"0x([0-9a-f]+)", args)
        if op.startswith("BRA") and m and int(m[1], 16) < addr:
            span = (int(m[1], 16), addr)
            if best is None or span[1] - span[0] > best[1] - best[0]:
                best = span
    if best is None:
        raise ValueError("no backward branch: the kernel has no loop (was it fully unrolled?)")
    return [i for i in instrs if best[0] <= i[0] <= best[1]]


def loop_figures(launch: Launch) -> LoopFigures:
    compiled = compile_sm90(launch)
    instrs = instructions(disassemble(compiled.asm["cubin"]))
    body = [i for i in time_loop(instrs) if i[1] != "NOP"]
    ops = Counter(op for _, op, _ in body)
    report = ptxas_report(compiled.asm["ptx"])
    spills = sum(int(x) for x in re.findall(r"(\d+) bytes spill (?:stores|loads)", report))
    regs = re.search(r"Used (\d+) registers", report)
    return LoopFigures(
        backend=launch.backend, name=launch.name, instructions=len(body), elements=launch.elements_per_warp,
        shuffles=sum(n for op, n in ops.items() if op.startswith("SHFL")),
        barriers=sum(n for op, n in ops.items() if op.startswith("BAR")),
        shared_loads=sum(n for op, n in ops.items() if op.startswith("LDS")),
        global_loads={op: n for op, n in ops.items() if op.startswith(("LDG", "LDGSTS"))},
        local_memory=sum(1 for _, op, _ in instrs if op.startswith(("LDL", "STL"))),
        spill_bytes=spills, registers=int(regs[1]) if regs else -1)


# -- the launches of both Triton scans at the paper shape --------------------------------------------------------
def _ptr(dtype: str) -> str:
    return "*bf16" if dtype == "bf16" else "*fp32"


def recurrent_launches(dtype: str, reverse: bool = False) -> list[Launch]:
    """fused_recurrent's forward and backward kernels at its default tiles."""
    from rotrnn.ops.scan import fused_recurrent as fr

    t = fr.Tiles()
    consts = dict(REVERSE=reverse, BLOCK_L=t.block_l, BLOCK_C=t.block_c, NUM_STAGES=t.num_stages, INTERPRET=False)
    per_warp = t.block_l * t.block_c // t.num_warps
    p = _ptr(dtype)
    return [
        Launch("fused_recurrent", "fwd", fr._scan_fwd_kernel, {"lam_ptr": "*fp32", "v_ptr": p, "h_ptr": p}, consts,
               t.num_warps, ("C",), per_warp),
        Launch("fused_recurrent", "bwd", fr._scan_bwd_kernel,
               {"lam_ptr": "*fp32", "g_ptr": p, "h_ptr": p, "dv_ptr": p, "dlam_ptr": "*fp32"}, consts, t.num_warps,
               ("C",), per_warp),
    ]


def chunk_launches(dtype: str, reverse: bool = False, chunk: int = 64) -> list[Launch]:
    """fused_chunk's launches at its default Chunks: the forward's end-state walk (``fwd-ends``) and its walk that
    stores h (``fwd-walk``), and the same two for the backward (``bwd-ends``; ``bwd-walk`` also reads h_prev and
    sums the ∂λ partials). The carry launch is a loop over chunks, not over time."""
    from rotrnn.ops.scan import fused_chunk as fc

    cfg = fc.Chunks(chunk)
    block_c = cfg.block_c(CHANNELS)
    per_warp = fc.UNROLL * block_c // cfg.num_warps
    word = "*i64" if dtype == "fp32" else "*i32"
    ptrs = {"lam_ptr": "*fp32", "x_ptr": word, "y_ptr": word, "h_ptr": word, "carry_ptr": "*fp32",
            "end_ptr": "*fp32", "part_ptr": "*fp32"}
    base = dict(CONJ=False, WORD64=dtype == "fp32", CHUNK=chunk, BLOCK_C=block_c)
    flags = {
        "fwd-ends": dict(REVERSE=reverse, STORE=False, CARRY=False, END=True, GRAD=False),
        "fwd-walk": dict(REVERSE=reverse, STORE=True, CARRY=True, END=False, GRAD=False),
        "bwd-ends": dict(REVERSE=not reverse, CONJ=True, STORE=False, CARRY=False, END=True, GRAD=False),
        "bwd-walk": dict(REVERSE=not reverse, CONJ=True, STORE=True, CARRY=True, END=False, GRAD=True),
    }
    return [Launch("fused_chunk", name, fc._walk_kernel, ptrs, base | f, cfg.num_warps, ("C",), per_warp)
            for name, f in flags.items()]
