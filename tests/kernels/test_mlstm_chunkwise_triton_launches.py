"""mlstm_chunkwise--triton runs as a handful of kernel launches and reads strided inputs without copies.

Structural checks, not timings: `LaunchCounter` counts torch ops that run device work plus Triton launches, so a
torch op slipped in around the kernels (a cast, a `.contiguous()`, a cumsum) fails here on the CPU as well.
"""

import pytest
import torch

from xlstm_ts.kernels import get_kernel
from xlstm_ts.kernels._launches import LaunchCounter
from xlstm_ts.kernels._testing import TOLERANCES, assert_close, make_mlstm_inputs, make_mlstm_states
from xlstm_ts.kernels.mlstm import triton_chunkwise_segments

pytest.importorskip("triton")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _inputs(B, NH, S, DQK, DHV, dtype, with_states):
    torch.manual_seed(42)
    qkvif = [x.to(DEVICE, dtype).requires_grad_() for x in make_mlstm_inputs(B, NH, S, DQK, DHV)]
    states = make_mlstm_states(B, NH, DQK, DHV) if with_states else (None, None, None)
    states = [x if x is None else x.to(DEVICE, torch.float32).requires_grad_() for x in states]
    return qkvif, states


def test_launch_counter_counts_torch_ops_and_triton_launches():
    with LaunchCounter() as launches:
        x = torch.ones(4)
        x.view(2, 2).t()  # views launch nothing
        torch.empty(3)  # nor do uninitialized allocations
        (x * 2).sum()
    assert dict(launches.torch_ops) == {"aten.ones.default": 1, "aten.mul.Tensor": 1, "aten.sum.default": 1}
    assert launches.total == 3 and "3 launches" in launches.summary()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("detach", [False, True], ids=["true-grad", "detach-normalizer"])
@pytest.mark.parametrize("with_states", [False, True], ids=["zero-state", "initial-state"])
@pytest.mark.parametrize("DHV", [24, 80], ids=["one-DHV-block", "two-DHV-blocks"])
def test_chunkwise_triton_launch_count(DHV, with_states, detach, dtype):
    B, NH, S, DQK = 1, 2, 19, 16
    qkvif, states = _inputs(B, NH, S, DQK, DHV, dtype, with_states)
    kernel = get_kernel("mlstm_chunkwise--triton")
    with LaunchCounter() as forward:
        h, last = kernel(*qkvif, *states, return_last_states=True, detach_normalizer=detach, chunk_size=16)
    outs = [h, *last]
    upstream = [torch.randn_like(x) for x in outs]
    leaves = [x for x in (*qkvif, *states) if x is not None]
    with LaunchCounter() as backward:
        torch.autograd.grad(outs, leaves, upstream)
    # forward: one kernel; backward: one kernel, plus one adding the shares of the two DHV blocks
    assert forward.total == 1 and not forward.torch_ops, forward.summary()
    assert backward.total == (1 if DHV <= 64 else 2) and not backward.torch_ops, backward.summary()


def _strided(x):
    """The same values with the last two dimensions stored the other way round (a transposed view)."""
    return x.detach().transpose(-1, -2).contiguous().transpose(-1, -2).requires_grad_()


@pytest.mark.parametrize(
    "segments,stored", [(None, True), (None, None), (1, None)],
    ids=["plain-stored-states", "plain-recomputed-states", "segmented"],
)
@pytest.mark.parametrize("DHV", [24, 80], ids=["one-DHV-block", "two-DHV-blocks"])
def test_chunkwise_triton_reads_strided_inputs(DHV, segments, stored, monkeypatch, nan_poison):
    """(B, S, NH, D) projections viewed as (B, NH, S, D), time-major gates, transposed states and the stride-0
    upstream gradients of a .sum() loss give the results of contiguous inputs, with no torch op besides the loss,
    in each layout (two chunks of 16: the plain layout stores the entering states unless told not to)."""
    monkeypatch.setattr(triton_chunkwise_segments, "SEGMENT_CHUNKS_OVERRIDE", segments)
    monkeypatch.setattr(triton_chunkwise_segments, "STORE_STATES_OVERRIDE", stored)
    B, NH, S, DQK = 2, 2, 19, 16
    qkvif, states = _inputs(B, NH, S, DQK, DHV, torch.float32, with_states=True)
    contiguous = [*qkvif, *states]

    def heads_last(x):  # (B, NH, S, ...) values stored as (B, S, NH, ...)
        return x.detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()

    C0, n0, m0 = states
    n0_every_other = torch.stack([n0.detach(), torch.zeros_like(n0)], dim=-1).requires_grad_()[..., 0]  # stride 2
    strided = [*(heads_last(x) for x in qkvif), _strided(C0), n0_every_other, m0.detach().squeeze(-1).requires_grad_()]
    assert not any(x.is_contiguous() for x in strided[:7])
    kernel = get_kernel("mlstm_chunkwise--triton")
    results = []
    for leaves in (contiguous, strided):
        with LaunchCounter() as launches:
            h, (C, n, m) = kernel(*leaves, return_last_states=True, chunk_size=16)
            loss = h.sum() + C.sum() + n.sum() + m.sum()
            grads = torch.autograd.grad(loss, leaves)
        # only the loss runs torch ops (fill_ is the nan_poison fixture filling each torch.empty)
        ops = {name: n for name, n in launches.torch_ops.items() if name != "aten.fill_.Scalar"}
        assert ops == {"aten.sum.default": 4, "aten.add.Tensor": 3, "aten.ones_like.default": 1}, launches.summary()
        results.append([h, C, n, m.squeeze(-1), *(g.reshape(x.shape) for g, x in zip(grads, contiguous))])
    ratio = TOLERANCES["float32-ieee"].ratio
    for name, a, b in zip(["h", "C", "n", "m", "dq", "dk", "dv", "di", "df", "dC0", "dn0", "dm0"], *results):
        assert_close(name, a, b, ratio)


def test_backward_warps_rule(monkeypatch):
    from xlstm_ts.kernels.mlstm import triton_chunkwise as tc

    assert tc._bwd_num_warps(True, 64, 4, False) == 8  # one pass over chunks of 64 reading h: 8 warps hold its tiles
    assert tc._bwd_num_warps(True, 64, 4, True) == 4  # <dh, h> from its dots: fewer live tiles, the forward's choice
    assert tc._bwd_num_warps(False, 64, 4, False) == 4  # two passes (states recomputed): the forward's choice
    assert tc._bwd_num_warps(True, 32, 4, False) == 4  # a short chunk: the forward's choice
    assert tc._bwd_num_warps(False, 32, 8, False) == 8
    monkeypatch.setattr(tc, "NUM_WARPS_OVERRIDE", 2)  # the benchmark's sweep sets both directions
    assert tc._bwd_num_warps(True, 64, 4, True) == 2
