"""The torch sLSTM reference against a scalar loop, state passing, the first-step rule, gradients and input checks."""

import math

import pytest
import torch

from xlstm_ts.kernels import get_kernel
from xlstm_ts.kernels._testing import assert_close, tolerance

TOL64 = tolerance(torch.float64)


def _inputs(B, S, NH, DH, dtype=torch.float64):
    wx = torch.randn(B, S, 4, NH, DH, dtype=dtype)  # (B, S, 4, NH, DH)
    r = 0.5 * torch.randn(NH, 4, DH, DH, dtype=dtype)  # (NH, 4, DH, DH)
    b = torch.randn(NH, 4, DH, dtype=dtype)  # (NH, 4, DH)
    return wx, r, b


def _naive_slstm(wx, r, b):
    """One unit at a time with Python floats: the sLSTM equations read off the paper, first step m_1 = i~_1."""
    B, S, _, NH, DH = wx.shape
    out = torch.zeros(B, S, NH, DH, dtype=torch.float64)
    for batch in range(B):
        for head in range(NH):
            h, c, n, m = [0.0] * DH, [0.0] * DH, [0.0] * DH, [0.0] * DH
            for t in range(S):
                pre = [
                    [
                        float(wx[batch, t, g, head, j])
                        + sum(h[d] * float(r[head, g, d, j]) for d in range(DH))
                        + float(b[head, g, j])
                        for j in range(DH)
                    ]
                    for g in range(4)
                ]
                h_new = []
                for j in range(DH):
                    i_pre, f_pre, z_pre, o_pre = (pre[g][j] for g in range(4))
                    log_f = -math.log1p(math.exp(-f_pre))
                    m_new = i_pre if t == 0 else max(log_f + m[j], i_pre)
                    i_act = math.exp(i_pre - m_new)
                    f_act = 0.0 if t == 0 else math.exp(log_f + m[j] - m_new)
                    c[j] = f_act * c[j] + i_act * math.tanh(z_pre)
                    n[j] = f_act * n[j] + i_act
                    m[j] = m_new
                    h_new.append(c[j] / n[j] / (1.0 + math.exp(-o_pre)))
                h = h_new
                out[batch, t, head] = torch.tensor(h, dtype=torch.float64)
    return out


@pytest.mark.parametrize(
    "B,S,NH,DH", [(2, 7, 2, 3), (1, 1, 1, 4), (1, 5, 3, 1)], ids=["B2-S7-H2-DH3", "B1-S1-H1-DH4", "B1-S5-H3-DH1"]
)
def test_matches_naive_loop(B, S, NH, DH):
    torch.manual_seed(42)
    wx, r, b = _inputs(B, S, NH, DH)
    out = get_kernel("slstm--torch")(wx, r, b)
    assert out.shape == (B, S, NH, DH) and out.dtype == torch.float64
    assert_close("h", _naive_slstm(wx, r, b), out, TOL64)


def test_state_passing_two_calls_equal_one():
    torch.manual_seed(42)
    wx, r, b = _inputs(2, 12, 2, 4)
    slstm = get_kernel("slstm--torch")
    h_full, states_full = slstm(wx, r, b, return_last_states=True)
    h_a, states_a = slstm(wx[:, :5], r, b, return_last_states=True)
    h_b, states_b = slstm(wx[:, 5:], r, b, initial_states=states_a, return_last_states=True)
    assert_close("h", h_full, torch.cat([h_a, h_b], dim=1), TOL64)
    assert_close("h_last", h_full[:, -1], states_full[0], 0.0)
    for name, ref, out in zip("hcnm", states_full, states_b, strict=True):
        assert out.shape == (2, 2, 4)
        assert_close(name, ref, out, TOL64)


def test_no_initial_states_equals_zeros_with_m_minus_inf():
    torch.manual_seed(42)
    wx, r, b = _inputs(2, 6, 2, 3)
    slstm = get_kernel("slstm--torch")
    zeros = torch.zeros(2, 2, 3, dtype=torch.float64)
    explicit = (zeros, zeros, zeros, torch.full_like(zeros, float("-inf")))
    h_none, states_none = slstm(wx, r, b, return_last_states=True)
    h_explicit, states_explicit = slstm(wx, r, b, initial_states=explicit, return_last_states=True)
    assert_close("h", h_none, h_explicit, 0.0)
    for name, ref, out in zip("hcnm", states_none, states_explicit, strict=True):
        assert_close(name, ref, out, 0.0)
    # first-step rule: m_1 = i~_1 and n_1 = 1
    _, (_, _, n_1, m_1) = slstm(wx[:, :1], r, b, return_last_states=True)
    assert_close("m_1", wx[:, 0, 0] + b[:, 0], m_1, TOL64)
    assert_close("n_1", torch.ones_like(n_1), n_1, 0.0)


def test_gradients_finite_from_zero_state():
    torch.manual_seed(42)
    wx, r, b = (x.requires_grad_() for x in _inputs(2, 9, 2, 3, dtype=torch.float32))
    h, states = get_kernel("slstm--torch")(wx, r, b, return_last_states=True)
    loss = h.square().sum() + sum(s.sum() for s in states[:3])
    for name, grad in zip(["dwx", "dr", "db"], torch.autograd.grad(loss, (wx, r, b)), strict=True):
        assert torch.isfinite(grad).all(), f"{name} has non-finite entries"
        assert grad.abs().sum() > 0, f"{name} is all zero"


def test_gradcheck():
    torch.manual_seed(42)
    wx, r, b = (x.requires_grad_() for x in _inputs(1, 4, 1, 2))
    states = tuple(torch.randn(1, 1, 2, dtype=torch.float64).requires_grad_() for _ in range(4))
    states[2].data.abs_().add_(0.5)  # n > 0, as a state returned by the kernel

    def fn(*args):
        h, last = get_kernel("slstm--torch")(*args[:3], initial_states=args[3:], return_last_states=True)
        return (h, *last)

    assert torch.autograd.gradcheck(fn, (wx, r, b, *states))
    assert torch.autograd.gradcheck(lambda *args: get_kernel("slstm--torch")(*args), (wx, r, b))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_low_precision_output_dtype(dtype):
    torch.manual_seed(42)
    wx, r, b = _inputs(2, 5, 2, 3)
    h, states = get_kernel("slstm--torch")(wx.to(dtype), r.to(dtype), b.to(dtype), return_last_states=True)
    assert h.dtype == dtype and all(s.dtype == torch.float32 for s in states)
    ref = get_kernel("slstm--torch")(wx.to(dtype).double(), r.to(dtype).double(), b.to(dtype).double())
    assert_close("h", ref, h, tolerance(dtype))


def test_bad_inputs_raise_value_error():
    torch.manual_seed(42)
    wx, r, b = _inputs(2, 5, 2, 3)
    slstm = get_kernel("slstm--torch")
    with pytest.raises(ValueError, match=r"wx must have shape \(B, S, 4, NH, DH\)"):
        slstm(wx[:, :, :3], r, b)
    with pytest.raises(ValueError, match="r must have shape"):
        slstm(wx, r.transpose(0, 1), b)
    with pytest.raises(ValueError, match="b must have shape"):
        slstm(wx, r, b[:, :, :2])
    with pytest.raises(ValueError, match="initial_states must be a tuple"):
        slstm(wx, r, b, initial_states=(wx,))
    bad = torch.zeros(2, 2, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="initial state h must have shape"):
        slstm(wx, r, b, initial_states=(bad, bad, bad, bad))
