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
    (values and observed-mask concatenated, 2P inputs, plus P per extra channel) with one linear map. Padded steps
    count as unobserved (and are 0 in the extra channels).

    Args:
        context_length: L.
        patch_length: P.
        stride: steps between patch starts.
        embed_dim: D.
        extra_channels: E, channels given beside the target (e.g. covariates and their masks). Default: 0.
    """

    def __init__(self, context_length: int, patch_length: int, stride: int, embed_dim: int, extra_channels: int = 0):
        super().__init__()
        self.patch_length, self.stride = patch_length, stride
        self.num_patches = num_patches(context_length, patch_length, stride)
        self.padded_length = patch_length + (self.num_patches - 1) * stride
        self.pad = self.padded_length - context_length
        self.extra_channels = extra_channels
        self.proj = nn.Linear((2 + extra_channels) * patch_length, embed_dim)

    def forward(self, values: torch.Tensor, observed: torch.Tensor, extra: torch.Tensor | None = None,
                ) -> torch.Tensor:
        # values, observed (B, L); values are already scaled and 0 where unobserved; extra (B, E, L) likewise
        x = torch.stack([values, observed], dim=1)  # (B, 2, L)
        if self.extra_channels:
            if extra is None or extra.shape[1] != self.extra_channels:
                got = None if extra is None else tuple(extra.shape)
                raise ValueError(f"PatchEncoder expects extra channels of shape (B, {self.extra_channels}, L), "
                                 f"got {got}.")
            x = torch.cat([x, extra.to(x.dtype)], dim=1)  # (B, 2 + E, L)
        x = F.pad(x, (self.pad, 0))  # (B, 2 + E, L_pad)
        patches = x.unfold(-1, self.patch_length, self.stride)  # (B, 2 + E, T, P)
        patches = patches.permute(0, 2, 1, 3).flatten(2)  # (B, T, (2 + E) P)
        return self.proj(patches)  # (B, T, D)
