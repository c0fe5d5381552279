"""The fused Triton scan against the float64 reference: outputs and gradients (v and λ), both directions.

With CUDA the kernel tests (``test_kernel_*``) run compiled in this process. Without it they need Triton's
interpreter, and Triton fixes interpreted vs compiled mode process-wide when it is imported (its own library
functions are decorated then, and more modules are imported lazily at the first launch). So a CPU-only process
without TRITON_INTERPRET=1 does not define them; instead ``test_kernels_under_triton_interpreter`` reruns this file
in a child pytest with TRITON_INTERPRET=1 from the start, leaving this process (and the other test files an xdist
worker runs) untouched. Every buffer the kernels write is NaN-poisoned first (autouse fixture), so an element they
fail to write shows up. Shapes are small: the interpreter is slow.
"""
from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rotrnn.ops.scan import (TRITON, _interpreter_on, available_backends, linear_scan, scan_naive, scan_recurrent,
                             triton_available)
from tests.ops.scan_cases import (check_bfloat16_pairs, check_float32, check_layer_matches_recurrent,
                                  check_saves_only_lambda_and_output, poison_empty, problem, rel_err,
                                  run_kernel_tests_under_interpreter)

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
REPO = Path(__file__).resolve().parents[2]
RUN_KERNELS = CUDA or _interpreter_on()
fr = importlib.import_module("rotrnn.ops.scan.fused_recurrent") if RUN_KERNELS else None


@pytest.fixture(autouse=True)
def poisoned_buffers(monkeypatch):
    if fr is not None:
        poison_empty(monkeypatch, fr)


def tiles(block_l=None, block_c=None):
    """The launch tile (None: the default, clipped to the problem)."""
    d = fr.Tiles()
    return fr.Tiles(block_l or d.block_l, block_c or d.block_c)


# (B, L, C, block_l, block_c): length 1, odd lengths over several tiles, channels not a multiple of the block,
# many channels over several channel blocks, one exact tile, the default blocks
SHAPES = [
    (2, 1, 3, None, None),
    (2, 13, 5, 4, 4),
    (1, 16, 6, 8, 4),
    (1, 9, 70, 4, 32),
    (3, 6, 2, None, None),
]


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("B,L,C,block_l,block_c", SHAPES)
def test_kernel_float32_matches_reference(B, L, C, block_l, block_c, reverse):
    check_float32(fr.scan_fused_recurrent, B, L, C, reverse, DEVICE, tiles(block_l, block_c))


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_kernel_float32_long_decay_accuracy(reverse):
    """|λ| close to 1 over many tiles: the carry between tiles must not lose float32 accuracy."""
    check_float32(fr.scan_fused_recurrent, 1, 96, 3, reverse, DEVICE, fr.Tiles(8, 4), r_min=0.99, r_max=0.9999,
                  seed=5)


