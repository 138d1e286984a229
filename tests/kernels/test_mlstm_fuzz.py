"""Random cases of mlstm_chunkwise--triton against the fp64 step-by-step recurrence (hypothesis).

Each example draws a shape (sequences that end anywhere in a chunk, DQK != DHV, one or two column blocks), a dtype, a
gate regime, initial states or none, last states returned or not, the detached normalizer, a call with or without
gradients, inputs contiguous or read through the strides of a (B, S, NH, D) tensor, a layout (plain, stored states,
segments, chunk-parallel) and the A/B knobs of those layouts. Outputs, last states and every gradient are compared with
`TOL` (`kernels/_testing.py`), with every torch.empty buffer NaN-poisoned.

CI runs a fixed (derandomized) set of examples. A longer random search: XLSTM_TS_FUZZ_EXAMPLES=400 pytest
tests/kernels/test_mlstm_fuzz.py; hypothesis prints the failing case, shrunk, with the seed that reproduces it.
"""

import contextlib
import os
from dataclasses import dataclass, field

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xlstm_ts.kernels import get_kernel
from xlstm_ts.kernels._testing import assert_close, rounding_floor
from xlstm_ts.kernels._testing_mlstm import (
    DEVICE,
    TOL,
    compare_mlstm,
    dm0_terms,
    naive_mlstm,
    products_h,
    stabilizer_tol,
)

pytest.importorskip("triton")

from xlstm_ts.kernels.mlstm import triton_chunkwise as plain  # noqa: E402
from xlstm_ts.kernels.mlstm import triton_chunkwise_ksplit as ksplit  # noqa: E402
from xlstm_ts.kernels.mlstm import triton_chunkwise_parallel as parallel  # noqa: E402
from xlstm_ts.kernels.mlstm import triton_chunkwise_parallel_bwd as parallel_bwd  # noqa: E402
from xlstm_ts.kernels.mlstm import triton_chunkwise_segments as segments  # noqa: E402

EXAMPLES = int(os.environ.get("XLSTM_TS_FUZZ_EXAMPLES", "0"))
# unit roundoff of the low-precision dot operands, and how many roundings of the products reach h (the weighted scores
# and the entering state): a bf16 h may be off by DOT_ROUNDINGS * u of `products_h`'s rms where that exceeds TOL
ROUNDOFF = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}
DOT_ROUNDINGS = 2

# layouts a GPU picks by launch size (`segment_plan`, `auto_parallel`), forced here
LAYOUTS: dict[str, dict[tuple, object]] = {
    "auto": {},
    "stored-states": {(segments, "STORE_STATES_OVERRIDE"): True},
    "segments-1": {(segments, "SEGMENT_CHUNKS_OVERRIDE"): 1},
    "segments-2": {(segments, "SEGMENT_CHUNKS_OVERRIDE"): 2},
    "segments-3": {(segments, "SEGMENT_CHUNKS_OVERRIDE"): 3},
    "parallel-1": {(segments, "SEGMENT_CHUNKS_OVERRIDE"): 1, (parallel, "PARALLEL_FORWARD"): True},
    "parallel-2": {(segments, "SEGMENT_CHUNKS_OVERRIDE"): 2, (parallel, "PARALLEL_FORWARD"): True},
    "parallel-forward": {(parallel, "PARALLEL_FORWARD"): True},
}
# A/B knobs and their values other than the default (each one documented where it is defined)
KNOBS: dict[tuple, list] = {
    (parallel_bwd, "DQ_SWEEP"): [True],
    (parallel_bwd, "GRAD_PARTS"): [(1, 2), (3, 4, 2)],
    (parallel_bwd, "SCALED_DC"): [True],
    (parallel_bwd, "CONCURRENT_DQ"): [True],
    (parallel_bwd, "ROW_DOTS_FIRST"): [False],
    (parallel_bwd, "STATE_OUT_DOTS"): [False],
    (parallel_bwd, "BOUNDS_ROWS_FIRST"): [False],
    (parallel, "PAIRED_STATES"): [False],
    (parallel, "GRAD_STATES_IN_INPUT_DTYPE"): [False],
    (parallel, "NO_GRAD_STATES_IN_INPUT_DTYPE"): [False],
    (segments, "BOUNDS_BLOCKS_OVERRIDE"): [(16, 16)],
    (segments, "BOUNDS_BWD_PREFETCH"): [True],
    (segments, "BOUNDS_GATE_PREFETCH"): [False],
    (segments, "BOUNDS_GATES_FIRST"): [True],
    (ksplit, "K_BLOCK"): [16, 32],
    (plain, "FWD_GATE_PREFETCH"): [False],
    (plain, "ONE_CHUNK_BLOCKS"): [False],
    (plain, "HD_FROM_DOTS_DTYPES"): [()],
    (plain, "PARALLEL_GRAD_FWD_LOWP"): [False],
}


