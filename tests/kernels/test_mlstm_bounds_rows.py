"""BOUNDS_ROWS_FIRST / BOUNDS_GATES_FIRST: the backward / forward boundary walks reading each chunk's factors from
one parallel pass (`triton_chunkwise_bounds_rows.py`) instead of forming them in their sequential loops: every output
and gradient against fp64 (both gate regimes, initial states, upstream gradients on the last C, n and m, two DQK and
two DHV blocks of the walks), and against the walks that form them themselves."""

import pytest
import torch

from xlstm_ts.kernels import get_kernel
from xlstm_ts.kernels._launches import LaunchCounter
from xlstm_ts.kernels._testing import TOLERANCES, assert_close
from xlstm_ts.kernels._testing_mlstm import (
    TOL,
    check_triton,
    compare_mlstm,
    dm0_terms,
    mlstm_leaves,
    mlstm_upstream,
    run_mlstm,
)

parallel_bwd = pytest.importorskip("xlstm_ts.kernels.mlstm.triton_chunkwise_parallel_bwd")
segments = pytest.importorskip("xlstm_ts.kernels.mlstm.triton_chunkwise_segments")


@pytest.fixture
def walk_in_blocks(parallel_forward, nan_poison, monkeypatch):
    """Segments of one chunk (the chunk-parallel kernels), the boundary walk in (16, 16) blocks, 4 warps."""
    monkeypatch.setattr(segments, "SEGMENT_CHUNKS_OVERRIDE", 1)
    monkeypatch.setattr(segments, "BOUNDS_BLOCKS_OVERRIDE", (16, 16))
    monkeypatch.setattr(parallel_bwd, "NUM_WARPS", 4)
    return monkeypatch


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("with_states", [False, True], ids=["zero-state", "initial-state"])
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
def test_walk_from_rows_matches_fp64_reference(i_mean, with_states, dtype, walk_in_blocks):
    walk_in_blocks.setattr(parallel_bwd, "BOUNDS_ROWS_FIRST", True)
    torch.manual_seed(31)
    with LaunchCounter() as launches:
        check_triton(1, 2, 61, 24, 40, i_mean, with_states, dtype=dtype, rounded=True)
    names = str(launches.summary())
    assert "_mlstm_bounds_rows_kernel_tl" in names and "_mlstm_bounds_bwd_kernel_tl" in names
    assert "_mlstm_row_dots_kernel_tl" not in names  # the pass sums <dh, h> itself


@pytest.mark.parametrize("detach", [False, True], ids=["true-gradients", "detached-normalizer"])
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
def test_walk_from_rows_equals_the_walk_forming_them(i_mean, detach, walk_in_blocks):
    """fp32, the same leaves with and without the pass: every gradient within fp32 rounding of the other's (the
    factors are the same products, associated differently)."""
    torch.manual_seed(32)
    leaves = mlstm_leaves(1, 2, 50, 40, 24, i_mean, True)
    upstream = mlstm_upstream(1, 2, 50, 40, 24)
    fn = get_kernel("mlstm_chunkwise--triton")
    runs = {}
    for first in (False, True):
        walk_in_blocks.setattr(parallel_bwd, "BOUNDS_ROWS_FIRST", first)
        runs[first] = run_mlstm(fn, leaves, upstream, torch.float32, chunk_size=16, detach_normalizer=detach)
    for name, a, b in zip(("dq", "dk", "dv", "di", "df", "dC0", "dn0", "dm0"), runs[False][1], runs[True][1],
                          strict=True):  # fmt: skip
        assert_close(name, a, b, TOLERANCES["float32-ieee-grad"].ratio)


@pytest.mark.parametrize("first", [False, True], ids=["walk-forms-factors", "factors-first"])
@pytest.mark.parametrize(
    "spike,eps", [(None, 1e-2), (40, 1e-6)], ids=["forget-branch-throughout", "input-branch-at-step-40"]
)
def test_stabilizer_route_across_chunks_matches_fp64_reference(spike, eps, first, walk_in_blocks):
    """Weak input gates (i~ ~ -10) and forget gates near 1 (f~ ~ 8) from an initial state: every m_t takes the
    forget branch, so the gradient on the last m and eps's terms (eps = 1e-2 to be seen) reach m0 through every
    chunk of the boundary walk; with i~ = 2.5 at step 40 (the input branch) the route stops there, at that step's
    i~ (eps 1e-6: with 1e-2 the fp32 recurrence itself is 1e-5 off there). fp32 against fp64."""
    walk_in_blocks.setattr(parallel_bwd, "BOUNDS_ROWS_FIRST", first)
    torch.manual_seed(33)
    leaves = mlstm_leaves(1, 2, 75, 24, 40, -10.0, True)
    with torch.no_grad():
        leaves[4] += 6.0
        if spike is not None:
            leaves[3][..., spike] = 2.5
    upstream = mlstm_upstream(1, 2, 75, 24, 40)
    kw = {"chunk_size": 16, "eps": eps}
    ref = run_mlstm(get_kernel("mlstm_chunkwise--torch"), leaves, upstream, torch.float64, **kw)
    out = run_mlstm(get_kernel("mlstm_chunkwise--triton"), leaves, upstream, torch.float32, **kw)
    compare_mlstm(ref, out, *TOL[torch.float32], dm0_terms=dm0_terms(leaves, ref[1]))


@pytest.mark.parametrize("cps", [1, 2], ids=["chunk-parallel", "2-chunk-segments"])
@pytest.mark.parametrize("with_states", [False, True], ids=["zero-state", "initial-state"])
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
def test_forward_walk_from_gate_terms_matches_fp64_reference(i_mean, with_states, cps, walk_in_blocks):
    """BOUNDS_GATES_FIRST: the forward boundary walk reads each chunk's gate terms from one parallel pass; every
    output, last state and gradient against fp64 (fp32, a sequence ending mid-chunk)."""
    walk_in_blocks.setattr(segments, "SEGMENT_CHUNKS_OVERRIDE", cps)
    walk_in_blocks.setattr(segments, "BOUNDS_GATES_FIRST", True)
    torch.manual_seed(34)
    with LaunchCounter() as launches:
        check_triton(1, 2, 70, 24, 40, i_mean, with_states)
    assert "_mlstm_bounds_gates_kernel_tl" in str(launches.summary())


def test_forward_walk_from_gate_terms_equals_the_walk_forming_them(walk_in_blocks):
    """fp32, the same leaves with and without the pass: outputs, last states and gradients within fp32 rounding."""
    torch.manual_seed(35)
    leaves = mlstm_leaves(2, 1, 75, 40, 24, 0.0, True)
    upstream = mlstm_upstream(2, 1, 75, 40, 24)
    fn = get_kernel("mlstm_chunkwise--triton")
    runs = {}
    for first in (False, True):
        walk_in_blocks.setattr(segments, "BOUNDS_GATES_FIRST", first)
        runs[first] = run_mlstm(fn, leaves, upstream, torch.float32, chunk_size=16)
    tol = TOLERANCES["float32-ieee-grad"].ratio
    for name, a, b in zip(("h", "C", "n", "m"), runs[False][0], runs[True][0], strict=True):
        assert_close(name, a, b, tol)
    for name, a, b in zip(("dq", "dk", "dv", "di", "df", "dC0", "dn0", "dm0"), runs[False][1], runs[True][1],
                          strict=True):  # fmt: skip
        assert_close(name, a, b, tol)
