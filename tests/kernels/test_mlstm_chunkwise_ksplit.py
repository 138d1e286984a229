"""mlstm_chunkwise--triton with the DQK columns in blocks (heads wider than one launch takes) against the fp64
reference: outputs, last states and true gradients, one chunk and several, zero and initial states, one and two
DHV blocks, both gate regimes, the detached normalizer, the segmented layout. `K_BLOCK` is lowered so that narrow
heads split here."""

import pytest
import torch

from xlstm_ts.kernels import get_kernel
from xlstm_ts.kernels._testing_mlstm import (
    TOL,
    check_triton,
    compare_mlstm,
    mlstm_leaves,
    mlstm_upstream,
    naive_mlstm,
    run_mlstm,
)

ksplit = pytest.importorskip("xlstm_ts.kernels.mlstm.triton_chunkwise_ksplit")
segments = pytest.importorskip("xlstm_ts.kernels.mlstm.triton_chunkwise_segments")


@pytest.fixture
def k_block_16(monkeypatch):
    monkeypatch.setattr(ksplit, "K_BLOCK", 16)


def test_k_blocks_cover_the_columns_in_equal_widths(k_block_16):
    assert ksplit.k_blocks(40) == [slice(0, 14), slice(14, 28), slice(28, 40)]
    assert ksplit.k_blocks(16) == [slice(0, 16)]


@pytest.mark.parametrize("with_states", [False, True], ids=["zero-state", "initial-state"])
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
@pytest.mark.parametrize(
    "B,NH,S,DQK,DHV",
    # DQK 40: three column blocks; S 13 one chunk, 37 three chunks of 16 (the last short); DHV 80: two DHV blocks
    [(2, 1, 13, 40, 24), (1, 2, 37, 40, 24), (1, 1, 21, 33, 80)],
    ids=lambda x: str(x),
)
def test_column_blocks_match_fp64_reference(B, NH, S, DQK, DHV, i_mean, with_states, k_block_16, nan_poison):
    torch.manual_seed(11)
    check_triton(B, NH, S, DQK, DHV, i_mean, with_states)


@pytest.mark.parametrize("segment_chunks", [1, 2], ids=["segments-of-1-chunk", "segments-of-2-chunks"])
@pytest.mark.parametrize("with_states", [False, True], ids=["zero-state", "initial-state"])
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
@pytest.mark.parametrize("B,NH,S,DQK,DHV", [(1, 2, 37, 40, 24), (1, 1, 37, 33, 80)], ids=lambda x: str(x))
def test_column_blocks_in_segments_match_fp64_reference(
    B, NH, S, DQK, DHV, i_mean, with_states, segment_chunks, k_block_16, nan_poison, monkeypatch
):
    """Column blocks in the segmented layout (three chunks of 16, the last short, in segments of 1 or 2 chunks;
    one and two DHV blocks): outputs, last states and every gradient, upstream gradients of the last states too."""
    monkeypatch.setattr(segments, "SEGMENT_CHUNKS_OVERRIDE", segment_chunks)
    torch.manual_seed(12)
    check_triton(B, NH, S, DQK, DHV, i_mean, with_states)


def test_column_blocks_in_segments_detach_normalizer(k_block_16, nan_poison, monkeypatch):
    monkeypatch.setattr(segments, "SEGMENT_CHUNKS_OVERRIDE", 1)
    torch.manual_seed(13)
    leaves = mlstm_leaves(1, 2, 37, 40, 24, 0.0, with_states=True)
    upstream = mlstm_upstream(1, 2, 37, 40, 24)
    ref = run_mlstm(lambda *args, **kw: naive_mlstm(*args, detach=True)[:2], leaves, upstream, torch.float64)
    out = run_mlstm(get_kernel("mlstm_chunkwise--triton"), leaves, upstream, torch.float32, chunk_size=16,
                    detach_normalizer=True)  # fmt: skip
    compare_mlstm(ref, out, *TOL[torch.float32])


@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
def test_column_blocks_detach_normalizer(i_mean, k_block_16, nan_poison):
    torch.manual_seed(3)
    leaves = mlstm_leaves(1, 2, 29, 40, 24, i_mean, with_states=True)
    upstream = mlstm_upstream(1, 2, 29, 40, 24)
    ref = run_mlstm(lambda *args, **kw: naive_mlstm(*args, detach=True)[:2], leaves, upstream, torch.float64)
    out = run_mlstm(get_kernel("mlstm_chunkwise--triton"), leaves, upstream, torch.float32, chunk_size=16,
                    detach_normalizer=True)  # fmt: skip
    compare_mlstm(ref, out, *TOL[torch.float32])


