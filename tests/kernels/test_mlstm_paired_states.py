"""The chunk-parallel forward with one stored state per pair of chunks (`triton_chunkwise_parallel.PAIRED_STATES`;
bf16/fp16 inputs, the default): the odd chunk's program takes the even chunk's keys as an (L, L) block of scores
next to the stored state. Against the fp64 step-by-step recurrence on the rounded inputs: h and the last states, an
odd and an even number of chunks, sequences that end mid-chunk, several DQK blocks of the inner loop and several
DHV blocks, zero and initial states, both gate regimes, the boundary kernel's carry in the chunks themselves and in
pairs (`PAIR_CARRY`), the boundary kernel's DHV blocks; and which calls pair."""

import pytest
import torch

from xlstm_ts.kernels._testing_mlstm import check_forward

parallel = pytest.importorskip("xlstm_ts.kernels.mlstm.triton_chunkwise_parallel")


@pytest.fixture(params=[16, 32], ids=["carry-16", "carry-32"])
def paired(request, monkeypatch, parallel_forward):
    """Paired states with the boundary kernel carrying chunks of 16 steps (the chunks) or 32 (whole pairs)."""
    monkeypatch.setattr(parallel, "PAIRED_STATES", True)
    monkeypatch.setattr(parallel, "PAIR_CARRY", request.param)
    return request.param


@pytest.mark.parametrize("with_states", [False, True], ids=["zero-state", "initial-state"])
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
@pytest.mark.parametrize(
    "B,NH,S,DQK,DHV",
    # chunks of 16: S 37 three (the last short), S 64 four, S 50 four (the last short); DQK 80: two blocks of the
    # inner loop; DHV 80: two DHV blocks
    [(2, 1, 37, 24, 40), (1, 2, 64, 80, 24), (1, 1, 50, 40, 80)],
    ids=lambda x: str(x),
)
def test_paired_states_match_fp64_reference(B, NH, S, DQK, DHV, i_mean, with_states, paired, nan_poison):
    launches = check_forward(B, NH, S, DQK, DHV, i_mean, with_states, torch.bfloat16)
    names = str(launches.summary())
    assert "_mlstm_chunk_out_kernel_tl" in names and "_mlstm_bounds_fwd_kernel_tl" in names


@pytest.mark.parametrize("value_block, programs", [(None, 2), (16, 5), (128, 1)], ids=["bv-none", "bv16", "bv128"])
def test_paired_boundary_value_blocks(value_block, programs, paired, nan_poison, monkeypatch):
    """DHV 80 carried by the boundary kernel in blocks of 64 (None), 16 or 128 columns (`PAIR_BOUNDS_VALUE_BLOCK`):
    h and the last states against fp64, and that many DHV programs per head."""
    monkeypatch.setattr(parallel, "PAIR_BOUNDS_VALUE_BLOCK", value_block)
    launches = check_forward(1, 1, 50, 40, 80, -10.0, True, torch.bfloat16)
    assert launches.grids("_mlstm_bounds_fwd_kernel_tl") == [(programs, 1)]  # (DQK blocks x DHV blocks, B * NH)


def test_paired_states_store_half_the_states(paired, monkeypatch):
    """bf16 calls of several chunks store ceil(NC / 2) states per head; one chunk needs no pairing, fp32 calls and
    heads wider than PAIR_MAX_HEAD do not pair (one state per chunk)."""
    launched = []
    original = parallel.bounds_forward

    def spy(*args, **kw):
        states, last = original(*args, **kw)
        launched.append(states[0].shape)
        return states, last

    monkeypatch.setattr(parallel, "bounds_forward", spy)
    check_forward(1, 2, 37, 24, 40, 0.0, False, torch.bfloat16)  # 3 chunks of 16: 2 states per head
    check_forward(1, 2, 16, 24, 40, 0.0, False, torch.bfloat16)  # 1 chunk: the plain forward, no states
    check_forward(1, 2, 37, 24, 40, 0.0, False, torch.float32)  # fp32: 3 states per head
    monkeypatch.setattr(parallel, "PAIR_MAX_HEAD", 32)
    check_forward(1, 2, 37, 24, 40, 0.0, False, torch.bfloat16)  # DHV 40 above the widest paired head
    assert launched == [torch.Size([1, 2 * 2, 24, 40]), torch.Size([1, 2 * 3, 24, 40]), torch.Size([1, 2 * 3, 24, 40])]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
@pytest.mark.parametrize(
    "B,NH,S,DQK,DHV",
    # chunks of 64: 16 (the last short), 15 (the last pair has one chunk), 32; DQK != DHV
    [(2, 2, 1000, 128, 128), (3, 2, 900, 64, 64), (1, 2, 2048, 128, 96)],
    ids=lambda x: str(x),
)
def test_paired_states_gpu(B, NH, S, DQK, DHV, i_mean, parallel_forward):
    """The default pairing on the GPU (compiled dots, 128-step carry of the boundary kernel): h and the last states
    against fp64, zero and initial states."""
    for with_states in (False, True):
        launches = check_forward(B, NH, S, DQK, DHV, i_mean, with_states, torch.bfloat16, chunk_size=64)
        assert "_mlstm_chunk_out_kernel_tl" in str(launches.summary())
