"""The one-chunk mLSTM backward in blocks of steps (`triton_one_chunk_bwd.py`): the backward of bf16/fp16 calls of one
chunk from zero states without gradients on the last states. Checked against the fp64 torch reference on the same
rounded inputs (tolerance table), and against the general backward kernel it replaces (same dot modes, so they
differ by summation order only), for chunks of one block and of two (S > 32), S not a multiple of 16, both gate
regimes and a detached normalizer; and that only the calls it covers take it.

Without CUDA the kernels run in the Triton interpreter (set in conftest.py); the GPU test runs the shapes of a patched
forecaster's blocks.
"""

import pytest
import torch

from xlstm_ts.kernels import get_kernel
from xlstm_ts.kernels._testing import TOLERANCES, assert_close, make_mlstm_inputs, make_mlstm_states
from xlstm_ts.kernels.mlstm import triton_chunkwise

pytest.importorskip("triton")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
GRADS = ["dq", "dk", "dv", "di", "df"]


def _run(leaves, dh, dtype, blocks, monkeypatch, detach=False, launches=None, eps=1e-6, min_dqk=16, per_sm=None):
    """h and the gradients of sum(h * dh) w.r.t. q, k, v, i, f of mlstm_chunkwise--triton in `dtype`, with the
    blocked backward on or off (on also for heads from `min_dqk` columns; `per_sm`: persistent programs per SM);
    counts its launches (their grids) into `launches`."""
    monkeypatch.setattr(triton_chunkwise, "ONE_CHUNK_BLOCKS", blocks)
    monkeypatch.setattr(triton_chunkwise, "ONE_CHUNK_MIN_DQK", min_dqk)
    monkeypatch.setattr(triton_chunkwise, "ONE_CHUNK_PER_SM", per_sm)
    if launches is not None:
        launch = triton_chunkwise._BWD_ONE._launch
        monkeypatch.setattr(triton_chunkwise._BWD_ONE, "_launch", lambda *a: (launches.append(a[0]), launch(*a))[1])
    x = [t.detach().to(dtype).requires_grad_() for t in leaves]
    h = get_kernel("mlstm_chunkwise--triton")(*x, chunk_size=64, detach_normalizer=detach, eps=eps)
    grads = torch.autograd.grad(h, x, dh.to(h.dtype))
    monkeypatch.undo()
    return [h, *grads]


def _rounded_inputs(B, NH, S, DQK, DHV, i_mean, dtype, seed):
    torch.manual_seed(seed)
    leaves = [t.detach().to(dtype).double().to(DEVICE) for t in make_mlstm_inputs(B, NH, S, DQK, DHV, i_mean=i_mean)]
    dh = torch.randn(B, NH, S, DHV, dtype=torch.float64, device=DEVICE).to(dtype).double()
    return leaves, dh


def _check(B, NH, S, DQK, DHV, i_mean, dtype, monkeypatch, eps=1e-6, min_dqk=16, per_sm=None):
    leaves, dh = _rounded_inputs(B, NH, S, DQK, DHV, i_mean, dtype, seed=S + DQK)
    launches = []
    new = _run(leaves, dh, dtype, True, monkeypatch, launches=launches, eps=eps, min_dqk=min_dqk, per_sm=per_sm)
    assert len(launches) == 1
    old = _run(leaves, dh, dtype, False, monkeypatch, eps=eps)
    x = [t.clone().requires_grad_() for t in leaves]
    h = get_kernel("mlstm_chunkwise--torch")(*x, chunk_size=64, eps=eps)
    ref = [h, *torch.autograd.grad(h, x, dh)]
    grad_tol = TOLERANCES["bfloat16-triton-grad" if dtype == torch.bfloat16 else "float16-grad"].ratio
    for name, a, b, c in zip(GRADS, ref[1:], new[1:], old[1:]):
        assert torch.isfinite(b).all(), name
        assert_close(name, a, b, grad_tol)
        # the general kernel on the same inputs: the same dots, other summation orders (df's cancelling sums most)
        assert_close(f"{name} against the general kernel", c.double(), b.double(), 2e-3)
    return launches[0]


@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
@pytest.mark.parametrize("S", [13, 32, 40, 64], ids=lambda s: f"S={s}")
def test_blocks_match_fp64_and_the_general_kernel(S, i_mean, monkeypatch, nan_poison):
    _check(2, 2, S, 16, 24, i_mean, torch.bfloat16, monkeypatch)