@pytest.mark.parametrize("lam_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_kernel_bfloat16_pairs_within_1e_2(reverse, lam_dtype):
    """bfloat16 inputs as real pairs: outputs and gradients in bfloat16, state and sums in float32."""
    check_bfloat16_pairs(fr.scan_pairs, reverse, lam_dtype, DEVICE, fr.Tiles(4, 4))


def test_kernel_backward_saves_only_lambda_and_output():
    """Nothing of shape (B, L, C) is kept for backward except h itself (the ∂λ partials are recomputed)."""
    check_saves_only_lambda_and_output(fr.scan_fused_recurrent, DEVICE)


def test_kernel_rotrnn_layer_on_triton_matches_recurrent():
    """The layer path (complex views of real projections) gives the same outputs and parameter gradients."""
    check_layer_matches_recurrent(TRITON, 7, DEVICE)


def test_cpu_without_interpreter_is_unchanged(monkeypatch):
    """No TRITON_INTERPRET on CPU: no fused_recurrent backend, auto stays on a CPU backend, asking for it is a clear
    error."""
    lam, v, _ = problem(1, 5, 3)
    lam32, v32 = lam.to(torch.complex64), v.to(torch.complex64)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("ROTRNN_SCAN_BACKEND", raising=False)
    assert available_backends("cpu") == ["naive", "chunk", "recurrent", "fused_cpu"] and not triton_available("cpu")
    torch.testing.assert_close(linear_scan(lam32, v32), scan_recurrent(lam32, v32))
    with pytest.raises(ValueError, match="scan backend 'fused_recurrent' needs Triton and CUDA tensors.*got tensors on cpu"):
        linear_scan(lam32, v32, backend="fused_recurrent")
    # CUDA tensors are offered it (availability reads the device type; nothing runs here)
    assert TRITON in available_backends("cuda") and triton_available(torch.device("cuda", 0))


def test_kernel_registration_and_dispatch(monkeypatch):
    lam, v, _ = problem(1, 5, 3)
    lam32, v32 = lam.to(torch.complex64).to(DEVICE), v.to(torch.complex64).to(DEVICE)
    monkeypatch.delenv("ROTRNN_SCAN_BACKEND", raising=False)
    if not CUDA:
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        assert available_backends("cpu") == ["naive", "chunk", "recurrent", "fused_cpu", "fused_recurrent",
                                             "fused_chunk"]
    assert rel_err(linear_scan(lam32, v32, backend="fused_recurrent"), scan_naive(lam, v)) < 1e-5
    monkeypatch.setenv("ROTRNN_SCAN_BACKEND", "fused_recurrent")
    assert rel_err(linear_scan(lam32, v32, reverse=True), scan_naive(lam, v, True)) < 1e-5
    monkeypatch.delenv("ROTRNN_SCAN_BACKEND")
    called = []
    real = fr.scan_fused_recurrent
    monkeypatch.setattr(fr, "scan_fused_recurrent", lambda *a, **k: called.append(a[1].dtype) or real(*a, **k))
    linear_scan(lam32, v32)
    linear_scan(lam.to(DEVICE), v.to(DEVICE))
    # auto: the fused kernel for complex64 CUDA tensors only; CPU (even under the interpreter) and complex128 stay
    # on recurrent
    assert called == ([torch.complex64] if CUDA else [])


def test_kernel_errors_name_the_argument():
    lam, v, _ = problem(1, 4, 3)
    with pytest.raises(TypeError, match="complex64.*complex128"):
        fr.scan_fused_recurrent(lam, v)
    pairs_v = torch.view_as_real(v.to(torch.complex64)).to(DEVICE)
    pairs_l = torch.view_as_real(lam.to(torch.complex64)).to(DEVICE)
    with pytest.raises(ValueError, match=r"lam \(C, 2\) and v \(B, L, C, 2\)"):
        fr.scan_pairs(pairs_l[:2], pairs_v)
    with pytest.raises(TypeError, match="float32 and bfloat16.*float64"):
        fr.scan_pairs(pairs_l, pairs_v.double())
    with pytest.raises(ValueError, match="Tiles.block_l must be a power of two >= 2, got 6"):
        fr.Tiles(6, 4)
    with pytest.raises(ValueError, match="Tiles.num_stages must be a positive integer, got 0"):
        fr.Tiles(num_stages=0)
    assert fr.Tiles.parse("64x8w2s1") == fr.Tiles(64, 8, 2, 1) and fr.Tiles.parse("default") == fr.Tiles()
    assert fr.Tiles.parse("16x32") == fr.Tiles(16, 32) and fr.Tiles(64, 64).clipped(5, 3) == fr.Tiles(8, 4)
    with pytest.raises(ValueError, match="tile shape '4by4'"):
        fr.Tiles.parse("4by4")
    with pytest.raises(ValueError, match="h and g must match"):
        fr.fused_scan_backward(pairs_l, pairs_v, pairs_v[:, :2])


def test_kernel_empty_length_and_batch():
    lam = torch.view_as_real(torch.full((3,), 0.5 + 0.5j)).to(DEVICE)
    for shape in ((2, 0, 3, 2), (0, 4, 3, 2)):
        v = torch.zeros(shape, device=DEVICE)
        assert fr.fused_scan_forward(lam, v).shape == shape
        dv, dlam = fr.fused_scan_backward(lam, v, v)
        assert dv.shape == shape and torch.equal(dlam.cpu(), torch.zeros(3, 2))


def test_scan_bytes_accounting():
    from rotrnn.bench.layer import scan_bytes

    # batch 32, length 16384, 256 complex channels, float32: one tensor is 32·16384·256·8 bytes = 1 GiB
    one = 32 * 16384 * 256 * 8
    assert one == 2**30
    assert scan_bytes(32, 16384, 256, 4, backward=False) == 2 * one + 256 * 8
    assert scan_bytes(32, 16384, 256, 4, backward=True) == 5 * one + 3 * 256 * 8
    assert scan_bytes(32, 16384, 256, 2, backward=True) == 5 * one // 2 + 3 * 256 * 8
    with pytest.raises(ValueError, match="length must be positive, got 0"):
        scan_bytes(1, 0, 4, 4, False)


def test_scan_tiles_environment_variable_sets_the_default():
    """ROTRNN_SCAN_TILES, read when the module is imported, is the launch shape used when none is given."""
    code = ("import torch; import rotrnn.ops.scan.fused_recurrent as fr; print(fr.DEFAULT_TILES.label()); "
            "v = torch.randn(2, 9, 3, dtype=torch.complex64); lam = torch.full((3,), 0.5 + 0.1j); "
            "from rotrnn.ops.scan import scan_naive; "
            "print(torch.allclose(fr.scan_fused_recurrent(lam, v), scan_naive(lam, v), atol=1e-5))")

    def child(value: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "TRITON_INTERPRET": "1", "ROTRNN_SCAN_TILES": value, "PYTHONPATH": str(REPO)}
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)

    ok = child("4x2w1s1")
    assert ok.returncode == 0 and ok.stdout.split() == ["4x2w1s1", "True"], ok.stderr[-2000:]
    assert child("").stdout.split()[0] == "32x8w4s3"
    bad = child("4by4")
    assert bad.returncode != 0 and "ROTRNN_SCAN_TILES: tile shape '4by4'" in bad.stderr


