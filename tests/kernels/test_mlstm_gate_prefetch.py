"""The gate prefetch of the chunk-walking mLSTM kernels: the plain forward (`triton_chunkwise.FWD_GATE_PREFETCH`)
and the forward boundary kernel (`triton_chunkwise_segments.BOUNDS_GATE_PREFETCH`) load the next chunk's gates while
they work on the current one, the backward boundary kernel given <dh, h> (`BOUNDS_BWD_PREFETCH`, the chunk-parallel
layout) the next chunk's rows. Same instructions on the same values, so outputs, last states and gradients must be
bit-identical with the prefetch on and off, over sequences that end inside a chunk (the prefetch past the end is
masked), in every layout that runs those kernels; and the launches must carry the flag as set.
"""

import pytest
import torch

from xlstm_ts.kernels import get_kernel
from xlstm_ts.kernels._testing_mlstm import DEVICE, mlstm_leaves, mlstm_upstream, run_mlstm
from xlstm_ts.kernels.mlstm import triton_chunkwise as chunkwise
from xlstm_ts.kernels.mlstm import triton_chunkwise_parallel as parallel
from xlstm_ts.kernels.mlstm import triton_chunkwise_parallel_bwd as parallel_bwd
from xlstm_ts.kernels.mlstm import triton_chunkwise_segments as segments

pytest.importorskip("triton")

TRITON = get_kernel("mlstm_chunkwise--triton")

# (segments of this many chunks or None: the plain walk, the chunk-parallel forward)
LAYOUTS = {"plain": (None, False), "2-chunk-segments": (2, False), "chunk-parallel": (1, True)}


def _set_prefetch(monkeypatch, on: bool) -> None:
    monkeypatch.setattr(chunkwise, "FWD_GATE_PREFETCH", on)
    monkeypatch.setattr(segments, "BOUNDS_GATE_PREFETCH", on)
    monkeypatch.setattr(segments, "BOUNDS_BWD_PREFETCH", on)
    monkeypatch.setattr(parallel_bwd, "BOUNDS_ROWS_FIRST", False)  # the walk that loads its rows itself


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
@pytest.mark.parametrize("with_states", [False, True], ids=["zero-state", "initial-state"])
@pytest.mark.parametrize("B,NH,S,DQK,DHV", [(1, 2, 37, 16, 24), (2, 1, 70, 24, 16)], ids=lambda x: str(x))
def test_prefetch_is_bit_identical(B, NH, S, DQK, DHV, i_mean, with_states, layout, monkeypatch, nan_poison):
    chunks, together = LAYOUTS[layout]
    monkeypatch.setattr(segments, "SEGMENT_CHUNKS_OVERRIDE", chunks)
    monkeypatch.setattr(parallel, "PARALLEL_FORWARD", together)
    torch.manual_seed(3)
    leaves = mlstm_leaves(B, NH, S, DQK, DHV, i_mean, with_states)
    upstream = mlstm_upstream(B, NH, S, DQK, DHV)
    runs = []
    for on in (False, True):
        _set_prefetch(monkeypatch, on)
        outs, grads = run_mlstm(TRITON, leaves, upstream, torch.float32, chunk_size=16)
        with torch.no_grad():  # the forward without gradients (the chunk-parallel one where asked for)
            h = TRITON(*[x.detach().float() for x in leaves[:5]], chunk_size=16)
        runs.append([*outs, *[g for g in grads if g is not None], h])
    assert all(torch.isfinite(x).all() for x in runs[1])
    for off, on in zip(*runs, strict=True):
        assert torch.equal(off, on)


@pytest.mark.parametrize("on", [False, True])
def test_launches_carry_the_prefetch_flag(on, monkeypatch):
    """The plain forward (several chunks) and the boundary kernels are launched with PREFETCH as the knobs say (the
    backward one where it reads <dh, h> per step: the chunk-parallel layout)."""
    from triton.runtime.jit import KernelInterface

    launched = {}
    original = KernelInterface.__getitem__

    def spy(kernel, grid):
        def launch(*args, **meta):
            launched[getattr(kernel, "__name__", str(kernel))] = meta.get("PREFETCH")
            return original(kernel, grid)(*args, **meta)

        return launch

    _set_prefetch(monkeypatch, on)
    monkeypatch.setattr(KernelInterface, "__getitem__", spy)
    monkeypatch.setattr(segments, "SEGMENT_CHUNKS_OVERRIDE", 2)
    x = [t.float().to(DEVICE) for t in mlstm_leaves(1, 1, 70, 16, 16, 0.0, False)[:5]]
    with torch.no_grad():
        TRITON(*x, chunk_size=16)
    assert launched["_mlstm_chunkwise_fwd_kernel_tl"] is on
    assert launched["_mlstm_bounds_fwd_kernel_tl"] is on
    monkeypatch.setattr(segments, "SEGMENT_CHUNKS_OVERRIDE", 1)
    monkeypatch.setattr(parallel, "PARALLEL_FORWARD", True)
    x = [t.requires_grad_() for t in x]
    TRITON(*x, chunk_size=16).sum().backward()
    assert launched["_mlstm_bounds_bwd_kernel_tl"] is on


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("with_states", [False, True], ids=["zero-state", "initial-state"])
def test_backward_row_prefetch_is_bit_identical_gpu(with_states, monkeypatch):
    """The default rule's chunk-parallel layout (128-wide heads, 1100 steps, bf16): every gradient bit-identical with
    the backward boundary kernel's row prefetch on and off."""
    torch.manual_seed(4)
    leaves = mlstm_leaves(2, 2, 1100, 128, 128, 0.0, with_states)  # q, k, v, i, f in bf16, states in fp32
    leaves = [x if x is None else x.detach().to("cuda", torch.bfloat16 if n < 5 else torch.float32)
              for n, x in enumerate(leaves)]  # fmt: skip
    grads = []
    for on in (False, True):
        monkeypatch.setattr(segments, "BOUNDS_BWD_PREFETCH", on)
        monkeypatch.setattr(parallel_bwd, "BOUNDS_ROWS_FIRST", False)
        xs = [x if x is None else x.clone().requires_grad_() for x in leaves]
        TRITON(*xs, chunk_size=64).float().square().sum().backward()
        grads.append([x.grad for x in xs if x is not None])
    assert all(torch.isfinite(g).all() for g in grads[1])
    for off, on in zip(*grads, strict=True):
        assert torch.equal(off, on)