@pytest.mark.parametrize(
    "B,NH,S,DQK,DHV,dtype,k_block",
    # bf16 inputs in three narrow blocks; DQK 300 in three blocks of 100 unforced, DHV 272 in five DHV blocks;
    # bf16 DHV 136 in value blocks of 128 (the second one 8 columns wide), over two chunks
    [(1, 2, 37, 40, 24, torch.bfloat16, 16), (1, 1, 5, 300, 272, torch.float32, None),
     (1, 1, 37, 160, 136, torch.bfloat16, None)],
    ids=["bf16-forced-blocks", "DQK300-DHV272", "bf16-DQK160-DHV136-value-blocks-of-128"],
)
def test_bf16_and_wide_heads(B, NH, S, DQK, DHV, dtype, k_block, monkeypatch, nan_poison):
    if k_block is not None:
        monkeypatch.setattr(ksplit, "K_BLOCK", k_block)
    assert len(ksplit.k_blocks(DQK)) > 1
    torch.manual_seed(4)
    check_triton(B, NH, S, DQK, DHV, 0.0, True, dtype)


def test_value_blocks_of_128_only_for_wide_low_precision_values(monkeypatch):
    # (BV, num_warps) from the one-launch sizes (64, 8): bf16/fp16 values of 128 or more columns take blocks of 128
    assert ksplit.value_block(136, 64, 8, torch.bfloat16, grad=True) == (128, 8)
    assert ksplit.value_block(512, 64, 8, torch.float16, grad=False) == (128, 4)
    assert ksplit.value_block(512, 64, 8, torch.float32, grad=True) == (64, 8)
    assert ksplit.value_block(96, 64, 8, torch.bfloat16, grad=True) == (64, 8)
    monkeypatch.setattr(ksplit.triton_chunkwise, "NUM_WARPS_OVERRIDE", 4)
    assert ksplit.value_block(512, 64, 4, torch.bfloat16, grad=True) == (64, 4)


def test_only_the_last_states_used(k_block_16):
    # no gradient reaches h: the backward gets dh = None and dC, dn, dm only (q then gets none: zeros or None)
    torch.manual_seed(2)
    leaves = mlstm_leaves(1, 1, 20, 40, 24, 0.0, with_states=True)
    outs = []
    for name, dtype in (("mlstm_chunkwise--torch", torch.float64), ("mlstm_chunkwise--triton", torch.float32)):
        cast = [x.detach().to(dtype if n < 5 else torch.float32 if dtype == torch.float32 else dtype)
                .requires_grad_() for n, x in enumerate(leaves)]  # fmt: skip
        _, (C, n, m) = get_kernel(name)(*cast, return_last_states=True, chunk_size=16)
        (C.sum() + 2 * n.sum() + 3 * m.sum()).backward()
        outs.append([torch.zeros_like(x, dtype=torch.float64) if x.grad is None else x.grad.double() for x in cast])
    for a, b in zip(*outs, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * a.abs().max().item())



@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("S", [1, 100, 257])
@pytest.mark.parametrize("DQK,DHV", [(384, 320), (512, 512)], ids=lambda x: str(x))
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
def test_wide_heads_gpu(S, DQK, DHV, dtype, i_mean):
    torch.manual_seed(42)
    # bf16: the reference sees the same rounded inputs; states and gates stay fp32 / fp64
    errors = check_triton(2, 3, S, DQK, DHV, i_mean, True, dtype, chunk_size=64, rounded=True).errors
    print(f"mlstm_chunkwise (column blocks) S={S} DQK={DQK} DHV={DHV} {dtype} i_mean={i_mean}: " +
          " ".join(f"{k}={v:.1e}" for k, v in errors.items()))  # fmt: skip


@pytest.mark.parametrize("segment_chunks", [None, 1], ids=["plain", "segments-of-1-chunk"])
def test_value_block_override_matches_fp64_reference(segment_chunks, k_block_16, nan_poison, monkeypatch):
    """VALUE_BLOCK_OVERRIDE (the segments benchmark's DHV-block sweep) sets the DHV block of the column-block
    launches: DHV 48 in three blocks of 16, the same function and gradients."""
    monkeypatch.setattr(ksplit, "VALUE_BLOCK_OVERRIDE", 16)
    monkeypatch.setattr(segments, "SEGMENT_CHUNKS_OVERRIDE", segment_chunks)
    assert ksplit.tiles(37, 40, 48, 16, torch.float32, grad=True)[1] == 16
    torch.manual_seed(13)
    check_triton(1, 1, 37, 40, 48, 0.0, True)
