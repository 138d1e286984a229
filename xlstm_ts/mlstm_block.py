"""mLSTM block with pre-up-projection (xLSTM paper, Fig. 10): the matrix-memory cell inside a gated MLP."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xlstm_ts.kernel_choice import kernel_for
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
        chunk_size: chunk length for chunkwise kernels.
        block_index, num_blocks: position in the stack (used by initialization).
    """

    def __init__(self, embed_dim: int, num_heads: int, proj_factor: float = 2.0, conv_kernel: int = 4,
                 qkv_blocksize: int = 4, dropout: float = 0.0, kernel: str = "auto", chunk_size: int = 64,
                 block_index: int = 0, num_blocks: int = 1):
        super().__init__()
        inner = round_up(proj_factor * embed_dim, num_heads * qkv_blocksize)
        self.num_heads, self.inner, self.kernel, self.chunk_size = num_heads, inner, kernel, chunk_size
        self.norm = LayerNorm(embed_dim)
        self.up = nn.Linear(embed_dim, 2 * inner, bias=False)
        self.conv = CausalConv1d(inner, conv_kernel)
        self.q_proj = BlockDiagonalLinear(inner, qkv_blocksize)
        self.k_proj = BlockDiagonalLinear(inner, qkv_blocksize)
        self.v_proj = BlockDiagonalLinear(inner, qkv_blocksize)
        self.gates = nn.Linear(3 * inner, 2 * num_heads)  # -> (input gate, forget gate) pre-activations
        self.out_norm = MultiHeadNorm(num_heads, inner // num_heads)
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

    def projections(self, x_c: torch.Tensor, x_m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q|k = blockdiag(x_c), v = blockdiag(x_m) and the gate pre-activations gates(concat(q, k, v)).

        Where the block-diagonal maps run as dense matmuls the gate weight is folded into them (the gates are linear
        in q, k, v): two matmuls with 2 NH more output columns each, and no (B, T, 3 inner) concatenation forward or
        backward. Same function, rounded differently.

        Returns:
            qk (B, T, 2 inner), v (B, T, inner), gates (B, T, 2 NH); qk and v may be views with a wider row.
        """
        if not prefer_dense(self.inner, x_c.device):
            qk = block_diagonal_concat(x_c, self.q_proj, self.k_proj)  # (B, T, 2 inner)
            v = self.v_proj(x_m)  # (B, T, inner)
            return qk, v, self.gates(torch.cat([qk, v], dim=-1))
        two = 2 * self.inner
        w_qk = torch.cat([self.q_proj.dense_weight(), self.k_proj.dense_weight()], dim=1)  # (inner, 2 inner)
        w_v = self.v_proj.dense_weight()  # (inner, inner)
        w_g = self.gates.weight.t()  # (3 inner, 2 NH)
        qkg = x_c @ torch.cat([w_qk, w_qk @ w_g[:two]], dim=1)  # (B, T, 2 inner + 2 NH)
        vg = x_m @ torch.cat([w_v, w_v @ w_g[two:]], dim=1)  # (B, T, inner + 2 NH)
        return qkg[..., :two], vg[..., : self.inner], qkg[..., two:] + vg[..., self.inner :] + self.gates.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (B, T, D)
        B, T, _ = x.shape
        NH, DH = self.num_heads, self.inner // self.num_heads
        x_m, z = self.up(self.norm(x)).chunk(2, dim=-1)  # (B, T, inner) each
        x_c = F.silu(self.conv(x_m))  # (B, T, inner)
        qk, v, gates = self.projections(x_c, x_m)  # (B, T, 2 inner), (B, T, inner), (B, T, 2 NH)
        q, k = qk.chunk(2, dim=-1)  # (B, T, inner) each
        i_pre, f_pre = gates.chunk(2, dim=-1)  # (B, T, NH) each

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(B, T, NH, DH).transpose(1, 2)  # (B, NH, T, DH)

        cell = kernel_for(self.kernel, "mlstm", x.device)
        h = cell(heads(q), heads(k), heads(v), i_pre.transpose(1, 2), f_pre.transpose(1, 2),
                 chunk_size=self.chunk_size)  # (B, NH, T, DH)
        h = self.out_norm(h.transpose(1, 2))  # (B, T, inner)
        h = (h + self.skip * x_c) * F.silu(z)
        return x + self.drop(self.down(h))
