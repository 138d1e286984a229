"""mLSTM block with pre-up-projection (xLSTM paper, Fig. 10): the matrix-memory cell inside a gated MLP."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xlstm_ts.gate_map import two_input_linear
from xlstm_ts.kernel_choice import conv_kernel_name, conv_qkv_for, kernel_for, mlstm_chunk_size
from xlstm_ts.kernels.conv.conv_qkv_torch import group_width
from xlstm_ts.layers import (
    BlockDiagonalLinear,
    CausalConv1d,
    LayerNorm,
    MultiHeadNorm,
    block_diagonal_concat,
    prefer_taps,
    round_up,
    small_init_,
    wang_init_,
)


class MLSTMBlock(nn.Module):
    """x + down(MHNorm(mLSTM(q, k, v)) + skip * conv(x_m)) * silu(z)), with (x_m, z) = up(LayerNorm(x)).

    q and k come from the causal-conv branch, v from the un-convolved branch; input and forget gates are linear
    maps of concat(q, k, v) to one pre-activation per head.

    Args:
        embed_dim: D, width of the residual stream.
        num_heads: NH.
        proj_factor: inner width = round_up(proj_factor * D, NH * qkv_blocksize).
        conv_kernel: causal conv width.
        qkv_blocksize: block size of the block-diagonal q/k/v projections.
        dropout: dropout on the block output.
        kernel: registry name of the mLSTM kernel or 'auto'.
        chunk_size: chunk length for chunkwise kernels; None: the kernel's own (`kernel_choice.mlstm_chunk_size`).
        block_index, num_blocks: position in the stack (used by initialization).
    """

    op = "mlstm"  # the sequence op its kernel is looked up for (`kernel_choice.kernel_for`)

    def __init__(self, embed_dim: int, num_heads: int, proj_factor: float = 2.0, conv_kernel: int = 4,
                 qkv_blocksize: int = 4, dropout: float = 0.0, kernel: str = "auto", chunk_size: int | None = None,
                 block_index: int = 0, num_blocks: int = 1):
        super().__init__()
        inner = round_up(proj_factor * embed_dim, num_heads * qkv_blocksize)
        self.num_heads, self.inner, self.kernel, self.chunk_size = num_heads, inner, kernel, chunk_size
        self.head_dim = inner // num_heads  # DQK = DHV of the cell
        self.norm = LayerNorm(embed_dim)
        self.up = nn.Linear(embed_dim, 2 * inner, bias=False)
        self.conv = CausalConv1d(inner, conv_kernel, activation="silu", kernel=conv_kernel_name(kernel))
        self.q_proj = BlockDiagonalLinear(inner, qkv_blocksize)
        self.k_proj = BlockDiagonalLinear(inner, qkv_blocksize)
        self.v_proj = BlockDiagonalLinear(inner, qkv_blocksize)
        self.gates = nn.Linear(3 * inner, 2 * num_heads)  # -> (input gate, forget gate) pre-activations
        self.out_norm = MultiHeadNorm(num_heads, self.head_dim)
        self.skip = nn.Parameter(torch.ones(inner))
        self.down = nn.Linear(inner, embed_dim, bias=False)
        self.drop = nn.Dropout(dropout)
        # channels per group of the fused conv + q/k/v op, None where the op cannot run this block's maps
        self.qkv_group = group_width(inner, qkv_blocksize) if prefer_taps(conv_kernel) else None
        self._init(embed_dim, num_blocks)

    def _init(self, embed_dim: int, num_blocks: int) -> None:
        small_init_(self.up.weight, embed_dim)
        wang_init_(self.down.weight, self.inner, num_blocks)
        nn.init.zeros_(self.gates.weight)
        with torch.no_grad():
            nh = self.num_heads
            self.gates.bias[:nh].normal_(0.0, 0.1)  # input gate
            self.gates.bias[nh:] = torch.linspace(3.0, 6.0, nh)  # forget gate: long memory at init

    def _gate_preactivations(self, qk: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """gates(concat(q, k, v)) without writing the (B, T, 3 inner) concatenation (`gate_map.two_input_linear`,
        whose backward a compiled graph fuses with the cell's gradients). qk (B, T, 2 inner), v (B, T, inner).

        Folding this map into the q/k and v matmuls (x_c @ [Wqk | Wqk Gqk], x_m @ [Wv | Wv Gv]) was slower in the
        compiled, graphed bf16 training step (H200: (1024, 64, 128) mmmm 8.35 against 7.40 ms, (256, 336, 128)
        msmm 12.60 against 11.53): the strided q, k, v slices of the wider outputs cost more than the gate passes."""
        return two_input_linear(qk, v, self.gates.weight, self.gates.bias)  # (B, T, 2 NH)

    def _conv_qkv(self, x_m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x_c = silu(conv(x_m)), qk = [q_proj(x_c) | k_proj(x_c)] and v = v_proj(x_m), in x_m's dtype: one fused op
        where it is switched on and fits (`kernel_choice.conv_qkv_for`), else the conv op and the maps' matmuls.

        The fused op runs for bf16/fp16 x_m only (under autocast): its exact fp32 dots are FMA loops that spill
        registers on sm_90, where cuBLAS keeps fp32 matmuls fast."""
        fused = conv_qkv_for(self.kernel, x_m.device)
        if fused is not None and self.qkv_group is not None and x_m.dtype in (torch.bfloat16, torch.float16):
            maps = [m.group_weight(self.qkv_group).to(x_m.dtype) for m in (self.q_proj, self.k_proj, self.v_proj)]
            return fused(x_m, self.conv.conv.weight, self.conv.conv.bias, *maps, self.conv.activation)
        x_c = self.conv(x_m)  # (B, T, inner): silu(conv(x_m)), in x_m's dtype
        qk = block_diagonal_concat(x_c, self.q_proj, self.k_proj)  # (B, T, 2 inner)
        return x_c, qk, self.v_proj(x_m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (B, T, D)
        B, T, _ = x.shape
        NH, DH = self.num_heads, self.head_dim
        x_m, z = self.up(self.norm(x)).chunk(2, dim=-1)  # (B, T, inner) each
        x_c, qk, v = self._conv_qkv(x_m)  # (B, T, inner), (B, T, 2 inner), (B, T, inner)
        q, k = qk.chunk(2, dim=-1)  # (B, T, inner) each
        i_pre, f_pre = self._gate_preactivations(qk, v).chunk(2, dim=-1)  # (B, T, NH) each

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(B, T, NH, DH).transpose(1, 2)  # (B, NH, T, DH)

        cell = kernel_for(self.kernel, self.op, x.device, DH)
        chunk = self.chunk_size or mlstm_chunk_size(self.kernel, x.device, T, DH)
        h = cell(heads(q), heads(k), heads(v), i_pre.transpose(1, 2), f_pre.transpose(1, 2),
                 chunk_size=chunk)  # (B, NH, T, DH)
        h = self.out_norm(h.transpose(1, 2))  # (B, T, inner)
        h = (h + self.skip * x_c) * F.silu(z)
        return x + self.drop(self.down(h))
