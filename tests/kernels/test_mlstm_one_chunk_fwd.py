"""The one-chunk mLSTM forward in blocks of steps (`triton_one_chunk_fwd.py`): forwards of one chunk from zero states
without last states. Checked against the fp64 torch reference on the same rounded inputs (tolerance table), and
against the general forward kernel it replaces (same dot modes, so they differ by summation order only), through h
and through the gradients of the backward that reads its z and m; for chunks of one block and of two (S > 32), S not
a multiple of 16, both gate regimes, fp32 and bf16, one program per head and persistent programs walking several
heads; and that only the calls it covers take it.

Without CUDA the kernels run in the Triton interpreter (set in conftest.py); the GPU test runs the shapes of a patched
forecaster's blocks.
"""

import pytest
import torch

from xlstm_ts.kernels import get_kernel
from xlstm_ts.kernels._testing import TOLERANCES, assert_close, make_mlstm_inputs, make_mlstm_states, tolerance
from xlstm_ts.kernels.mlstm import triton_one_chunk_fwd as one_fwd

pytest.importorskip("triton")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NAMES = ["h", "dq", "dk", "dv", "di", "df"]


def _run(leaves, dh, dtype, enabled, monkeypatch, per_sm=None, launches=None, min_dqk=16):
    """h and the gradients of sum(h * dh) of mlstm_chunkwise--triton in `dtype`, with the blocked forward on or off
    (`per_sm`: persistent programs per SM); counts its launches into `launches`."""
    monkeypatch.setattr(one_fwd, "ENABLED", enabled)
    monkeypatch.setattr(one_fwd, "MIN_DQK", min_dqk)
    monkeypatch.setattr(one_fwd, "PER_SM", per_sm)
    monkeypatch.setattr(one_fwd, "DTYPES", (dtype,))
    if launches is not None:
        launch = one_fwd._FWD_ONE._launch
        monkeypatch.setattr(one_fwd._FWD_ONE, "_launch", lambda *a: (launches.append(a[0]), launch(*a))[1])
    x = [t.detach().to(dtype).requires_grad_() for t in leaves]
    h = get_kernel("mlstm_chunkwise--triton")(*x, chunk_size=64)
    grads = torch.autograd.grad(h, x, dh.to(h.dtype))
    monkeypatch.undo()
    return [h, *grads]


def _check(B, NH, S, DQK, DHV, i_mean, dtype, monkeypatch, per_sm=None, min_dqk=16):
    torch.manual_seed(S + DQK)
    leaves = [t.to(dtype).double().to(DEVICE) for t in make_mlstm_inputs(B, NH, S, DQK, DHV, i_mean=i_mean)]
    dh = torch.randn(B, NH, S, DHV, dtype=torch.float64, device=DEVICE).to(dtype).double()
    launches = []
    new = _run(leaves, dh, dtype, True, monkeypatch, per_sm=per_sm, launches=launches, min_dqk=min_dqk)
    assert len(launches) == 1
    old = _run(leaves, dh, dtype, False, monkeypatch)
    x = [t.clone().requires_grad_() for t in leaves]
    h = get_kernel("mlstm_chunkwise--torch")(*x, chunk_size=64)
    ref = [h, *torch.autograd.grad(h, x, dh)]
    for n, (name, a, b, c) in enumerate(zip(NAMES, ref, new, old)):
        assert torch.isfinite(b).all(), name
        assert_close(name, a, b, tolerance(dtype, grad=n > 0) if dtype != torch.bfloat16 or n == 0
                     else TOLERANCES["bfloat16-triton-grad"].ratio)  # fmt: skip
        # the general kernel on the same inputs: the same dots, other summation orders (df's cancelling sums most)
        assert_close(f"{name} against the general kernel", c.double(), b.double(), 2e-3)
    return launches[0]


@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
@pytest.mark.parametrize("S", [13, 32, 40, 64], ids=lambda s: f"S={s}")
def test_blocks_match_fp64_and_the_general_kernel(S, i_mean, monkeypatch, nan_poison):
    _check(2, 2, S, 16, 24, i_mean, torch.bfloat16, monkeypatch)


