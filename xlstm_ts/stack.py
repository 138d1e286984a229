"""A residual stack of xLSTM blocks built from a pattern string such as "msmm"."""

from __future__ import annotations

import torch
from torch import nn

from xlstm_ts.config import ModelConfig
from xlstm_ts.kernel_choice import kernel_for
from xlstm_ts.layers import LayerNorm
from xlstm_ts.mlstm_block import MLSTMBlock
from xlstm_ts.slstm_block import SLSTMBlock


class XLSTMStack(nn.Module):
    """Blocks in the order of `cfg.pattern` ('m' = mLSTM block, 's' = sLSTM block), then a final LayerNorm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        n = len(cfg.pattern)
        blocks = []
        for idx, kind in enumerate(cfg.pattern):
            if kind == "m":
                blocks.append(MLSTMBlock(cfg.embed_dim, cfg.num_heads, cfg.mlstm_proj_factor, cfg.conv_kernel,
                                         cfg.qkv_blocksize, cfg.dropout, cfg.mlstm_kernel, cfg.chunk_size, idx, n))
            else:
                blocks.append(SLSTMBlock(cfg.embed_dim, cfg.num_heads, cfg.slstm_ffn_factor, cfg.conv_kernel,
                                         cfg.dropout, cfg.slstm_kernel, idx, n))
        self.blocks = nn.ModuleList(blocks)
        self.norm = LayerNorm(cfg.embed_dim)

    def compile_blocks(self, **compile_kwargs) -> XLSTMStack:
        """torch.compile each block in place (parameter names unchanged); returns self.

        Blocks are compiled one by one: each fuses its projections, norms, gates and (on the torch kernels) its cell
        into a few kernels, and a failure or recompilation stays local to one block. The first call per input
        shape compiles (seconds to minutes on a CPU: the sLSTM loop is unrolled over time); later calls run the
        compiled code. The sequence kernels for the parameters' device are looked up first, so tracing starts
        from a filled lookup table. On the CPU, torch.compile needs a C++ compiler (g++ or $CXX).
        """
        device = next(self.parameters()).device
        for block in self.blocks:
            kernel_for(block.kernel, block.op, device, block.head_dim)
            block.compile(**compile_kwargs)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (B, T, D)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)  # (B, T, D)
