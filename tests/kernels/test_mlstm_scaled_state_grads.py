"""Storage of the chunk-parallel backward's state gradients and the forward boundary kernel's blocks of a call with
gradients: dC in fp16 in power-of-two scaled blocks (`triton_chunkwise_parallel_bwd.SCALED_DC`, bf16/fp16 inputs,
off by default) and the forward boundary kernel in wider DHV blocks (`triton_chunkwise_parallel.
GRAD_BOUNDS_VALUE_BLOCK`). Every output, last state and gradient against fp64 on the rounded inputs, both gate
regimes, zero and initial states, several DQK blocks; the stored blocks against the fp32 ones; which calls scale."""

import pytest
import torch

from xlstm_ts.kernels._testing_mlstm import check_triton

parallel = pytest.importorskip("xlstm_ts.kernels.mlstm.triton_chunkwise_parallel")
parallel_bwd = pytest.importorskip("xlstm_ts.kernels.mlstm.triton_chunkwise_parallel_bwd")
segments = pytest.importorskip("xlstm_ts.kernels.mlstm.triton_chunkwise_segments")
chunkwise = pytest.importorskip("xlstm_ts.kernels.mlstm.triton_chunkwise")


@pytest.fixture
def one_chunk_segments(monkeypatch, parallel_forward):
    """Calls with gradients in segments of one chunk through the chunk-parallel kernels, scaled fp16 dC asked for."""
    monkeypatch.setattr(segments, "SEGMENT_CHUNKS_OVERRIDE", 1)
    monkeypatch.setattr(parallel_bwd, "SCALED_DC", True)
    monkeypatch.setattr(parallel_bwd, "NUM_WARPS", 4)


def _spy_state_grads(monkeypatch) -> list:
    """Wrap the backward's `bounds_backward`; the list collects (dcs, scales) of each call."""
    seen, real = [], parallel_bwd.bounds_backward

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append((out[0].clone(), None if out[3] is None else (out[3][0].clone(), *out[3][1:])))
        return out

    monkeypatch.setattr(parallel_bwd, "bounds_backward", spy)
    return seen


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("with_states", [False, True], ids=["zero-state", "initial-state"])
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
def test_scaled_fp16_state_grads_match_fp64(i_mean, with_states, dtype, one_chunk_segments, nan_poison, monkeypatch):
    """S 45 in chunks of 16 (the last short), DQK 80 in two blocks of 64, DHV 24."""
    seen = _spy_state_grads(monkeypatch)
    torch.manual_seed(41)
    check_triton(1, 2, 45, 80, 24, i_mean, with_states, dtype=dtype, rounded=True)
    (dcs, scales), = seen
    assert dcs.dtype == torch.float16 and scales is not None


