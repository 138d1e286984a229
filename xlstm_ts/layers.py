"""Small building blocks shared by the xLSTM blocks: causal depthwise conv, block-diagonal linear, head-wise norm."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from xlstm_ts.kernel_choice import kernel_for


class CausalConv1d(nn.Module):
    """Depthwise causal convolution over time, optionally followed by SiLU: output t sees inputs t - kernel + 1 .. t.

    For a few taps (`prefer_taps`) it runs the registered causal-conv kernel (`kernel`, resolved per device by
    `kernel_choice`: on CUDA a Triton custom op that torch.compile keeps in its graph, else shifted, per-channel
    scaled copies of the input in its (B, T, C) layout, element-wise, which torch.compile fuses with the ops around
    it); both return x's dtype. Otherwise it calls the grouped Conv1d.

    Args:
        channels: C.
        kernel_size: K taps.
        activation: None or "silu", applied after the conv.
        kernel: 'auto' or a causal-conv registry name ('causal_conv--torch', 'causal_conv--triton').
    """

    def __init__(self, channels: int, kernel_size: int, activation: str | None = None, kernel: str = "auto"):
        super().__init__()
        self.kernel_size, self.activation, self.kernel = kernel_size, activation, kernel
        self.conv = nn.Conv1d(channels, channels, kernel_size, groups=channels, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (B, T, C)
        K = self.kernel_size
        if prefer_taps(K):
            fn = kernel_for(self.kernel, "causal_conv", x.device)
            return fn(x, self.conv.weight, self.conv.bias, self.activation)
        y = F.pad(x.transpose(1, 2), (K - 1, 0))  # (B, C, T + K - 1)
        y = self.conv(y).transpose(1, 2)  # (B, T, C)
        return F.silu(y) if self.activation == "silu" else y


def prefer_taps(kernel_size: int) -> bool:
    """Whether a depthwise causal conv of this width runs the causal-conv kernels (`CausalConv1d`), on any device.

    Measured forward + backward: shifted products about twice as fast as the grouped Conv1d on a 2-core CPU for up
    to 8 taps; on an H200 slower eager than cuDNN's depthwise conv but fused by torch.compile, which made the
    compiled, graphed bf16 training step at (1024, 64, 128) 15 % faster (10.45 -> 8.93 ms, mmmm)."""
    return kernel_size <= 8


class BlockDiagonalLinear(nn.Module):
    """A linear map whose weight is block diagonal: `num_blocks` independent (block x block) maps.

    Small maps run as one dense matmul with the zero blocks filled in (`dense_weight`): on tensor cores and on the
    CPU that beats a batched matmul of many tiny blocks by far, and it computes the same function.
    """

    def __init__(self, features: int, block_size: int, bias: bool = False, std: float | None = None):
        super().__init__()
        if features % block_size:
            raise ValueError(f"features ({features}) must be divisible by block_size ({block_size}).")
        self.num_blocks, self.block_size = features // block_size, block_size
        std = std if std is not None else 1.0 / math.sqrt(block_size)
        self.weight = nn.Parameter(torch.randn(self.num_blocks, block_size, block_size) * std)  # (NB, in, out)
        self.bias = nn.Parameter(torch.zeros(features)) if bias else None

    def _groups(self, per: int) -> torch.Tensor:
        """The weight as NB / per dense diagonal blocks of `per` small blocks each, zeros between them."""
        NB, bs = self.num_blocks, self.block_size
        eye = torch.eye(per, dtype=self.weight.dtype, device=self.weight.device)  # (per, per)
        grouped = self.weight.view(NB // per, per, bs, 1, bs) * eye[None, :, None, :, None]  # (G, per, bs, per, bs)
        return grouped.reshape(NB // per, per * bs, per * bs)  # (G, width, width)

    def group_weight(self, width: int) -> torch.Tensor:
        """The weight as (features / width) dense (width x width) diagonal groups, zeros between their blocks."""
        if width % self.block_size or (self.num_blocks * self.block_size) % width:
            raise ValueError(f"width ({width}) must be a multiple of block_size ({self.block_size}) and divide the "
                             f"features ({self.num_blocks * self.block_size}).")  # fmt: skip
        return self._groups(width // self.block_size)

    def dense_weight(self) -> torch.Tensor:
        """The (features, features) weight, in x out, zero outside the diagonal blocks."""
        return self._groups(self.num_blocks)[0]

    def grouped_weight(self) -> torch.Tensor:
        """The weight as G dense (width x width) diagonal blocks, each holding several small blocks (zeros
        between them); width = blocks per group * block_size <= GROUP_WIDTH (or one block when blocks are wider)."""
        NB, bs = self.num_blocks, self.block_size
        return self._groups(max(p for p in range(1, NB + 1) if NB % p == 0 and p * bs <= max(GROUP_WIDTH, bs)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (..., features)
        if prefer_dense(self.num_blocks * self.block_size, x.device):
            y = x @ self.dense_weight()  # (..., features)
        else:
            shape, weight = x.shape, self.grouped_weight()  # (G, width, width)
            x = x.reshape(-1, weight.shape[0], weight.shape[1]).transpose(0, 1)  # (G, N, width)
            y = torch.bmm(x, weight).transpose(0, 1).reshape(shape)  # (..., features)
        return y if self.bias is None else y + self.bias


GROUP_WIDTH = 32
"""Width of the dense groups when a block-diagonal map runs as a batched matmul (`grouped_weight`): on a 2-core CPU
groups of 16-32 features were 1.7-2x faster forward + backward than one dense matmul at 128-512 features, and
faster than a batched matmul of the single 4 x 4 blocks."""


def prefer_dense(features: int, device: torch.device) -> bool:
    """Whether a block-diagonal map of this width runs faster as one dense matmul on `device` than as groups
    (measured: several times faster on GPUs up to a few thousand features; on a 2-core CPU only up to 64).

    Also measured, and slower: the 4 x 4 blocks of the mLSTM projections as element-wise products that torch.compile
    fuses with the conv and the activation (H200, compiled, graphed bf16 step at (1024, 64, 128): mmmm 9.66 against
    7.33 ms, msmm 8.66 against 6.96); on a 2-core CPU under torch.compile too (train step at (64, 64, 64) mmmm,
    alternating runs: 0.501x and 0.511x of NX-AI's step against 0.485x and 0.482x with the grouped matmul)."""
    return features <= (8192 if device.type == "cuda" else 64)


def block_diagonal_concat(x: torch.Tensor, *maps: BlockDiagonalLinear) -> torch.Tensor:
    """concat([m(x) for m in maps], -1) as one matmul where dense is faster. x (..., F) -> (..., len(maps) * F)."""
    if all(m.bias is None for m in maps) and prefer_dense(x.shape[-1], x.device):
        return x @ torch.cat([m.dense_weight() for m in maps], dim=1)  # (..., len(maps) * F)
    return torch.cat([m(x) for m in maps], dim=-1)


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm with the affine part as plain ops: same parameters and function, but the weight and bias
    gradients become ordinary reductions, several times faster on GPUs than the fused kernel's for many short rows.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x, self.normalized_shape, eps=self.eps)
        if self.weight is not None:
            y = y * self.weight
        return y + self.bias if self.bias is not None else y


class MultiHeadNorm(nn.Module):
    """Layer norm applied per head (no mean mixing across heads), with a learnable scale over all features."""

    def __init__(self, num_heads: int, head_dim: int, eps: float = 1e-5):
        super().__init__()
        self.num_heads, self.head_dim, self.eps = num_heads, head_dim, eps
        self.weight = nn.Parameter(torch.ones(num_heads * head_dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # h (B, T, NH, DH)
        B, T = h.shape[:2]
        y = F.layer_norm(h.float(), (self.head_dim,), eps=self.eps).to(h.dtype)  # (B, T, NH, DH)
        return y.reshape(B, T, self.num_heads * self.head_dim) * self.weight  # (B, T, NH * DH)


def small_init_(weight: torch.Tensor, dim: int) -> None:
    """Normal init with std sqrt(2 / (5 dim)), the usual choice for xLSTM input projections."""
    nn.init.normal_(weight, mean=0.0, std=math.sqrt(2.0 / (5.0 * dim)))


def wang_init_(weight: torch.Tensor, dim: int, num_blocks: int) -> None:
    """Normal init with std 2 / (num_blocks sqrt(dim)) for output projections into the residual stream."""
    nn.init.normal_(weight, mean=0.0, std=2.0 / (max(num_blocks, 1) * math.sqrt(dim)))


def round_up(value: float, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)