@dataclass(frozen=True)
class Case:
    B: int
    NH: int
    S: int
    DQK: int
    DHV: int
    chunk_size: int
    dtype: torch.dtype
    i_mean: float
    with_states: bool
    last_states: bool
    detach: bool
    grad: bool
    strided: bool
    layout: str
    knobs: dict = field(default_factory=dict)  # {"module.NAME": value} of the non-default A/B knobs
    seed: int = 0


def _knob_name(key: tuple) -> str:
    return f"{key[0].__name__.rsplit('.', 1)[-1]}.{key[1]}"


@st.composite
def cases(draw) -> Case:
    chunk = draw(st.sampled_from([16, 32, 64]))
    edges = [1, chunk - 1, chunk, chunk + 1, 2 * chunk + 3, 3 * chunk - 1]
    S = draw(st.one_of(st.sampled_from(edges), st.integers(1, 140)))
    dims = st.one_of(st.sampled_from([16, 64, 65, 80]), st.integers(16, 96))
    knobs = {}
    if draw(st.booleans()):  # half the examples keep every default
        for key, values in KNOBS.items():
            value = draw(st.sampled_from([None, *values]))
            if value is not None:
                knobs[_knob_name(key)] = value
    return Case(
        B=draw(st.integers(1, 2)), NH=draw(st.integers(1, 2)), S=S, DQK=draw(dims), DHV=draw(dims), chunk_size=chunk,
        dtype=draw(st.sampled_from([torch.float32, torch.bfloat16, torch.float16])),
        i_mean=draw(st.sampled_from([0.0, -10.0])), with_states=draw(st.booleans()),
        last_states=draw(st.booleans()), detach=draw(st.booleans()), grad=draw(st.booleans()),
        strided=draw(st.booleans()), layout=draw(st.sampled_from(sorted(LAYOUTS))), knobs=knobs,
        seed=draw(st.integers(0, 2**16)),
    )  # fmt: skip


@contextlib.contextmanager
def _settings(case: Case):
    """Set the case's layout and knobs on the kernel modules; restore them after."""
    by_name = {_knob_name(key): key for key in KNOBS}
    wanted = dict(LAYOUTS[case.layout]) | {by_name[name]: value for name, value in case.knobs.items()}
    with pytest.MonkeyPatch.context() as patch:
        for (module, name), value in wanted.items():
            patch.setattr(module, name, value)
        yield


def _leaves(case: Case) -> list:
    """q, k, v, i, f (rounded to the case's dtype, held in fp64) and C0, n0, m0 (or None): fp64 leaves."""
    g = torch.Generator().manual_seed(case.seed)
    B, NH, S = case.B, case.NH, case.S
    randn = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    q, k, v = randn(B, NH, S, case.DQK), randn(B, NH, S, case.DQK), randn(B, NH, S, case.DHV)
    i, f = randn(B, NH, S) + case.i_mean, randn(B, NH, S) + 2.0
    inputs = [x.to(case.dtype).double() for x in (q, k, v, i, f)]  # the reference sees the kernel's inputs
    states = [randn(B, NH, case.DQK, case.DHV), randn(B, NH, case.DQK), randn(B, NH, 1)] if case.with_states else []
    leaves = [x.to(DEVICE).requires_grad_(case.grad) for x in inputs + states]
    return leaves + [None] * (3 - len(states))


def _kernel_inputs(case: Case, leaves: list) -> list:
    """The kernel's arguments from the leaves: inputs in the case's dtype (strided: views of (B, S, NH, ...) tensors),
    states in fp32."""
    out = []
    for idx, x in enumerate(leaves):
        if x is None or idx >= 5:
            out.append(None if x is None else x.float())
        elif case.strided:  # the same values, read through the strides of a (B, S, NH, ...) tensor
            out.append(x.transpose(1, 2).contiguous().to(case.dtype).transpose(1, 2))
        else:
            out.append(x.to(case.dtype))
    return out


