"""Per-window instance scaling over the observed context values (applied to inputs, inverted on outputs)."""

from __future__ import annotations

import torch
from torch import nn


class InstanceScaler(nn.Module):
    """Computes loc (B, 1) and scale (B, 1) of each context window from its observed values only.

    Modes: 'std' -> (mean, std); 'center' -> (mean, 1); 'mean' -> (0, mean |y|); 'none' -> (0, 1). 'center' suits
    series already on one scale (standardized benchmark data): a window keeps its units, so quiet windows are not
    blown up by a small spread. A window with fewer than two observed
    values (or zero spread) gets a scale of `1.0` fallback-blended so division is always safe.
    """

    def __init__(self, mode: str = "std", min_scale: float = 1e-5):
        super().__init__()
        self.mode, self.min_scale = mode, min_scale

    def forward(self, target: torch.Tensor, observed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # target, observed (B, L); observed is 1.0 where a value exists
        count = observed.sum(dim=1, keepdim=True)  # (B, 1)
        denom = count.clamp(min=1.0)
        if self.mode == "none":
            ones = torch.ones_like(count)
            return torch.zeros_like(count), ones
        if self.mode == "mean":
            scale = (target.abs() * observed).sum(dim=1, keepdim=True) / denom  # (B, 1)
            scale = torch.where(scale > self.min_scale, scale, torch.ones_like(scale))
            return torch.zeros_like(scale), scale
        loc = (target * observed).sum(dim=1, keepdim=True) / denom  # (B, 1)
        if self.mode == "center":
            return loc, torch.ones_like(loc)
        var = (((target - loc) * observed) ** 2).sum(dim=1, keepdim=True) / denom  # (B, 1)
        scale = var.sqrt()
        # flat or single-value windows: fall back to the mean magnitude, then to 1
        fallback = torch.where(loc.abs() > self.min_scale, loc.abs(), torch.ones_like(loc))
        scale = torch.where(scale > self.min_scale * fallback, scale, fallback)
        return loc, scale
