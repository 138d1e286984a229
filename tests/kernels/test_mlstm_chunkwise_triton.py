"""mlstm_chunkwise--triton against the fp64 torch reference: outputs, last states and true gradients (through the
normalizer), the detached-normalizer gradient, both branches of max(|n.q|, exp(-m)), and GPU shapes/dtypes.

Without CUDA the kernels run in the Triton interpreter (set in conftest.py), on tiny shapes in float32.
"""

import pytest
import torch

from xlstm_ts.kernels import get_kernel
from xlstm_ts.kernels._testing import TOLERANCES, assert_close, err_ratio, make_mlstm_inputs
from xlstm_ts.kernels._testing_mlstm import (
    DEVICE,
    OUT_NAMES,
    TOL,
    check_triton,
    compare_mlstm,
    dm0_terms,
    mlstm_leaves,
    mlstm_upstream,
    naive_mlstm,
    run_mlstm,
)
from xlstm_ts.kernels.mlstm import triton_chunkwise_segments

pytest.importorskip("triton")

@pytest.mark.parametrize("with_states", [False, True], ids=["zero-state", "initial-state"])
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
@pytest.mark.parametrize(
    "B,NH,S,DQK,DHV",
    [(1, 2, 1, 16, 24), (1, 2, 19, 16, 24), (2, 1, 40, 20, 80), (1, 1, 19, 256, 40)],
    ids=lambda x: str(x),
)
def test_chunkwise_triton_matches_fp64_reference(B, NH, S, DQK, DHV, i_mean, with_states, nan_poison):
    torch.manual_seed(42)
    leaves, upstream, _, out, _ = check_triton(B, NH, S, DQK, DHV, i_mean, with_states)
    assert out[0][0].dtype == torch.float32

    states = leaves[5:] if with_states else [torch.zeros_like(u, dtype=torch.float64) for u in upstream[1:]]
    with torch.no_grad():
        *_, active = naive_mlstm(*leaves[:5], *states)
    if S > 1 and i_mean == 0.0:
        assert active > 0.5, f"|n.q| branch active in only {active:.0%} of rows"
    if S > 1 and i_mean == -10.0 and DQK <= 64:  # a random 256-wide initial n keeps |n.q| large for a while
        assert active < 0.05, f"exp(-m) branch expected nearly everywhere, |n.q| branch active in {active:.0%}"


def test_chunkwise_triton_first_step_on_either_branch(nan_poison):
    """i~_0 = 3 and i~ ~ -10 later: every later step takes the forget branch of m_t = max(log f_t + m_{t-1}, i~_t),
    so the stabilizer's gradient from the last states flows back to step 0. There m0 = -5 (head 0) makes step 0
    take the input branch (the gradient goes to i~_0, none to m0); m0 = +5 (head 1) the forget branch (on to m0)."""
    torch.manual_seed(42)
    B, NH, S, DQK, DHV = 1, 2, 19, 16, 24
    leaves = mlstm_leaves(B, NH, S, DQK, DHV, -10.0, with_states=True)
    with torch.no_grad():
        leaves[3][..., 0] = 3.0
        leaves[7].copy_(torch.tensor([-5.0, 5.0]).view(B, NH, 1))
    upstream = mlstm_upstream(B, NH, S, DQK, DHV)
    ref = run_mlstm(get_kernel("mlstm_chunkwise--torch"), leaves, upstream, torch.float64, chunk_size=16)
    out = run_mlstm(get_kernel("mlstm_chunkwise--triton"), leaves, upstream, torch.float32, chunk_size=16)
    compare_mlstm(ref, out, *TOL[torch.float32], dm0_terms=dm0_terms(leaves, ref[1]))


@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
def test_chunkwise_triton_detach_normalizer(i_mean, nan_poison):
    torch.manual_seed(42)
    B, NH, S, DQK, DHV = 1, 2, 19, 16, 24
    leaves = mlstm_leaves(B, NH, S, DQK, DHV, i_mean, with_states=True)
    upstream = mlstm_upstream(B, NH, S, DQK, DHV)

    def naive(*args, detach, **kw):
        h, states, _ = naive_mlstm(*args, detach=detach)
        return h, states

    ref = run_mlstm(lambda *a, **kw: naive(*a, detach=True), leaves, upstream, torch.float64)
    out = run_mlstm(get_kernel("mlstm_chunkwise--triton"), leaves, upstream, torch.float32, detach_normalizer=True)
    compare_mlstm(ref, out, *TOL[torch.float32])
    true = run_mlstm(lambda *a, **kw: naive(*a, detach=False), leaves, upstream, torch.float64)
    if i_mean == 0.0:  # the detached gradient must differ where the |n.q| branch is active
        assert err_ratio(true[1][0], out[1][0]) > 0.1


