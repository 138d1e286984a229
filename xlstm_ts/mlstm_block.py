"""mLSTM block with pre-up-projection (xLSTM paper, Fig. 10): the matrix-memory cell inside a gated MLP."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xlstm_ts.kernel_choice import kernel_for, mlstm_chunk_size
from xlstm_ts.layers import (
    BlockDiagonalLinear,
    CausalConv1d,
    LayerNorm,
    MultiHeadNorm,
    block_diagonal_concat,
    prefer_dense,
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
        self.conv = CausalConv1d(inner, conv_kernel)
        self.q_proj = BlockDiagonalLinear(inner, qkv_blocksize)
        self.k_proj = BlockDiagonalLinear(inner, qkv_blocksize)
        self.v_proj = BlockDiagonalLinear(inner, qkv_blocksize)
        self.gates = nn.Linear(3 * inner, 2 * num_heads)  # -> (input gate, forget gate) pre-activations
        self.out_norm = MultiHeadNorm(num_heads, self.head_dim)
        self.skip = nn.Parameter(torch.ones(inner))
        self.down = nn.Linear(inner, embed_dim, bias=False)
        self.drop = nn.Dropout(dropout)
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
        """gates(concat(q, k, v)) as two products with the weight's column blocks: the same map without writing the
        (B, T, 3 inner) concatenation (or keeping it for the backward). qk (B, T, 2 inner), v (B, T, inner)."""
        weight = self.gates.weight  # (2 NH, 3 inner)
        split = qk.shape[-1]
        return F.linear(qk, weight[:, :split]) + F.linear(v, weight[:, split:], self.gates.bias)  # (B, T, 2 NH)

    def _folded_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The q/k and v maps with the gate map folded in: x_c @ [Wqk | Wqk Gqk] gives (q|k, its gate share), x_m @
        [Wv | Wv Gv] gives (v, its share), since gates(concat(q|k, v)) = q|k Gqk + v Gv + bias is linear in them.
        Returns the (inner, 2 inner + 2 NH) and (inner, inner + 2 NH) weights (in x out)."""
        split = 2 * self.inner
        weight = self.gates.weight  # (2 NH, 3 inner)
        w_qk = torch.cat([self.q_proj.dense_weight(), self.k_proj.dense_weight()], dim=1)  # (inner, 2 inner)
        w_v = self.v_proj.dense_weight()  # (inner, inner)
        return (torch.cat([w_qk, w_qk @ weight[:, :split].t()], dim=1),
                torch.cat([w_v, w_v @ weight[:, split:].t()], dim=1))  # fmt: skip

    def _projections(self, x_c: torch.Tensor, x_m: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(q, k, v, i~, f~) from the conv branch x_c and the plain branch x_m, each (B, T, inner) / (B, T, NH).

        Where a block-diagonal map runs as a dense matmul (`prefer_dense`, GPUs) the gate map is folded into the q/k
        and v matmuls (`_folded_weights`): two matmuls instead of four, and no pass over q, k, v for the gates
        (forward) or for their gradients (backward). Elsewhere the maps run one by one (grouped on a CPU)."""
        I, NH = self.inner, self.num_heads
        if prefer_dense(I, x_c.device):
            w_qk, w_v = self._folded_weights()
            qkg, vg = x_c @ w_qk, x_m @ w_v  # (B, T, 2 inner + 2 NH), (B, T, inner + 2 NH)
            gates = qkg[..., 2 * I:] + vg[..., I:] + self.gates.bias  # (B, T, 2 NH)
            q, k, v = qkg[..., :I], qkg[..., I:2 * I], vg[..., :I]
        else:
            qk = block_diagonal_concat(x_c, self.q_proj, self.k_proj)  # (B, T, 2 inner)
            v = self.v_proj(x_m)  # (B, T, inner)
            q, k = qk.chunk(2, dim=-1)  # (B, T, inner) each
            gates = self._gate_preactivations(qk, v)  # (B, T, 2 NH)
        return q, k, v, gates[..., :NH], gates[..., NH:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (B, T, D)
        B, T, _ = x.shape
        NH, DH = self.num_heads, self.head_dim
        x_m, z = self.up(self.norm(x)).chunk(2, dim=-1)  # (B, T, inner) each
        x_c = F.silu(self.conv(x_m))  # (B, T, inner)
        q, k, v, i_pre, f_pre = self._projections(x_c, x_m)  # (B, T, inner) x 3, (B, T, NH) x 2

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(B, T, NH, DH).transpose(1, 2)  # (B, NH, T, DH)

        cell = kernel_for(self.kernel, self.op, x.device, DH)
        chunk = self.chunk_size or mlstm_chunk_size(self.kernel, x.device, T, DH)
        h = cell(heads(q), heads(k), heads(v), i_pre.transpose(1, 2), f_pre.transpose(1, 2),
                 chunk_size=chunk)  # (B, NH, T, DH)
        h = self.out_norm(h.transpose(1, 2))  # (B, T, inner)
        h = (h + self.skip * x_c) * F.silu(z)
        return x + self.drop(self.down(h))
