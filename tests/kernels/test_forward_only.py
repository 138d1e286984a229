"""Calls that autograd does not record skip `Function.apply` (`kernels/_autograd.py`): the Triton mLSTM (one launch
and DQK column blocks) and sLSTM give the same outputs and last states as through `apply`, and calls that need
gradients still go through it."""

import pytest
import torch

from xlstm_ts.kernels import get_kernel
from xlstm_ts.kernels._autograd import forward_only, needs_grad
from xlstm_ts.kernels._testing import make_mlstm_inputs, make_mlstm_states
from xlstm_ts.kernels.mlstm import triton_chunkwise, triton_chunkwise_ksplit
from xlstm_ts.kernels.slstm import triton_slstm


def _count_applies(monkeypatch, fn) -> list:
    """Patch fn.apply to record its calls (and still apply)."""
    calls = []
    original = fn.apply

    def counted(*args):
        calls.append(len(args))
        return original(*args)

    monkeypatch.setattr(fn, "apply", counted)
    return calls


@pytest.mark.parametrize("DQK", [24, 160], ids=["one-launch", "column-blocks"])
def test_mlstm_without_gradients_skips_apply(DQK, monkeypatch):
    ksplit = triton_chunkwise_ksplit
    fn = ksplit._MLSTMChunkwiseKSplit if DQK > ksplit.K_BLOCK else triton_chunkwise._MLSTMChunkwiseTriton
    calls = _count_applies(monkeypatch, fn)
    torch.manual_seed(0)
    x = [t.float() for t in make_mlstm_inputs(1, 2, 37, DQK, 16)]
    states = [s.float() for s in make_mlstm_states(1, 2, DQK, 16)]
    kernel = get_kernel("mlstm_chunkwise--triton")
    h, last = kernel(*x, *states, return_last_states=True, chunk_size=16)  # no input needs a gradient
    assert calls == [] and h.grad_fn is None
    with torch.no_grad():
        h_ng, last_ng = kernel(*[t.requires_grad_() for t in x], *states, return_last_states=True, chunk_size=16)
    assert calls == []
    with torch.enable_grad():
        h_g, last_g = kernel(*x, *states, return_last_states=True, chunk_size=16)
    assert len(calls) == 1 and h_g.grad_fn is not None
    x64, states64 = [t.detach().double() for t in x], [s.double() for s in states]
    ref, last_ref = get_kernel("mlstm_chunkwise--torch")(*x64, *states64, return_last_states=True)
    for out, lst in ((h, last), (h_ng, last_ng), (h_g, last_g)):
        torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)
        for a, b in zip(lst, last_ref, strict=True):
            torch.testing.assert_close(a.double(), b.reshape(a.shape), rtol=1e-4, atol=1e-4)


def test_slstm_without_gradients_skips_apply(monkeypatch):
    calls = _count_applies(monkeypatch, triton_slstm._SLSTMTriton)
    torch.manual_seed(1)
    wx = torch.randn(3, 9, 4, 2, 16)
    r = (0.1 * torch.randn(2, 4, 16, 16)).requires_grad_()
    b = torch.zeros(2, 4, 16)
    kernel = get_kernel("slstm--triton")
    with torch.no_grad():
        out, last = kernel(wx, r, b, return_last_states=True)
    assert calls == [] and out.grad_fn is None
    out_g, last_g = kernel(wx, r, b, return_last_states=True)  # r needs a gradient
    assert len(calls) == 1 and out_g.grad_fn is not None
    torch.testing.assert_close(out, out_g.detach(), rtol=0, atol=0)
    for a, b_ in zip(last, last_g, strict=True):
        torch.testing.assert_close(a, b_.detach(), rtol=0, atol=0)


def test_forward_only_context_and_needs_grad():
    class Double(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            ctx.set_materialize_grads(False)
            ctx.flag = any(ctx.needs_input_grad)
            return 2 * x

    x = torch.ones(3, requires_grad=True)
    assert needs_grad(None, x) and not needs_grad(None, x.detach())
    with torch.no_grad():
        assert not needs_grad(x)
    torch.testing.assert_close(forward_only(Double, x.detach()), torch.full((3,), 2.0))
