"""The chunk-parallel forward of mlstm_chunkwise--triton (calls without gradients, `PARALLEL_FORWARD`) against the
fp64 step-by-step recurrence: h and the last states, sequences that end mid-chunk, DQK != DHV, several DQK blocks
of the inner loop and several DHV blocks, zero and initial states, both gate regimes, fp32 and bf16."""

import pytest
import torch

from xlstm_ts.kernels import get_kernel
from xlstm_ts.kernels._launches import LaunchCounter
from xlstm_ts.kernels._testing_mlstm import check_forward, mlstm_leaves
from xlstm_ts.kernels.mlstm import triton_chunkwise

parallel = pytest.importorskip("xlstm_ts.kernels.mlstm.triton_chunkwise_parallel")
segments = pytest.importorskip("xlstm_ts.kernels.mlstm.triton_chunkwise_segments")


@pytest.mark.parametrize("with_states", [False, True], ids=["zero-state", "initial-state"])
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
@pytest.mark.parametrize(
    "B,NH,S,DQK,DHV",
    # S 37: three chunks of 16, the last short; DQK 80: two blocks of the inner loop; DHV 80: two DHV blocks
    [(2, 1, 37, 24, 40), (1, 2, 37, 80, 24), (1, 1, 33, 40, 80)],
    ids=lambda x: str(x),
)
def test_parallel_forward_matches_fp64_reference(B, NH, S, DQK, DHV, i_mean, with_states, parallel_forward,
                                                 nan_poison):  # fmt: skip
    launches = check_forward(B, NH, S, DQK, DHV, i_mean, with_states, torch.float32)
    names = launches.summary()
    assert "_mlstm_chunk_out_kernel_tl" in str(names) and "_mlstm_bounds_fwd_kernel_tl" in str(names)


def test_parallel_forward_bf16(parallel_forward, nan_poison):
    check_forward(2, 1, 37, 24, 40, 0.0, True, torch.bfloat16)


def _spy_stored_state_dtypes(module, monkeypatch) -> list:
    """Wrap `module.bounds_forward`; the returned list collects the dtype of the entering C each call stores."""
    stored, real = [], module.bounds_forward

    def spy(*args, **kwargs):
        states, last = real(*args, **kwargs)
        stored.append(states[0].dtype)
        return states, last

    monkeypatch.setattr(module, "bounds_forward", spy)
    return stored


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
def test_entering_states_in_the_input_dtype_change_nothing(dtype, i_mean, parallel_forward, nan_poison, monkeypatch):
    """bf16/fp16 inputs without gradients store the entering C in their dtype (NO_GRAD_STATES_IN_INPUT_DTYPE): the
    output kernel's dots round it to that dtype anyway, so h and the last states are exactly those of fp32 states."""
    stored = _spy_stored_state_dtypes(parallel, monkeypatch)
    torch.manual_seed(5)
    leaves = [x if x is None else x.detach() for x in mlstm_leaves(1, 2, 45, 40, 24, i_mean, True)]
    args = [x.to(dtype) for x in leaves[:3]] + [x.float() for x in leaves[3:]]
    outputs = {}
    for low in (False, True):
        monkeypatch.setattr(parallel, "NO_GRAD_STATES_IN_INPUT_DTYPE", low)
        with torch.no_grad():
            outputs[low] = get_kernel("mlstm_chunkwise--triton")(*args, return_last_states=True, chunk_size=16)
    assert stored == [torch.float32, dtype]
    h32, (C32, n32, m32) = outputs[False]
    h, (C, n, m) = outputs[True]
    assert h.dtype == dtype and torch.equal(h, h32)
    for a, b in ((C, C32), (n, n32), (m, m32)):
        assert a.dtype == torch.float32 and torch.equal(a, b)  # the last states stay fp32 and exact


