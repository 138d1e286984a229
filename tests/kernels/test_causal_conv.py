"""The causal-conv kernels against an fp64 reference: the Triton custom ops (forward, backward: dx, dw, db) on inputs
read through strides, sequences shorter and longer than a tile and not multiples of it, channel counts that are not
multiples of the channel block, with and without bias and SiLU, fp32 and bf16; the torch kernel against nn.Conv1d;
the custom ops' registration (schema, fake tensors, autograd) and a compiled graph around them."""

import pytest
import torch
import torch.nn.functional as F

from xlstm_ts.kernels import get_kernel
from xlstm_ts.kernels._testing import TOLERANCES, assert_close, tolerance

pytest.importorskip("triton")
triton_conv = pytest.importorskip("xlstm_ts.kernels.conv.triton_conv")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
REF = get_kernel("causal_conv--torch")
TRITON = get_kernel("causal_conv--triton")
# (B, T, C, K): T below, at and across the tiles of 8 and 16 steps (1, 5, 33, 37, 70); C across the 64-channel
# block (70, 130); 1 to 8 taps (the widest the Triton kernels take)
SHAPES = [(2, 37, 20, 4), (3, 5, 70, 2), (1, 1, 16, 4), (2, 70, 130, 3), (1, 33, 24, 1), (2, 21, 12, 8)]


def _inputs(B, T, C, K, bias, dtype, seed=0):
    """x as the first C columns of a (B, T, 2C) tensor (strided, as a projection's slice), weight (C, 1, K), bias."""
    gen = torch.Generator().manual_seed(seed)
    wide = torch.randn(B, T, 2 * C, generator=gen, dtype=torch.float64).to(DEVICE)
    weight = (torch.randn(C, 1, K, generator=gen, dtype=torch.float64) / K**0.5).to(DEVICE)
    b = torch.randn(C, generator=gen, dtype=torch.float64).to(DEVICE) if bias else None
    return wide.to(dtype), weight.float(), None if b is None else b.float()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("activation", [None, "silu"], ids=["linear", "silu"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("B,T,C,K", SHAPES, ids=lambda x: str(x))
def test_triton_conv_matches_fp64_reference(B, T, C, K, bias, activation, dtype, nan_poison):
    wide, weight, b = _inputs(B, T, C, K, bias, dtype)
    leaves = [wide.requires_grad_(), weight.requires_grad_()] + ([b.requires_grad_()] if bias else [])
    y = TRITON(wide[..., :C], weight, b, activation)
    assert y.dtype == dtype and y.shape == (B, T, C) and y.is_contiguous()
    ref_leaves = [x.detach().double().requires_grad_() for x in leaves]  # the reference sees the rounded inputs
    y_ref = REF(ref_leaves[0][..., :C], ref_leaves[1], ref_leaves[2] if bias else None, activation)
    dy = torch.randn(B, T, C, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(DEVICE)
    grads = torch.autograd.grad(y, leaves, dy.to(dtype))
    grads_ref = torch.autograd.grad(y_ref, ref_leaves, dy.to(dtype).double())
    exact = dtype == torch.float32  # no dots: fp32 sums only
    tol = TOLERANCES["float32-ieee"].ratio if exact else tolerance(dtype)
    tol_grad = TOLERANCES["float32-ieee-grad"].ratio if exact else tolerance(dtype, grad=True)
    assert_close("y", y_ref, y, tol)
    assert_close("dx", grads_ref[0][..., :C], grads[0][..., :C], tol_grad)
    assert torch.all(grads[0][..., C:] == 0)  # the columns the conv did not read get no gradient
    for name, ref, out in zip(("dw", "db"), grads_ref[1:], grads[1:]):
        assert out.dtype == torch.float32
        assert_close(name, ref, out, tol_grad)


@pytest.mark.parametrize("K", [1, 2, 4])
def test_torch_conv_matches_conv1d(K):
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(6, 6, K, groups=6).double()
    x = torch.randn(3, 9, 6, dtype=torch.float64)
    ref = F.silu(conv(F.pad(x.transpose(1, 2), (K - 1, 0))).transpose(1, 2))
    torch.testing.assert_close(REF(x, conv.weight, conv.bias, "silu"), ref)


def test_custom_ops_are_registered_correctly():
    """Schema, fake (meta) implementations and autograd registration checked by torch.library.opcheck."""
    wide, weight, b = _inputs(2, 20, 16, 4, True, torch.float32)
    x = wide[..., :16].requires_grad_()
    taps = weight[:, 0].contiguous().requires_grad_()
    torch.library.opcheck(triton_conv._conv, (x, taps, b.requires_grad_(), True))
    torch.library.opcheck(triton_conv._conv, (x, taps, None, False))


def test_traced_without_graph_break():
    """torch.compile traces through the op (fullgraph fails on a graph break) and the result matches eager."""
    wide, weight, b = _inputs(2, 20, 16, 4, True, torch.float32)
    x = wide[..., :16].requires_grad_()

    def f(x):
        return TRITON(x * 2.0, weight, b, "silu").sum()

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    out, out_eager = compiled(x), f(x)
    torch.testing.assert_close(out, out_eager)
    torch.testing.assert_close(torch.autograd.grad(out, x)[0], torch.autograd.grad(f(x), x)[0])


def test_conv_input_errors_say_what_was_expected():
    x = torch.randn(2, 5, 8, device=DEVICE)
    with pytest.raises(ValueError, match=r"weight must be \(C, 1, K\) or \(C, K\) with C = 8"):
        TRITON(x, torch.randn(4, 1, 3, device=DEVICE))
    with pytest.raises(ValueError, match="activation must be one of"):
        TRITON(x, torch.randn(8, 1, 3, device=DEVICE), None, "gelu")
    with pytest.raises(ValueError, match="float32, bfloat16 or float16"):
        TRITON(x.double(), torch.randn(8, 1, 3, device=DEVICE, dtype=torch.float64))
    with pytest.raises(ValueError, match="takes up to 8 taps, got 9"):
        TRITON(x, torch.randn(8, 1, 9, device=DEVICE))
    with pytest.raises(ValueError, match=r"x must be \(B, T, C\)"):
        REF(x[0], torch.randn(8, 1, 3, device=DEVICE))
