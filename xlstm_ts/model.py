"""The forecasting network in pure PyTorch: scaling -> patch encoder -> xLSTM stack -> quantile head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from xlstm_ts.config import ModelConfig
from xlstm_ts.heads import QuantileHead
from xlstm_ts.patching import PatchEncoder
from xlstm_ts.scaling import InstanceScaler
from xlstm_ts.stack import XLSTMStack


class XLSTMForecastNet(nn.Module):
    """Maps a context window to quantile forecasts.

    Args:
        cfg: the architecture.
        context_length: L.
        prediction_length: F.
        levels: sorted quantile levels containing 0.5.
    """

    def __init__(self, cfg: ModelConfig, context_length: int, prediction_length: int, levels: Sequence[float]):
        super().__init__()
        self.cfg, self.context_length, self.prediction_length = cfg, context_length, prediction_length
        self.scaler = InstanceScaler(cfg.scaling)
        self.encoder = PatchEncoder(context_length, cfg.patch_length, cfg.stride, cfg.embed_dim)
        self.stack = XLSTMStack(cfg)
        self.head_drop = nn.Dropout(cfg.dropout)
        self.head = QuantileHead(self.encoder.num_patches * cfg.embed_dim, prediction_length, levels)
        self.skip = nn.Linear(context_length, prediction_length) if cfg.linear_skip else None

    def describe_inputs(self, batch_size: int = 2) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Names, shapes and dtypes of the inputs of `forward`."""
        L = self.context_length
        return {"past_target": ((batch_size, L), torch.float32), "past_observed": ((batch_size, L), torch.float32)}

    def forward(self, past_target: torch.Tensor, past_observed: torch.Tensor,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantiles in scaled units (B, F, Q), plus loc (B, 1) and scale (B, 1) to map them back.

        past_target, past_observed: (B, L); unobserved positions may hold any value (NaN included).
        """
        observed = past_observed.to(past_target.dtype)
        target = torch.where(observed > 0, past_target, torch.zeros_like(past_target))  # (B, L)
        loc, scale = self.scaler(target, observed)  # (B, 1) each
        scaled = (target - loc) / scale * observed  # (B, L)
        tokens = self.encoder(scaled, observed)  # (B, T, D)
        features = self.head_drop(self.stack(tokens).flatten(1))  # (B, T * D)
        offset = self.skip(scaled) if self.skip is not None else None  # (B, F)
        return self.head(features, offset), loc, scale

    def loss(self, past_target: torch.Tensor, past_observed: torch.Tensor, future_target: torch.Tensor,
             future_observed: torch.Tensor | None = None) -> torch.Tensor:
        """Pinball loss in scaled units, averaged over observed future steps. future_* (B, F)."""
        quantiles, loc, scale = self(past_target, past_observed)
        observed = torch.ones_like(future_target) if future_observed is None else future_observed
        target = (torch.where(observed > 0, future_target, loc) - loc) / scale  # (B, F)
        return self.head.loss(target, quantiles, observed)

    @torch.no_grad()
    def predict(self, past_target: torch.Tensor, past_observed: torch.Tensor) -> torch.Tensor:
        """Quantiles in data units, (B, F, Q)."""
        quantiles, loc, scale = self(past_target, past_observed)
        return quantiles * scale.unsqueeze(-1) + loc.unsqueeze(-1)
