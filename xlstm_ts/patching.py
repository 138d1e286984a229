"""Patching encoder: a window of L steps becomes T tokens of width D, with a missing-value mask channel."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def num_patches(context_length: int, patch_length: int, stride: int) -> int:
    """T: tokens for a context of L steps (the context is left-padded so patches tile it exactly)."""
    if context_length <= patch_length:
        return 1
    return -(-(context_length - patch_length) // stride) + 1


class PatchEncoder(nn.Module):
    """Left-pads the context to cover whole patches, cuts patches of P steps every `stride` steps and embeds each
    (values and observed-mask concatenated, 2P inputs) with one linear map. Padded steps count as unobserved.

    Args:
        context_length: L.
        patch_length: P.
        stride: steps between patch starts.
        embed_dim: D.
    """

    def __init__(self, context_length: int, patch_length: int, stride: int, embed_dim: int):
        super().__init__()
        self.patch_length, self.stride = patch_length, stride
        self.num_patches = num_patches(context_length, patch_length, stride)
        self.padded_length = patch_length + (self.num_patches - 1) * stride
        self.pad = self.padded_length - context_length
        self.proj = nn.Linear(2 * patch_length, embed_dim)

    def forward(self, values: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        # values, observed (B, L); values are already scaled and 0 where unobserved
        x = F.pad(torch.stack([values, observed], dim=1), (self.pad, 0))  # (B, 2, L_pad)
        patches = x.unfold(-1, self.patch_length, self.stride)  # (B, 2, T, P)
        patches = patches.permute(0, 2, 1, 3).flatten(2)  # (B, T, 2P)
        return self.proj(patches)  # (B, T, D)
