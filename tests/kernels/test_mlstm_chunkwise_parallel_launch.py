"""Launch options of the chunk-parallel mLSTM kernels (`triton_chunkwise_parallel.py` and its backward): the output
kernel's value columns and pipeline stages by dot mode and state dtype, the gradient kernel's stages and parts, and on
a GPU bit-identical repeats of the default launches (Triton 3.6's pipelining of bf16 state tiles into bf16 dots raced
on sm_90)."""

import pytest
import torch

from xlstm_ts.kernels import get_kernel
from xlstm_ts.kernels._launches import LaunchCounter
from xlstm_ts.kernels._testing_mlstm import DEVICE, check_forward

parallel = pytest.importorskip("xlstm_ts.kernels.mlstm.triton_chunkwise_parallel")
segments = pytest.importorskip("xlstm_ts.kernels.mlstm.triton_chunkwise_segments")


def _spy_output_kernel(monkeypatch) -> list:
    """Wrap the output kernel's launches; the returned list collects (grid, launch options) of each."""
    calls, kernel = [], parallel._mlstm_chunk_out_kernel_tl

    class Spy:
        def __getitem__(self, grid):
            def launch(*args, **meta):
                calls.append((grid, meta))
                return kernel[grid](*args, **meta)

            return launch

    monkeypatch.setattr(parallel, "_mlstm_chunk_out_kernel_tl", Spy())
    return calls


@pytest.mark.parametrize("value_block", [16, 128, None], ids=["bv16", "bv128", "bv-none"])
def test_output_kernel_value_blocks(value_block, parallel_forward, nan_poison, monkeypatch):
    """DHV 80 in five blocks of 16, in one block of 128 (padded) or in blocks of 64 (None), against fp64:
    FP32_DOTS_VALUE_BLOCK for fp32 inputs, OUT_VALUE_BLOCK for bf16 (bf16 dots; each set alone, so a swapped knob
    fails the launch count)."""
    programs = {None: 2, 16: 5, 128: 1}[value_block]  # DHV blocks of the output kernel
    other = 32  # the knob not under test: 3 blocks of DHV 80
    monkeypatch.setattr(parallel, "FP32_DOTS_VALUE_BLOCK", value_block)
    monkeypatch.setattr(parallel, "OUT_VALUE_BLOCK", other)
    launches = check_forward(1, 2, 37, 40, 80, 0.0, True, torch.float32)
    assert launches.grids("_mlstm_chunk_out_kernel_tl") == [(programs, 3, 2)]  # (DHV blocks, chunks, B * NH)
    monkeypatch.setattr(parallel, "FP32_DOTS_VALUE_BLOCK", other)
    monkeypatch.setattr(parallel, "OUT_VALUE_BLOCK", value_block)
    launches = check_forward(1, 1, 37, 24, 80, -10.0, False, torch.bfloat16)
    assert launches.grids("_mlstm_chunk_out_kernel_tl") == [(programs, 3, 1)]


