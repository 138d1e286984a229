"""The fused conv + q/k/v kernels against an fp64 reference: the Triton custom ops (forward: xc, qkv; backward: dx,
the conv's taps and bias, dWq, dWk, dWv) on inputs read through strides, sequences and channel counts across the
tiles, blocks of 1, 2 and 4, with and without bias and SiLU, fp32 and bf16; the reference against the block's own
layers; the ops' registration and a compiled graph around them; the mLSTM block's fused path against its unfused one."""

import pytest
import torch

import xlstm_ts.mlstm_block as mlstm_block
from xlstm_ts.kernels import get_kernel
from xlstm_ts.kernels._testing import TOLERANCES, assert_close, tolerance
from xlstm_ts.layers import BlockDiagonalLinear, CausalConv1d

pytest.importorskip("triton")
triton_qkv = pytest.importorskip("xlstm_ts.kernels.conv.triton_qkv")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
REF = get_kernel("conv_qkv--torch")
TRITON = get_kernel("conv_qkv--triton")
# (B, T, C, K, BS): T below, at and across the tiles of 8 and 16 steps; C across the 64-channel block (136)
SHAPES = [(2, 37, 24, 4, 4), (3, 5, 136, 2, 4), (1, 1, 16, 4, 2), (2, 19, 12, 3, 1), (1, 70, 8, 1, 4)]