def _run(fn, args: list, leaves: list, upstream: list, case: Case) -> tuple[list, list]:
    """Outputs [h, C, n, m] (None where not returned) and the gradients of sum(out * upstream) per leaf."""
    with contextlib.nullcontext() if case.grad else torch.no_grad():
        res = fn(*args, return_last_states=case.last_states)
        outs = [res[0], *res[1]] if case.last_states else [res, None, None, None]
    if not case.grad:
        return outs, [None] * 8
    loss = sum((o.double() * u).sum() for o, u in zip(outs, upstream, strict=True) if o is not None)
    used = [x for x in leaves if x is not None]
    grads = iter(torch.autograd.grad(loss, used, allow_unused=True))  # detached: n0 reaches nothing
    grads = [None if x is None else next(grads) for x in leaves]
    return outs, [g if g is not None or x is None else torch.zeros_like(x) for g, x in zip(grads, leaves, strict=True)]


def check_case(case: Case) -> dict:
    """Run one case against `naive_mlstm` in fp64; returns the error ratios per compared tensor."""
    leaves = _leaves(case)
    B, NH, DQK, DHV = case.B, case.NH, case.DQK, case.DHV
    g = torch.Generator().manual_seed(case.seed + 1)
    shapes = [(B, NH, case.S, DHV), (B, NH, DQK, DHV), (B, NH, DQK), (B, NH, 1)]
    # the gradients autograd hands the kernel: dh in h's dtype, the states' in fp32; the reference sees the same (in
    # bf16 a gradient that cancels, e.g. dk when dz nearly cancels dnum v^T, moves by O(1) when dh is rounded)
    upstream = [torch.randn(s, generator=g, dtype=torch.float64).to(dtype).double().to(DEVICE)
                for s, dtype in zip(shapes, [case.dtype] + [torch.float32] * 3, strict=True)]  # fmt: skip
    zeros = [torch.zeros(s, dtype=torch.float64, device=DEVICE) for s in shapes[1:]]

    def reference(q, k, v, i, f, C0, n0, m0, return_last_states):
        if not case.detach and B * NH * case.S * DQK * DHV > 2**22:  # the recurrence's graph would keep every state
            return get_kernel("mlstm_chunkwise--torch")(q, k, v, i, f, C0, n0, m0, return_last_states, chunk_size=64)
        states = [z if x is None else x for x, z in zip((C0, n0, m0), zeros, strict=True)]
        h, last, _ = naive_mlstm(q, k, v, i, f, *states, detach=case.detach)
        return (h, last) if return_last_states else h

    ref = _run(reference, leaves, leaves, upstream, case)
    kernel = get_kernel("mlstm_chunkwise--triton")
    ours = lambda *a, **kw: kernel(*a, chunk_size=case.chunk_size, detach_normalizer=case.detach, **kw)  # noqa: E731
    with _settings(case):
        out = _run(ours, _kernel_inputs(case, leaves), leaves, upstream, case)
    assert out[0][0].dtype == case.dtype and out[0][0].shape == (B, NH, case.S, DHV)
    for state in out[0][1:]:
        assert state is None or state.dtype == torch.float32
    floors = {}
    if case.dtype in ROUNDOFF:  # dots on rounded operands: errors scale with the products' magnitudes (`products_h`)
        states = [z if x is None else x.detach() for x, z in zip(leaves[5:], zeros, strict=True)]
        h_abs = products_h(*(x.detach() for x in leaves[:5]), *states)
        rms = lambda x: x.detach().double().pow(2).mean().sqrt().item()  # noqa: E731
        floors["h"] = DOT_ROUNDINGS * ROUNDOFF[case.dtype] * rms(h_abs) / max(rms(ref[0][0]), 1e-300)
    terms = dm0_terms(leaves, ref[1]) if case.grad else 0.0
    return compare_mlstm(ref, out, *TOL[case.dtype], dm0_terms=terms, floors=floors)


