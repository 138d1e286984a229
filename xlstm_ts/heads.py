"""Output heads. Each maps features (B, in_features) to per-step parameters in scaled units and offers
`loss`, `point` (the mean forecast) and `quantiles`. `make_head` builds one by name.

- "quantile": non-crossing quantiles trained with the pinball loss; the point forecast is the median.
- "normal": Gaussian mean and scale trained with the negative log-likelihood; the point forecast is the mean.
- "student_t": Student-t location, scale and degrees of freedom (> 2), negative log-likelihood; point = location.
- "negative_binomial": counts; total count and logits, negative log-likelihood in data units; point = mean.
- "mse": the mean trained with the squared error; Gaussian intervals from the residuals of the validation tail (of
  training without one), see `xlstm_ts.point_head`.

A head may set `scale_power` (default 1): with `ModelConfig.loss_scale == "data"` each window's loss is weighted by
its scale to that power, so the loss is the head's loss in data units.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

from xlstm_ts.point_head import MSEHead


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

    def point(self, quantiles: torch.Tensor) -> torch.Tensor:
        """The median, (B, F)."""
        return quantiles[..., self.mid]

    def quantiles(self, quantiles: torch.Tensor, levels: Sequence[float]) -> torch.Tensor:
        """The columns of the requested (trained) levels, (B, F, len(levels))."""
        missing = [q for q in levels if q not in self.levels]
        if missing:
            raise ValueError(f"The quantile head was trained for levels {self.levels}; {missing} are not among them.")
        return quantiles[..., [self.levels.index(q) for q in levels]]

    def sample(self, quantiles: torch.Tensor, num_samples: int, generator: torch.Generator | None = None,
               ) -> torch.Tensor:
        """Samples (B, N, F): u ~ U(0, 1) through the piecewise-linear quantile function whose knots are the
        trained levels (segments beyond the outermost levels extend the outermost slopes to u = 0 and 1)."""
        B, F, Q = quantiles.shape
        u = torch.rand(B, num_samples, F, generator=generator, device=quantiles.device, dtype=quantiles.dtype)
        if Q == 1:
            return quantiles[..., 0].unsqueeze(1).expand(B, num_samples, F).clone()
        knots = self.level_tensor.to(quantiles)  # (Q,)
        seg = torch.bucketize(u, knots).clamp(1, Q - 1) - 1  # (B, N, F) left knot of the segment
        q_t = quantiles.unsqueeze(1).expand(B, num_samples, F, Q)  # (B, N, F, Q)
        left = q_t.gather(-1, seg.unsqueeze(-1)).squeeze(-1)  # (B, N, F)
        right = q_t.gather(-1, (seg + 1).unsqueeze(-1)).squeeze(-1)
        x0, x1 = knots[seg], knots[seg + 1]
        return left + (right - left) * (u - x0) / (x1 - x0)


class NormalHead(nn.Module):
    """Gaussian per horizon step: mean = linear output (+ offset), std = softplus(linear output) + min_scale.

    Args:
        in_features: width of the flattened features.
        prediction_length: F.
        min_scale: lower bound of the standard deviation in scaled units.
    """

    def __init__(self, in_features: int, prediction_length: int, min_scale: float = 1e-3):
        super().__init__()
        self.prediction_length, self.min_scale = prediction_length, min_scale
        self.proj = nn.Linear(in_features, prediction_length * 2)

    def forward(self, features: torch.Tensor, centre_offset: torch.Tensor | None = None) -> torch.Tensor:
        raw = self.proj(features).reshape(features.shape[0], self.prediction_length, 2)  # (B, F, 2)
        mean = raw[..., 0] if centre_offset is None else raw[..., 0] + centre_offset  # (B, F)
        std = F.softplus(raw[..., 1]) + self.min_scale  # (B, F)
        return torch.stack([mean, std], dim=-1)  # (B, F, 2)

    def loss(self, target: torch.Tensor, params: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """Mean Gaussian negative log-likelihood over observed targets."""
        nll = -torch.distributions.Normal(params[..., 0], params[..., 1]).log_prob(target)  # (B, F)
        return (nll * observed).sum() / observed.sum().clamp(min=1.0)

    def point(self, params: torch.Tensor) -> torch.Tensor:
        return params[..., 0]

    def quantiles(self, params: torch.Tensor, levels: Sequence[float]) -> torch.Tensor:
        z = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(levels, dtype=params.dtype, device=params.device))
        return params[..., :1] + params[..., 1:2] * z  # (B, F, Q)

    def sample(self, params: torch.Tensor, num_samples: int, generator: torch.Generator | None = None,
               ) -> torch.Tensor:
        """Samples (B, N, F) from the per-step Gaussians (independent across steps)."""
        B, F, _ = params.shape
        z = torch.randn(B, num_samples, F, generator=generator, device=params.device, dtype=params.dtype)
        return params[:, None, :, 0] + params[:, None, :, 1] * z


class StudentTHead(NormalHead):
    """Student-t per horizon step: location, scale = softplus + min_scale, degrees of freedom = 2 + softplus (> 2,
    so the mean and variance exist). Trained with the negative log-likelihood; the point forecast is the location."""

    def __init__(self, in_features: int, prediction_length: int, min_scale: float = 1e-3):
        super().__init__(in_features, prediction_length, min_scale)
        self.proj = nn.Linear(in_features, prediction_length * 3)

    def forward(self, features: torch.Tensor, centre_offset: torch.Tensor | None = None) -> torch.Tensor:
        raw = self.proj(features).reshape(features.shape[0], self.prediction_length, 3)  # (B, F, 3)
        loc = raw[..., 0] if centre_offset is None else raw[..., 0] + centre_offset  # (B, F)
        scale = F.softplus(raw[..., 1]) + self.min_scale
        dof = 2.0 + F.softplus(raw[..., 2])
        return torch.stack([loc, scale, dof], dim=-1)  # (B, F, 3)

    def loss(self, target: torch.Tensor, params: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        dist = torch.distributions.StudentT(params[..., 2], params[..., 0], params[..., 1])
        nll = -dist.log_prob(target)  # (B, F)
        return (nll * observed).sum() / observed.sum().clamp(min=1.0)

    def _ppf(self, params: torch.Tensor, u: np.ndarray) -> torch.Tensor:
        dof = params[..., 2].detach().double().cpu().numpy()
        z = torch.from_numpy(stats.t.ppf(u, dof[..., None] if u.ndim == 1 else dof[:, None, :]))
        return z.to(params)

    def quantiles(self, params: torch.Tensor, levels: Sequence[float]) -> torch.Tensor:
        z = self._ppf(params, np.asarray(levels, np.float64))  # (B, F, Q)
        return params[..., :1] + params[..., 1:2] * z

    def sample(self, params: torch.Tensor, num_samples: int, generator: torch.Generator | None = None,
               ) -> torch.Tensor:
        """Samples (B, N, F) by inverting the t distribution function at uniform draws."""
        B, F, _ = params.shape
        u = torch.rand(B, num_samples, F, generator=generator, device=params.device, dtype=torch.float64)
        z = self._ppf(params, u.cpu().numpy())  # (B, N, F)
        return params[:, None, :, 0] + params[:, None, :, 1] * z


class NegativeBinomialHead(nn.Module):
    """Negative binomial per horizon step for counts: total count r = softplus + 1e-3 and logits, so the mean is
    r * exp(logits). It works in data units: the window scale multiplies the mean (logits + log scale), which needs
    a zero location (the network uses mean scaling with this head). Point forecast: the mean.
    """

    affine = False

    def __init__(self, in_features: int, prediction_length: int):
        super().__init__()
        self.prediction_length = prediction_length
        self.proj = nn.Linear(in_features, prediction_length * 2)

    def forward(self, features: torch.Tensor, centre_offset: torch.Tensor | None = None) -> torch.Tensor:
        raw = self.proj(features).reshape(features.shape[0], self.prediction_length, 2)  # (B, F, 2)
        mean = F.softplus(raw[..., 0] if centre_offset is None else raw[..., 0] + centre_offset) + 1e-6  # scaled
        total = F.softplus(raw[..., 1]) + 1e-3  # (B, F)
        return torch.stack([total, torch.log(mean) - torch.log(total)], dim=-1)  # (B, F, 2): r, logits

    @staticmethod
    def _in_data_units(params: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return params[..., 0], params[..., 1] + torch.log(scale)  # scale (B, 1) broadcasts over F

    def loss(self, target: torch.Tensor, params: torch.Tensor, observed: torch.Tensor,
             scale: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood of the (data-unit) counts `target` (B, F)."""
        total, logits = self._in_data_units(params, scale)
        dist = torch.distributions.NegativeBinomial(total_count=total, logits=logits, validate_args=False)
        nll = -dist.log_prob(target.clamp(min=0.0))
        return (nll * observed).sum() / observed.sum().clamp(min=1.0)

    def point(self, params: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        total, logits = self._in_data_units(params, scale)
        return total * torch.exp(logits)

    def _ppf(self, params: torch.Tensor, scale: torch.Tensor, u: np.ndarray) -> torch.Tensor:
        total, logits = (x.detach().double().cpu().numpy() for x in self._in_data_units(params, scale))
        p_success = 1.0 - 1.0 / (1.0 + np.exp(-logits))  # scipy counts failures before r successes
        shape = (slice(None), slice(None), None) if u.ndim == 1 else (slice(None), None, slice(None))
        return torch.from_numpy(stats.nbinom.ppf(u, total[shape], p_success[shape])).to(params)

    def quantiles(self, params: torch.Tensor, levels: Sequence[float], scale: torch.Tensor) -> torch.Tensor:
        return self._ppf(params, scale, np.asarray(levels, np.float64))  # (B, F, Q)

    def sample(self, params: torch.Tensor, num_samples: int, scale: torch.Tensor,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Count samples (B, N, F) by inverting the distribution function at uniform draws."""
        B, F, _ = params.shape
        u = torch.rand(B, num_samples, F, generator=generator, device=params.device, dtype=torch.float64)
        return self._ppf(params, scale, u.cpu().numpy())


HEADS = ("quantile", "normal", "student_t", "negative_binomial", "mse")


def make_head(name: str, in_features: int, prediction_length: int, levels: Sequence[float]) -> nn.Module:
    """A head by name; `levels` are the quantile levels to train (quantile head) or to report."""
    if name == "quantile":
        return QuantileHead(in_features, prediction_length, with_median(levels))
    if name == "normal":
        return NormalHead(in_features, prediction_length)
    if name == "student_t":
        return StudentTHead(in_features, prediction_length)
    if name == "negative_binomial":
        return NegativeBinomialHead(in_features, prediction_length)
    if name == "mse":
        return MSEHead(in_features, prediction_length)
    raise ValueError(f"Unknown head {name!r}; expected one of {HEADS}.")