@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
def test_stabilizer_route_across_blocks(i_mean, monkeypatch, nan_poison):
    """A large eps makes the gradient that m_t routes back through the max (carried from row block 1 into row block
    0) a visible share of di and df; at eps = 1e-6 it is below every tolerance."""
    _check(2, 2, 64, 16, 16, i_mean, torch.bfloat16, monkeypatch, eps=0.5)


@pytest.mark.parametrize("S", [30, 64], ids=lambda s: f"S={s}")
def test_persistent_programs_walk_every_head(S, monkeypatch, nan_poison):
    """Two programs per SM (two SMs off CUDA) over 2 * 3 heads: each program takes several heads in its loop."""
    programs = _check(2, 3, S, 16, 16, 0.0, torch.bfloat16, monkeypatch, per_sm=2)[0]
    assert programs < 2 * 3 or DEVICE == "cuda"


def test_fp16_two_blocks(monkeypatch, nan_poison):
    _check(1, 2, 57, 32, 16, 0.0, torch.float16, monkeypatch)


def test_heads_of_64_take_it_by_default(monkeypatch, nan_poison):
    """The default rule (`ONE_CHUNK_MIN_DQK`): heads of 64, the patched forecasters' blocks, two blocks of steps and
    the register cap of two-block chunks in the launch."""
    _check(1, 1, 40, 64, 64, 0.0, torch.bfloat16, monkeypatch, min_dqk=triton_chunkwise.ONE_CHUNK_MIN_DQK)


def test_detached_normalizer_matches_the_general_kernel(monkeypatch, nan_poison):
    leaves, dh = _rounded_inputs(2, 2, 50, 16, 16, 0.0, torch.bfloat16, seed=3)
    new = _run(leaves, dh, torch.bfloat16, True, monkeypatch, detach=True)
    old = _run(leaves, dh, torch.bfloat16, False, monkeypatch, detach=True)
    for name, b, c in zip(GRADS, new[1:], old[1:]):
        assert_close(name, c.double(), b.double(), 2e-3)


@pytest.mark.parametrize(
    "case", ["fp32", "initial-state", "last-states-grad", "two-chunks", "narrow-heads"], ids=lambda c: c
)  # fmt: skip
def test_other_calls_keep_the_general_kernel(case, monkeypatch):
    """fp32 inputs (they read a saved h), initial states, upstream gradients on the last states, several chunks and
    (by default) heads narrower than ONE_CHUNK_MIN_DQK run the general backward."""
    torch.manual_seed(0)
    dtype = torch.float32 if case == "fp32" else torch.bfloat16
    if case != "narrow-heads":
        monkeypatch.setattr(triton_chunkwise, "ONE_CHUNK_MIN_DQK", 16)
    leaves = [t.to(DEVICE, dtype).requires_grad_() for t in make_mlstm_inputs(1, 2, 40, 16, 16)]
    states = [s.to(DEVICE) for s in make_mlstm_states(1, 2, 16, 16)] if case == "initial-state" else [None] * 3
    launches = []
    launch = triton_chunkwise._BWD_ONE._launch
    monkeypatch.setattr(triton_chunkwise._BWD_ONE, "_launch", lambda *a: (launches.append(1), launch(*a))[1])
    out = get_kernel("mlstm_chunkwise--triton")(
        *leaves, *states, return_last_states=case == "last-states-grad", chunk_size=16 if case == "two-chunks" else 64
    )  # fmt: skip
    loss = out[0].float().sum() + out[1][0].sum() if case == "last-states-grad" else out.float().sum()
    loss.backward()
    assert launches == []
    assert all(torch.isfinite(x.grad).all() for x in leaves)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
@pytest.mark.parametrize("per_sm", [None, 4], ids=["per-head", "persistent"])
@pytest.mark.parametrize("S,DH", [(64, 64), (64, 32), (32, 64), (47, 64)], ids=lambda x: str(x))
def test_blocks_on_gpu(S, DH, i_mean, per_sm, monkeypatch):
    """Persistent: 2048 heads on at most 4 programs per SM, several heads per program."""
    _check(64 if per_sm is None else 512, 4, S, DH, DH, i_mean, torch.bfloat16, monkeypatch, per_sm=per_sm)