@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
def test_scaled_blocks_hold_the_fp32_gradients(i_mean, one_chunk_segments, monkeypatch):
    """Each stored fp16 block times its scale is the fp32 run's block to fp16 precision (2^-11 of the block's
    largest |dC|), and the largest |dC| of a block lies in [2^14, 2^15) once divided: two DQK and two DHV blocks of
    16 (`BOUNDS_BLOCKS_OVERRIDE`), the upstream gradient of the second DHV block 1000 times the first's, so that
    blocks get their own scales."""
    from xlstm_ts.kernels import get_kernel
    from xlstm_ts.kernels._testing_mlstm import mlstm_leaves

    monkeypatch.setattr(segments, "BOUNDS_BLOCKS_OVERRIDE", (16, 16))
    monkeypatch.setattr(parallel_bwd, "_k_block", lambda width: (16, -(-width // 16)))  # the gradient kernel's too
    seen = _spy_state_grads(monkeypatch)
    torch.manual_seed(42)
    leaves = [x.detach() for x in mlstm_leaves(1, 1, 40, 32, 32, i_mean, False)[:5]]
    dh = torch.randn(1, 1, 40, 32)
    dh[..., 16:] *= 1000.0
    for scaled in (False, True):
        monkeypatch.setattr(parallel_bwd, "SCALED_DC", scaled)
        args = [x.to(torch.bfloat16).requires_grad_() for x in leaves[:3]] + [x.clone().requires_grad_()
                                                                               for x in leaves[3:]]  # fmt: skip
        get_kernel("mlstm_chunkwise--triton")(*args, chunk_size=16).backward(dh.to(torch.bfloat16))
    (dcs32, none), (dcs16, (scale, BK, BV)) = seen
    assert none is None and dcs32.dtype == torch.float32 and dcs16.dtype == torch.float16 and (BK, BV) == (16, 16)
    assert scale.shape == (1, 3, 2, 2)  # (B, NH * segments, DQK blocks, DHV blocks)
    blocks = lambda x: x.reshape(1, 3, 2, 16, 2, 16).transpose(3, 4).float()  # noqa: E731  (.., NKB, NV, BK, BV)
    b32, b16 = blocks(dcs32)[:, :2], blocks(dcs16)[:, :2]  # the last segment's: no upstream state gradient
    amax16 = b16.abs().amax(dim=(-1, -2))
    assert ((amax16 >= 2**14) & (amax16 < 2**15)).all()
    back = b16 * scale[:, :2, :, :, None, None]
    bound = 2.0**-11 * b32.abs().amax(dim=(-1, -2), keepdim=True)
    assert ((back - b32).abs() <= bound).all()
    assert (scale[:, :2, :, 1] >= 2**8 * scale[:, :2, :, 0]).all()  # the second DHV block's own, larger scales


def test_fp32_state_grads_where_blocks_do_not_nest(one_chunk_segments, nan_poison, monkeypatch):
    """Boundary blocks narrower than the gradient kernel's tiles (16 against 64) and fp32 inputs keep fp32 dC."""
    seen = _spy_state_grads(monkeypatch)
    monkeypatch.setattr(segments, "BOUNDS_BLOCKS_OVERRIDE", (16, 16))
    torch.manual_seed(43)
    check_triton(1, 1, 37, 24, 40, 0.0, True, dtype=torch.bfloat16, rounded=True)
    monkeypatch.setattr(segments, "BOUNDS_BLOCKS_OVERRIDE", None)
    check_triton(1, 1, 37, 24, 40, 0.0, True, dtype=torch.float32)
    assert [(dcs.dtype, scales) for dcs, scales in seen] == [(torch.float32, None)] * 2


@pytest.mark.parametrize("value_block, expected", [(None, 64), (128, 128), (16, 16)], ids=["none", "128", "16"])
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
def test_forward_boundary_blocks_with_gradients(value_block, expected, i_mean, one_chunk_segments, nan_poison,
                                                monkeypatch):  # fmt: skip
    """GRAD_BOUNDS_VALUE_BLOCK: DHV 80 carried by the forward boundary kernel of a bf16 call with gradients in
    blocks of 64 (None: the call's own), 128 or 16 columns; fp32 calls keep their own; against fp64 either way."""
    monkeypatch.setattr(parallel, "GRAD_BOUNDS_VALUE_BLOCK", value_block)
    blocks, real = [], chunkwise.bounds_forward

    def spy(*args, **kwargs):
        blocks.append(args[10])  # BV
        return real(*args, **kwargs)

    monkeypatch.setattr(chunkwise, "bounds_forward", spy)
    torch.manual_seed(44)
    check_triton(1, 1, 37, 24, 80, i_mean, True, dtype=torch.bfloat16, rounded=True)
    check_triton(1, 1, 37, 24, 80, i_mean, True, dtype=torch.float32)
    assert blocks == [expected, 64]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("scaled", [True, False], ids=["fp16-blocks", "fp32"])
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
def test_scaled_state_grads_gpu(i_mean, scaled, monkeypatch):
    """The default rule's chunk-parallel kernels at 128-wide bf16 heads over 1100 steps (the last segment short),
    with the state gradients in fp16 blocks or fp32, against fp64."""
    monkeypatch.setattr(parallel_bwd, "SCALED_DC", scaled)
    seen = _spy_state_grads(monkeypatch)
    torch.manual_seed(45)
    check_triton(2, 2, 1100, 128, 128, i_mean, False, dtype=torch.bfloat16, chunk_size=64, rounded=True)
    assert [dcs.dtype for dcs, _ in seen] == [torch.float16 if scaled else torch.float32]
