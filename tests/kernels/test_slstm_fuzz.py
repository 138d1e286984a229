"""Random cases of the sLSTM Triton kernels against the fp64 slstm--torch reference (hypothesis).

Each example draws a shape (head widths that pad to a power of two or do not), a kernel (`slstm--triton`, its fp16-R
and fp32-R forms), a dtype of wx, initial states or none, last states returned or not, a call with or without
gradients, wx contiguous or a view of a (S, B, ...) tensor, and where dR and db are summed (kernel or host).
Low-precision wx is moved off stabilizer ties first (`slstm_tie_free`). Outputs, last states and every gradient are
compared with the tolerances of `kernels/_testing.py`, with every torch.empty buffer NaN-poisoned.

CI runs a fixed (derandomized) set of examples; XLSTM_TS_FUZZ_EXAMPLES=300 runs a longer random search.
"""

import contextlib
import os
from dataclasses import dataclass

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xlstm_ts.kernels import get_kernel
from xlstm_ts.kernels._testing import TOLERANCES, assert_close, rounding_floor, slstm_tie_free

pytest.importorskip("triton")

from xlstm_ts.kernels.slstm import triton_slstm  # noqa: E402

EXAMPLES = int(os.environ.get("XLSTM_TS_FUZZ_EXAMPLES", "0"))
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {
    torch.float32: (TOLERANCES["float32-ieee"].ratio, TOLERANCES["float32-ieee-grad"].ratio),
    torch.bfloat16: (TOLERANCES["bfloat16"].ratio, TOLERANCES["bfloat16-triton-grad"].ratio),
    torch.float16: (TOLERANCES["float16"].ratio, TOLERANCES["float16-triton-grad"].ratio),
}
OUT_NAMES = ["h", "h_last", "c_last", "n_last", "m_last"]
GRAD_NAMES = ["dwx", "dr", "db", "dh0", "dc0", "dn0", "dm0"]


@dataclass(frozen=True)
class Case:
    B: int
    S: int
    NH: int
    DH: int
    kernel: str
    dtype: torch.dtype
    f_bias: float
    with_states: bool
    last_states: bool
    grad: bool
    strided: bool
    weight_grads: str  # "kernel" (where the dispatch allows it) or "host"
    seed: int


@st.composite
def cases(draw) -> Case:
    return Case(
        B=draw(st.integers(1, 5)), S=draw(st.integers(1, 9)), NH=draw(st.integers(1, 2)),
        DH=draw(st.one_of(st.sampled_from([16, 32, 64, 65]), st.integers(16, 96))),
        kernel=draw(st.sampled_from(["slstm--triton", "slstm--triton_fp16r", "slstm--triton_fp32r"])),
        dtype=draw(st.sampled_from([torch.float32, torch.bfloat16, torch.float16])),
        f_bias=draw(st.sampled_from([0.0, 3.0])), with_states=draw(st.booleans()), last_states=draw(st.booleans()),
        grad=draw(st.booleans()), strided=draw(st.booleans()), weight_grads=draw(st.sampled_from(["kernel", "host"])),
        seed=draw(st.integers(0, 2**16)),
    )  # fmt: skip


def _leaves(case: Case) -> list:
    """wx (rounded to the case's dtype and off stabilizer ties, held in fp64), r, b and the initial states (or none),
    fp64 leaves."""
    g = torch.Generator().manual_seed(case.seed)
    randn = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    B, S, NH, DH = case.B, case.S, case.NH, case.DH
    wx = randn(B, S, 4, NH, DH)  # (B, S, 4, NH, DH)
    wx[:, :, 1] += case.f_bias
    r, b = randn(NH, 4, DH, DH) / DH**0.5, randn(NH, 4, DH)
    states = [randn(B, NH, DH), randn(B, NH, DH), randn(B, NH, DH).abs() + 0.5, randn(B, NH, DH)]
    states = states if case.with_states else []  # n > 0, as any state the sLSTM produces
    wx = wx.to(case.dtype).double()
    if case.dtype != torch.float32:  # no step's max within rounding of a tie, where rounding picks the branch
        wx = slstm_tie_free(wx, r, b, states or None, case.dtype)
    return [x.to(DEVICE).requires_grad_(case.grad) for x in [wx, r, b, *states]]


def _run(fn, leaves: list, upstream: list, case: Case, dtype: torch.dtype) -> tuple[list, list]:
    """Outputs [h, h_last, c_last, n_last, m_last] (None where not returned) and the leaves' gradients."""
    if dtype == torch.float64:
        args = leaves
    else:  # wx in the case's dtype (strided: a view of an (S, B, ...) tensor), r, b and the states fp32
        wx = leaves[0].transpose(0, 1).contiguous().to(dtype).transpose(0, 1) if case.strided else leaves[0].to(dtype)
        args = [wx] + [x.float() for x in leaves[1:]]
    states = tuple(args[3:]) or None
    with contextlib.nullcontext() if case.grad else torch.no_grad():
        res = fn(*args[:3], initial_states=states, return_last_states=case.last_states)
    outs = [res[0], *res[1]] if case.last_states else [res, None, None, None, None]
    if not case.grad:
        return outs, []
    loss = sum((o.double() * u).sum() for o, u in zip(outs, upstream, strict=True) if o is not None)
    return outs, list(torch.autograd.grad(loss, leaves))


def check_case(case: Case, monkeypatch) -> dict:
    """Run one case against slstm--torch in fp64; returns the error ratios per compared tensor."""
    in_kernel = case.weight_grads == "kernel"
    monkeypatch.setattr(triton_slstm, "_weight_grads_in_kernel", lambda dtype, BD, programs: in_kernel and BD <= 64)
    leaves = _leaves(case)
    g = torch.Generator().manual_seed(case.seed + 1)
    B, S, NH, DH = case.B, case.S, case.NH, case.DH
    shapes = [(B, S, NH, DH)] + [(B, NH, DH)] * 4
    # the gradients autograd hands the kernel (dh in h's dtype, the states' in fp32); the reference sees the same
    upstream = [torch.randn(s, generator=g, dtype=torch.float64).to(dtype).double().to(DEVICE)
                for s, dtype in zip(shapes, [case.dtype] + [torch.float32] * 4, strict=True)]  # fmt: skip
    ref = _run(get_kernel("slstm--torch"), leaves, upstream, case, torch.float64)
    out = _run(get_kernel(case.kernel), leaves, upstream, case, case.dtype)
    assert out[0][0].dtype == case.dtype and out[0][0].shape == (B, S, NH, DH)
    tol_out, tol_grad = TOL[case.dtype]
    errors = {}
    for name, a, b in zip(OUT_NAMES, *(x[0] for x in (ref, out)), strict=True):
        if a is not None or b is not None:
            errors[name] = assert_close(name, a, b, max(tol_out, rounding_floor(a, b.dtype)))
    for name, a, b in zip(GRAD_NAMES, *(x[1] for x in (ref, out)), strict=False):
        errors[name] = assert_close(name, a, b, max(tol_grad, rounding_floor(a, b.dtype)))
    return errors


@settings(max_examples=EXAMPLES or 30, derandomize=not EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip
@given(case=cases())
def test_random_cases_match_fp64_reference(case, nan_poison, monkeypatch):
    check_case(case, monkeypatch)