def test_fp32_two_blocks(monkeypatch, nan_poison):
    _check(1, 2, 57, 16, 16, 0.0, torch.float32, monkeypatch)


@pytest.mark.parametrize("S", [30, 64], ids=lambda s: f"S={s}")
def test_persistent_programs_walk_every_head(S, monkeypatch, nan_poison):
    """Two programs per SM (two SMs off CUDA) over 2 * 3 heads: each program takes several heads in its loop."""
    programs = _check(2, 3, S, 16, 16, 0.0, torch.bfloat16, monkeypatch, per_sm=2)[0]
    assert programs < 2 * 3 or DEVICE == "cuda"


def test_heads_of_64_take_it_when_enabled(monkeypatch, nan_poison):
    """The default head rule (`MIN_DQK`): heads of 64, the patched forecasters' blocks, in two blocks of steps."""
    _check(1, 1, 40, 64, 64, 0.0, torch.bfloat16, monkeypatch, min_dqk=one_fwd.MIN_DQK)


@pytest.mark.parametrize(
    "case", ["initial-state", "last-states", "two-chunks", "narrow-heads", "wide-values", "fp32"], ids=lambda c: c
)  # fmt: skip
def test_other_calls_keep_the_general_kernel(case, monkeypatch):
    """With the kernel enabled, initial states, returned last states, several chunks, (by default) heads
    narrower than MIN_DQK, values wider than one DHV block and (by default) fp32 inputs run the general forward."""
    torch.manual_seed(0)
    monkeypatch.setattr(one_fwd, "ENABLED", True)
    if case != "narrow-heads":
        monkeypatch.setattr(one_fwd, "MIN_DQK", 16)
    DHV = 80 if case == "wide-values" else 16
    dtype = torch.float32 if case == "fp32" else torch.bfloat16
    leaves = [t.to(DEVICE, dtype).requires_grad_() for t in make_mlstm_inputs(1, 2, 40, 16, DHV)]
    states = [s.to(DEVICE) for s in make_mlstm_states(1, 2, 16, DHV)] if case == "initial-state" else [None] * 3
    launches = []
    launch = one_fwd._FWD_ONE._launch
    monkeypatch.setattr(one_fwd._FWD_ONE, "_launch", lambda *a: (launches.append(1), launch(*a))[1])
    out = get_kernel("mlstm_chunkwise--triton")(
        *leaves, *states, return_last_states=case == "last-states", chunk_size=16 if case == "two-chunks" else 64
    )  # fmt: skip
    h = out[0] if case == "last-states" else out
    assert launches == []
    assert torch.isfinite(h).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("per_sm", [None, 4], ids=["per-head", "persistent"])
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
@pytest.mark.parametrize("S,DH", [(64, 64), (32, 64), (47, 64)], ids=lambda x: str(x))
def test_blocks_on_gpu(S, DH, i_mean, per_sm, monkeypatch):
    """Persistent: 2048 heads on at most 4 programs per SM, several heads per program."""
    _check(64 if per_sm is None else 512, 4, S, DH, DH, i_mean, torch.bfloat16, monkeypatch, per_sm=per_sm)


@pytest.mark.parametrize("enabled", [True, False], ids=["default", "disabled"])
def test_defaults_take_it_for_bf16_heads_of_64(enabled, monkeypatch):
    """With the module's defaults a bf16 forward of one chunk with heads of 64 (the patched forecasters' blocks,
    training) runs this kernel; with `ENABLED` off the same call runs the general forward."""
    if not enabled:
        monkeypatch.setattr(one_fwd, "ENABLED", False)
    launches = []
    launch = one_fwd._FWD_ONE._launch
    monkeypatch.setattr(one_fwd._FWD_ONE, "_launch", lambda *a: (launches.append(1), launch(*a))[1])
    leaves = [t.to(DEVICE, torch.bfloat16).requires_grad_() for t in make_mlstm_inputs(1, 1, 40, 64, 64)]
    h = get_kernel("mlstm_chunkwise--triton")(*leaves, chunk_size=64)
    assert launches == ([1] if enabled else []) and torch.isfinite(h).all()
