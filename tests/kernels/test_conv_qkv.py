"""The fused causal conv + q/k/v op against an fp64 reference: the Triton custom ops (forward: x_c, q|k, v; backward:
dx, the taps and bias, the three maps' groups) on inputs read through strides, gradients arriving with any strides,
sequences shorter and longer than a tile and not multiples of it, one to several groups of 16, 32 and 64 channels,
weight-gradient row slices that end inside a tile, with and without bias and SiLU, fp32 and bf16; the torch reference
against the conv and the block-diagonal maps it stands for; the custom ops' registration, a compiled graph around
them, input errors; and the mLSTM block with the op switched on against the block without it."""

import copy

import pytest
import torch

from xlstm_ts.kernels import get_kernel
from xlstm_ts.kernels._testing import TOLERANCES, assert_close, tolerance
from xlstm_ts.kernels.conv.conv_qkv_torch import group_width
from xlstm_ts.layers import BlockDiagonalLinear

pytest.importorskip("triton")
triton_conv_qkv = pytest.importorskip("xlstm_ts.kernels.conv.triton_conv_qkv")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
REF = get_kernel("conv_qkv--torch")
TRITON = get_kernel("conv_qkv--triton")
# (B, T, C, W, K): T below, at and across the 16-step tiles (1, 5, 16, 37, 70); one to four groups of 16, 32, 64
SHAPES = [(2, 37, 128, 64, 4), (1, 5, 64, 32, 3), (3, 16, 48, 16, 4), (2, 70, 64, 16, 1), (1, 1, 32, 32, 8)]


def _inputs(B, T, C, W, K, bias, dtype, seed=0):
    """x as the first C columns of a (B, T, 2C) tensor (a projection's slice), taps (C, 1, K), bias, three (G, W, W)
    groups of block-diagonal maps (4 x 4 blocks, zeros between them, as `BlockDiagonalLinear.group_weight`)."""
    gen = torch.Generator().manual_seed(seed)
    wide = torch.randn(B, T, 2 * C, generator=gen, dtype=torch.float64).to(DEVICE).to(dtype)
    taps = (torch.randn(C, 1, K, generator=gen, dtype=torch.float64) / K**0.5).float().to(DEVICE)
    b = torch.randn(C, generator=gen, dtype=torch.float64).float().to(DEVICE) if bias else None
    maps = []
    for _ in range(3):
        m = BlockDiagonalLinear(C, 4)
        with torch.no_grad():
            m.weight.copy_(torch.randn(m.weight.shape, generator=gen) / 2)
        maps.append(m.group_weight(W).detach().to(DEVICE).to(dtype))
    return wide, taps, b, maps


