"""The SASS structure of the Triton scans' time loops on sm_90, compiled on the CPU (``rotrnn.bench.sass``).

fused_chunk's loops (each of its launches that walks time, forward and backward, both directions, float32 and
bfloat16 pairs) must have no register spills, no shuffles or barriers, vectorised global loads, and at most 1.5 warp
instructions per complex element (issue 22). The same counter on fused_recurrent finds its shuffles and ~4-7
instructions per element, so the budget is a real bound, not one any loop meets.
"""
from __future__ import annotations

import pytest

from rotrnn.ops.scan import _interpreter_on

BUDGET = 1.5  # warp instructions per complex element in a time loop

if not _interpreter_on():  # the interpreter replaces the kernels (nothing to compile); the parent process runs these
    from rotrnn.bench import sass

    @pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
    @pytest.mark.parametrize("dtype", ["fp32", "bf16"])
    def test_fused_chunk_time_loops_fit_the_budget(dtype, reverse):
        for launch in sass.chunk_launches(dtype, reverse):
            f = sass.loop_figures(launch)
            where = f"{launch.name} {dtype} reverse={reverse}: {f}"
            assert f.local_memory == 0 and f.spill_bytes == 0, where
            assert f.shuffles == 0 and f.barriers == 0 and f.shared_loads == 0, where
            assert f.vectorised, where
            want = "LDG.E.128" if dtype == "fp32" else "LDG.E.64"  # two complex channels per lane, one load
            assert set(f.global_loads) == {want}, where
            assert f.per_element <= BUDGET, where

    def test_counter_sees_the_tile_scan_exchanges():
        """Today's kernel (an associative scan across lanes) is well over the budget by the same count (4.2 forward, 6.6 backward in float32)."""
        for launch in sass.recurrent_launches("fp32"):
            f = sass.loop_figures(launch)
            assert f.shuffles > 0 and f.per_element > 2 * BUDGET, f
            assert f.local_memory == 0 and f.spill_bytes == 0, f

    def test_instruction_parser_and_loop_finder():
        listing = """
            /*0000*/                   MOV R1, c[0x0][0x28] ;
            /*0010*/                   LDG.E.64 R2, desc[UR4][R4.64] ;
            /*0020*/              @!P0 FFMA R6, R2, R3, R6 ;
            /*0030*/                   SHFL.UP PT, R7, R6, 0x1, RZ ;
            /*0040*/               @P1 BRA 0x10 ;
            /*0050*/                   EXIT ;
            /*0060*/                   BRA 0x60;
        """
        instrs = sass.instructions(listing)
        assert [op for _, op, _ in instrs] == ["MOV", "LDG.E.64", "FFMA", "SHFL.UP", "BRA", "EXIT", "BRA"]
        assert [a for a, _, _ in sass.time_loop(instrs)] == [0x10, 0x20, 0x30, 0x40]
        with pytest.raises(ValueError, match="no backward branch"):
            sass.time_loop(instrs[:4])
