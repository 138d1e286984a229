"""slstm--triton with 65-128-wide heads (recurrent_fp16, the default): the recurrent matrices on chip in fp16, the
h @ R and dg @ R^T dots on power-of-two-scaled fp16 operands (fp32 accumulation), for bf16/fp16 inputs and fp32
inputs under TF32; slstm--triton_fp32r re-reads fp32 matrices instead.

Inputs keep every step's stabilizer max off its ties (`slstm_tie_free`): at a tie the branch, and with it where a
few entries of the gradient go, is decided by rounding, for the fp32 path as for this one.

Without CUDA the kernels run in the Triton interpreter with the fp16 operands emulated in fp32 (the same rounded
values, exact products). The scales are checked where unscaled fp16 fails: recurrent weights below fp16's normal
range and gate gradients above its largest value or below its smallest.
"""

import pytest
import torch

from xlstm_ts.kernels import get_kernel
from xlstm_ts.kernels._testing import TOLERANCES, assert_close, slstm_tie_free

pytest.importorskip("triton")

from xlstm_ts.kernels.slstm import triton_slstm  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {  # (outputs and last states, gradients)
    torch.float32: (TOLERANCES["float32"].ratio, TOLERANCES["float32-grad"].ratio),
    torch.bfloat16: (TOLERANCES["bfloat16"].ratio, TOLERANCES["bfloat16-triton-grad"].ratio),
    torch.float16: (TOLERANCES["float16"].ratio, TOLERANCES["float16-grad"].ratio),
}


@pytest.fixture
def tf32():
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    yield
    torch.set_float32_matmul_precision(before)


def test_fp16_matrices_for_wide_heads_of_half_inputs_and_tf32(tf32):
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        assert triton_slstm._fp16_r(dtype, 128, allowed=True)
        assert not triton_slstm._fp16_r(dtype, 128, allowed=False)  # slstm--triton_fp32r keeps fp32 matrices
        assert not triton_slstm._fp16_r(dtype, 64, allowed=True)  # four fp32 matrices fit on chip
    torch.set_float32_matmul_precision("highest")
    assert not triton_slstm._fp16_r(torch.float32, 128, allowed=True)  # exact fp32 dots, matrices re-read from L2


_NAMES = ["h", "h_last", "c_last", "n_last", "m_last"], ["dwx", "dr", "db", "dh0", "dc0", "dn0", "dm0"]


def _errors(kernel, dtype, B, S, NH, DH, r_scale=1.0, grad_scale=1.0):
    """Error ratios (outputs and last states, gradients) of `kernel` in dtype against the fp64 reference on the same
    rounded wx; r scaled by r_scale, the upstream gradients by grad_scale."""
    torch.manual_seed(7)
    kw = {"dtype": torch.float64, "device": DEVICE}
    wx = torch.randn(B, S, 4, NH, DH, **kw)  # (B, S, 4, NH, DH)
    wx[:, :, 1] += 3.0  # forget gates mostly open: long memory
    r = (r_scale * torch.randn(NH, 4, DH, DH, **kw) / DH**0.5).requires_grad_()  # (NH, 4, DH, DH)
    b = torch.randn(NH, 4, DH, **kw).requires_grad_()  # (NH, 4, DH)
    states = [torch.randn(B, NH, DH, **kw) for _ in range(4)]
    states[2] = states[2].abs() + 0.5  # n > 0
    states = [x.requires_grad_() for x in states]
    # rounded to dtype, and no step's stabilizer max within rounding of a tie (see slstm_tie_free)
    wx = slstm_tie_free(wx, r, b, states, dtype).requires_grad_()
    leaves = [wx, r, b, *states]
    upstream = [grad_scale * torch.randn(s, **kw) for s in [(B, S, NH, DH)] + [(B, NH, DH)] * 4]

    def run(name, cast):
        out, last = get_kernel(name)(cast(wx, True), cast(r), cast(b), tuple(cast(x) for x in states), True)
        outs = [out, *last]
        loss = sum((o.double() * u).sum() for o, u in zip(outs, upstream, strict=True))
        return outs, torch.autograd.grad(loss, leaves)

    ref = run("slstm--torch", lambda x, _=False: x)
    out = run(kernel, lambda x, is_wx=False: x.to(dtype) if is_wx else x.float())
    return [
        {n: assert_close(n, a, c, float("inf")) for n, a, c in zip(names, ref_part, out_part, strict=True)}
        for names, ref_part, out_part in zip(_NAMES, ref, out, strict=True)
    ]


def _check(dtype, B, S, NH, DH, r_scale=1.0, grad_scale=1.0):
    """slstm--triton (fp16 matrices for these heads) within the tolerance table (all error ratios in the message);
    returns the ratios."""
    errors = _errors("slstm--triton", dtype, B, S, NH, DH, r_scale, grad_scale)
    text = " ".join(f"{k}={v:.1e}" for part in errors for k, v in part.items())
    for part, tol in zip(errors, TOL[dtype], strict=True):
        assert all(v <= tol for v in part.values()), f"error ratios above {tol:.0e}: {text}"
    return text


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=["bf16", "fp16", "fp32-tf32"])
@pytest.mark.parametrize("B,S,NH,DH", [(3, 5, 1, 80), (2, 3, 2, 128)], ids=lambda x: str(x))
def test_fp16_dots_match_fp64_reference(dtype, B, S, NH, DH, tf32, nan_poison):
    _check(dtype, B, S, NH, DH, r_scale=1.0, grad_scale=1.0)


# each case fails without its scale: r * 1e-6 (entries ~1e-7, fp16 subnormals) loses dh0, gate gradients of ~1e6
# overflow fp16 (max 65504), those of ~1e-7 flush to zero or subnormals
@pytest.mark.parametrize(
    "r_scale, grad_scale", [(1e-6, 1.0), (1.0, 1e6), (1.0, 1e-7)], ids=["tiny-r", "huge-dg", "tiny-dg"]
)
def test_fp16_operand_scales_keep_the_range(r_scale, grad_scale, nan_poison):
    _check(torch.bfloat16, 2, 4, 1, 80, r_scale, grad_scale)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=["bf16", "fp16", "fp32-tf32"])
@pytest.mark.parametrize("S", [1, 100, 257])
@pytest.mark.parametrize("B,NH,DH", [(8, 2, 128), (19, 1, 96)], ids=lambda x: str(x))
def test_fp16_dots_gpu(dtype, B, NH, DH, S, tf32):
    # the fp32-matrix path's errors on the same case, printed beside the fp16 path's (pytest -s)
    fp32_r = _errors("slstm--triton_fp32r", dtype, B, S, NH, DH)
    print(f"slstm--triton_fp32r B={B} NH={NH} DH={DH} S={S} {dtype}: " + " ".join(
        f"{k}={v:.1e}" for part in fp32_r for k, v in part.items()))  # fmt: skip
    print(f"slstm--triton (fp16 R): {_check(dtype, B, S, NH, DH)}")
