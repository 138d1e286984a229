"""Random cases of the torch mLSTM forms (the CPU path of every model) against the fp64 step-by-step recurrence
(hypothesis): `mlstm_chunkwise--torch` (with its one-chunk readout and its CPU batch slices), `mlstm_parallel--torch`
and `mlstm_recurrent--torch`, in fp64 (the table's float64 ratios) and fp32, with any chunk size, eps, states or none,
last states or none, with and without gradients.

CI runs a fixed (derandomized) set of examples; XLSTM_TS_FUZZ_EXAMPLES=500 runs a longer random search.
"""

import contextlib
import os
from dataclasses import dataclass

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xlstm_ts.kernels import get_kernel
from xlstm_ts.kernels._testing import TOLERANCES, err_ratio
from xlstm_ts.kernels._testing_mlstm import (
    GRAD_NAMES,
    OUT_NAMES,
    YARDSTICK,
    compare_mlstm,
    dm0_terms,
    naive_mlstm,
)
from xlstm_ts.kernels.mlstm import chunkwise_torch

EXAMPLES = int(os.environ.get("XLSTM_TS_FUZZ_EXAMPLES", "0"))
TOL = {
    torch.float64: (TOLERANCES["float64"].ratio, TOLERANCES["float64-grad"].ratio),
    torch.float32: (TOLERANCES["float32-ieee"].ratio, TOLERANCES["float32-ieee-grad"].ratio),
}
# an fp32 form may be YARDSTICK times further from fp64 than the step-by-step recurrence of the tests evaluated in
# fp32 (`naive_mlstm`) on the same case: random cases include ill-conditioned ones (strong input gates, narrow
# heads), where the recurrence itself is 1.4e-5 off (e.g. (1, 1, 25, 6, 1), i~ ~ N(3, 1)), above the float32-ieee ratio


@dataclass(frozen=True)
class Case:
    form: str
    B: int
    NH: int
    S: int
    DQK: int
    DHV: int
    chunk_size: int
    eps: float
    dtype: torch.dtype
    i_mean: float
    with_states: bool
    last_states: bool
    grad: bool
    slice_bytes: int | None  # the CPU batch slices' budget (None: the default)
    seed: int


@st.composite
def cases(draw) -> Case:
    dtype = draw(st.sampled_from([torch.float64, torch.float32]))
    # a large eps makes df at S=1 from zero states a cancellation of O(1) terms down to O(eps): fp64 only
    eps = draw(st.sampled_from([0.0, 1e-6, 1e-3] if dtype == torch.float64 else [0.0, 1e-6]))
    return Case(
        form=draw(st.sampled_from(["mlstm_chunkwise--torch", "mlstm_parallel--torch", "mlstm_recurrent--torch"])),
        B=draw(st.integers(1, 4)), NH=draw(st.integers(1, 3)), S=draw(st.integers(1, 90)),
        DQK=draw(st.integers(4, 24)), DHV=draw(st.integers(1, 24)), chunk_size=draw(st.integers(1, 70)),
        eps=eps, dtype=dtype,
        i_mean=draw(st.sampled_from([0.0, -10.0, 3.0])), with_states=draw(st.booleans()),
        last_states=draw(st.booleans()), grad=draw(st.booleans()),
        slice_bytes=draw(st.sampled_from([None, 1])), seed=draw(st.integers(0, 2**16)),
    )  # fmt: skip


def _run(fn, leaves, upstream, case, dtype):
    """Outputs [h, C, n, m] (None where not returned) and the gradients of sum(out * upstream) per leaf."""
    args = [None if x is None else x.to(dtype) for x in leaves]
    with contextlib.nullcontext() if case.grad else torch.no_grad():
        res = fn(*args, return_last_states=case.last_states, eps=case.eps, chunk_size=case.chunk_size)
    outs = [res[0], *res[1]] if case.last_states else [res, None, None, None]
    if not case.grad:
        return outs, [None] * 8
    loss = sum((o.double() * u).sum() for o, u in zip(outs, upstream, strict=True) if o is not None)
    used = [x for x in leaves if x is not None]
    grads = iter(torch.autograd.grad(loss, used))
    return outs, [None if x is None else next(grads) for x in leaves]


def check_case(case: Case) -> dict:
    g = torch.Generator().manual_seed(case.seed)
    randn = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    B, NH, S, DQK, DHV = case.B, case.NH, case.S, case.DQK, case.DHV
    leaves = [randn(B, NH, S, DQK), randn(B, NH, S, DQK), randn(B, NH, S, DHV), randn(B, NH, S) + case.i_mean,
              randn(B, NH, S) + 2.0]  # fmt: skip
    leaves += [randn(B, NH, DQK, DHV), randn(B, NH, DQK), randn(B, NH, 1)] if case.with_states else [None] * 3
    leaves = [x if x is None else x.to(case.dtype).double().requires_grad_(case.grad) for x in leaves]
    upstream = [randn(*s) for s in [(B, NH, S, DHV), (B, NH, DQK, DHV), (B, NH, DQK), (B, NH, 1)]]
    zeros = [torch.zeros(s, dtype=torch.float64) for s in [(B, NH, DQK, DHV), (B, NH, DQK), (B, NH, 1)]]

    def reference(q, k, v, i, f, C0, n0, m0, return_last_states, eps, chunk_size):
        states = [z.to(q.dtype) if x is None else x for x, z in zip((C0, n0, m0), zeros, strict=True)]
        h, last, _ = naive_mlstm(q, k, v, i, f, *states, eps=eps)
        return (h, last) if return_last_states else h

    ref = _run(reference, leaves, upstream, case, torch.float64)
    with pytest.MonkeyPatch.context() as patch:
        if case.slice_bytes is not None:  # a batch slice per row of the batch (calls without gradients)
            patch.setattr(chunkwise_torch, "_CPU_SLICE_BYTES", case.slice_bytes)
        out = _run(get_kernel(case.form), leaves, upstream, case, case.dtype)
    assert out[0][0].dtype == case.dtype and out[0][0].shape == (B, NH, S, DHV)
    floors = {}
    if case.dtype == torch.float32:  # no form beats fp32 rounding times the case's condition: the recurrence's error
        plain = _run(reference, leaves, upstream, case, torch.float32)  # in fp32 is a yardstick
        for name, a, b in zip(OUT_NAMES + GRAD_NAMES, ref[0] + ref[1], plain[0] + plain[1], strict=True):
            if a is not None and a.abs().max() > 0:
                floors[name] = YARDSTICK * err_ratio(a, b)
    terms = dm0_terms(leaves, ref[1]) if case.grad else 0.0
    return compare_mlstm(ref, out, *TOL[case.dtype], dm0_terms=terms, floors=floors)


@settings(max_examples=EXAMPLES or 100, derandomize=not EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(case=cases())
def test_random_cases_match_fp64_recurrence(case):
    check_case(case)
