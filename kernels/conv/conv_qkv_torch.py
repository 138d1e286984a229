"""Causal conv + SiLU followed by the grouped q, k, v maps of the mLSTM block, in PyTorch: the reference of
`conv_qkv--triton`.

Contract (both kernels):
    x_c, qk, v = conv_qkv(x, conv_weight, conv_bias, wq, wk, wv, activation="silu")

x (B, T, C) in any layout (a slice of the up-projection's output); conv_weight (C, 1, K) or (C, K), conv_bias (C,) or
None; wq, wk, wv (G, W, W) with G * W = C: each block-diagonal map as G dense (W x W) diagonal groups, in x out, with
zeros between their small blocks (`BlockDiagonalLinear.group_weight`). Per step:

- x_c = act(conv(x)), as `causal_conv--torch`, in x's dtype;
- qk = [x_c Wq | x_c Wk] (B, T, 2C) and v = x Wv (B, T, C), where W is the block-diagonal (C, C) matrix of the G
  groups; the maps multiply x_c as rounded to x's dtype, and their outputs come out in x's dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .torch_ref import causal_conv_torch


def check_group_weights(x: Tensor, *weights: Tensor) -> tuple[int, int]:
    """(G, W) of the grouped map weights after checking them against x (B, T, C); raises ValueError."""
    C = x.shape[-1]
    first = weights[0]
    if first.dim() != 3 or first.shape[1] != first.shape[2] or first.shape[0] * first.shape[1] != C:
        raise ValueError(f"wq, wk and wv must be (G, W, W) groups with G * W = C = {C} (x's last axis), got "
                         f"{tuple(first.shape)}; build them with BlockDiagonalLinear.group_weight(W).")  # fmt: skip
    for w in weights[1:]:
        if w.shape != first.shape:
            raise ValueError(f"wq, wk and wv must have one shape, got {[tuple(v.shape) for v in weights]}.")
    return first.shape[0], first.shape[1]


def group_width(channels: int, block_size: int, widths: tuple[int, ...] = (64, 32, 16)) -> int | None:
    """The first of `widths` that divides `channels` and is a multiple of `block_size` (the groups of the fused
    maps), or None when none is."""
    return next((w for w in widths if channels % w == 0 and w % block_size == 0), None)


def group_matmul(x: Tensor, w: Tensor) -> Tensor:
    """x (..., G * W) times the block-diagonal matrix of the groups w (G, W, W): (..., G * W)."""
    G, W, _ = w.shape
    return torch.einsum("...gi,gio->...go", x.reshape(*x.shape[:-1], G, W), w).reshape(*x.shape[:-1], G * W)


def conv_qkv_torch(x: Tensor, conv_weight: Tensor, conv_bias: Tensor | None, wq: Tensor, wk: Tensor, wv: Tensor,
                   activation: str | None = "silu") -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """The causal conv (and activation) of x, and the grouped q, k, v maps (see the module docstring).

    Returns:
        x_c (B, T, C), qk (B, T, 2C) = [q | k], v (B, T, C), all in x's dtype.
    """
    check_group_weights(x, wq, wk, wv)
    x_c = causal_conv_torch(x, conv_weight, conv_bias, activation)  # (B, T, C) in x's dtype
    dtype = torch.promote_types(x.dtype, wq.dtype)
    qk = torch.cat([group_matmul(x_c.to(dtype), wq.to(dtype)), group_matmul(x_c.to(dtype), wk.to(dtype))], dim=-1)
    v = group_matmul(x.to(dtype), wv.to(dtype))  # (B, T, C)
    return x_c, qk.to(x.dtype), v.to(x.dtype)
