"""sLSTM block with post-up-projection (xLSTM paper, Fig. 9): the scalar-memory cell, then a gated MLP."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xlstm_ts.kernel_choice import conv_kernel_name, kernel_for
from xlstm_ts.layers import (
    BlockDiagonalLinear,
    CausalConv1d,
    LayerNorm,
    MultiHeadNorm,
    block_diagonal_concat,
    round_up,
    small_init_,
    wang_init_,
)


def powerlaw_forget_bias(num_heads: int, head_dim: int, block_index: int, num_blocks: int) -> torch.Tensor:
    """Forget-gate bias spanning about +5 (long memory) to -7 (short memory) inside each head. Shape (NH, DH)."""
    ratio = block_index / (num_blocks - 1) if num_blocks > 1 else 0.0
    pos = torch.arange(head_dim, dtype=torch.float32) / max(head_dim - 1, 1)  # (DH,)
    bias = -(-5.0 + 12.0 * pos ** (0.3 + 1.3 * ratio))
    return bias.expand(num_heads, head_dim).clone()


class SLSTMBlock(nn.Module):
    """x + MHNorm(sLSTM(gates(LayerNorm(x)))), then x + MLP(LayerNorm(x)) with a GELU-gated MLP.

    The input and forget gates read a causal-conv view of the input, z and o read it directly. Gate projections
    and the recurrence are block diagonal per head (memory mixing inside a head only).

    Args:
        embed_dim: D.
        num_heads: NH (head size DH = D / NH).
        ffn_factor: gated-MLP width factor (rounded up to a multiple of 8).
        conv_kernel: causal conv width (0 disables the conv).
        dropout: dropout on both residual branches.
        kernel: registry name of the sLSTM kernel or 'auto'.
        block_index, num_blocks: position in the stack (used by initialization).
    """

    op = "slstm"  # the sequence op its kernel is looked up for (`kernel_choice.kernel_for`)

    def __init__(self, embed_dim: int, num_heads: int, ffn_factor: float = 4.0 / 3.0, conv_kernel: int = 4,
                 dropout: float = 0.0, kernel: str = "auto", block_index: int = 0, num_blocks: int = 1):
        super().__init__()
        self.num_heads, self.head_dim, self.kernel = num_heads, embed_dim // num_heads, kernel
        DH = self.head_dim
        self.norm = LayerNorm(embed_dim)
        self.conv = (CausalConv1d(embed_dim, conv_kernel, activation="silu", kernel=conv_kernel_name(kernel))
                     if conv_kernel > 0 else None)
        self.gate_proj = nn.ModuleList([BlockDiagonalLinear(embed_dim, DH) for _ in range(4)])  # i, f, z, o
        for proj in self.gate_proj:
            small_init_(proj.weight, embed_dim)
        self.recurrent = nn.Parameter(torch.zeros(num_heads, 4, DH, DH))  # (NH, 4, DH, DH): no mixing at init
        bias = torch.zeros(num_heads, 4, DH)  # (NH, 4, DH)
        bias[:, 1] = powerlaw_forget_bias(num_heads, DH, block_index, num_blocks)
        self.bias = nn.Parameter(bias)
        self.cell_norm = MultiHeadNorm(num_heads, DH)
        ffn = round_up(ffn_factor * embed_dim, 8)
        self.ffn_norm = LayerNorm(embed_dim)
        self.ffn_up = nn.Linear(embed_dim, 2 * ffn, bias=False)
        self.ffn_down = nn.Linear(ffn, embed_dim, bias=False)
        small_init_(self.ffn_up.weight, embed_dim)
        wang_init_(self.ffn_down.weight, ffn, num_blocks)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (B, T, D)
        B, T, D = x.shape
        y = self.norm(x)
        y_c = self.conv(y) if self.conv is not None else y  # (B, T, D): silu(conv(y))
        i_f = block_diagonal_concat(y_c, *self.gate_proj[:2])  # (B, T, 2 D): i and f see the conv branch
        z_o = block_diagonal_concat(y, *self.gate_proj[2:])  # (B, T, 2 D): z and o the raw input
        wx = torch.cat([i_f, z_o], dim=-1).reshape(B, T, 4, self.num_heads, self.head_dim)  # (B, T, 4, NH, DH)
        cell = kernel_for(self.kernel, self.op, x.device, self.head_dim)
        h = cell(wx, self.recurrent, self.bias)  # (B, T, NH, DH)
        x = x + self.drop(self.cell_norm(h))
        gate, up = self.ffn_up(self.ffn_norm(x)).chunk(2, dim=-1)  # (B, T, ffn) each
        return x + self.drop(self.ffn_down(F.gelu(gate) * up))
