"""The layouts of mlstm_chunkwise--triton against the fp64 reference (outputs, last states, true gradients):
segments (long sequences cut into segments that run in parallel) of one chunk and of several, a last segment
shorter than the others, several DHV and DQK blocks, both gate regimes, the detached normalizer; and the plain
layout's backward with the chunks' entering states stored by the forward or recomputed.

The GPU picks the layout from the launch size (`segment_plan`) and the state size (`store_chunk_states`); here
`SEGMENT_CHUNKS_OVERRIDE` and `STORE_STATES_OVERRIDE` force them.
"""

import pytest
import torch

from xlstm_ts.kernels import get_kernel
from xlstm_ts.kernels._launches import LaunchCounter
from xlstm_ts.kernels._testing import make_mlstm_inputs
from xlstm_ts.kernels._testing_mlstm import (
    DEVICE,
    TOL,
    check_triton,
    compare_mlstm,
    dm0_terms,
    mlstm_leaves,
    mlstm_upstream,
    naive_mlstm,
    run_mlstm,
)
from xlstm_ts.kernels.mlstm import triton_chunkwise_parallel as parallel
from xlstm_ts.kernels.mlstm import triton_chunkwise_segments as segments

pytest.importorskip("triton")

PARALLEL = "1-chunk-parallel"  # segments of one chunk through the chunk-parallel kernels (PARALLEL_FORWARD)
PARALLEL2 = "2-chunks-parallel"  # segments of two chunks, each one chunk of the chunk-parallel kernels


@pytest.fixture
def chunks_per_segment(monkeypatch, request):
    together = {PARALLEL: 1, PARALLEL2: 2}
    monkeypatch.setattr(segments, "SEGMENT_CHUNKS_OVERRIDE", together.get(request.param, request.param))
    monkeypatch.setattr(parallel, "PARALLEL_FORWARD", request.param in together)
    return request.param


@pytest.mark.parametrize("chunks_per_segment", [1, 2, PARALLEL, PARALLEL2], indirect=True,
                         ids=["1-chunk", "2-chunks", PARALLEL, PARALLEL2])  # fmt: skip
@pytest.mark.parametrize("with_states", [False, True], ids=["zero-state", "initial-state"])
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
@pytest.mark.parametrize(
    "B,NH,S,DQK,DHV",
    # 2-5 chunks of 16: the last segment is short; DHV 80 spans two DHV blocks, DQK 100 two DQK blocks of 64
    [(1, 2, 19, 16, 24), (2, 1, 40, 20, 80), (1, 1, 70, 100, 40)],
    ids=lambda x: str(x),
)
def test_segmented_matches_fp64_reference(B, NH, S, DQK, DHV, i_mean, with_states, chunks_per_segment, nan_poison):
    torch.manual_seed(42)
    check_triton(B, NH, S, DQK, DHV, i_mean, with_states)


