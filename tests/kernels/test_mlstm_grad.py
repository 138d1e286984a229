"""Gradients of the chunkwise torch mLSTM: true gradients (through the normalizer), checked against autograd of the
parallel form, an independent naive loop and finite differences; plus the fp32 chunkwise path against fp64."""

import pytest
import torch

from xlstm_ts.kernels import get_kernel
from xlstm_ts.kernels._testing import assert_close, err_ratio, make_mlstm_inputs, make_mlstm_states, tolerance
from xlstm_ts.kernels._testing_mlstm import naive_mlstm

B, NH, S, DQK, DHV, CHUNK = 2, 3, 37, 5, 7, 16
GRAD_NAMES = ["dq", "dk", "dv", "di", "df", "dC0", "dn0", "dm0"]


def _naive_mlstm(q, k, v, i, f, C, n, m, eps, detach_denominator=False):
    """The recurrence written out step by step (independent of the kernels), optionally with a constant denominator
    (m stays differentiable). Returns h (B, NH, S, DHV) and the fraction of rows where the |n.q| branch is active."""
    h, _, active = naive_mlstm(q, k, v, i, f, C, n, m, eps=eps, detach=detach_denominator, detach_m=False)
    return h, active


def _leaves(i_mean, with_states, dtype=torch.float64, s=S):
    inputs = make_mlstm_inputs(B, NH, s, DQK, DHV, i_mean=i_mean, dtype=dtype)
    states = make_mlstm_states(B, NH, DQK, DHV, dtype=dtype) if with_states else (None, None, None)
    return [x if x is None else x.clone().requires_grad_() for x in (*inputs, *states)]


def _grads(kernel, leaves, upstream, dtype=None, chunk_size=CHUNK):
    """Gradients of sum(h * dh) + sum over states of (state * dstate), w.r.t. every leaf (None where unused)."""
    leaves_cast = [x if x is None or dtype is None else x.to(dtype) for x in leaves]
    h, states = kernel(*leaves_cast, return_last_states=True, chunk_size=chunk_size)
    loss = (h.double() * upstream[0]).sum()
    loss = loss + sum((s.double() * u).sum() for s, u in zip(states, upstream[1:], strict=True))
    used = [x for x in leaves if x is not None]
    grads = iter(torch.autograd.grad(loss, used))
    return [None if x is None else next(grads) for x in leaves]


def _upstream(s=S):
    return (
        torch.randn(B, NH, s, DHV, dtype=torch.float64),
        torch.randn(B, NH, DQK, DHV, dtype=torch.float64),
        torch.randn(B, NH, DQK, dtype=torch.float64),
        torch.randn(B, NH, 1, dtype=torch.float64),
    )


@pytest.mark.parametrize("with_states", [False, True], ids=["zero-state", "initial-state"])
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
def test_chunkwise_grad_matches_parallel_fp64(i_mean, with_states):
    torch.manual_seed(42)
    leaves = _leaves(i_mean, with_states)
    upstream = _upstream()
    ref = _grads(get_kernel("mlstm_parallel--torch"), leaves, upstream)
    out = _grads(get_kernel("mlstm_chunkwise--torch"), leaves, upstream)
    for name, g_ref, g_out in zip(GRAD_NAMES, ref, out, strict=True):
        if g_ref is not None:
            assert_close(name, g_ref, g_out, tolerance(torch.float64, grad=True))

    # which branch of max(|n.q|, exp(-m)) the comparison exercised
    zero_states = (torch.zeros(B, NH, DQK, DHV), torch.zeros(B, NH, DQK), torch.zeros(B, NH, 1))
    states = leaves[5:] if with_states else [x.double() for x in zero_states]
    with torch.no_grad():
        _, active = _naive_mlstm(*leaves[:5], *states, eps=1e-6)
    if i_mean == 0.0:
        assert active > 0.5, f"|n.q| branch active in only {active:.0%} of rows; the normalizer gradient is untested"
    else:
        assert active < 0.05, f"exp(-m) branch expected nearly everywhere, |n.q| branch active in {active:.0%}"


