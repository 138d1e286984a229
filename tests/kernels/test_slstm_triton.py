"""slstm--triton against the fp64 slstm--torch reference: outputs, last states and gradients of wx, r, b and the
initial states (exact chain rule, including the branch of the stabilizer max), plus GPU shapes/dtypes.

Without CUDA the kernels run in the Triton interpreter (set in conftest.py), on tiny shapes in float32.
"""

import pytest
import torch

from xlstm_ts.kernels import get_kernel
from xlstm_ts.kernels._testing import TOLERANCES, assert_close, slstm_tie_free

pytest.importorskip("triton")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
OUT_NAMES = ["h", "h_last", "c_last", "n_last", "m_last"]
GRAD_NAMES = ["dwx", "dr", "db", "dh0", "dc0", "dn0", "dm0"]
TOL = {
    torch.float32: (TOLERANCES["float32-ieee"].ratio, TOLERANCES["float32-ieee-grad"].ratio),
    torch.bfloat16: (TOLERANCES["bfloat16"].ratio, TOLERANCES["bfloat16-triton-grad"].ratio),
}


@pytest.fixture(params=["kernel", "host"], ids=["dR-in-kernel", "dR-on-host"])
def weight_grads(request, monkeypatch):
    """Runs a test with dR and db summed by the backward kernel and by the host (the dispatch is forced; the
    kernel path needs DH <= 64)."""
    from xlstm_ts.kernels.slstm import triton_slstm

    in_kernel = request.param == "kernel"
    monkeypatch.setattr(triton_slstm, "_weight_grads_in_kernel", lambda dtype, BD, programs: in_kernel and BD <= 64)
    return request.param


def _leaves(B, S, NH, DH, with_states, f_bias=0.0):
    kw = {"dtype": torch.float64, "device": DEVICE}
    wx = torch.randn(B, S, 4, NH, DH, **kw)  # (B, S, 4, NH, DH)
    wx[:, :, 1] += f_bias
    leaves = [wx, torch.randn(NH, 4, DH, DH, **kw) / DH**0.5, torch.randn(NH, 4, DH, **kw)]
    if with_states:
        h, c, n, m = (torch.randn(B, NH, DH, **kw) for _ in range(4))
        leaves += [h, c, n.abs() + 0.5, m]  # n > 0, as any state the sLSTM produces
    return [x.requires_grad_() for x in leaves]


def _run(fn, leaves, upstream, dtype):
    cast = [x.to(dtype) for x in leaves]
    states = tuple(cast[3:]) if len(cast) > 3 else None
    out, last = fn(*cast[:3], initial_states=states, return_last_states=True)
    outs = [out, *last]
    loss = sum((o.double() * u).sum() for o, u in zip(outs, upstream, strict=True))
    return outs, torch.autograd.grad(loss, leaves)


def _compare(ref, out, tol_out, tol_grad):
    errors = {}
    for name, a, b in zip(OUT_NAMES, ref[0], out[0], strict=True):
        errors[name] = assert_close(name, a, b, tol_out)
    for name, a, b in zip(GRAD_NAMES[: len(ref[1])], ref[1], out[1], strict=True):
        errors[name] = assert_close(name, a, b, tol_grad)
    return errors


def _upstream(B, S, NH, DH):
    shapes = [(B, S, NH, DH)] + [(B, NH, DH)] * 4
    return [torch.randn(s, dtype=torch.float64, device=DEVICE) for s in shapes]


@pytest.mark.parametrize("with_states", [False, True], ids=["zero-state", "initial-state"])
# DH=80 pads to 128 and takes the RELOAD_R path (recurrent matrices re-read one gate at a time)
@pytest.mark.parametrize(
    "B,S,NH,DH", [(3, 1, 2, 12), (3, 6, 2, 12), (17, 4, 1, 16), (2, 3, 1, 80)], ids=lambda x: str(x)
)
def test_slstm_triton_matches_fp64_reference(B, S, NH, DH, with_states, weight_grads, nan_poison):
    torch.manual_seed(42)
    leaves = _leaves(B, S, NH, DH, with_states)
    upstream = _upstream(B, S, NH, DH)
    ref = _run(get_kernel("slstm--torch"), leaves, upstream, torch.float64)
    out = _run(get_kernel("slstm--triton"), leaves, upstream, torch.float32)
    assert out[0][0].dtype == torch.float32
    _compare(ref, out, *TOL[torch.float32])


