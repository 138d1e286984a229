"""Variate mixing: an xLSTM stack that runs across the variate axis of a multivariate window.

Every variate is first encoded on its own (patch encoder + temporal xLSTM stack, shared weights). The mixer turns
each variate's temporal features and its linear forecast into one token, runs the mixing stack over the sequence of
variate tokens in both directions (the variate order carries no meaning, so neither direction is privileged) and
hands the concatenated outputs to the head. Memory mixing in the sLSTM blocks lets each variate's forecast depend on
the others'.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from xlstm_ts.config import ModelConfig
from xlstm_ts.stack import XLSTMStack


class VariateMixer(nn.Module):
    """Tokens per variate -> bidirectional xLSTM stack over variates -> features per variate.

    Args:
        cfg: the model config (uses `mixing_dim`, `mixing_pattern`, `mixing_heads`, `dropout`, kernels).
        in_features: width of one variate's temporal features (T * D).
        prediction_length: F, width of the linear forecast that is folded into the token.
    """

    def __init__(self, cfg: ModelConfig, in_features: int, prediction_length: int):
        super().__init__()
        width = cfg.mixing_dim
        self.token = nn.Linear(in_features, width)
        self.forecast_token = nn.Linear(prediction_length, width)
        # no convolution across variates: neighbouring columns of a frame are not neighbours in any sense
        mixing = dataclasses.replace(cfg, embed_dim=width, num_heads=cfg.mixing_heads, pattern=cfg.mixing_pattern,
                                     conv_kernel=1)
        self.stack = XLSTMStack(mixing)
        self.out_features = 2 * width

    def forward(self, features: torch.Tensor, forecast: torch.Tensor | None, n_variates: int) -> torch.Tensor:
        """features (B * C, in_features), forecast (B * C, F) or None -> (B * C, 2 * mixing_dim)."""
        tokens = self.token(features)  # (B * C, W)
        if forecast is not None:
            tokens = tokens + self.forecast_token(forecast)
        if tokens.shape[0] % n_variates:
            raise ValueError(f"Expected a multiple of {n_variates} variate rows, got {tokens.shape[0]}.")
        tokens = tokens.reshape(-1, n_variates, tokens.shape[-1])  # (B, C, W)
        forward = self.stack(tokens)  # (B, C, W)
        backward = self.stack(tokens.flip(1)).flip(1)  # (B, C, W)
        return torch.cat([forward, backward], dim=-1).flatten(0, 1)  # (B * C, 2W)