def test_parallel_forward_when_asked_or_by_the_default_rule(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert not parallel.use_parallel_forward(200, 64, 24, cpu)  # default rule: off the GPU never
    assert not parallel.use_parallel_forward(2048, 64, 64, cuda)  # 64-wide heads: the chunk-walking kernels
    assert not parallel.use_parallel_forward(512, 64, 128, cuda)  # short sequences likewise
    assert parallel.use_parallel_forward(1024, 64, 128, cuda) and parallel.use_parallel_forward(4096, 64, 512, cuda)
    monkeypatch.setattr(segments, "SEGMENT_CHUNKS_OVERRIDE", 1)  # a forced layout turns the rule off
    assert not parallel.use_parallel_forward(1024, 64, 128, cuda)
    monkeypatch.setattr(parallel, "PARALLEL_FORWARD", False)
    monkeypatch.setattr(segments, "SEGMENT_CHUNKS_OVERRIDE", None)
    assert not parallel.use_parallel_forward(1024, 64, 128, cuda)  # False: never
    monkeypatch.setattr(parallel, "PARALLEL_FORWARD", True)  # True: everywhere it applies
    assert parallel.use_parallel_forward(200, 64, 24, cpu)
    assert not parallel.use_parallel_forward(64, 64, 24, cpu)  # one chunk: nothing to run in parallel
    assert parallel.chunk_length(200, 64) == 64 and parallel.chunk_length(20, 64) == 32


def test_default_plan_with_gradients_is_segments_of_64_steps():
    assert parallel.parallel_plan(1024, 32) == (16, 2) and parallel.parallel_plan(1000, 16) == (16, 4)
    assert parallel.parallel_outputs(16, 2, 32, auto=True) and not parallel.parallel_outputs(16, 2, 32)
    assert not parallel.parallel_outputs(1, 2, 32, auto=True)  # one segment: the plain layout
    assert not parallel.parallel_outputs(8, 4, 32, auto=True)  # 128 steps: longer than the kernels' tiles


def test_calls_with_gradients_never_take_the_no_gradient_forward(parallel_forward):
    """PARALLEL_FORWARD on, a call with gradients: the backward needs the segmented or plain forward's buffers, so
    the chunk-parallel forward of calls without gradients (bounds then outputs, no fp32 h) must not run."""
    from xlstm_ts.kernels._testing_mlstm import check_triton

    with LaunchCounter() as launches:
        check_triton(1, 1, 37, 24, 40, 0.0, False)  # against fp64, gradients included; the CPU plans one segment
    assert "_mlstm_chunk_out_kernel_tl" not in str(launches.summary())


@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
@pytest.mark.parametrize("chunk_size", [64, 128])
def test_parallel_forward_long_chunks_from_states_carried_in_64s(i_mean, chunk_size, parallel_forward, nan_poison):
    """Chunks of 64 and 128 take the boundary kernel's states carried in chunks of CARRY = 64 steps (stored at each
    one, or at every second one), the last chunk short."""
    assert parallel.CARRY == 64
    check_forward(1, 2, 2 * chunk_size + 22, 24, 40, i_mean, True, torch.float32, chunk_size=chunk_size)


@pytest.mark.parametrize("with_states", [False, True], ids=["zero-state", "initial-state"])
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
@pytest.mark.parametrize(
    "B,NH,S,DQK,DHV,k_block",
    # one launch (DQK 24 and 40, DHV 80 in two DHV blocks), and DQK 40 in column blocks of 16 (the ksplit path)
    [(2, 1, 37, 24, 40, None), (1, 1, 33, 40, 80, None), (1, 2, 37, 40, 24, 16)],
    ids=lambda x: str(x),
)
def test_segments_of_one_chunk_with_the_output_kernel_match_fp64_reference(
    B, NH, S, DQK, DHV, k_block, i_mean, with_states, parallel_forward, nan_poison, monkeypatch
):
    """With gradients, segments of one chunk form their outputs with the output kernel (h, the fp32 h of bf16 calls,
    z, m) and the segmented backward runs on them: every output, last state and gradient against fp64."""
    from xlstm_ts.kernels._testing_mlstm import check_triton
    from xlstm_ts.kernels.mlstm import triton_chunkwise_ksplit as ksplit
    from xlstm_ts.kernels.mlstm import triton_chunkwise_segments as segments

    monkeypatch.setattr(segments, "SEGMENT_CHUNKS_OVERRIDE", 1)
    if k_block:
        monkeypatch.setattr(ksplit, "K_BLOCK", k_block)
    torch.manual_seed(22)
    with LaunchCounter() as launches:
        check_triton(B, NH, S, DQK, DHV, i_mean, with_states)
    names = str(launches.summary())
    assert "_mlstm_chunk_out_kernel_tl" in names and "_mlstm_chunk_bwd_kernel_tl" in names
    assert "_mlstm_chunkwise_fwd_kernel_tl" not in names and "_mlstm_chunkwise_bwd_kernel_tl" not in names


def test_segments_of_one_chunk_with_the_output_kernel_bf16(parallel_forward, nan_poison, monkeypatch):
    from xlstm_ts.kernels._testing_mlstm import check_triton
    from xlstm_ts.kernels.mlstm import triton_chunkwise_segments as segments

    monkeypatch.setattr(segments, "SEGMENT_CHUNKS_OVERRIDE", 1)
    torch.manual_seed(23)
    check_triton(2, 1, 37, 24, 40, 0.0, True, dtype=torch.bfloat16, rounded=True)


@pytest.mark.parametrize("out_dots", [True, False], ids=["bf16-state-dots", "tf32-state-dots"])
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
def test_state_dots_in_the_output_mode_bf16(i_mean, out_dots, parallel_forward, nan_poison, monkeypatch):
    """STATE_OUT_DOTS (default True): the gradient kernel's dq and dv state dots with bf16 operands, or (False) in
    TF32; either way every gradient of a bf16 call stays within the bf16 tolerance of fp64 (under the interpreter
    the bf16 dots are emulated exactly)."""
    from xlstm_ts.kernels._testing_mlstm import check_triton
    from xlstm_ts.kernels.mlstm import triton_chunkwise_parallel_bwd as parallel_bwd

    monkeypatch.setattr(segments, "SEGMENT_CHUNKS_OVERRIDE", 1)
    monkeypatch.setattr(parallel_bwd, "STATE_OUT_DOTS", out_dots)
    monkeypatch.setattr(parallel_bwd, "NUM_WARPS", 4)
    torch.manual_seed(26)
    check_triton(1, 2, 37, 80, 40, i_mean, True, dtype=torch.bfloat16, rounded=True)


@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
def test_forward_dots_in_the_input_dtype_bf16(i_mean, parallel_forward, nan_poison, monkeypatch):
    """PARALLEL_GRAD_FWD_LOWP (default True): a bf16 forward with gradients through the chunk-parallel kernels runs
    its dots in bf16 instead of TF32 (h and the carried states change); either way every output and gradient stays
    within the bf16 tolerance of fp64."""
    from xlstm_ts.kernels._testing_mlstm import check_triton
    from xlstm_ts.kernels.mlstm import triton_chunkwise
    from xlstm_ts.kernels.mlstm import triton_chunkwise_parallel_bwd as parallel_bwd

    monkeypatch.setattr(segments, "SEGMENT_CHUNKS_OVERRIDE", 1)
    monkeypatch.setattr(parallel_bwd, "NUM_WARPS", 4)
    outputs = {}
    for lowp in (False, True):
        monkeypatch.setattr(triton_chunkwise, "PARALLEL_GRAD_FWD_LOWP", lowp)
        torch.manual_seed(27)
        outputs[lowp] = check_triton(1, 2, 37, 80, 40, i_mean, True, dtype=torch.bfloat16, rounded=True).out
    assert not torch.equal(outputs[False][0][0], outputs[True][0][0])  # h: the knob reached the kernels


@pytest.mark.parametrize("k_block", [None, 16], ids=["one-launch", "column-blocks"])
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
def test_entering_states_in_bf16_with_gradients(i_mean, k_block, parallel_forward, nan_poison, monkeypatch):
    """GRAD_STATES_IN_INPUT_DTYPE (default True): a bf16 call with gradients and no initial states stores the chunks'
    entering C in bf16 (with an initial state, fp32); either way every output, last state and gradient stays within
    the bf16 tolerance of fp64, in the one launch of heads up to 128 and the column blocks of wider ones (K_BLOCK)."""
    from xlstm_ts.kernels._testing_mlstm import check_triton
    from xlstm_ts.kernels.mlstm import triton_chunkwise_ksplit as ksplit
    from xlstm_ts.kernels.mlstm import triton_chunkwise_parallel_bwd as parallel_bwd

    monkeypatch.setattr(segments, "SEGMENT_CHUNKS_OVERRIDE", 1)
    monkeypatch.setattr(parallel_bwd, "NUM_WARPS", 4)
    if k_block:
        monkeypatch.setattr(ksplit, "K_BLOCK", k_block)
    module = ksplit if k_block else triton_chunkwise
    stored = _spy_stored_state_dtypes(module, monkeypatch)
    df = {}
    for low, with_states in ((False, False), (True, False), (True, True)):
        monkeypatch.setattr(parallel, "GRAD_STATES_IN_INPUT_DTYPE", low)
        torch.manual_seed(28)
        df[low, with_states] = check_triton(1, 2, 37, 40, 24, i_mean, with_states, dtype=torch.bfloat16,
                                            rounded=True).out[1][4]  # fmt: skip
    assert stored == [torch.float32, torch.bfloat16, torch.float32]
    assert not torch.equal(df[False, False], df[True, False])  # <dC, C_in> saw the rounded states


@pytest.mark.parametrize("first", [True, False], ids=["row-dots-first", "h-read-by-each"])
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
def test_row_dots_summed_once_ahead_of_the_backward(i_mean, first, parallel_forward, nan_poison, monkeypatch):
    """ROW_DOTS_FIRST (default True): <dh, h> summed by one launch ahead of the boundary and gradient kernels, which
    read it instead of h (two DHV and two DQK blocks of the boundary kernel, fp32 and bf16), or (False) read h each;
    both against fp64."""
    from xlstm_ts.kernels._testing_mlstm import check_triton
    from xlstm_ts.kernels.mlstm import triton_chunkwise_parallel_bwd as parallel_bwd

    monkeypatch.setattr(segments, "SEGMENT_CHUNKS_OVERRIDE", 1)
    monkeypatch.setattr(segments, "BOUNDS_BLOCKS_OVERRIDE", (16, 16))
    monkeypatch.setattr(parallel_bwd, "NUM_WARPS", 4)
    monkeypatch.setattr(parallel_bwd, "ROW_DOTS_FIRST", first)
    monkeypatch.setattr(parallel_bwd, "BOUNDS_ROWS_FIRST", False)  # the pass of the dots alone
    for dtype in (torch.float32, torch.bfloat16):
        torch.manual_seed(29)
        with LaunchCounter() as launches:
            check_triton(1, 2, 37, 24, 40, i_mean, True, dtype=dtype, rounded=True)
        assert ("_mlstm_row_dots_kernel_tl" in str(launches.summary())) == first


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("B,NH,S,DH", [(4, 4, 1000, 128), (2, 2, 600, 256), (1, 2, 300, 512)], ids=lambda x: str(x))
def test_parallel_forward_gpu(B, NH, S, DH, dtype, parallel_forward):
    check_forward(B, NH, S, DH, DH, 0.0, True, dtype, chunk_size=64)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("with_states", [False, True], ids=["zero-state", "initial-state"])
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
@pytest.mark.parametrize("B,NH,S,DH", [(2, 4, 500, 128), (1, 2, 300, 256)], ids=lambda x: str(x))
def test_segments_of_one_chunk_with_the_output_kernel_gpu(B, NH, S, DH, i_mean, with_states, parallel_forward,
                                                          monkeypatch):  # fmt: skip
    """bf16 against fp64 on the GPU; from zero states the entering states are stored in bf16 (with an initial state,
    fp32: `GRAD_STATES_IN_INPUT_DTYPE`)."""
    from xlstm_ts.kernels._testing_mlstm import check_triton
    from xlstm_ts.kernels.mlstm import triton_chunkwise_segments as segments

    monkeypatch.setattr(segments, "SEGMENT_CHUNKS_OVERRIDE", 1)
    torch.manual_seed(24)
    check_triton(B, NH, S, DH, DH, i_mean, with_states, dtype=torch.bfloat16, chunk_size=64, rounded=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
@pytest.mark.parametrize("B,NH,S,DH", [(1, 2, 1100, 128), (1, 1, 1030, 256)], ids=lambda x: str(x))
def test_default_rule_runs_the_chunk_parallel_kernels_gpu(B, NH, S, DH, i_mean):
    """Without any override, heads wider than 64 over 1024+ steps run the chunk-parallel kernels both ways (the last
    segment short), and every output, last state and gradient matches fp64; the call without gradients too."""
    from xlstm_ts.kernels._testing_mlstm import check_triton

    torch.manual_seed(25)
    with LaunchCounter() as launches:
        check_triton(B, NH, S, DH, DH, i_mean, True, dtype=torch.bfloat16, chunk_size=64, rounded=True)
    names = str(launches.summary())
    assert "_mlstm_chunk_out_kernel_tl" in names and "_mlstm_chunk_bwd_kernel_tl" in names
    assert "_mlstm_chunkwise_bwd_kernel_tl" not in names
    launches = check_forward(B, NH, S, DH, DH, i_mean, True, torch.bfloat16, chunk_size=64)
    assert "_mlstm_chunk_out_kernel_tl" in str(launches.summary())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("out_dots", [True, False], ids=["bf16-state-dots", "tf32-state-dots"])
def test_state_dots_in_the_output_mode_gpu(out_dots, monkeypatch):
    from xlstm_ts.kernels._testing_mlstm import check_triton
    from xlstm_ts.kernels.mlstm import triton_chunkwise_parallel_bwd as parallel_bwd

    monkeypatch.setattr(parallel_bwd, "STATE_OUT_DOTS", out_dots)
    torch.manual_seed(27)
    check_triton(1, 2, 1100, 128, 128, 0.0, True, dtype=torch.bfloat16, chunk_size=64, rounded=True)
