"""Layer pieces that run a cheaper form of the same function: dense block-diagonal maps and the split LayerNorm."""

import pytest
import torch
from torch import nn

from xlstm_ts import layers
from xlstm_ts.layers import BlockDiagonalLinear, LayerNorm, block_diagonal_concat


def _blockwise(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Reference: each block of features mapped by its own (in, out) matrix, in float64."""
    NB, bs, _ = weight.shape
    parts = [x[..., b * bs : (b + 1) * bs].double() @ weight[b].double() for b in range(NB)]
    return torch.cat(parts, dim=-1)


@pytest.mark.parametrize("dense", [True, False])
@pytest.mark.parametrize("features, block", [(16, 4), (12, 3), (64, 16), (8, 8), (128, 4), (96, 4), (120, 40)])
def test_block_diagonal_forward_and_grad_match_blockwise(monkeypatch, dense, features, block):
    monkeypatch.setattr(layers, "prefer_dense", lambda f, d: dense)
    torch.manual_seed(0)
    layer = BlockDiagonalLinear(features, block, bias=True)
    nn.init.normal_(layer.bias)
    x = torch.randn(3, 5, features, requires_grad=True)
    upstream = torch.randn(3, 5, features)
    y = layer(x)
    (y * upstream).sum().backward()
    w = layer.weight.detach().double().requires_grad_()
    x64 = x.detach().double().requires_grad_()
    ref = _blockwise(x64, w) + layer.bias.detach().double()
    (ref * upstream.double()).sum().backward()
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.weight.grad.double(), w.grad, rtol=1e-5, atol=1e-5)


def test_grouped_weight_holds_the_blocks_in_groups():
    layer = BlockDiagonalLinear(96, 4)  # 24 blocks: groups of 8 blocks, 32 features wide
    grouped = layer.grouped_weight()
    assert grouped.shape == (3, 32, 32)
    torch.testing.assert_close(torch.block_diag(*grouped), layer.dense_weight())
    assert BlockDiagonalLinear(80, 40).grouped_weight().shape == (2, 40, 40)  # blocks wider than a group


def test_dense_weight_is_zero_off_the_blocks():
    layer = BlockDiagonalLinear(12, 4)
    dense = layer.dense_weight()  # (12, 12)
    mask = torch.block_diag(*[torch.ones(4, 4)] * 3).bool()
    assert torch.all(dense[~mask] == 0)
    assert torch.equal(dense[:4, :4], layer.weight[0].detach())


@pytest.mark.parametrize("dense", [True, False])
def test_block_diagonal_concat_equals_separate_maps(monkeypatch, dense):
    monkeypatch.setattr(layers, "prefer_dense", lambda f, d: dense)
    torch.manual_seed(1)
    maps = [BlockDiagonalLinear(16, 4) for _ in range(3)]
    x = torch.randn(2, 7, 16)
    expected = torch.cat([_blockwise(x, m.weight.detach()) for m in maps], dim=-1)
    out = block_diagonal_concat(x, *maps)
    assert out.shape == (2, 7, 48)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_matches_torch(affine):
    torch.manual_seed(2)
    ours, theirs = LayerNorm(24, elementwise_affine=affine), nn.LayerNorm(24, elementwise_affine=affine)
    if affine:
        with torch.no_grad():
            ours.weight.normal_()
            ours.bias.normal_()
        theirs.load_state_dict(ours.state_dict())
    x = torch.randn(4, 9, 24, requires_grad=True)
    upstream = torch.randn(4, 9, 24)
    outs = []
    for norm in (ours, theirs):
        x.grad = None
        y = norm(x)
        (y * upstream).sum().backward()
        outs.append((y.detach(), x.grad.clone(), [p.grad.clone() for p in norm.parameters()]))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(outs[0][1], outs[1][1], rtol=1e-5, atol=1e-5)
    for a, b in zip(outs[0][2], outs[1][2]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel_size", [1, 2, 4])
def test_causal_conv_taps_match_conv1d(kernel_size):
    """The CPU path (shifted products in (B, T, C)) computes the grouped Conv1d's function and gradients."""
    torch.manual_seed(0)
    conv = layers.CausalConv1d(6, kernel_size).double()
    x = torch.randn(3, 9, 6, dtype=torch.float64, requires_grad=True)
    padded = nn.functional.pad(x.transpose(1, 2), (kernel_size - 1, 0))
    ref = conv.conv(padded).transpose(1, 2)  # (B, T, C) through nn.Conv1d
    out = conv(x)
    torch.testing.assert_close(out, ref)
    dy = torch.randn_like(out)
    params = (x, conv.conv.weight, conv.conv.bias)
    for a, b in zip(torch.autograd.grad((ref * dy).sum(), params), torch.autograd.grad((out * dy).sum(), params)):
        torch.testing.assert_close(b, a)
    assert out[:, 0].allclose(conv.conv.bias + conv.conv.weight[:, 0, -1] * x[:, 0])  # t = 0 sees only x_0