@settings(max_examples=EXAMPLES or 12, derandomize=not EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip
@given(case=cases())
def test_random_cases_match_fp64_recurrence(case, nan_poison):
    check_case(case)


@st.composite
def gpu_cases(draw) -> Case:
    """Shapes of real calls, where the GPU picks the layout (`segment_plan`, `auto_parallel`): sequences up to 2100
    steps (the chunk-parallel kernels from 1024), heads up to 512, default knobs."""
    S = draw(st.one_of(st.sampled_from([1, 63, 64, 65, 1000, 1024, 1100, 2048]), st.integers(1, 2100)))
    dims = st.one_of(st.sampled_from([64, 128, 256, 512]), st.integers(16, 512))
    DQK, DHV = draw(dims), draw(dims)
    heads = max(1, min(16, 2**27 // (S * DQK * DHV)))  # B * NH: the fp64 reference's stored states stay a few GB
    B = draw(st.integers(1, min(4, heads)))
    return Case(B=B, NH=draw(st.integers(1, max(1, min(4, heads // B)))), S=S, DQK=DQK, DHV=DHV, chunk_size=64,
                dtype=draw(st.sampled_from([torch.float32, torch.bfloat16, torch.float16])),
                i_mean=draw(st.sampled_from([0.0, -10.0])), with_states=draw(st.booleans()),
                last_states=draw(st.booleans()), detach=False, grad=draw(st.booleans()), strided=draw(st.booleans()),
                layout="auto", seed=draw(st.integers(0, 2**16)))  # fmt: skip


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@settings(max_examples=EXAMPLES or 24, derandomize=not EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip
@given(case=gpu_cases())
def test_random_gpu_cases_match_fp64_reference(case, nan_poison):
    """As on the CPU, with the shapes and layouts of real calls on the device (the compiled kernels' pipelining and
    tile choices differ from the interpreter's)."""
    errors = check_case(case)
    print(case, " ".join(f"{k}={v:.1e}" for k, v in errors.items()))


def test_every_knob_exists_and_each_listed_value_differs_from_its_default():
    for (module, name), values in KNOBS.items():
        default = getattr(module, name)
        assert values and all(value != default for value in values), (module.__name__, name, default, values)
    for settings_ in LAYOUTS.values():
        assert all(hasattr(module, name) for module, name in settings_)


@st.composite
def step_cases(draw) -> dict:
    dims = st.one_of(st.sampled_from([16, 64, 128, 256]), st.integers(16, 160))
    return dict(B=draw(st.integers(1, 3)), NH=draw(st.integers(1, 3)), S=draw(st.integers(1, 6)), DQK=draw(dims),
                DHV=draw(dims), dtype=draw(st.sampled_from([torch.float32, torch.bfloat16, torch.float16])),
                i_mean=draw(st.sampled_from([0.0, -10.0])), with_states=draw(st.booleans()),
                seed=draw(st.integers(0, 2**16)))  # fmt: skip


@settings(max_examples=EXAMPLES or 16, derandomize=not EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip
@given(case=step_cases())
def test_step_rollouts_match_fp64_recurrence(case, nan_poison):
    """S calls of mlstm_step--triton, each on the states the last one returned (None at first without initial
    states), against the fp64 recurrence over the same S steps: every h and the final states."""
    g = torch.Generator().manual_seed(case["seed"])
    B, NH, S, DQK, DHV, dtype = (case[x] for x in ("B", "NH", "S", "DQK", "DHV", "dtype"))
    randn = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    q, k, v = (randn(B, NH, S, d).to(dtype).double() for d in (DQK, DQK, DHV))
    i, f = randn(B, NH, S) + case["i_mean"], randn(B, NH, S) + 2.0
    states = [randn(B, NH, DQK, DHV), randn(B, NH, DQK), randn(B, NH, 1)]
    zeros = [torch.zeros_like(x) for x in states]
    h_ref, last_ref, _ = naive_mlstm(q, k, v, i, f, *(states if case["with_states"] else zeros))
    step = get_kernel("mlstm_step--triton")
    state = [x.float().to(DEVICE) for x in states] if case["with_states"] else [None] * 3
    hs = []
    for t in range(S):
        args = [x[:, :, t].to(DEVICE) for x in (q, k, v)]
        h_t, state = step(*(x.to(dtype) for x in args), i[:, :, t].float().to(DEVICE), f[:, :, t].float().to(DEVICE),
                          *state)  # fmt: skip
        assert h_t.dtype == dtype and all(x.dtype == torch.float32 for x in state)
        hs.append(h_t)
    tol = TOL[dtype][0]
    assert_close("h", h_ref, torch.stack(hs, dim=2), max(tol, rounding_floor(h_ref, dtype)))
    for name, ref, out in zip("Cnm", last_ref, state, strict=True):
        tol = TOL[torch.float32][0] if dtype == torch.float32 else tol
        assert_close(name, ref, out.view(ref.shape), stabilizer_tol(ref, tol) if name == "m" else tol)
