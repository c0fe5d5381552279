"""The chunked Triton scan (``fused_chunk``) against the float64 reference, and both Triton scans as operators.

Kernel tests (``test_kernel_*``) run compiled with CUDA, otherwise in a child pytest under TRITON_INTERPRET=1 (the
reason is in ``test_scan_fused_recurrent.py``'s docstring). Every buffer the kernels write, the chunk ends, carries
and ∂λ partials included, starts as NaN, so an element they fail to write shows up. The operator tests check that
``torch.compile`` sees one graph: no graph break in a layer step with a Triton backend selected, the full graph
compiled forward and backward, and the CUDA dispatch traced with fake CUDA tensors (no GPU needed).
"""
from __future__ import annotations

import importlib

import pytest
import torch

from rotrnn.ops.scan import CHUNKED, TRITON, TRITON_BACKENDS, TRITON_DEFAULT, _interpreter_on, linear_scan
from tests.ops.scan_cases import (check_bfloat16_pairs, check_float32, check_layer_matches_recurrent,
                                  check_saves_only_lambda_and_output, poison_empty, problem, rel_err,
                                  run_kernel_tests_under_interpreter)

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
RUN_KERNELS = CUDA or _interpreter_on()
fc = importlib.import_module("rotrnn.ops.scan.fused_chunk")


@pytest.fixture(autouse=True)
def poisoned_buffers(monkeypatch):
    poison_empty(monkeypatch, fc)


# (B, L, C, chunk, vec, warps): length 1; a partial last chunk (13 = 3 chunks of 4 + 1); a sequence shorter than the
# chunk; exact chunks; channels over several blocks, not a multiple of the block (70 over blocks of 32); two
# channels per thread; the automatic chunk
SHAPES = [
    (2, 1, 3, None, 2, 2),
    (2, 13, 5, 4, 1, 1),
    (1, 5, 3, 16, 1, 1),
    (1, 32, 6, 8, 2, 1),
    (1, 21, 70, 8, 1, 1),
    (2, 19, 9, 4, 2, 1),
    (3, 6, 2, None, 2, 2),
]


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("B,L,C,chunk,vec,warps", SHAPES)
def test_kernel_chunk_float32_matches_reference(B, L, C, chunk, vec, warps, reverse):
    check_float32(fc.scan_fused_chunk, B, L, C, reverse, DEVICE, fc.Chunks(chunk, vec, warps))


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_kernel_chunk_long_decay_accuracy(reverse):
    """|λ| close to 1 over many chunks: the carry (λ^CHUNK by squaring) must not lose float32 accuracy."""
    check_float32(fc.scan_fused_chunk, 1, 100, 3, reverse, DEVICE, fc.Chunks(8, 1, 1), r_min=0.99, r_max=0.9999,
                  seed=5)


