"""The mLSTM block's input maps in PyTorch: causal conv (+ SiLU) and block-diagonal q, k, v; the reference of
`conv_qkv--triton`.

Contract (both kernels): x (B, T, C) in any layout; conv_weight (C, 1, K) or (C, K), conv_bias (C,) or None; wq, wk,
wv (NB, BS, BS) with C = NB * BS, each block mapping its BS inputs to BS outputs (weight[b, i, j]: input b BS + i to
output b BS + j, as `BlockDiagonalLinear` holds it).

    xc = act(conv(x))                                    (B, T, C), `causal_conv--torch`
    qkv = [xc @ Wq | xc @ Wk | x @ Wv]                   (B, T, 3C), W* the dense block-diagonal (C, C) maps

Both come back in x's dtype; sums in fp32 or wider.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .torch_ref import causal_conv_torch, check_conv_inputs


def check_qkv_inputs(x: Tensor, wq: Tensor, wk: Tensor, wv: Tensor) -> tuple[int, int]:
    """(NB, BS) of the block-diagonal maps after checking them against x (B, T, C); raises ValueError."""
    C = x.shape[-1]
    for name, w in (("wq", wq), ("wk", wk), ("wv", wv)):
        if w.dim() != 3 or w.shape[1] != w.shape[2] or w.shape[0] * w.shape[1] != C:
            raise ValueError(
                f"{name} must be (NB, BS, BS) with NB * BS = {C} (x's last axis), got {tuple(w.shape)}; pass the "
                "BlockDiagonalLinear's weight."
            )
    if not wq.shape == wk.shape == wv.shape:
        raise ValueError(f"wq, wk, wv must have one shape, got {tuple(wq.shape)}, {tuple(wk.shape)}, "
                         f"{tuple(wv.shape)}.")  # fmt: skip
    return wq.shape[0], wq.shape[1]


def dense_block_diagonal(w: Tensor) -> Tensor:
    """The (NB BS, NB BS) dense weight (in x out) of (NB, BS, BS) blocks, zeros between them."""
    return torch.block_diag(*w.unbind(0))


def conv_qkv_torch(x: Tensor, conv_weight: Tensor, conv_bias: Tensor | None, wq: Tensor, wk: Tensor, wv: Tensor,
                   activation: str | None = "silu") -> tuple[Tensor, Tensor]:  # fmt: skip
    """Causal conv (+ activation) of x, then the block-diagonal q, k (of the conv output) and v (of x).

    Args:
        x: (B, T, C) input.
        conv_weight: (C, 1, K) or (C, K) taps. conv_bias: (C,) or None.
        wq, wk, wv: (NB, BS, BS) blocks, NB * BS = C.
        activation: None or "silu" after the conv.

    Returns:
        xc (B, T, C) and qkv (B, T, 3C) = [q | k | v], in x's dtype.
    """
    check_conv_inputs(x, conv_weight, conv_bias, activation)
    check_qkv_inputs(x, wq, wk, wv)
    xc = causal_conv_torch(x, conv_weight, conv_bias, activation)  # (B, T, C)
    dtype = torch.promote_types(x.dtype, wq.dtype)
    q = xc.to(dtype) @ dense_block_diagonal(wq).to(dtype)  # (B, T, C)
    k = xc.to(dtype) @ dense_block_diagonal(wk).to(dtype)
    v = x.to(dtype) @ dense_block_diagonal(wv).to(dtype)
    return xc, torch.cat([q, k, v], dim=-1).to(x.dtype)  # (B, T, C), (B, T, 3C)
