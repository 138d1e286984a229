"""mlstm_chunkwise--triton on sequences of one chunk (S <= chunk), the short sequences of patched forecasters: the
backward forms dq in its single pass and skips state terms that are zero. Checked against the fp64 torch reference
with and without initial states, with the last states not returned (the forward then skips them), returned, or
given upstream gradients, both gate regimes, S not a multiple of 16 and DHV spanning one or two value blocks.

Without CUDA the kernels run in the Triton interpreter (set in conftest.py).
"""

import pytest
import torch

from xlstm_ts.kernels import get_kernel
from xlstm_ts.kernels._testing import TOLERANCES, assert_close, make_mlstm_inputs, make_mlstm_states
from xlstm_ts.kernels._testing_mlstm import check_triton
from xlstm_ts.kernels.mlstm import triton_chunkwise, triton_chunkwise_segments

pytest.importorskip("triton")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _grads(fn, leaves, upstream, dtype, last):
    """Outputs and gradients of sum(h * dh) (+ sum(state * d state) if last == "grad") w.r.t. every leaf (None if
    absent); the last states are returned unless last == "none"."""
    state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    cast = [None if x is None else x.to(dtype if idx < 5 else state_dtype) for idx, x in enumerate(leaves)]
    out = fn(*cast, return_last_states=last != "none", chunk_size=64)
    h, states = out if last != "none" else (out, ())
    outs = [h, *states] if last == "grad" else [h]
    loss = sum((o.double() * u).sum() for o, u in zip(outs, upstream))
    used = [x for x in leaves if x is not None]
    grads = iter(torch.autograd.grad(loss, used))
    return outs, [None if x is None else next(grads) for x in leaves]


@pytest.mark.parametrize("last", ["none", "returned", "grad"], ids=["h-only", "states-returned", "dh+dstates"])
@pytest.mark.parametrize("with_states", [False, True], ids=["zero-state", "initial-state"])
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
@pytest.mark.parametrize("B,NH,S,DQK,DHV", [(1, 2, 13, 16, 24), (2, 1, 40, 20, 80)], ids=lambda x: str(x))
def test_one_chunk_matches_fp64_reference(B, NH, S, DQK, DHV, i_mean, with_states, last, nan_poison):
    torch.manual_seed(7)
    inputs = make_mlstm_inputs(B, NH, S, DQK, DHV, i_mean=i_mean)
    states = make_mlstm_states(B, NH, DQK, DHV) if with_states else (None, None, None)
    leaves = [x if x is None else x.to(DEVICE).requires_grad_() for x in (*inputs, *states)]
    shapes = [(B, NH, S, DHV), (B, NH, DQK, DHV), (B, NH, DQK), (B, NH, 1)]
    upstream = [torch.randn(s, dtype=torch.float64, device=DEVICE) for s in shapes]
    ref = _grads(get_kernel("mlstm_chunkwise--torch"), leaves, upstream, torch.float64, last)
    out = _grads(get_kernel("mlstm_chunkwise--triton"), leaves, upstream, torch.float32, last)
    for name, a, b in zip("hCnm", ref[0], out[0]):
        assert_close(name, a, b, TOLERANCES["float32-ieee"].ratio)
    for name, a, b in zip(["dq", "dk", "dv", "di", "df", "dC0", "dn0"], ref[1], out[1]):
        if a is not None:
            assert b is not None and torch.isfinite(b).all(), name
            assert_close(name, a, b, TOLERANCES["float32-ieee-grad"].ratio)


@pytest.mark.parametrize("DHV,copy", [(24, False), (80, True)], ids=["one-value-block", "two-value-blocks"])
def test_one_chunk_backward_saves_no_fp32_copy_of_h(DHV, copy):
    """With one DHV block the backward sums <dh, h> from its own dots, so a bf16 forward saves no fp32 (B, NH, S, DHV)
    copy of h for it; with several blocks it still does (each block sees only its columns). The bf16 gradients are
    checked against fp64 in test_mlstm_chunkwise_triton.py (bf16_small, one chunk, one value block)."""
    torch.manual_seed(0)
    leaves = [x.to(DEVICE, torch.bfloat16).requires_grad_() for x in make_mlstm_inputs(1, 2, 13, 16, DHV)]
    saved = []

    def pack(t):
        saved.append((t.dtype, tuple(t.shape)))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        h = get_kernel("mlstm_chunkwise--triton")(*leaves)
    assert ((torch.float32, (1, 2, 13, DHV)) in saved) is copy, saved
    h.float().sum().backward()
    assert all(torch.isfinite(x.grad).all() for x in leaves)


@pytest.mark.parametrize("stored", [False, True], ids=["one-chunk", "stored-states"])
@pytest.mark.parametrize("with_states", [False, True], ids=["zero-state", "initial-state"])
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
def test_bf16_gradients_with_hd_from_dots(i_mean, with_states, stored, monkeypatch, nan_poison):
    """bf16 gradients of the backwards that sum <dh, h> from their own dots (one chunk, or several with the entering
    states stored by the forward; one value block) against the fp64 reference on the same rounded inputs."""
    monkeypatch.setattr(triton_chunkwise_segments, "STORE_STATES_OVERRIDE", stored)
    seen = []
    forward = triton_chunkwise._MLSTMChunkwiseTriton.forward

    def spy(ctx, *args):
        out = forward(ctx, *args)
        seen.append(ctx.config[-1])  # hd_dots
        return out

    monkeypatch.setattr(triton_chunkwise._MLSTMChunkwiseTriton, "forward", staticmethod(spy))
    torch.manual_seed(11)
    S, chunk = (21, 64) if not stored else (40, 16)
    check_triton(1, 2, S, 16, 24, i_mean, with_states, torch.bfloat16, chunk_size=chunk, rounded=True)
    assert seen == [True]