@pytest.mark.parametrize("lam_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_kernel_chunk_bfloat16_pairs_within_1e_2(reverse, lam_dtype):
    """bfloat16 pairs as 32-bit words: outputs and ∂v in bfloat16, state and sums in float32, over several chunks
    with a partial one and a channel count that is not a multiple of the block."""
    check_bfloat16_pairs(fc.scan_pairs, reverse, lam_dtype, DEVICE, fc.Chunks(4, 2, 1))


def test_kernel_chunk_bfloat16_rounds_to_nearest():
    """The packed bfloat16 store rounds as torch does (to nearest even), not by truncating the float32 state."""
    C = 4
    lam = torch.zeros(C, 2, device=DEVICE)  # h = v: the store's rounding is all that acts
    x = torch.tensor([1.0 + 2**-9, 1.0 + 3 * 2**-9, -(1.0 + 2**-8 + 2**-10), 3.0 - 2**-7], device=DEVICE)
    v = torch.stack([x, -x], -1)[None, None].expand(1, 3, C, 2).contiguous()
    h = fc.chunk_scan_forward(lam, v.bfloat16().float().bfloat16(), False, fc.Chunks(4, 1, 1))
    assert torch.equal(h, v.bfloat16())
    h32 = fc.chunk_scan_forward(lam.bfloat16(), v.bfloat16(), False, fc.Chunks(4, 1, 1))
    assert torch.equal(h32, v.bfloat16())


def test_kernel_chunk_backward_saves_only_lambda_and_output():
    check_saves_only_lambda_and_output(fc.scan_fused_chunk, DEVICE)


def test_kernel_chunk_rotrnn_layer_matches_recurrent():
    """The bidirectional layer on fused_chunk: same outputs and parameter gradients as on recurrent."""
    check_layer_matches_recurrent(CHUNKED, 9, DEVICE)


def test_kernel_chunk_dispatch_and_empty(monkeypatch):
    lam, v, _ = problem(1, 7, 3)
    lam32, v32 = lam.to(torch.complex64).to(DEVICE), v.to(torch.complex64).to(DEVICE)
    monkeypatch.delenv("ROTRNN_SCAN_BACKEND", raising=False)
    assert rel_err(linear_scan(lam32, v32, backend=CHUNKED), scan_naive_c(lam, v, False)) < 1e-5
    monkeypatch.setenv("ROTRNN_SCAN_BACKEND", CHUNKED)
    assert rel_err(linear_scan(lam32, v32, reverse=True), scan_naive_c(lam, v, True)) < 1e-5
    pl = torch.view_as_real(lam32)
    for shape in ((2, 0, 3, 2), (0, 4, 3, 2)):
        z = torch.zeros(shape, device=DEVICE)
        assert fc.chunk_scan_forward(pl, z).shape == shape
        dv, dlam = fc.chunk_scan_backward(pl, z, z)
        assert dv.shape == shape and torch.equal(dlam.cpu(), torch.zeros(3, 2))


def scan_naive_c(lam, v, reverse):
    from rotrnn.ops.scan import scan_naive

    return scan_naive(lam, v, reverse)


@pytest.mark.parametrize("backend", TRITON_BACKENDS)
def test_kernel_operators_pass_opcheck(backend):
    """torch.library.opcheck: schema, fake (shape) functions against the real kernels, autograd registration."""
    mod = importlib.import_module(f"rotrnn.ops.scan.{backend}")
    lam, v, g = problem(2, 6, 3, seed=1)
    pl = torch.view_as_real(lam.to(torch.complex64)).to(DEVICE)
    pv = torch.view_as_real(v.to(torch.complex64)).to(DEVICE)
    pg = torch.view_as_real(g.to(torch.complex64)).to(DEVICE)
    fwd, bwd = mod.scan_pairs.forward_op, mod.scan_pairs.backward_op
    for reverse in (False, True):
        torch.library.opcheck(fwd, (pl.clone().requires_grad_(), pv.clone().requires_grad_(), reverse, ""),
                              test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))
        h = fwd(pl, pv, reverse, "")
        torch.library.opcheck(bwd, (pl, h, pg, reverse, ""), test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("backend", TRITON_BACKENDS)
def test_kernel_layer_step_is_one_graph(backend):
    """A bidirectional layer's loss with a Triton scan: Dynamo reports one graph and no break, and the step
    compiled with fullgraph=True (forward and backward through AOTAutograd) matches eager."""
    from rotrnn.nn import RotRNN

    torch.manual_seed(0)
    layer = RotRNN(4, 8, 2, bidirectional=True).to(DEVICE)
    layer.backend = backend
    u = torch.randn(2, 7, 4, device=DEVICE)

    def loss(u):
        return layer(u).square().sum()

    torch._dynamo.reset()
    explained = torch._dynamo.explain(loss)(u)
    assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    compiled(u).backward()
    got = {n: p.grad.clone() for n, p in layer.named_parameters()}
    layer.zero_grad()
    loss(u).backward()
    for n, p in layer.named_parameters():
        torch.testing.assert_close(got[n], p.grad, rtol=1e-5, atol=1e-6, msg=n)
    torch._dynamo.reset()


@pytest.mark.parametrize("backend,op", [("auto", f"rotrnn.scan_{TRITON_DEFAULT}.default"),
                                        (CHUNKED, "rotrnn.scan_fused_chunk.default"),
                                        (TRITON, "rotrnn.scan_fused_recurrent.default")])
def test_cuda_dispatch_traces_to_the_operator_with_fake_tensors(backend, op):
    """On CUDA (fake tensors: no GPU runs) the layer's scans trace to the registered operator, one per direction,
    with the shapes its fake function gives, and nothing of the Triton launcher in the graph."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.proxy_tensor import make_fx

    from rotrnn.nn import RotRNN

    layer = RotRNN(4, 8, 2, bidirectional=True)
    layer.backend = backend
    mode = FakeTensorMode()
    with mode:
        params = {n: mode.from_tensor(p).to("cuda") for n, p in layer.named_parameters()}
        u = torch.randn(2, 7, 4, device="cuda")

    def step(params, u):
        return torch.func.functional_call(layer, params, (u,))

    graph = make_fx(step, tracing_mode="fake")(params, u).graph
    calls = [n for n in graph.nodes if n.op == "call_function" and str(n.target).startswith("rotrnn.")]
    assert [str(n.target) for n in calls] == [op, op]
    for n in calls:
        assert n.meta["val"].device.type == "cuda" and tuple(n.meta["val"].shape) == (2, 7, 4, 2)
    (out,) = [n for n in graph.nodes if n.op == "output"][0].args[0]
    assert tuple(out.meta["val"].shape) == (2, 7, 4)


def test_chunks_launch_shape():
    """Chunks: parsing, labels, the automatic chunk length, channel blocks clipped to the problem, clear errors."""
    assert fc.Chunks.parse("c64v2w4") == fc.Chunks(64, 2, 4) and fc.Chunks.parse("default") == fc.Chunks()
    assert fc.Chunks.parse("cauto") == fc.Chunks() and fc.Chunks(32, 1, 1).label() == "c32v1w1"
    assert fc.Chunks.parse(fc.Chunks().label()) == fc.Chunks()
    with pytest.raises(ValueError, match="chunk shape 'x4'"):
        fc.Chunks.parse("x4")
    with pytest.raises(ValueError, match="Chunks.chunk must be a power of two >= 4, got 6"):
        fc.Chunks(6)
    with pytest.raises(ValueError, match="Chunks.vec must be a power of two >= 1, got 3"):
        fc.Chunks(vec=3)
    auto = fc.Chunks()
    # ListOps (batch 50, 128 complex channels, 2 per thread: 3200 threads per chunk of time) and Path-X
    assert auto.resolved(50, 2048, 128) == 32 and auto.resolved(32, 16384, 128) == 128
    assert auto.resolved(1, 10**6, 8) == 32 and auto.resolved(1, 2**27, 8) == 1024 and auto.resolved(2, 5, 3) == 8 and auto.resolved(1, 1, 1) == 4
    assert fc.Chunks(64).resolved(50, 2048, 128) == 64 and fc.Chunks(64).resolved(1, 20, 3) == 32
    assert auto.block_c(128) == 128 and auto.block_c(3) == 4 and fc.Chunks(vec=1, num_warps=4).block_c(1000) == 128


def test_auto_keeps_the_tile_scan_until_the_device_says_otherwise():
    """The CUDA default is one line (TRITON_DEFAULT); it stays on fused_recurrent until a device run shows
    fused_chunk faster (issue 22)."""
    assert TRITON_DEFAULT == TRITON and CHUNKED in TRITON_BACKENDS


if not RUN_KERNELS:
    for _name in [n for n in globals() if n.startswith("test_kernel_")]:
        del globals()[_name]

    def test_kernels_under_triton_interpreter():
        run_kernel_tests_under_interpreter(__file__, timeout=1200)