def test_chunkwise_triton_state_passing(nan_poison):
    torch.manual_seed(42)
    q, k, v, i, f = (x.float().to(DEVICE) for x in make_mlstm_inputs(1, 2, 35, 16, 16))
    kernel = get_kernel("mlstm_chunkwise--triton")
    h_all, states_all = kernel(q, k, v, i, f, return_last_states=True, chunk_size=16)
    h1, states = kernel(q[:, :, :20], k[:, :, :20], v[:, :, :20], i[:, :, :20], f[:, :, :20], return_last_states=True)
    h2, states2 = kernel(q[:, :, 20:], k[:, :, 20:], v[:, :, 20:], i[:, :, 20:], f[:, :, 20:], *states,
                         return_last_states=True)  # fmt: skip
    assert_close("h", h_all, torch.cat([h1, h2], dim=2), TOLERANCES["float32-ieee"].ratio)
    for name, a, b in zip("Cnm", states_all, states2, strict=True):
        assert_close(name, a, b, TOLERANCES["float32-ieee"].ratio)


def test_chunkwise_triton_input_errors():
    q, k, v, i, f = make_mlstm_inputs(1, 1, 4, 16, 16)
    kernel = get_kernel("mlstm_chunkwise--triton")
    with pytest.raises(ValueError, match="float32, bfloat16 or float16"):
        kernel(q, k, v, i, f)
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        kernel(q.float(), k.float(), v.float(), i.float(), f.float(), chunk_size=0)
    with pytest.raises(ValueError, match="i must be a floating-point tensor"):
        kernel(q.float(), k.float(), v.float(), i.long(), f.float())
    with pytest.raises(ValueError, match="heads up to 512 wide"):
        kernel(*(x.float() for x in make_mlstm_inputs(1, 1, 2, 600, 16)))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("S", [1, 63, 100, 257])
@pytest.mark.parametrize("DQK,DHV", [(64, 64), (48, 96), (128, 128), (256, 256)], ids=lambda x: str(x))
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
@pytest.mark.parametrize(
    "segments,stored", [(None, None), (10**9, None), (10**9, True), (2, None)],
    ids=["auto-layout", "plain-layout", "plain-stored-states", "2-chunk-segments"],
)
def test_chunkwise_triton_gpu(S, DQK, DHV, dtype, i_mean, segments, stored, monkeypatch):
    # auto: these 6 batch * heads run segments of one chunk (see triton_chunkwise_segments.segment_plan); plain:
    # the backward recomputes the chunks' entering states, or with stored states reads them (store_chunk_states)
    monkeypatch.setattr(triton_chunkwise_segments, "SEGMENT_CHUNKS_OVERRIDE", segments)
    monkeypatch.setattr(triton_chunkwise_segments, "STORE_STATES_OVERRIDE", stored)
    torch.manual_seed(42)
    # bf16: the reference sees the same rounded inputs; states and gates stay fp32 / fp64
    errors = check_triton(2, 3, S, DQK, DHV, i_mean, True, dtype, chunk_size=64, rounded=True).errors
    print(f"mlstm_chunkwise S={S} DQK={DQK} DHV={DHV} {dtype} i_mean={i_mean} segments={segments} stored={stored}: " +
          " ".join(f"{k}={v:.1e}" for k, v in errors.items()))  # fmt: skip


def test_triton_kernels_are_registered():
    from xlstm_ts.kernels import available_kernels

    assert {"mlstm_chunkwise--triton", "mlstm_step--triton", "slstm--triton"} <= set(available_kernels())