def test_gpu_benchmark_script_end_to_end(tmp_path):
    """benchmarks/scan_gpu.py on tiny shapes (interpreter on CPU): the report has every section and a row per case."""
    out = tmp_path / "perf" / "scan-test.md"
    env = {**os.environ, "TRITON_INTERPRET": "0" if CUDA else "1"}
    cmd = [sys.executable, str(REPO / "benchmarks" / "scan_gpu.py"), "--device", DEVICE.type, "--batch", "1",
           "--lengths", "4,9", "--channels", "3", "--dtypes", "float32,bfloat16", "--tiles", "4x4,8x2w2s2",
           "--repeats", "1", "--copy-mib", "1", "--layer-batch", "1", "--layer-lengths", "5", "--d-model", "4",
           "--d-state", "8", "--heads", "2", "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    for needle in ("# Scan kernel figures", "torch ", "triton ", "copy bandwidth", "## Scan alone",
                   "## RotRNN layer forward+backward", "## Goals"):
        assert needle in text, needle
    rows = [line for line in text.splitlines() if line.startswith("| fused_recurrent |")]
    # 2 lengths x (float32 + bfloat16) x 2 block configs, then one layer row
    assert len(rows) == 2 * 2 * 2 + 1, rows
    assert not list(out.parent.glob("*.tmp")), "the report must be written through a temporary file"
    assert "| fused_recurrent | float32 | 9 | 3 | 8x2w2s2 |" in text  # the tile label as launched (clipped to 3 channels)
    bad = subprocess.run([sys.executable, str(REPO / "benchmarks" / "scan_gpu.py"), "--tiles", "4by4"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--tiles" in bad.stderr and "'4by4'" in bad.stderr


if not _interpreter_on():
    # compiled mode in this process: check what the GPU would run, without needing a GPU

    def compiled_module():
        return importlib.import_module("rotrnn.ops.scan.fused_recurrent")

    def compile_for_h100(kernel, pointer_types, reverse):
        """Compile one kernel variant for sm_90 at the default tiles; returns (ttgir, ptxas -v report)."""
        import shutil
        import tempfile

        import triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource

        t = compiled_module().Tiles()
        consts = dict(REVERSE=reverse, BLOCK_L=t.block_l, BLOCK_C=t.block_c, NUM_STAGES=t.num_stages, INTERPRET=False)
        names = kernel.arg_names
        signature = {n: pointer_types.get(n, "i32") for n in names if n not in consts}
        signature.update({n: "constexpr" for n in consts})
        src = ASTSource(fn=kernel, signature=signature, constexprs={(names.index(n),): v for n, v in consts.items()})
        compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": t.num_warps})
        ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
        ptxas = str(ptxas) if ptxas.exists() else shutil.which("ptxas")
        assert ptxas, "ptxas (shipped with Triton's NVIDIA backend) not found"
        with tempfile.TemporaryDirectory() as tmp:
            ptx = Path(tmp) / "k.ptx"
            ptx.write_text(compiled.asm["ptx"])
            rep = subprocess.run([ptxas, "-v", "--gpu-name", "sm_90a", str(ptx), "-o", str(Path(tmp) / "k.cubin")],
                                 capture_output=True, text=True, check=True)
        assert compiled.asm["cubin"], "no cubin"
        return compiled.asm["ttgir"], rep.stderr

    @pytest.mark.parametrize("which,dtype,reverse", [("fwd", "fp32", False), ("fwd", "fp32", True),
                                                     ("bwd", "fp32", False), ("bwd", "fp32", True),
                                                     ("fwd", "bf16", False), ("bwd", "bf16", True)])
    def test_compiles_for_h100_without_spills(which, dtype, reverse):
        """The compiled path (which the interpreter does not run): builds for sm_90, the float32 tile loads are
        pipelined (asynchronous copies; Triton 3.6 does not pipeline the 4-byte bfloat16 pairs), and the default
        tiles fit in registers (ptxas reports no spills)."""
        fr = compiled_module()
        assert not fr.INTERPRETED
        if which == "fwd":
            kernel, ptrs = fr._scan_fwd_kernel, {"lam_ptr": "*fp32", "v_ptr": f"*{dtype}", "h_ptr": f"*{dtype}"}
        else:
            kernel = fr._scan_bwd_kernel
            ptrs = {"lam_ptr": "*fp32", "g_ptr": f"*{dtype}", "h_ptr": f"*{dtype}", "dv_ptr": f"*{dtype}",
                    "dlam_ptr": "*fp32"}
        ttgir, report = compile_for_h100(kernel, ptrs, reverse)
        assert ("async_copy" in ttgir) == (dtype == "fp32")
        assert re.search(r"Used \d+ registers", report), report
        assert re.search(r"\b0 bytes spill stores", report), report


if not RUN_KERNELS:
    # CPU-only and no interpreter in this process: the kernel tests run in a child process instead (module docstring)
    for _name in [n for n in globals() if n.startswith("test_kernel_")]:
        del globals()[_name]

    def test_kernels_under_triton_interpreter():
        run_kernel_tests_under_interpreter(__file__, timeout=900)