def test_slstm_triton_state_passing(nan_poison):
    torch.manual_seed(42)
    wx, r, b = (x.detach().float() for x in _leaves(2, 7, 2, 16, with_states=False))
    kernel = get_kernel("slstm--triton")
    h_all, states_all = kernel(wx, r, b, return_last_states=True)
    h1, states = kernel(wx[:, :3], r, b, return_last_states=True)
    h2, states2 = kernel(wx[:, 3:], r, b, initial_states=states, return_last_states=True)
    assert_close("h", h_all, torch.cat([h1, h2], dim=1), TOLERANCES["float32-ieee"].ratio)
    for name, a, c in zip("hcnm", states_all, states2, strict=True):
        assert_close(name, a, c, TOLERANCES["float32-ieee"].ratio)


def test_slstm_triton_input_errors():
    wx, r, b = torch.randn(1, 2, 4, 1, 16), torch.randn(1, 4, 16, 16), torch.randn(1, 4, 16)
    kernel = get_kernel("slstm--triton")
    with pytest.raises(ValueError, match="float32, bfloat16 or float16"):
        kernel(wx.double(), r, b)
    with pytest.raises(ValueError, match="DH <= 128"):
        kernel(torch.randn(1, 2, 4, 1, 130), torch.randn(1, 4, 130, 130), torch.randn(1, 4, 130))


def _check_input_dtype(B, NH, DH, S, dtype, kernel="slstm--triton"):
    """Kernel in `dtype` (wx cast, r, b and the states fp32) against the fp64 reference on the same rounded wx."""
    torch.manual_seed(42)
    leaves = _leaves(B, S, NH, DH, with_states=True, f_bias=3.0)
    # bf16: the reference sees the same rounded wx; r, b and the states stay fp64 on both sides. No step's
    # stabilizer max is within rounding of a tie, where the gradient's branch is the rounding's choice
    leaves[0] = slstm_tie_free(leaves[0], leaves[1], leaves[2], leaves[3:], dtype).requires_grad_()
    upstream = _upstream(B, S, NH, DH)
    ref = _run(get_kernel("slstm--torch"), leaves, upstream, torch.float64)
    cast = [leaves[0].to(dtype)] + [x.float() for x in leaves[1:]]
    out, last = get_kernel(kernel)(*cast[:3], initial_states=tuple(cast[3:]), return_last_states=True)
    assert out.dtype == dtype
    outs = [out, *last]
    loss = sum((o.double() * u).sum() for o, u in zip(outs, upstream, strict=True))
    grads = torch.autograd.grad(loss, leaves)
    return _compare(ref, (outs, grads), *TOL[dtype])


# in the kernel path the gate gradients are written in bf16; DH 80 always sums dR, db on the host, and runs fp16
# recurrent matrices on chip (slstm--triton) or fp32 ones re-read from memory with TF32 dots (slstm--triton_fp32r)
@pytest.mark.parametrize("kernel", ["slstm--triton", "slstm--triton_fp32r"])
@pytest.mark.parametrize("B,NH,DH,S", [(17, 2, 16, 5), (3, 1, 80, 2)], ids=lambda x: str(x))
def test_slstm_triton_bf16_matches_fp64_reference(B, NH, DH, S, kernel, weight_grads, nan_poison):
    _check_input_dtype(B, NH, DH, S, torch.bfloat16, kernel)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("S", [1, 63, 100, 257])
@pytest.mark.parametrize("B,NH,DH", [(37, 4, 32), (16, 2, 48), (8, 2, 128)], ids=lambda x: str(x))
def test_slstm_triton_gpu(B, NH, DH, S, dtype, weight_grads):
    errors = _check_input_dtype(B, NH, DH, S, dtype)
    shown = " ".join(f"{k}={v:.1e}" for k, v in errors.items())
    print(f"slstm dR/db on {weight_grads} B={B} NH={NH} DH={DH} S={S} {dtype}: {shown}")


def test_weight_grads_in_kernel_dispatch():
    from xlstm_ts.kernels.slstm.triton_slstm import _weight_grads_in_kernel

    assert _weight_grads_in_kernel(torch.bfloat16, 32, 256)  # the forecaster's (1024, 64, 128, 4) under autocast
    assert not _weight_grads_in_kernel(torch.float32, 32, 256)
    assert not _weight_grads_in_kernel(torch.bfloat16, 64, 16)  # few programs: (64, 512, 256, 4)
    assert not _weight_grads_in_kernel(torch.bfloat16, 128, 256)  # R re-read from memory, no room
