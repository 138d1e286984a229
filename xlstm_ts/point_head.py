"""The "mse" head: a point forecast trained with the squared error (the loss of the long-horizon benchmarks, whose
MSE scores the mean), with intervals from the spread of its own training residuals."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MSEHead(nn.Module):
    """Linear map to the mean of each horizon step, trained with the mean squared error.

    The squared error is minimized by the mean, so `point` is the forecast the MSE metric rewards (the quantile
    head's point is the median, which on skewed data scores a higher MSE). Quantiles and samples treat each step as
    Gaussian around the mean with the root-mean-square of the training residuals of that step in scaled units: a
    bias-corrected running average over training batches (decay `RESIDUAL_DECAY` per batch), kept in the state dict.
    A fit with a validation tail then replaces that spread by the validation windows' (`calibrate_spread`), so the
    intervals reflect out-of-sample error; without one they reflect the in-sample error and run narrow.

    Args:
        in_features: width of the flattened features.
        prediction_length: F.
    """

    RESIDUAL_DECAY = 0.99
    scale_power = 2  # the loss is quadratic in the scale: data-unit weighting multiplies by scale ** 2

    def __init__(self, in_features: int, prediction_length: int):
        super().__init__()
        self.prediction_length = prediction_length
        self.proj = nn.Linear(in_features, prediction_length)
        self.register_buffer("residual_power", torch.zeros(prediction_length))  # (F,) running mean of r ** 2
        self.register_buffer("residual_weight", torch.zeros(()))  # the running average's total weight

    def forward(self, features: torch.Tensor, centre_offset: torch.Tensor | None = None) -> torch.Tensor:
        mean = self.proj(features)  # (B, F)
        if centre_offset is not None:
            mean = mean + centre_offset
        return mean.unsqueeze(-1)  # (B, F, 1)

    def loss(self, target: torch.Tensor, params: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """Mean squared error over observed targets (`observed` may hold weights). target, observed (B, F).

        In training mode with gradients on, the batch's squared residuals per step also update the running spread."""
        sq = (target - params[..., 0]) ** 2  # (B, F)
        if self.training and torch.is_grad_enabled():
            self._track(sq.detach(), (observed > 0).to(sq.dtype))
        return (sq * observed).sum() / observed.sum().clamp(min=1.0)

    @torch.no_grad()
    def _track(self, sq: torch.Tensor, mask: torch.Tensor) -> None:
        # sq, mask (B, F): per-step mean over the batch's observed rows, then the decayed running sums
        count = mask.sum(0)  # (F,)
        batch = (sq * mask).sum(0) / count.clamp(min=1.0)  # (F,)
        batch = torch.where(count > 0, batch, self.residual_power / self.residual_weight.clamp(min=1e-12))
        d = self.RESIDUAL_DECAY
        self.residual_power.mul_(d).add_((1.0 - d) * batch.to(self.residual_power.dtype))
        self.residual_weight.mul_(d).add_(1.0 - d)

    @torch.no_grad()
    def set_spread(self, power: torch.Tensor) -> None:
        """Replace the running spread by mean squared residuals (F,) in scaled units (e.g. out of sample)."""
        self.residual_power.copy_(power.to(self.residual_power))
        self.residual_weight.fill_(1.0)

    def residual_std(self) -> torch.Tensor:
        """The residuals' root-mean-square per step in scaled units (validation ones after `calibrate_spread`,
        else the training ones), (F,); 1 before any training."""
        if float(self.residual_weight) <= 0.0:
            return torch.ones_like(self.residual_power)
        return (self.residual_power / self.residual_weight).sqrt()

    def point(self, params: torch.Tensor) -> torch.Tensor:
        """The mean, (B, F)."""
        return params[..., 0]

    def quantiles(self, params: torch.Tensor, levels: Sequence[float]) -> torch.Tensor:
        """Gaussian quantiles around the mean with the residual spread, (B, F, len(levels))."""
        z = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(levels, dtype=params.dtype, device=params.device))
        std = self.residual_std().to(params)  # (F,)
        return params[..., :1] + std[:, None] * z  # (B, F, Q)

    def sample(self, params: torch.Tensor, num_samples: int, generator: torch.Generator | None = None,
               ) -> torch.Tensor:
        """Samples (B, N, F): the mean plus Gaussian noise with the residual spread, independent across steps."""
        B, F, _ = params.shape
        z = torch.randn(B, num_samples, F, generator=generator, device=params.device, dtype=params.dtype)
        return params[:, None, :, 0] + self.residual_std().to(params) * z


@torch.no_grad()
def calibrate_spread(net: nn.Module, loader) -> bool:
    """Set an "mse" head's spread to the mean squared residual per step over the loader's windows (the validation
    tail), in scaled units; steps without an observed target keep the training spread. Batches are dicts of the
    network's `loss` inputs and go to its device. Returns False (nothing done) for other heads or no loader."""
    head = getattr(net, "head", None)
    if not isinstance(head, MSEHead) or loader is None:
        return False
    device = next(net.parameters()).device
    F = head.prediction_length
    total = torch.zeros(F, dtype=torch.float64, device=device)
    count = torch.zeros(F, dtype=torch.float64, device=device)
    was_training = net.training
    net.eval()
    try:
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            target, observed = batch.pop("future_target"), batch.pop("future_observed")
            params, loc, scale = net(**batch)  # (N, F, 1), (N, 1), (N, 1)
            target, observed = target.reshape(-1, F), observed.reshape(-1, F)  # (N, F)
            mask = (observed > 0).double()
            scaled = (torch.where(mask > 0, target, loc) - loc) / scale  # (N, F)
            total += (((scaled - params[..., 0]) ** 2).double() * mask).sum(0)
            count += mask.sum(0)
    finally:
        net.train(was_training)
    if not bool((count > 0).any()):
        return False
    power = torch.where(count > 0, total / count.clamp(min=1.0), (head.residual_std() ** 2).double())
    head.set_spread(power)
    return True