@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
@pytest.mark.parametrize("B,NH,S,DQK,DHV", [(1, 2, 19, 16, 24), (2, 1, 40, 20, 80)], ids=lambda x: str(x))
def test_chunkwise_triton_bf16_small(B, NH, S, DQK, DHV, i_mean, nan_poison):
    """bf16 inputs with gradients: q k^T, dq and dv in bf16 dots, the weighted and state dots in TF32, against the
    fp64 reference on the same rounded inputs (one chunk and several); and the all-bf16 dots of a forward without
    gradients. Under the interpreter the bf16 dots run as their fp32 emulation."""
    torch.manual_seed(3)
    leaves, _, ref, _, _ = check_triton(B, NH, S, DQK, DHV, i_mean, True, torch.bfloat16, rounded=True)
    with torch.no_grad():
        inputs = [x.to(torch.bfloat16) if i < 5 else x.float() for i, x in enumerate(leaves)]
        h, states = get_kernel("mlstm_chunkwise--triton")(*inputs, return_last_states=True, chunk_size=16)
    for name, a, b in zip(OUT_NAMES, ref[0], [h, *states], strict=True):
        assert_close(name, a, b, TOL[torch.bfloat16][0])


def test_forward_without_gradients_of_33_to_128_wide_heads_runs_chunks_of_64(nan_poison):
    """A bf16 forward without gradients of one launch over several chunks of a 33-128-wide head runs chunks of 64
    (with gradients, for fp32 tiles and for column-block launches: 32); its h and last states against fp64, S = 130
    (a partial third chunk), both gate regimes, 96- and 48-wide heads."""
    from xlstm_ts.kernels.mlstm import triton_chunkwise as tc

    assert tc._launch_config(130, 96, 128, 64, torch.bfloat16)[0] == 64
    assert tc._launch_config(130, 96, 128, 64, torch.float32)[0] == 32  # tiles of a call with gradients
    assert tc._launch_config(130, 128, 128, 64, torch.bfloat16, column_block=True)[0] == 32
    assert tc._launch_config(64, 128, 128, 64, torch.bfloat16)[0] == 32  # one chunk
    assert tc._launch_config(130, 64, 64, 64, torch.bfloat16)[0] == 64
    assert tc._launch_config(130, 64, 64, 64, torch.float32)[0] == 32
    assert tc._launch_config(130, 96, 128, 16, torch.bfloat16)[0] == 16  # a smaller chunk asked for stays
    for seed, i_mean, DQK, DHV in ((5, 0.0, 96, 72), (6, -10.0, 96, 72), (7, 0.0, 48, 40), (8, -10.0, 48, 40)):
        torch.manual_seed(seed)
        q, k, v, i, f = make_mlstm_inputs(1, 2, 130, DQK, DHV, i_mean=i_mean)
        q, k, v, i, f = (x.to(torch.bfloat16).double() for x in (q, k, v, i, f))  # the kernel's rounded inputs
        ref_h, ref_states = get_kernel("mlstm_chunkwise--torch")(q, k, v, i, f, return_last_states=True)
        with torch.no_grad():
            h, states = get_kernel("mlstm_chunkwise--triton")(
                *(x.to(DEVICE, torch.bfloat16) for x in (q, k, v, i, f)), return_last_states=True
            )
        for name, a, b in zip(OUT_NAMES, [ref_h, *ref_states], [h, *states], strict=True):
            assert_close(name, a, b.cpu(), TOL[torch.bfloat16][0])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("S", [33, 64])
@pytest.mark.parametrize("DQK,DHV", [(32, 32), (16, 16), (32, 64), (64, 64), (48, 96), (128, 128)],
                         ids=lambda x: str(x))  # fmt: skip
def test_chunkwise_triton_gpu_one_chunk_narrow_heads(S, DQK, DHV):
    """One chunk of bf16 heads, h only, a contiguous upstream gradient (the variant a training step compiles; the
    benchmarks' out.sum() passes a stride-0 one): a backward compiled with Triton 3.6's default pipelining read shared
    memory out of bounds at 32-wide heads (illegal address), which `NUM_STAGES` avoids."""
    torch.manual_seed(5)
    x = make_mlstm_inputs(2, 2, S, DQK, DHV, dtype=torch.bfloat16, device="cuda")
    leaves = [t.clone().requires_grad_() for t in x]
    ref_leaves = [t.detach().double().requires_grad_() for t in x]
    dh = torch.randn(2, 2, S, DHV, dtype=torch.bfloat16, device="cuda")
    grads = torch.autograd.grad(get_kernel("mlstm_chunkwise--triton")(*leaves), leaves, dh)
    ref = get_kernel("mlstm_chunkwise--torch")(*ref_leaves)
    grads_ref = torch.autograd.grad(ref, ref_leaves, dh.double())
    for name, a, b in zip(("dq", "dk", "dv", "di", "df"), grads_ref, grads, strict=True):
        assert_close(name, a, b, TOLERANCES["bfloat16-triton-grad"].ratio)