@pytest.mark.parametrize("chunks_per_segment", [2, PARALLEL], indirect=True, ids=["2-chunks", PARALLEL])
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
def test_wide_heads_carry_the_boundary_state_in_wider_dqk_blocks(i_mean, chunks_per_segment, nan_poison,
                                                                  monkeypatch):  # fmt: skip
    """Heads of BOUNDS_WIDE_DQK columns or more run the boundary kernels in DQK blocks of BOUNDS_WIDE_BK (lowered
    here: DQK 100 in blocks of 32, the last one partly masked; and DQK 40 in one block of 128), fp32 and bf16."""
    monkeypatch.setattr(segments, "BOUNDS_WIDE_DQK", 33)
    for width, DQK in ((32, 100), (128, 40)):
        monkeypatch.setattr(segments, "BOUNDS_WIDE_BK", width)
        assert segments._bounds_blocks(DQK, 64) == (width, -(-DQK // width), 64)
        for dtype in (torch.float32, torch.bfloat16):
            torch.manual_seed(43)
            check_triton(1, 2, 45, DQK, 24, i_mean, True, dtype=dtype, rounded=True)


@pytest.mark.parametrize("stored", [True, False], ids=["stored-states", "recomputed-states"])
@pytest.mark.parametrize("with_states", [False, True], ids=["zero-state", "initial-state"])
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
@pytest.mark.parametrize("B,NH,S,DQK,DHV", [(1, 2, 19, 16, 24), (2, 1, 40, 20, 80)], ids=lambda x: str(x))
def test_plain_layout_stored_or_recomputed_states(B, NH, S, DQK, DHV, i_mean, with_states, stored, monkeypatch,
                                                  nan_poison):  # fmt: skip
    monkeypatch.setattr(segments, "STORE_STATES_OVERRIDE", stored)
    torch.manual_seed(5)
    leaves = mlstm_leaves(B, NH, S, DQK, DHV, i_mean, with_states)
    upstream = mlstm_upstream(B, NH, S, DQK, DHV)
    ref = run_mlstm(get_kernel("mlstm_chunkwise--torch"), leaves, upstream, torch.float64, chunk_size=16)
    for detach in (False, True):  # the stored path also serves the detached normalizer
        out = run_mlstm(get_kernel("mlstm_chunkwise--triton"), leaves, upstream, torch.float32, chunk_size=16,
                        detach_normalizer=detach)  # fmt: skip
        if not detach:
            compare_mlstm(ref, out, *TOL[torch.float32], dm0_terms=dm0_terms(leaves, ref[1]))
    zeros = [torch.zeros(shape, dtype=torch.float64, device=DEVICE) for shape in
             [(B, NH, DQK, DHV), (B, NH, DQK), (B, NH, 1)]]  # fmt: skip

    def naive(q, k, v, i, f, C, n, m, **kw):
        states = [z if x is None else x for x, z in zip((C, n, m), zeros, strict=True)]
        return naive_mlstm(q, k, v, i, f, *states, detach=True)[:2]

    compare_mlstm(run_mlstm(naive, leaves, upstream, torch.float64), out, *TOL[torch.float32])


def test_store_chunk_states_rule(monkeypatch):
    assert not segments.store_chunk_states(8)  # recomputed unless asked for
    monkeypatch.setattr(segments, "STORE_STATES_OVERRIDE", True)
    assert segments.store_chunk_states(8) and segments.store_chunk_states(2)
    assert not segments.store_chunk_states(1)  # one chunk has no second pass to save


@pytest.mark.parametrize("chunks_per_segment", [1, PARALLEL, PARALLEL2], indirect=True,
                         ids=["1-chunk", PARALLEL, PARALLEL2])  # fmt: skip
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
def test_segmented_detach_normalizer(i_mean, chunks_per_segment, nan_poison):
    torch.manual_seed(7)
    leaves = mlstm_leaves(1, 2, 40, 16, 80, i_mean, with_states=True)
    upstream = mlstm_upstream(1, 2, 40, 16, 80)
    naive = lambda *args, **kw: naive_mlstm(*args, detach=True)[:2]
    ref = run_mlstm(naive, leaves, upstream, torch.float64)
    out = run_mlstm(get_kernel("mlstm_chunkwise--triton"), leaves, upstream, torch.float32, chunk_size=16,
               detach_normalizer=True)  # fmt: skip
    compare_mlstm(ref, out, *TOL[torch.float32])


@pytest.mark.parametrize("chunks_per_segment", [1, 2, PARALLEL, PARALLEL2], indirect=True,
                         ids=["1-chunk", "2-chunks", PARALLEL, PARALLEL2])  # fmt: skip
def test_segmented_stabilizer_gradient_crosses_segments(chunks_per_segment, nan_poison):
    """As test_chunkwise_triton_first_step_on_either_branch, over 5 segments: the gradient routed through
    m_t = max(log f_t + m_{t-1}, i~_t) from the last states reaches step 0 (head 0) or m0 (head 1)."""
    torch.manual_seed(42)
    B, NH, S, DQK, DHV = 1, 2, 70, 16, 24
    leaves = mlstm_leaves(B, NH, S, DQK, DHV, -10.0, with_states=True)
    with torch.no_grad():
        leaves[3][..., 0] = 3.0
        leaves[7].copy_(torch.tensor([-5.0, 5.0]).view(B, NH, 1))
    upstream = mlstm_upstream(B, NH, S, DQK, DHV)
    ref = run_mlstm(get_kernel("mlstm_chunkwise--torch"), leaves, upstream, torch.float64, chunk_size=16)
    out = run_mlstm(get_kernel("mlstm_chunkwise--triton"), leaves, upstream, torch.float32, chunk_size=16)
    compare_mlstm(ref, out, *TOL[torch.float32], dm0_terms=dm0_terms(leaves, ref[1]))


@pytest.mark.parametrize("chunks_per_segment", [1, PARALLEL], indirect=True, ids=["1-chunk", PARALLEL])
def test_segmented_bf16(chunks_per_segment, nan_poison):
    torch.manual_seed(3)
    check_triton(2, 1, 40, 20, 80, 0.0, True, torch.bfloat16, rounded=True)


@pytest.mark.parametrize("chunks_per_segment", [1, PARALLEL], indirect=True, ids=["1-chunk", PARALLEL])
@pytest.mark.parametrize("DHV", [24, 80], ids=["one-DHV-block", "two-DHV-blocks"])
def test_segmented_launches(DHV, chunks_per_segment):
    """Boundary kernel + segment kernel each way (+ the DHV-share sum; the chunk-parallel backward has none, and
    sums <dh, h> in one launch first), no torch ops between them."""
    torch.manual_seed(0)
    x = [t.to(DEVICE, torch.float32).requires_grad_() for t in make_mlstm_inputs(1, 2, 40, 16, DHV)]
    with LaunchCounter() as forward:
        h, last = get_kernel("mlstm_chunkwise--triton")(*x, return_last_states=True, chunk_size=16)
    outs = [h, *last]
    upstream = [torch.randn_like(o) for o in outs]
    with LaunchCounter() as backward:
        torch.autograd.grad(outs, x, upstream)
    assert forward.total == 2 and "_mlstm_bounds_fwd_kernel_tl x1" in forward.summary(), forward.summary()
    assert not forward.torch_ops and not backward.torch_ops, (forward.summary(), backward.summary())
    assert backward.total == (2 if DHV <= 64 and chunks_per_segment != PARALLEL else 3), backward.summary()
    if chunks_per_segment == PARALLEL:
        assert "_mlstm_chunk_bwd_kernel_tl x1" in backward.summary(), backward.summary()
        assert "_mlstm_bounds_rows_kernel_tl x1" in backward.summary(), backward.summary()


def test_segment_plan(monkeypatch):
    cpu = torch.device("cpu")
    assert segments.segment_plan(2048, 32, 128, cpu) == (1, 64)  # off CUDA: the plain layout unless forced
    monkeypatch.setattr(segments, "SEGMENT_CHUNKS_OVERRIDE", 3)
    assert segments.segment_plan(100, 16, 128, cpu) == (3, 3)  # 7 chunks: segments of 3, 3 and 1
    assert segments.segment_plan(30, 16, 128, cpu) == (1, 2)  # one segment is the plain layout
    monkeypatch.setattr(segments, "SEGMENT_CHUNKS_OVERRIDE", None)
    monkeypatch.setattr(segments, "_sm_count", lambda index: 132)
    cuda = torch.device("cuda", 0)
    assert segments.segment_plan(8192, 64, 4, cuda) == (128, 1)  # 4 programs: 528 wanted, one chunk per segment
    assert segments.segment_plan(2048, 32, 64, cuda) == (8, 8)  # 64 programs: 9 segments wanted, of 8 chunks
    assert segments.segment_plan(2048, 32, 67, cuda) == (1, 64)  # more than one program per 2 SMs: plain
    assert segments.segment_plan(64, 64, 4, cuda) == (1, 1)  # one chunk


@pytest.mark.parametrize("chunks_per_segment", [2, PARALLEL2], indirect=True, ids=["2-chunks", PARALLEL2])
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
def test_boundary_kernels_carrying_in_longer_chunks(i_mean, chunks_per_segment, monkeypatch, nan_poison):
    """Segments of two 16-step chunks, carried across by the boundary kernels in chunks of 32 (a timing knob: the
    same states and state gradients at every boundary), the last segment short; every gradient against fp64."""
    monkeypatch.setattr(segments, "BOUNDS_CARRY_OVERRIDE", 32)
    assert segments._carry(16, 2) == (32, 1) and segments._carry(16, 3) == (16, 3)  # 48 steps: 32 does not divide
    torch.manual_seed(8)
    check_triton(1, 2, 75, 24, 40, i_mean, True)


@pytest.mark.parametrize("chunks_per_segment", [2, PARALLEL2], indirect=True, ids=["2-chunks", PARALLEL2])
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
def test_boundary_kernels_in_smaller_blocks(i_mean, chunks_per_segment, monkeypatch, nan_poison):
    """The boundary kernels in (16, 16) blocks of (DQK, DHV) (a timing knob: more, lighter programs), where the
    launches around them use blocks of 64: 40 columns span three blocks each way; the chunk-parallel backward sums
    the boundary kernel's three shares of the stabilizer gradient, the chunk-walking one keeps its own DHV block."""
    monkeypatch.setattr(segments, "BOUNDS_BLOCKS_OVERRIDE", (16, 16))
    assert segments._bounds_blocks(40, 64) == (16, 3, 16)
    torch.manual_seed(9)
    check_triton(1, 2, 75, 40, 40, i_mean, True)