def _inputs(B, T, C, K, BS, bias, dtype, seed=0):
    """x as the first C columns of a (B, T, 2C) tensor (a projection's slice), conv taps (C, 1, K) and bias, and the
    three (C / BS, BS, BS) block maps."""
    gen = torch.Generator().manual_seed(seed)
    wide = torch.randn(B, T, 2 * C, generator=gen, dtype=torch.float64).to(DEVICE).to(dtype)
    weight = (torch.randn(C, 1, K, generator=gen, dtype=torch.float64) / K**0.5).float().to(DEVICE)
    b = torch.randn(C, generator=gen, dtype=torch.float64).float().to(DEVICE) if bias else None
    maps = [(torch.randn(C // BS, BS, BS, generator=gen, dtype=torch.float64) / BS**0.5).float().to(DEVICE)
            for _ in range(3)]  # fmt: skip
    return wide, weight, b, maps


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("activation", [None, "silu"], ids=["linear", "silu"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("B,T,C,K,BS", SHAPES, ids=lambda x: str(x))
def test_triton_conv_qkv_matches_fp64_reference(B, T, C, K, BS, bias, activation, dtype, nan_poison):
    wide, weight, b, maps = _inputs(B, T, C, K, BS, bias, dtype)
    leaves = [wide, weight] + ([b] if bias else []) + maps
    leaves = [t.requires_grad_() for t in leaves]
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]  # the reference sees the rounded inputs

    def call(fn, ts):
        return fn(ts[0][..., :C], ts[1], ts[2] if bias else None, *ts[-3:], activation)

    xc, qkv = call(TRITON, leaves)
    assert xc.shape == (B, T, C) and qkv.shape == (B, T, 3 * C) and xc.dtype == qkv.dtype == dtype
    assert xc.is_contiguous() and qkv.is_contiguous()
    xc_ref, qkv_ref = call(REF, ref_leaves)
    gen = torch.Generator().manual_seed(1)
    dxc = torch.randn(B, T, C, generator=gen, dtype=torch.float64).to(DEVICE).to(dtype)
    dqkv = torch.randn(B, T, 3 * C, generator=gen, dtype=torch.float64).to(DEVICE).to(dtype)
    grads = torch.autograd.grad((xc, qkv), leaves, (dxc, dqkv))
    grads_ref = torch.autograd.grad((xc_ref, qkv_ref), ref_leaves, (dxc.double(), dqkv.double()))
    exact = dtype == torch.float32  # no dots: fp32 sums only
    tol = TOLERANCES["float32-ieee"].ratio if exact else tolerance(dtype)
    tol_grad = TOLERANCES["float32-ieee-grad"].ratio if exact else tolerance(dtype, grad=True)
    assert_close("xc", xc_ref, xc, tol)
    assert_close("qkv", qkv_ref, qkv, tol)
    assert_close("dx", grads_ref[0][..., :C], grads[0][..., :C], tol_grad)
    assert torch.all(grads[0][..., C:] == 0)  # the columns the op did not read get no gradient
    names = ["dw"] + (["db"] if bias else []) + ["dWq", "dWk", "dWv"]
    for name, ref, out in zip(names, grads_ref[1:], grads[1:]):
        assert out.dtype == torch.float32 and out.shape == ref.shape
        assert_close(name, ref, out, tol_grad)


def test_reference_matches_the_block_layers():
    """The reference's (NB, BS, BS) convention is BlockDiagonalLinear's, and its conv is CausalConv1d's."""
    torch.manual_seed(0)
    conv = CausalConv1d(12, 4, activation="silu", kernel="causal_conv--torch").double()
    maps = [BlockDiagonalLinear(12, 4).double() for _ in range(3)]
    x = torch.randn(2, 9, 12, dtype=torch.float64)
    xc, qkv = REF(x, conv.conv.weight, conv.conv.bias, *(m.weight for m in maps))
    torch.testing.assert_close(xc, conv(x))
    torch.testing.assert_close(qkv, torch.cat([maps[0](xc), maps[1](xc), maps[2](x)], dim=-1))


def test_custom_ops_are_registered_correctly():
    """Schema, fake (meta) implementations and autograd registration checked by torch.library.opcheck."""
    wide, weight, b, maps = _inputs(2, 20, 16, 4, 4, True, torch.float32)
    x = wide[..., :16].requires_grad_()
    taps = weight[:, 0].contiguous().requires_grad_()
    maps = [m.requires_grad_() for m in maps]
    torch.library.opcheck(triton_qkv._conv_qkv, (x, taps, b.requires_grad_(), *maps, True))
    torch.library.opcheck(triton_qkv._conv_qkv, (x, taps, None, *maps, False))


def test_traced_without_graph_break():
    """torch.compile traces through the op (fullgraph fails on a graph break) and the result matches eager."""
    wide, weight, b, maps = _inputs(2, 20, 16, 4, 4, True, torch.float32)
    x = wide[..., :16].requires_grad_()

    def f(x):
        xc, qkv = TRITON(x * 2.0, weight, b, *maps)
        return xc.sum() + (qkv * qkv).sum()

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    out, out_eager = compiled(x), f(x)
    torch.testing.assert_close(out, out_eager)
    torch.testing.assert_close(torch.autograd.grad(out, x)[0], torch.autograd.grad(f(x), x)[0])


def test_input_errors_say_what_was_expected():
    x = torch.randn(2, 5, 8, device=DEVICE)
    w, maps = torch.randn(8, 1, 3, device=DEVICE), [torch.randn(2, 4, 4, device=DEVICE) for _ in range(3)]
    with pytest.raises(ValueError, match=r"wq must be \(NB, BS, BS\) with NB \* BS = 8"):
        TRITON(x, w, None, torch.randn(4, 4, 4, device=DEVICE), *maps[1:])
    with pytest.raises(ValueError, match="wq, wk, wv must have one shape"):
        TRITON(x, w, None, maps[0], torch.randn(4, 2, 2, device=DEVICE), maps[2])
    with pytest.raises(ValueError, match="blocks of up to 4, got 3 taps and blocks of 8"):
        TRITON(x, w, None, *[torch.randn(1, 8, 8, device=DEVICE) for _ in range(3)])
    with pytest.raises(ValueError, match="float32, bfloat16 or float16"):
        TRITON(x.double(), w.double(), None, *[m.double() for m in maps])
    with pytest.raises(ValueError, match=r"weight must be \(C, 1, K\) or \(C, K\) with C = 8"):
        REF(x, torch.randn(4, 1, 3, device=DEVICE), None, *maps)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_block_fused_path_matches_unfused(monkeypatch, dtype):
    """The mLSTM block with a Triton kernel runs the fused op (and only then); its output and every parameter's
    gradient match the conv kernel + dense block-diagonal path."""
    torch.manual_seed(0)
    block = mlstm_block.MLSTMBlock(32, 4, kernel="mlstm_chunkwise--triton", chunk_size=16).to(DEVICE)
    x = torch.randn(2, 21, 32, device=DEVICE)
    calls = []
    fused_fn = get_kernel("conv_qkv--triton")
    monkeypatch.setattr(triton_qkv, "conv_qkv_triton", lambda *a, **kw: calls.append(1) or fused_fn(*a, **kw))
    from xlstm_ts import kernel_choice

    kernel_choice._FOUND.clear()  # look the spied function up again
    results = {}
    for fused in (True, False):
        monkeypatch.setattr(mlstm_block, "FUSED_QKV", fused)
        block.zero_grad()
        xx = x.to(dtype).requires_grad_()
        with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            y = block(xx)
        y.float().square().mean().backward()
        grads = {name: p.grad.clone() for name, p in block.named_parameters() if p.grad is not None}
        results[fused] = (y.detach().float(), xx.grad.float(), grads)
        assert len(calls) == 1  # one call from the fused pass; the unfused pass adds none
    kernel_choice._FOUND.clear()
    (y1, dx1, g1), (y0, dx0, g0) = results[True], results[False]
    assert set(g1) == set(g0) and {"q_proj.weight", "conv.conv.weight", "gates.weight"} <= set(g1)
    exact = dtype == torch.float32
    tol = TOLERANCES["float32-ieee"].ratio if exact else tolerance(dtype)
    tol_grad = TOLERANCES["float32-ieee-grad"].ratio if exact else tolerance(dtype, grad=True)
    assert_close("y", y0.double(), y1, tol)
    assert_close("dx", dx0.double(), dx1, tol_grad)
    for name in g0:
        assert_close(name, g0[name].double(), g1[name], 10 * tol_grad if exact else tol_grad)


def test_block_on_cpu_auto_keeps_the_unfused_path():
    block = mlstm_block.MLSTMBlock(16, 2)
    assert not block._fused(torch.randn(1, 3, 16))  # 'auto' on a CPU: the torch kernels
    assert not mlstm_block.MLSTMBlock(16, 2, conv_kernel=9, kernel="mlstm_chunkwise--triton")._fused(
        torch.randn(1, 3, 16)
    )  # wider than the fused op takes
