"""slstm--torch_loop (hand-written backward, the CPU training path) against the fp64 slstm--torch reference:
outputs, last states and the gradients of wx, r, b and the initial states, in both gate regimes, for sequence
lengths that are not multiples of anything; fp64 gradcheck; and "auto" picks it on the CPU."""

import pytest
import torch

from xlstm_ts.kernel_choice import resolve_kernel_name
from xlstm_ts.kernels import get_kernel
from xlstm_ts.kernels._testing import TOLERANCES, assert_close

OUT_NAMES = ["h", "h_last", "c_last", "n_last", "m_last"]
GRAD_NAMES = ["dwx", "dr", "db", "dh0", "dc0", "dn0", "dm0"]


def _leaves(B, S, NH, DH, with_states, i_shift):
    wx = torch.randn(B, S, 4, NH, DH, dtype=torch.float64)  # (B, S, 4, NH, DH)
    wx[:, :, 0] += i_shift  # i~ ~ N(0, 1): i' terms of all sizes; i~ ~ -10: m follows the forget path
    r = torch.randn(NH, 4, DH, DH, dtype=torch.float64) / DH**0.5
    leaves = [wx, r, torch.randn(NH, 4, DH, dtype=torch.float64)]
    if with_states:
        h, c, n, m = (torch.randn(B, NH, DH, dtype=torch.float64) for _ in range(4))
        leaves += [h, c, n.abs() + 0.5, m]  # n > 0, as any state the sLSTM produces
    return [x.requires_grad_() for x in leaves]


def _run(name, leaves, upstream, dtype):
    cast = [x.to(dtype) for x in leaves]
    states = tuple(cast[3:]) if len(cast) > 3 else None
    out, last = get_kernel(name)(*cast[:3], initial_states=states, return_last_states=True)
    outs = [out, *last]
    loss = sum((o.double() * u).sum() for o, u in zip(outs, upstream, strict=True))
    return outs, torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize("i_shift", [0.0, -10.0], ids=["i~N(0,1)", "i~-10"])
@pytest.mark.parametrize("with_states", [False, True], ids=["zero-state", "initial-state"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("B,S,NH,DH", [(3, 1, 2, 8), (5, 63, 2, 12), (2, 100, 4, 16)], ids=lambda x: str(x))
def test_loop_matches_fp64_reference(B, S, NH, DH, dtype, with_states, i_shift, nan_poison):
    torch.manual_seed(7)
    leaves = _leaves(B, S, NH, DH, with_states, i_shift)
    shapes = [(B, S, NH, DH)] + [(B, NH, DH)] * 4
    upstream = [torch.randn(s, dtype=torch.float64) for s in shapes]
    ref = _run("slstm--torch", leaves, upstream, torch.float64)
    out = _run("slstm--torch_loop", leaves, upstream, dtype)
    assert out[0][0].dtype == dtype and all(s.dtype == dtype for s in out[0][1:])
    key = "float64" if dtype == torch.float64 else "float32-ieee"
    for name, a, b in zip(OUT_NAMES, ref[0], out[0], strict=True):
        assert_close(name, a, b, TOLERANCES[key].ratio)
    for name, a, b in zip(GRAD_NAMES, ref[1], out[1]):
        assert_close(name, a, b, TOLERANCES[f"{key}-grad"].ratio)


def test_loop_gradcheck():
    torch.manual_seed(0)
    leaves = _leaves(2, 5, 2, 3, with_states=True, i_shift=0.0)

    def fn(wx, r, b, h, c, n, m):
        out, last = get_kernel("slstm--torch_loop")(wx, r, b, initial_states=(h, c, n, m), return_last_states=True)
        return (out, *last)

    assert torch.autograd.gradcheck(fn, tuple(leaves))


def test_loop_bf16_inputs_keep_fp32_states():
    torch.manual_seed(0)
    wx, r, b = (x.detach() for x in _leaves(2, 9, 2, 8, with_states=False, i_shift=0.0))
    h, last = get_kernel("slstm--torch_loop")(wx.bfloat16(), r.bfloat16(), b.bfloat16(), return_last_states=True)
    ref = get_kernel("slstm--torch")(wx.bfloat16().double(), r.bfloat16().double(), b.bfloat16().double())
    assert h.dtype == torch.bfloat16 and all(s.dtype == torch.float32 for s in last)
    assert_close("h", ref, h, TOLERANCES["bfloat16"].ratio)


def test_auto_uses_the_loop_kernel_on_the_cpu():
    assert resolve_kernel_name("auto", "slstm", torch.device("cpu")) == "slstm--torch_loop"