def test_output_kernel_defaults_by_dot_mode(monkeypatch):
    """bf16 dots read bf16 states at LOWP_STATE_STAGES in OUT_VALUE_BLOCK columns; TF32 dots (heads above 128 with
    gradients) read them at Triton's default stages in FP32_DOTS_VALUE_BLOCK columns, as fp32 states are read;
    h from the launch the same either way under the interpreter (both dot modes are exact there for bf16 values)."""
    calls = _spy_output_kernel(monkeypatch)
    torch.manual_seed(35)
    B, NH, S, D, L = 1, 2, 40, 24, 16
    NC = -(-S // L)
    q, k, v = (torch.randn(B, NH, S, D, device=DEVICE).to(torch.bfloat16) for _ in range(3))
    i, f = torch.randn(B, NH, S, device=DEVICE), 3 + torch.randn(B, NH, S, device=DEVICE)
    C = torch.randn(B * NH * NC, D, D, device=DEVICE)
    n, m = torch.rand(B * NH * NC, D, device=DEVICE), torch.zeros(B * NH * NC, device=DEVICE)
    outs = []
    for lowp, states in ((4, C.to(torch.bfloat16)), (3, C.to(torch.bfloat16)), (3, C.to(torch.bfloat16).float())):
        h = torch.full((B, NH, S, D), float("nan"), dtype=torch.bfloat16, device=DEVICE)
        z, m_out = (torch.full((B, NH, S), float("nan"), device=DEVICE) for _ in range(2))
        parallel.chunk_outputs(q, k, v, i, f, (states, n, m), NC, L, 1e-6, lowp, 4, h, None, z, m_out)
        assert not h.isnan().any() and not z.isnan().any() and not m_out.isnan().any()
        outs.append(h.float())
    metas = [(grid[0], meta.get("num_stages")) for grid, meta in calls]
    assert metas == [(1, parallel.LOWP_STATE_STAGES), (1, None), (1, None)]  # D 24 fits one block either way
    torch.testing.assert_close(outs[1], outs[2], rtol=0, atol=0)
    torch.testing.assert_close(outs[0], outs[1], rtol=2e-2, atol=2e-2)



@pytest.mark.parametrize("stages", [1, 2], ids=["1-stage", "2-stage"])
def test_gradient_kernel_pipeline_stages(stages, parallel_forward, nan_poison, monkeypatch):
    """NUM_STAGES (an A/B knob; None: Triton's default) reaches the gradient kernel's launch, and every gradient still
    matches fp64 (the interpreter ignores the stages; the GPU test below compiles them)."""
    from xlstm_ts.kernels._testing_mlstm import check_triton
    from xlstm_ts.kernels.mlstm import triton_chunkwise_parallel_bwd as parallel_bwd

    monkeypatch.setattr(segments, "SEGMENT_CHUNKS_OVERRIDE", 1)
    monkeypatch.setattr(parallel_bwd, "NUM_STAGES", stages)
    torch.manual_seed(28)
    check_triton(1, 2, 37, 24, 40, 0.0, True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("stages", [1, 2], ids=["1-stage", "2-stage"])
@pytest.mark.parametrize("DH", [128, 256])
def test_gradient_kernel_pipeline_stages_gpu(DH, stages, monkeypatch):
    from xlstm_ts.kernels._testing_mlstm import check_triton
    from xlstm_ts.kernels.mlstm import triton_chunkwise_parallel_bwd as parallel_bwd

    monkeypatch.setattr(parallel_bwd, "NUM_STAGES", stages)
    torch.manual_seed(29)
    check_triton(1, 2, 1100, DH, DH, 0.0, True, dtype=torch.bfloat16, chunk_size=64, rounded=True)


@pytest.mark.parametrize("parts", [(1, 2), (3, 4, 2)], ids=["dv-apart", "dq-dk-dv-apart"])
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_gradient_kernel_in_parts(parts, i_mean, dtype, parallel_forward, nan_poison, monkeypatch):
    """GRAD_PARTS splits the gradient kernel into one launch per part (each part writes only its own gradients into
    NaN-poisoned buffers); every gradient, dC0, dn0 and dm0 included, still matches fp64, DQK 80 in two blocks of the
    inner loop and DHV 40."""
    from xlstm_ts.kernels._testing_mlstm import check_triton
    from xlstm_ts.kernels.mlstm import triton_chunkwise_parallel_bwd as parallel_bwd

    monkeypatch.setattr(segments, "SEGMENT_CHUNKS_OVERRIDE", 1)
    monkeypatch.setattr(parallel_bwd, "GRAD_PARTS", parts)
    torch.manual_seed(41)
    with LaunchCounter() as launches:
        check_triton(1, 2, 37, 80, 40, i_mean, True, dtype=dtype, rounded=dtype != torch.float32)
    assert f"_mlstm_chunk_bwd_kernel_tl x{len(parts)}" in launches.summary(), launches.summary()


@pytest.mark.parametrize("parts", [(0,), (1, 2)], ids=["one-launch", "dv-apart"])
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_gradient_kernel_with_dq_sweep(parts, i_mean, dtype, parallel_forward, nan_poison, monkeypatch):
    """DQ_SWEEP: the launch forming dq and dk sweeps the DQK blocks twice (dq, then dk); every gradient, dC0, dn0 and
    dm0 included, still matches fp64 with NaN-poisoned buffers, DQK 80 in two blocks of the inner loop, DHV 40, a
    chunk cut short (S 37)."""
    from xlstm_ts.kernels._testing_mlstm import check_triton
    from xlstm_ts.kernels.mlstm import triton_chunkwise_parallel_bwd as parallel_bwd

    monkeypatch.setattr(segments, "SEGMENT_CHUNKS_OVERRIDE", 1)
    monkeypatch.setattr(parallel_bwd, "GRAD_PARTS", parts)
    monkeypatch.setattr(parallel_bwd, "DQ_SWEEP", True)
    torch.manual_seed(47)
    check_triton(1, 2, 37, 80, 40, i_mean, True, dtype=dtype, rounded=dtype != torch.float32)


@pytest.mark.parametrize("other_cap", [None, 168], ids=["others-uncapped", "others-capped"])
def test_dk_part_register_cap_reaches_that_launch_only(other_cap, parallel_forward, monkeypatch):
    """DK_PART_MAXNREG is a launch option of part 4 alone, GRAD_MAXNREG of every other part; the parts launch in
    order, dv at DV_NUM_WARPS."""
    from xlstm_ts.kernels._testing_mlstm import check_triton
    from xlstm_ts.kernels.mlstm import triton_chunkwise_parallel_bwd as parallel_bwd

    calls, kernel = [], parallel_bwd._mlstm_chunk_bwd_kernel_tl

    class Spy:
        def __getitem__(self, grid):
            def launch(*args, **meta):
                calls.append((meta["PART"], meta.get("maxnreg"), meta["num_warps"]))
                return kernel[grid](*args, **meta)

            return launch

    monkeypatch.setattr(parallel_bwd, "_mlstm_chunk_bwd_kernel_tl", Spy())
    monkeypatch.setattr(segments, "SEGMENT_CHUNKS_OVERRIDE", 1)
    monkeypatch.setattr(parallel_bwd, "GRAD_PARTS", (3, 4, 2))
    monkeypatch.setattr(parallel_bwd, "DK_PART_MAXNREG", 128)
    monkeypatch.setattr(parallel_bwd, "DV_NUM_WARPS", 4)
    monkeypatch.setattr(parallel_bwd, "GRAD_MAXNREG", other_cap)
    torch.manual_seed(43)
    check_triton(1, 1, 37, 24, 40, 0.0, False)
    warps = parallel_bwd.NUM_WARPS
    assert calls == [(3, other_cap, warps), (4, 128, warps), (2, other_cap, 4)]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("parts", [(1, 2), (3, 4, 2)], ids=["dv-apart", "dq-dk-dv-apart"])
@pytest.mark.parametrize("with_states", [False, True], ids=["zero-state", "initial-state"])
def test_gradient_kernel_in_parts_gpu(parts, with_states, monkeypatch):
    from xlstm_ts.kernels._testing_mlstm import check_triton
    from xlstm_ts.kernels.mlstm import triton_chunkwise_parallel_bwd as parallel_bwd

    monkeypatch.setattr(parallel_bwd, "GRAD_PARTS", parts)
    torch.manual_seed(42)
    check_triton(1, 2, 1100, 128, 96, 0.0, with_states, dtype=torch.bfloat16, chunk_size=64, rounded=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("warps", [4, 8])
@pytest.mark.parametrize("with_states", [False, True], ids=["zero-state", "initial-state"])
def test_gradient_kernel_with_dq_sweep_gpu(warps, with_states, monkeypatch):
    from xlstm_ts.kernels._testing_mlstm import check_triton
    from xlstm_ts.kernels.mlstm import triton_chunkwise_parallel_bwd as parallel_bwd

    monkeypatch.setattr(parallel_bwd, "DQ_SWEEP", True)
    monkeypatch.setattr(parallel_bwd, "NUM_WARPS", warps)
    torch.manual_seed(44)
    check_triton(1, 2, 1100, 128, 96, 0.0, with_states, dtype=torch.bfloat16, chunk_size=64, rounded=True)


@pytest.mark.parametrize("low", [True, False], ids=["bf16-states", "fp32-states"])
def test_output_kernel_stages_with_low_precision_states(low, parallel_forward, monkeypatch):
    """LOWP_STATE_STAGES reaches the output kernel's launch when the entering states are stored in bf16, and only
    then (bf16 forward without gradients, states in bf16 or fp32); h still matches fp64."""
    calls = _spy_output_kernel(monkeypatch)
    monkeypatch.setattr(parallel, "NO_GRAD_STATES_IN_INPUT_DTYPE", low)
    check_forward(1, 2, 37, 24, 40, 0.0, False, torch.bfloat16)
    assert [meta.get("num_stages") for _, meta in calls] == [parallel.LOWP_STATE_STAGES if low else None]
    assert parallel.LOWP_STATE_STAGES == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("initial", [False, True], ids=["zero-state", "initial-state"])
@pytest.mark.parametrize("B,NH,S,DH", [(16, 4, 2048, 128), (8, 16, 1024, 256)], ids=lambda x: str(x))
def test_chunk_parallel_outputs_repeat_bit_for_bit_gpu(B, NH, S, DH, initial):
    """The bf16 chunk-parallel path at its default value columns gives the same h and gradients on every call, and h
    within 0.5 % of fp64 (a pipelined output kernel reading bf16 states raced on sm_90: 0.6-0.9 % off, different on
    each call); from zero states and from initial states (with gradients the latter stores fp32 states, which the
    output kernel reads at Triton's default stages)."""
    torch.manual_seed(33)
    kernel = get_kernel("mlstm_chunkwise--triton")
    x = [torch.randn(B, NH, S, DH, device="cuda", dtype=torch.bfloat16) for _ in range(3)]
    x += [torch.randn(B, NH, S, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
    x[4] = x[4] + 3.0  # forget gates mostly open
    if initial:  # C (B, NH, DH, DH), n (B, NH, DH), m (B, NH, 1), fp32
        x += [torch.randn(B, NH, DH, DH, device="cuda"), torch.rand(B, NH, DH, device="cuda")]
        x += [torch.zeros(B, NH, 1, device="cuda")]
    with torch.no_grad(), LaunchCounter() as launches:
        hs = [kernel(*x) for _ in range(3)]
    assert "_mlstm_chunk_out_kernel_tl" in str(launches.summary())
    assert all(torch.equal(h, hs[0]) for h in hs[1:])
    ref = get_kernel("mlstm_chunkwise--torch")(*[t.double() for t in x])
    err = ((hs[0].double() - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt()).item()
    assert err < 5e-3, f"h off fp64 by {err:.2e} of its RMS"
    grads = []
    for _ in range(2):
        leaves = [t.clone().requires_grad_() for t in x]
        kernel(*leaves).float().pow(2).sum().backward()
        grads.append([t.grad for t in leaves])
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))


def _spy_parts(parallel_bwd, monkeypatch) -> list:
    """Wrap the gradient kernel's launches; the list collects each launch's PART."""
    parts, kernel = [], parallel_bwd._mlstm_chunk_bwd_kernel_tl

    class Spy:
        def __getitem__(self, grid):
            def launch(*args, **meta):
                parts.append(meta["PART"])
                return kernel[grid](*args, **meta)

            return launch

    monkeypatch.setattr(parallel_bwd, "_mlstm_chunk_bwd_kernel_tl", Spy())
    return parts


@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_dq_launch_beside_the_boundary_kernel(i_mean, dtype, parallel_forward, nan_poison, monkeypatch):
    """CONCURRENT_DQ: dq in a launch of its own (PART 3) ahead of the boundary kernel (on the GPU beside it, on a
    second stream), then one launch of every other gradient (PART 5); against fp64 with initial states (dC0, dn0,
    dm0 from the second launch), DQK 80 in two blocks of the inner loop and DHV 40."""
    from xlstm_ts.kernels._testing_mlstm import check_triton
    from xlstm_ts.kernels.mlstm import triton_chunkwise_parallel_bwd as parallel_bwd

    monkeypatch.setattr(segments, "SEGMENT_CHUNKS_OVERRIDE", 1)
    monkeypatch.setattr(parallel_bwd, "CONCURRENT_DQ", True)
    parts = _spy_parts(parallel_bwd, monkeypatch)
    torch.manual_seed(47)
    with LaunchCounter() as launches:
        check_triton(1, 2, 37, 80, 40, i_mean, True, dtype=dtype, rounded=dtype != torch.float32)
    assert parts == [3, 5]
    assert "_mlstm_bounds_bwd_kernel_tl x1" in launches.summary(), launches.summary()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
def test_dq_launch_beside_the_boundary_kernel_gpu(i_mean, monkeypatch):
    """The dq launch on a second stream beside the boundary kernel, three calls in a row (buffers of one call freed
    while the next runs), against fp64 each time."""
    from xlstm_ts.kernels._testing_mlstm import check_triton
    from xlstm_ts.kernels.mlstm import triton_chunkwise_parallel_bwd as parallel_bwd

    monkeypatch.setattr(parallel_bwd, "CONCURRENT_DQ", True)
    parts = _spy_parts(parallel_bwd, monkeypatch)
    for seed in range(3):
        torch.manual_seed(48 + seed)
        check_triton(2, 4, 1100, 128, 128, i_mean, True, dtype=torch.bfloat16, chunk_size=64, rounded=True)
    assert parts == [3, 5] * 3
