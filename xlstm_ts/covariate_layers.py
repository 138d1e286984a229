"""Covariate paths of the forecasting network (pure PyTorch).

Every covariate is standardized per column with a loc and scale fitted on the training data (`fit_scaling`); they
are buffers, so they travel with the weights. Three paths:

- context: every dynamic covariate over the context window (past-only and known-future ones alike) becomes two more
  patch-encoder channels, its scaled value and its observed mask.
- static: a linear embedding of the series' static features, added to every token of the context.
- horizon: the known-future covariates of each horizon step go through a small MLP shared by the steps; the
  (F * width) outputs join the head input. A linear map of all horizon values (Kf * F -> F) joins the linear skip
  forecast, so a linear covariate effect is there from the first training step (least squares, with the skip).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

STEP_FEATURES = 16
"""Features per horizon step that the future-covariate MLP hands to the head."""


class CovariateTerms(NamedTuple):
    """What the covariates add to the network; None where a kind of covariate is absent."""

    channels: torch.Tensor | None
    """(B, 2K, L) extra patch-encoder channels: scaled values, then observed masks."""
    token_shift: torch.Tensor | None
    """(B, 1, D) static embedding added to every token."""
    features: torch.Tensor | None
    """(B, F * width) horizon features for the head."""
    offset: torch.Tensor | None
    """(B, F) linear horizon effect on the centre forecast, in scaled target units."""


class CovariateLayers(nn.Module):
    """The covariate paths, see the module docstring.

    Args:
        n_past: covariates known only over the context.
        n_future: Kf, covariates known over the context and the horizon.
        n_static: Ks, static features per series.
        embed_dim: D, token width.
        prediction_length: F.
        width: features per horizon step of the future MLP. Default: `STEP_FEATURES`.
    """

    def __init__(self, n_past: int, n_future: int, n_static: int, embed_dim: int, prediction_length: int,
                 width: int = STEP_FEATURES):
        super().__init__()
        self.n_past, self.n_future, self.n_static = n_past, n_future, n_static
        self.n_context = n_past + n_future  # K: the known-future columns come last
        self.prediction_length = prediction_length
        self.register_buffer("context_loc", torch.zeros(self.n_context))
        self.register_buffer("context_scale", torch.ones(self.n_context))
        self.register_buffer("static_loc", torch.zeros(n_static))
        self.register_buffer("static_scale", torch.ones(n_static))
        self.static_embed = nn.Linear(n_static, embed_dim) if n_static else None
        self.step_mlp = nn.Sequential(nn.Linear(n_future, width), nn.GELU(), nn.Linear(width, width)) \
            if n_future else None
        self.horizon_linear = nn.Linear(n_future * prediction_length, prediction_length, bias=False) \
            if n_future else None
        self.out_features = prediction_length * width if n_future else 0

    @torch.no_grad()
    def fit_scaling(self, context: torch.Tensor | None, static: torch.Tensor | None) -> None:
        """Set the standardization from training rows: context (n, K) and static (N, Ks), NaN = missing."""
        for values, loc, scale in ((context, self.context_loc, self.context_scale),
                                   (static, self.static_loc, self.static_scale)):
            if values is None or values.numel() == 0:
                continue
            values = values.to(loc.dtype)
            known = ~torch.isnan(values)  # (n, K)
            count = known.sum(0).clamp(min=1)  # (K,)
            mean = torch.where(known, values, 0.0).sum(0) / count
            std = (torch.where(known, values - mean, 0.0) ** 2).sum(0).div(count).sqrt()
            loc.copy_(mean)
            scale.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))  # constant columns stay unscaled

    def scaled_future(self, future_covariates: torch.Tensor | None) -> torch.Tensor:
        """(B, Kf, F) horizon values -> the same, standardized."""
        _check("future_covariates", future_covariates, self.n_future, "(B, Kf, F)")
        loc, scale = self.context_loc[self.n_past:], self.context_scale[self.n_past:]  # (Kf,)
        return (future_covariates - loc[:, None]) / scale[:, None]  # (B, Kf, F)

    def forward(self, past_covariates: torch.Tensor | None = None,
                past_covariates_observed: torch.Tensor | None = None,
                future_covariates: torch.Tensor | None = None,
                static_covariates: torch.Tensor | None = None) -> CovariateTerms:
        """past_covariates, past_covariates_observed (B, K, L); future_covariates (B, Kf, F); static (B, Ks)."""
        channels = shift = features = offset = None
        if self.n_context:
            _check("past_covariates", past_covariates, self.n_context, "(B, K, L)")
            observed = torch.ones_like(past_covariates) if past_covariates_observed is None \
                else past_covariates_observed.to(past_covariates.dtype)
            scaled = (past_covariates - self.context_loc[:, None]) / self.context_scale[:, None] * observed
            channels = torch.cat([scaled, observed], dim=1)  # (B, 2K, L)
        if self.static_embed is not None:
            _check("static_covariates", static_covariates, self.n_static, "(B, Ks)")
            static = (static_covariates - self.static_loc) / self.static_scale  # (B, Ks)
            shift = self.static_embed(static).unsqueeze(1)  # (B, 1, D)
        if self.step_mlp is not None:
            future = self.scaled_future(future_covariates)  # (B, Kf, F)
            features = self.step_mlp(future.transpose(1, 2)).flatten(1)  # (B, F, W) -> (B, F * W)
            offset = self.horizon_linear(future.flatten(1))  # (B, F)
        return CovariateTerms(channels, shift, features, offset)


def _check(name: str, value: torch.Tensor | None, channels: int, shape: str) -> None:
    if value is None or value.dim() < 2 or value.shape[1] != channels:
        got = None if value is None else tuple(value.shape)
        raise ValueError(f"The network was built with {channels} {name.split('_')[0]} covariate channel(s): "
                         f"expected {name} of shape {shape} with {channels} on dim 1, got {got}.")
