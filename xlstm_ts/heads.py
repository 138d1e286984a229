"""Quantile head: maps features to non-crossing quantiles per horizon step, trained with the pinball loss."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def check_quantiles(quantiles: Sequence[float]) -> tuple[float, ...]:
    """Sorted unique levels; every level must lie strictly inside (0, 1)."""
    levels = tuple(float(q) for q in quantiles)
    if not levels:
        raise ValueError("quantiles must contain at least one level in (0, 1), got an empty sequence.")
    bad = [q for q in levels if not 0.0 < q < 1.0]
    if bad:
        raise ValueError(f"quantiles must lie strictly between 0 and 1, got {bad}. Example: quantiles=(0.1, 0.5, 0.9).")
    return tuple(sorted(set(levels)))


def with_median(levels: Sequence[float]) -> tuple[float, ...]:
    """The trained levels: the requested ones plus the median (the point forecast)."""
    return tuple(sorted(set(levels) | {0.5}))


def pinball_loss(target: torch.Tensor, quantiles: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Pinball loss per element. target (B, F), quantiles (B, F, Q), levels (Q,) -> (B, F, Q)."""
    diff = target.unsqueeze(-1) - quantiles  # (B, F, Q)
    return torch.maximum(levels * diff, (levels - 1.0) * diff)


class QuantileHead(nn.Module):
    """Linear map to (F, Q) raw outputs, made monotone in the level: the median output is the centre, the other
    levels are the centre plus (minus) cumulative softplus increments. Crossing is impossible by construction.

    Args:
        in_features: width of the flattened features.
        prediction_length: F.
        levels: sorted quantile levels; must contain 0.5.
    """

    def __init__(self, in_features: int, prediction_length: int, levels: Sequence[float]):
        super().__init__()
        self.levels = tuple(levels)
        if 0.5 not in self.levels:
            raise ValueError(f"QuantileHead levels must contain 0.5 (the point forecast), got {self.levels}.")
        self.prediction_length, self.mid = prediction_length, self.levels.index(0.5)
        self.register_buffer("level_tensor", torch.tensor(self.levels), persistent=False)
        self.proj = nn.Linear(in_features, prediction_length * len(self.levels))

    def forward(self, features: torch.Tensor, centre_offset: torch.Tensor | None = None) -> torch.Tensor:
        # features (B, in_features); centre_offset (B, F) is added to the median (e.g. a linear skip forecast)
        raw = self.proj(features).reshape(features.shape[0], self.prediction_length, len(self.levels))  # (B, F, Q)
        centre = raw[..., self.mid]  # (B, F)
        if centre_offset is not None:
            centre = centre + centre_offset
        up = centre.unsqueeze(-1) + torch.cumsum(F.softplus(raw[..., self.mid + 1:]), dim=-1)  # (B, F, Q_up)
        down_inc = torch.cumsum(F.softplus(raw[..., :self.mid].flip(-1)), dim=-1).flip(-1)  # (B, F, Q_down)
        down = centre.unsqueeze(-1) - down_inc
        return torch.cat([down, centre.unsqueeze(-1), up], dim=-1)  # (B, F, Q), non-decreasing in Q

    def loss(self, target: torch.Tensor, quantiles: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """Mean pinball loss over observed targets. target, observed (B, F); quantiles (B, F, Q)."""
        per = pinball_loss(target, quantiles, self.level_tensor.to(quantiles.dtype)).mean(-1)  # (B, F)
        return (per * observed).sum() / observed.sum().clamp(min=1.0)
