"""The forecasting network in pure PyTorch: scaling -> patch encoder -> xLSTM stack -> quantile head (covariates join
through `xlstm_ts.covariate_layers`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from xlstm_ts.config import ModelConfig
from xlstm_ts.covariate_layers import STEP_FEATURES, CovariateLayers
from xlstm_ts.heads import make_head
from xlstm_ts.patching import PatchEncoder
from xlstm_ts.scaling import InstanceScaler
from xlstm_ts.stack import XLSTMStack
from xlstm_ts.variate_mixing import VariateMixer


class XLSTMForecastNet(nn.Module):
    """Maps a context window to quantile forecasts.

    Args:
        cfg: the architecture.
        context_length: L.
        prediction_length: F.
        levels: sorted quantile levels to report (and to train, for the quantile head).
        head: output head name, see `xlstm_ts.heads.HEADS`.
        n_past, n_future, n_static: covariates known over the context only, over the context and the horizon, and
            static features per series (see `xlstm_ts.covariate_layers`). Default: none.
    """

    def __init__(self, cfg: ModelConfig, context_length: int, prediction_length: int, levels: Sequence[float],
                 head: str = "quantile", n_past: int = 0, n_future: int = 0, n_static: int = 0):
        super().__init__()
        self.cfg, self.context_length, self.prediction_length = cfg, context_length, prediction_length
        has_covariates = n_past + n_future + n_static > 0
        if has_covariates and cfg.mode == "variate_mixing":
            raise ValueError("mode='variate_mixing' takes no covariates; use mode='channel_independent'.")
        self.scaler = InstanceScaler(cfg.scaling if head != "negative_binomial" else "mean")  # counts: loc 0
        self.encoder = PatchEncoder(context_length, cfg.patch_length, cfg.stride, cfg.embed_dim,
                                    extra_channels=2 * (n_past + n_future))
        self.stack = XLSTMStack(cfg)
        self.head_drop = nn.Dropout(cfg.dropout)
        self.levels = tuple(levels)
        features = self.encoder.num_patches * cfg.embed_dim
        features += prediction_length * STEP_FEATURES if n_future else 0  # the covariates' horizon features
        self.mixer = VariateMixer(cfg, features, prediction_length) if cfg.mode == "variate_mixing" else None
        if self.mixer is not None:
            features = self.mixer.out_features
        self.head = make_head(head, features, prediction_length, self.levels)
        self.skip = nn.Linear(context_length, prediction_length) if cfg.linear_skip else None
        if self.skip is not None:  # the stack starts as a zero correction on top of the linear forecast
            nn.init.zeros_(self.head.proj.weight)
            nn.init.zeros_(self.head.proj.bias)  # a random bias would shift every start forecast by a constant
        self.covariates = CovariateLayers(n_past, n_future, n_static, cfg.embed_dim, prediction_length) \
            if has_covariates else None  # built last: networks without covariates initialise as before
        if cfg.linear_skip_frozen:  # the least-squares start stays as fitted; only the stack trains
            self.skip.requires_grad_(False)
            horizon = getattr(self.covariates, "horizon_linear", None)
            if horizon is not None:
                horizon.requires_grad_(False)

    def describe_inputs(self, batch_size: int = 2) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Names, shapes and dtypes of the inputs of `forward`."""
        B, L, F = batch_size, self.context_length, self.prediction_length
        inputs = {"past_target": ((B, L), torch.float32), "past_observed": ((B, L), torch.float32)}
        cov = self.covariates
        if cov is not None and cov.n_context:
            inputs["past_covariates"] = inputs["past_covariates_observed"] = ((B, cov.n_context, L), torch.float32)
        if cov is not None and cov.n_future:
            inputs["future_covariates"] = ((B, cov.n_future, F), torch.float32)
        if cov is not None and cov.n_static:
            inputs["static_covariates"] = ((B, cov.n_static), torch.float32)
        return inputs

    def forward(self, past_target: torch.Tensor, past_observed: torch.Tensor,
                past_covariates: torch.Tensor | None = None, past_covariates_observed: torch.Tensor | None = None,
                future_covariates: torch.Tensor | None = None, static_covariates: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Head parameters in scaled units (N, F, P), plus loc (N, 1) and scale (N, 1) to map them back.

        past_target, past_observed: (B, L), or (B, C, L) for C variates (then N = B * C rows, variate-minor);
        unobserved positions may hold any value (NaN included). Mode 'variate_mixing' needs the (B, C, L) form.
        Covariates (only for networks built with them, (B, L) windows): past_covariates and their observed mask
        (B, K, L) over the context, with 0 where unobserved; future_covariates (B, Kf, F); static_covariates (B, Ks).
        """
        return self.readout(*self.encode(past_target, past_observed, past_covariates, past_covariates_observed,
                                         future_covariates, static_covariates))

    def encode(self, past_target: torch.Tensor, past_observed: torch.Tensor,
               past_covariates: torch.Tensor | None = None, past_covariates_observed: torch.Tensor | None = None,
               future_covariates: torch.Tensor | None = None, static_covariates: torch.Tensor | None = None,
               ) -> tuple:
        """The first part of `forward`, up to what the linear skip does not change: (features (N, T * D), scaled
        context (N, L), covariate terms or None, C or None, loc (N, 1), scale (N, 1)); `readout` finishes it."""
        n_variates = past_target.shape[1] if past_target.dim() == 3 else None
        if self.mixer is not None and n_variates is None:
            raise ValueError(f"mode='variate_mixing' needs windows of shape (B, C, L), got {tuple(past_target.shape)}.")
        length = past_target.shape[-1]
        scaled, observed, loc, scale = self.scaled_inputs(past_target.reshape(-1, length),
                                                          past_observed.reshape(-1, length))  # (N, L), (N, 1)
        terms = None
        if self.covariates is not None:
            terms = self.covariates(past_covariates, past_covariates_observed, future_covariates, static_covariates)
        tokens = self.encoder(scaled, observed, terms.channels if terms else None)  # (N, T, D)
        if terms and terms.token_shift is not None:
            tokens = tokens + terms.token_shift  # (N, T, D)
        features = self.head_drop(self.stack(tokens).flatten(1))  # (N, T * D)
        return features, scaled, terms, n_variates, loc, scale

    def readout(self, features: torch.Tensor, scaled: torch.Tensor, terms, n_variates: int | None,
                loc: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The rest of `forward` from `encode`'s outputs: linear skip, covariate features, variate mixer, head."""
        offset = self.skip(scaled) if self.skip is not None else None  # (N, F)
        if terms and terms.features is not None:
            features = torch.cat([features, self.head_drop(terms.features)], dim=1)  # (N, T * D + F * W)
            offset = terms.offset if offset is None else offset + terms.offset  # (N, F)
        if self.mixer is not None:
            features = self.head_drop(self.mixer(features, offset, n_variates))  # (N, 2 * mixing_dim)
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
                        future_observed: torch.Tensor, ridge: float | Sequence[float] = 1e-3,
                        score: Callable[[], float] | None = None, **covariates: torch.Tensor) -> float | None:
        """Set the linear skip to the ridge least-squares map from scaled context to scaled target; with known-future
        covariates, the map takes their scaled horizon values too (the covariates' linear horizon term).

        With `cfg.loss_scale == "data"` each window's squared error is weighted by its scale squared, so the map is
        the least-squares fit in data units, as the network is trained (with 'std' scaling the unweighted fit lets
        quiet windows, blown up by their small spread, dominate: ETTh2, H = 336, L = 512, test MSE 4.8 against
        0.353 weighted).

        Windows with a missing target step are left out, and so are windows with missing context steps when
        enough complete ones exist. past_* (N, L), future_* (N, F), covariates as in `forward`.

        Args:
            ridge: penalty relative to the mean diagonal of the Gram matrix (scale-free); with several values and a
                `score`, each map is set in turn and the one with the lowest score is kept (ties: the first).
            score: called after each map is set, e.g. the validation loss of the network. Default: None.

        Returns:
            The ridge kept, or None when there was nothing to fit (no skip, fewer than two windows).
        """
        ridges = (ridge,) if isinstance(ridge, (int, float)) else tuple(ridge)
        if self.skip is None or not ridges:
            return None
        L, F = self.context_length, self.prediction_length
        past_target, past_observed = past_target.reshape(-1, L), past_observed.reshape(-1, L)  # variates as rows
        future_target, future_observed = future_target.reshape(-1, F), future_observed.reshape(-1, F)
        scaled, _, loc, scale = self.scaled_inputs(past_target, past_observed)
        keep = future_observed.min(dim=1).values > 0  # (N,)
        complete = keep & (past_observed.min(dim=1).values > 0)
        if complete.sum() > 2 * (self.context_length + 1):
            keep = complete
        x = scaled[keep].double()  # (n, L)
        horizon = self.covariates.horizon_linear if self.covariates is not None else None
        if horizon is not None:
            future = self.covariates.scaled_future(covariates.get("future_covariates"))  # (N, Kf, F)
            x = torch.cat([x, future[keep].flatten(1).double()], dim=1)  # (n, L + Kf * F)
        y = ((future_target[keep] - loc[keep]) / scale[keep]).double()  # (n, F)
        if len(x) < 2:
            return None
        x1 = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)  # (n, L [+ Kf * F] + 1)
        # rows weighted by scale ** 2 for a loss in data units: sum of scale^2 * |x b - y|^2 = |scale (x b - y)|^2
        xw = x1 * scale[keep].double() ** 2 if self.cfg.loss_scale == "data" else x1  # (n, D)
        gram, moment = xw.T @ x1, xw.T @ y  # (D, D), (D, F)
        eye = torch.eye(len(gram), dtype=gram.dtype, device=gram.device) * gram.diagonal().mean()  # (D, D)
        if score is None or len(ridges) == 1:  # nothing to choose by: the first ridge
            self._set_linear(torch.linalg.solve(gram + ridges[0] * eye, moment), horizon)
            return float(ridges[0])
        coefs, scores = [], []
        for r in ridges:
            coefs.append(torch.linalg.solve(gram + r * eye, moment))  # (L [+ Kf * F] + 1, F)
            self._set_linear(coefs[-1], horizon)
            scores.append(float(score()))
        best = min(range(len(coefs)), key=lambda j: (not scores[j] == scores[j], scores[j], j))  # NaN last
        self._set_linear(coefs[best], horizon)
        return float(ridges[best])

    def _set_linear(self, coef: torch.Tensor, horizon: nn.Linear | None) -> None:
        """Copy least-squares coefficients (L [+ Kf * F] + 1, F) into the skip (and the covariates' horizon map)."""
        L = self.context_length
        self.skip.weight.copy_(coef[:L].T.to(self.skip.weight.dtype))
        self.skip.bias.copy_(coef[-1].to(self.skip.bias.dtype))
        if horizon is not None:
            horizon.weight.copy_(coef[L:-1].T.to(horizon.weight.dtype))

    def loss(self, past_target: torch.Tensor, past_observed: torch.Tensor, future_target: torch.Tensor,
             future_observed: torch.Tensor | None = None, **covariates: torch.Tensor) -> torch.Tensor:
        """The head's loss averaged over observed future steps. future_* (B, F) or (B, C, F); covariates as in
        `forward`.

        With `cfg.loss_scale == "data"` each window's loss is weighted by its scale (for the quantile head: the
        pinball loss in data units)."""
        return self.loss_of(self(past_target, past_observed, **covariates), future_target, future_observed)

    def loss_of(self, outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor], future_target: torch.Tensor,
                future_observed: torch.Tensor | None = None) -> torch.Tensor:
        """`loss` from the network's outputs (params, loc, scale), as `forward` or `readout` returns them."""
        params, loc, scale = outputs
        F = self.prediction_length
        future_target = future_target.reshape(-1, F)  # (N, F)
        observed = torch.ones_like(future_target) if future_observed is None else future_observed.reshape(-1, F)
        if not getattr(self.head, "affine", True):
            return self.head.loss(future_target, params, observed, scale)
        target = (torch.where(observed > 0, future_target, loc) - loc) / scale  # (N, F)
        if self.cfg.loss_scale == "data":  # sum(scale ** power * loss * observed) / sum(observed)
            weights = observed * scale ** getattr(self.head, "scale_power", 1)  # (N, F)
            return self.head.loss(target, params, weights) * weights.sum() / observed.sum().clamp(min=1.0)
        return self.head.loss(target, params, observed)

    @torch.no_grad()
    def predict(self, past_target: torch.Tensor, past_observed: torch.Tensor,
                **covariates: torch.Tensor) -> dict[str, torch.Tensor]:
        """Forecasts in data units: {"mean": (B, F), "quantiles": (B, F, Q)} for the levels given at construction
        ((B, C, F) and (B, C, F, Q) for windows of C variates). Covariates as in `forward`."""
        params, loc, scale = self(past_target, past_observed, **covariates)
        lead = past_target.shape[:-1]  # (B,) or (B, C)
        if not getattr(self.head, "affine", True):
            quantiles = self.head.quantiles(params, self.levels, scale)  # (N, F, Q) data units
            mean = self.head.point(params, scale)
        else:
            mean = self.head.point(params) * scale + loc  # (N, F)
            quantiles = self.head.quantiles(params, self.levels) * scale.unsqueeze(-1) + loc.unsqueeze(-1)
        return {"mean": mean.reshape(*lead, -1), "quantiles": quantiles.reshape(*lead, *quantiles.shape[1:])}

    @torch.no_grad()
    def sample(self, past_target: torch.Tensor, past_observed: torch.Tensor, num_samples: int,
               generator: torch.Generator | None = None, **covariates: torch.Tensor) -> torch.Tensor:
        """Sample paths in data units, (B, num_samples, F) ((B, C, num_samples, F) for windows of C variates).
        Covariates as in `forward`."""
        params, loc, scale = self(past_target, past_observed, **covariates)
        lead = past_target.shape[:-1]  # (B,) or (B, C)
        if not getattr(self.head, "affine", True):
            draws = self.head.sample(params, num_samples, scale, generator)
        else:
            draws = self.head.sample(params, num_samples, generator) * scale.unsqueeze(-1) + loc.unsqueeze(-1)
        return draws.reshape(*lead, *draws.shape[1:])