def test_normalizer_gradient_is_exercised():
    """The chunkwise gradient equals the naive loop's true gradient, and differs from the detached-normalizer one."""
    torch.manual_seed(42)
    leaves = _leaves(0.0, with_states=True)
    upstream = torch.randn(B, NH, S, DHV, dtype=torch.float64)
    h = get_kernel("mlstm_chunkwise--torch")(*leaves, chunk_size=CHUNK)
    grads_chunkwise = torch.autograd.grad((h * upstream).sum(), leaves[:5])
    h_true, active = _naive_mlstm(*leaves, eps=1e-6)
    grads_true = torch.autograd.grad((h_true * upstream).sum(), leaves[:5])
    h_detached, _ = _naive_mlstm(*leaves, eps=1e-6, detach_denominator=True)
    grads_detached = torch.autograd.grad((h_detached * upstream).sum(), leaves[:5])
    assert active > 0.5
    assert_close("h", h_true, h, tolerance(torch.float64))
    grads = zip(GRAD_NAMES[:5], grads_true, grads_chunkwise, grads_detached, strict=True)
    for name, g_true, g_chunk, g_detached in grads:
        assert_close(name, g_true, g_chunk, tolerance(torch.float64, grad=True))
        if name != "dv":  # dv does not go through the denominator
            assert err_ratio(g_true, g_detached) > 0.1, f"{name}: detaching the normalizer changed nothing"


def test_chunkwise_gradcheck():
    torch.manual_seed(42)
    q, k, v, i, f = make_mlstm_inputs(1, 1, 5, 3, 3)
    C, n, m = make_mlstm_states(1, 1, 3, 3)
    leaves = tuple(x.requires_grad_() for x in (q, k, v, i, f, C, n, m))
    kernel = get_kernel("mlstm_chunkwise--torch")

    def fn(*args):
        h, states = kernel(*args, return_last_states=True, chunk_size=2)
        return (h, *states)

    assert torch.autograd.gradcheck(fn, leaves)


def test_chunkwise_fp32_matches_fp64_parallel():
    torch.manual_seed(42)
    s = 257
    leaves = _leaves(0.0, with_states=False, s=s)
    upstream = _upstream(s)
    ref = _grads(get_kernel("mlstm_parallel--torch"), leaves, upstream)
    out = _grads(get_kernel("mlstm_chunkwise--torch"), leaves, upstream, dtype=torch.float32, chunk_size=64)
    h_ref, states_ref = get_kernel("mlstm_parallel--torch")(*leaves[:5], return_last_states=True)
    h, states = get_kernel("mlstm_chunkwise--torch")(
        *(x.float() for x in leaves[:5]), return_last_states=True, chunk_size=64
    )
    assert h.dtype == torch.float32
    assert_close("h", h_ref, h, tolerance(torch.float32))
    for name, ref_state, state in zip("Cnm", states_ref, states, strict=True):
        assert_close(name, ref_state, state, tolerance(torch.float32))
    for name, g_ref, g_out in zip(GRAD_NAMES[:5], ref[:5], out[:5], strict=True):
        assert_close(name, g_ref, g_out, tolerance(torch.float32, grad=True))


@pytest.mark.parametrize("s", [1, 40, 64, 100], ids=lambda s: f"S={s}")
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
def test_chunkwise_without_last_states_matches_parallel_fp64(s, i_mean):
    """Without return_last_states the chunkwise form skips the last chunk's state sums and, for one chunk from zero
    states, the state term of the readout; h and its gradients must not change."""
    torch.manual_seed(3)
    leaves = _leaves(i_mean, with_states=False, s=s)[:5]
    dh = torch.randn(B, NH, s, DHV, dtype=torch.float64)
    h_ref = get_kernel("mlstm_parallel--torch")(*leaves)
    grads_ref = torch.autograd.grad((h_ref * dh).sum(), leaves)
    for chunk in (64, CHUNK):  # one chunk (S <= 64) and several
        h = get_kernel("mlstm_chunkwise--torch")(*leaves, chunk_size=chunk)
        assert_close("h", h_ref, h, tolerance(torch.float64))
        for name, a, b in zip(GRAD_NAMES, grads_ref, torch.autograd.grad((h * dh).sum(), leaves)):
            assert_close(name, a, b, tolerance(torch.float64, grad=True))
