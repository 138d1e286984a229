"""The forecasting network in pure PyTorch: scaling -> patch encoder -> xLSTM stack -> quantile head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from xlstm_ts.config import ModelConfig
from xlstm_ts.heads import make_head
from xlstm_ts.patching import PatchEncoder
from xlstm_ts.scaling import InstanceScaler
from xlstm_ts.stack import XLSTMStack


class XLSTMForecastNet(nn.Module):
    """Maps a context window to quantile forecasts.

    Args:
        cfg: the architecture.
        context_length: L.
        prediction_length: F.
        levels: sorted quantile levels to report (and to train, for the quantile head).
        head: output head name, see `xlstm_ts.heads.HEADS`.
    """

    def __init__(self, cfg: ModelConfig, context_length: int, prediction_length: int, levels: Sequence[float],
                 head: str = "quantile"):
        super().__init__()
        self.cfg, self.context_length, self.prediction_length = cfg, context_length, prediction_length
        self.scaler = InstanceScaler(cfg.scaling if head != "negative_binomial" else "mean")  # counts: loc 0
        self.encoder = PatchEncoder(context_length, cfg.patch_length, cfg.stride, cfg.embed_dim)
        self.stack = XLSTMStack(cfg)
        self.head_drop = nn.Dropout(cfg.dropout)
        self.levels = tuple(levels)
        self.head = make_head(head, self.encoder.num_patches * cfg.embed_dim, prediction_length, self.levels)
        self.skip = nn.Linear(context_length, prediction_length) if cfg.linear_skip else None
        if self.skip is not None:  # the stack starts as a zero correction on top of the linear forecast
            nn.init.zeros_(self.head.proj.weight)

    def describe_inputs(self, batch_size: int = 2) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Names, shapes and dtypes of the inputs of `forward`."""
        L = self.context_length
        return {"past_target": ((batch_size, L), torch.float32), "past_observed": ((batch_size, L), torch.float32)}

    def forward(self, past_target: torch.Tensor, past_observed: torch.Tensor,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Head parameters in scaled units (B, F, P), plus loc (B, 1) and scale (B, 1) to map them back.

        past_target, past_observed: (B, L); unobserved positions may hold any value (NaN included).
        """
        scaled, observed, loc, scale = self.scaled_inputs(past_target, past_observed)
        tokens = self.encoder(scaled, observed)  # (B, T, D)
        features = self.head_drop(self.stack(tokens).flatten(1))  # (B, T * D)
        offset = self.skip(scaled) if self.skip is not None else None  # (B, F)
        return self.head(features, offset), loc, scale

    def scaled_inputs(self, past_target: torch.Tensor, past_observed: torch.Tensor,
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(scaled context (B, L), observed (B, L), loc (B, 1), scale (B, 1)); unobserved steps become 0."""
        observed = past_observed.to(past_target.dtype)
        target = torch.where(observed > 0, past_target, torch.zeros_like(past_target))  # (B, L)
        loc, scale = self.scaler(target, observed)  # (B, 1) each
        return (target - loc) / scale * observed, observed, loc, scale

    @torch.no_grad()
    def fit_linear_skip(self, past_target: torch.Tensor, past_observed: torch.Tensor, future_target: torch.Tensor,
                        future_observed: torch.Tensor, ridge: float = 1e-3) -> None:
        """Set the linear skip to the ridge least-squares map from scaled context to scaled target.

        Windows with a missing target step are left out, and so are windows with missing context steps when
        enough complete ones exist. past_* (N, L), future_* (N, F).
        """
        if self.skip is None:
            return
        scaled, _, loc, scale = self.scaled_inputs(past_target, past_observed)
        keep = future_observed.min(dim=1).values > 0  # (N,)
        complete = keep & (past_observed.min(dim=1).values > 0)
        if complete.sum() > 2 * (self.context_length + 1):
            keep = complete
        x = scaled[keep].double()  # (n, L)
        y = ((future_target[keep] - loc[keep]) / scale[keep]).double()  # (n, F)
        if len(x) < 2:
            return
        x1 = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)  # (n, L + 1)
        gram = x1.T @ x1 + ridge * len(x1) * torch.eye(x1.shape[1], dtype=x1.dtype)
        coef = torch.linalg.solve(gram, x1.T @ y)  # (L + 1, F)
        self.skip.weight.copy_(coef[:-1].T.to(self.skip.weight.dtype))
        self.skip.bias.copy_(coef[-1].to(self.skip.bias.dtype))

    def loss(self, past_target: torch.Tensor, past_observed: torch.Tensor, future_target: torch.Tensor,
             future_observed: torch.Tensor | None = None) -> torch.Tensor:
        """Pinball loss in scaled units, averaged over observed future steps. future_* (B, F)."""
        params, loc, scale = self(past_target, past_observed)
        observed = torch.ones_like(future_target) if future_observed is None else future_observed
        if not getattr(self.head, "affine", True):
            return self.head.loss(future_target, params, observed, scale)
        target = (torch.where(observed > 0, future_target, loc) - loc) / scale  # (B, F)
        return self.head.loss(target, params, observed)

    @torch.no_grad()
    def predict(self, past_target: torch.Tensor, past_observed: torch.Tensor) -> dict[str, torch.Tensor]:
        """Forecasts in data units: {"mean": (B, F), "quantiles": (B, F, Q)} for the levels given at construction."""
        params, loc, scale = self(past_target, past_observed)
        if not getattr(self.head, "affine", True):
            quantiles = self.head.quantiles(params, self.levels, scale)  # (B, F, Q) data units
            return {"mean": self.head.point(params, scale), "quantiles": quantiles}
        mean = self.head.point(params) * scale + loc  # (B, F)
        quantiles = self.head.quantiles(params, self.levels) * scale.unsqueeze(-1) + loc.unsqueeze(-1)  # (B, F, Q)
        return {"mean": mean, "quantiles": quantiles}

    @torch.no_grad()
    def sample(self, past_target: torch.Tensor, past_observed: torch.Tensor, num_samples: int,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample paths in data units, (B, num_samples, F)."""
        params, loc, scale = self(past_target, past_observed)
        if not getattr(self.head, "affine", True):
            return self.head.sample(params, num_samples, scale, generator)
        draws = self.head.sample(params, num_samples, generator)  # (B, N, F) scaled
        return draws * scale.unsqueeze(-1) + loc.unsqueeze(-1)