def _output_grads(B, T, C, dtype):
    """Gradients of x_c, q|k and v, each read through strides (transposed copies), as autograd may hand them in."""
    gen = torch.Generator().manual_seed(1)
    shapes = [(B, C, T), (B, 2 * C, T), (B, C, T)]
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(DEVICE).to(dtype).transpose(1, 2) for s in shapes]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("activation", [None, "silu"], ids=["linear", "silu"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("B,T,C,W,K", SHAPES, ids=lambda x: str(x))
def test_triton_conv_qkv_matches_fp64_reference(B, T, C, W, K, bias, activation, dtype, nan_poison, monkeypatch):
    monkeypatch.setattr(triton_conv_qkv, "DW_ROWS", 48)  # several weight-gradient row slices, the last one partial
    wide, taps, b, maps = _inputs(B, T, C, W, K, bias, dtype)
    leaves = [wide, taps] + ([b] if bias else []) + maps
    leaves = [t.requires_grad_() for t in leaves]
    outs = TRITON(wide[..., :C], taps, b if bias else None, *leaves[-3:], activation)
    assert [o.shape for o in outs] == [(B, T, C), (B, T, 2 * C), (B, T, C)]
    assert all(o.dtype == dtype and o.is_contiguous() for o in outs)
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]  # the reference sees the rounded inputs
    refs = REF(ref_leaves[0][..., :C], ref_leaves[1], ref_leaves[2] if bias else None, *ref_leaves[-3:], activation)
    douts = _output_grads(B, T, C, dtype)
    grads = torch.autograd.grad(outs, leaves, douts)
    grads_ref = torch.autograd.grad(refs, ref_leaves, [d.double() for d in douts])
    exact = dtype == torch.float32  # the interpreter and 'highest' precision run exact fp32 dots
    tol = TOLERANCES["float32-ieee"].ratio if exact else tolerance(dtype)
    tol_grad = TOLERANCES["float32-ieee-grad"].ratio if exact else tolerance(dtype, grad=True)
    for name, ref, out in zip(("x_c", "qk", "v"), refs, outs):
        assert_close(name, ref, out, tol)
    assert_close("dx", grads_ref[0][..., :C], grads[0][..., :C], tol_grad)
    assert torch.all(grads[0][..., C:] == 0)  # the columns the op did not read get no gradient
    names = ["dw", "db"][: 1 + bias] + ["dwq", "dwk", "dwv"]
    for name, ref, out, leaf in zip(names, grads_ref[1:], grads[1:], leaves[1:]):
        assert out.dtype == leaf.dtype
        assert_close(name, ref, out, tol_grad)


def test_reference_is_the_conv_and_the_block_diagonal_maps():
    """conv_qkv--torch with a BlockDiagonalLinear's groups computes the conv op and that module's own forward."""
    torch.manual_seed(0)
    C, W = 48, 16
    x = torch.randn(2, 9, C, dtype=torch.float64)
    taps, bias = torch.randn(C, 1, 4, dtype=torch.float64), torch.randn(C, dtype=torch.float64)
    maps = [BlockDiagonalLinear(C, 4).double() for _ in range(3)]
    x_c, qk, v = REF(x, taps, bias, *(m.group_weight(W) for m in maps), "silu")
    conv = get_kernel("causal_conv--torch")(x, taps, bias, "silu")
    torch.testing.assert_close(x_c, conv)
    torch.testing.assert_close(qk, torch.cat([maps[0](conv), maps[1](conv)], dim=-1))
    torch.testing.assert_close(v, maps[2](x))


def test_group_width_picks_a_width_that_fits():
    assert group_width(256, 4) == 64 and group_width(96, 4) == 32 and group_width(48, 4) == 16
    assert group_width(40, 4) is None and group_width(64, 128) is None
    with pytest.raises(ValueError, match="must be a multiple of block_size"):
        BlockDiagonalLinear(64, 4).group_weight(6)


def test_custom_ops_are_registered_correctly():
    """Schema, fake (meta) implementations and autograd registration checked by torch.library.opcheck."""
    wide, taps, b, maps = _inputs(2, 20, 32, 16, 4, True, torch.float32)
    x = wide[..., :32].requires_grad_()
    taps = taps[:, 0].contiguous().requires_grad_()
    maps = [m.requires_grad_() for m in maps]
    torch.library.opcheck(triton_conv_qkv._conv_qkv, (x, taps, b.requires_grad_(), *maps, True))
    torch.library.opcheck(triton_conv_qkv._conv_qkv, (x, taps, None, *maps, False))


def test_traced_without_graph_break():
    """torch.compile traces through the op (fullgraph fails on a graph break) and the result matches eager."""
    wide, taps, b, maps = _inputs(2, 20, 32, 16, 4, True, torch.float32)
    x = wide[..., :32].requires_grad_()

    def f(x):
        x_c, qk, v = TRITON(x * 2.0, taps, b, *maps, "silu")
        return x_c.sum() + (qk * qk).sum() + v.sum()

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    out, out_eager = compiled(x), f(x)
    torch.testing.assert_close(out, out_eager)
    torch.testing.assert_close(torch.autograd.grad(out, x)[0], torch.autograd.grad(f(x), x)[0])


def test_input_errors_say_what_was_expected():
    x = torch.randn(2, 5, 32, device=DEVICE)
    taps = torch.randn(32, 1, 4, device=DEVICE)
    maps = [torch.randn(2, 16, 16, device=DEVICE) for _ in range(3)]
    with pytest.raises(ValueError, match=r"must be \(G, W, W\) groups with G \* W = C = 32"):
        TRITON(x, taps, None, torch.randn(4, 16, 16, device=DEVICE), *maps[1:])
    with pytest.raises(ValueError, match="must have one shape"):
        TRITON(x, taps, None, maps[0], torch.randn(4, 8, 8, device=DEVICE), maps[2])
    with pytest.raises(ValueError, match=r"groups of \(16, 32, 64, 128\) channels, got W = 8"):
        TRITON(x, taps, None, *[torch.randn(4, 8, 8, device=DEVICE) for _ in range(3)])
    with pytest.raises(ValueError, match="takes up to 8 taps, got 9"):
        TRITON(x, torch.randn(32, 1, 9, device=DEVICE), None, *maps)
    with pytest.raises(ValueError, match="float32, bfloat16 or float16"):
        TRITON(x.double(), taps.double(), None, *[m.double() for m in maps])


@pytest.mark.parametrize("width", [64, 32], ids=["1 group", "2 groups"])
def test_mlstm_block_with_the_fused_op_matches_the_block_without(width, monkeypatch):
    """A bf16 mLSTM block with Triton kernels: the fused op on (groups of `width`) against the conv op and the dense
    q, k, v matmuls, forward and every gradient; the op is called when switched on, and not for fp32."""
    from xlstm_ts.mlstm_block import MLSTMBlock

    monkeypatch.setattr("xlstm_ts.mlstm_block.group_width", lambda C, bs: width)
    calls = []
    fused = triton_conv_qkv.conv_qkv_triton
    monkeypatch.setattr(triton_conv_qkv, "conv_qkv_triton", lambda *a: calls.append(1) or fused(*a))
    torch.manual_seed(0)
    block = MLSTMBlock(32, 2, kernel="mlstm_chunkwise--triton").to(DEVICE).to(torch.bfloat16)
    x = torch.randn(2, 19, 32, device=DEVICE, dtype=torch.bfloat16)
    results = []
    for enabled in (False, True):
        monkeypatch.setattr(triton_conv_qkv, "ENABLED", enabled)
        b = copy.deepcopy(block)
        xi = x.clone().requires_grad_()
        y = b(xi)
        grads = torch.autograd.grad(y.float().square().sum(), [xi, *b.parameters()])
        results.append((y, grads))
    assert len(calls) == 1
    (y0, g0), (y1, g1) = results
    assert_close("y", y0, y1, tolerance(torch.bfloat16))
    for (name, _), a, b in zip([("x", None), *block.named_parameters()], g0, g1):
        assert_close(f"d{name}", a, b, TOLERANCES["bfloat16-grad"].ratio)
    monkeypatch.setattr(triton_conv_qkv, "ENABLED", True)
    copy.deepcopy(block).float()(x.float())
    assert len(calls) == 1  # fp32 keeps the conv op and the matmuls


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("B,T", [(1024, 64), (256, 336)])
def test_fused_op_at_the_block_shapes_on_gpu(B, T, nan_poison):
    """The op at the training step's shapes (256 channels in groups of 64, bf16) against the fp64 reference."""
    C, W = 256, 64
    wide, taps, b, maps = _inputs(B, T, C, W, 4, True, torch.bfloat16)
    leaves = [t.requires_grad_() for t in [wide, taps, b, *maps]]
    outs = TRITON(wide[..., :C], taps, b, *leaves[3:], "silu")
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    refs = REF(ref_leaves[0][..., :C], ref_leaves[1], ref_leaves[2], *ref_leaves[3:], "silu")
    douts = _output_grads(B, T, C, torch.bfloat16)
    grads = torch.autograd.grad(outs, leaves, douts)
    grads_ref = torch.autograd.grad(refs, ref_leaves, [d.double() for d in douts])
    for name, ref, out in zip(("x_c", "qk", "v"), refs, outs):
        assert_close(name, ref, out, tolerance(torch.bfloat16))
    for name, ref, out in zip(("dx", "dw", "db", "dwq", "dwk", "dwv"), grads_ref, grads):
        assert_close(name, ref, out, tolerance(torch.bfloat16, grad=True))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_graphed_compiled_bf16_step_with_the_fused_op(monkeypatch):
    """A compiled stack's bf16 step captured as a CUDA graph trains as without the op (same losses within bf16
    rounding over a few steps)."""
    from xlstm_ts.config import ModelConfig
    from xlstm_ts.graphed_step import GraphedTrainStep
    from xlstm_ts.stack import XLSTMStack

    def loss_fn(model, x, y):
        return (model(x) - y).pow(2).mean()

    torch.manual_seed(0)
    batches = [(torch.randn(64, 32, 128, device="cuda"), torch.randn(64, 32, 128, device="cuda")) for _ in range(4)]
    losses = {}
    for enabled in (False, True):
        monkeypatch.setattr(triton_conv_qkv, "ENABLED", enabled)
        torch._dynamo.reset()
        torch.manual_seed(0)
        model = XLSTMStack(ModelConfig(embed_dim=128, num_heads=4, pattern="mm", dropout=0.0)).cuda()
        model.compile_blocks()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, capturable=True)
        step = GraphedTrainStep(model, opt, loss_fn, batches[0], autocast_dtype=torch.bfloat16)
        losses[enabled] = torch.stack([step(x, y) for x, y in batches]).float().cpu()
    torch.testing.assert_close(losses[True], losses[False], rtol=2e-2, atol=0)
