"""Depthwise causal convolution in PyTorch: the reference of `causal_conv--triton`, and the portable kernel.

Contract (both kernels): x (B, T, C) in any layout; weight (C, 1, K) as nn.Conv1d holds it, or (C, K); bias (C,)
or None; activation None or "silu". y_t = act(bias + sum_k weight[:, k] * x_{t - K + 1 + k}) with x_s = 0 for s < 0
(cross-correlation: tap K - 1 meets x_t). Accumulation in fp32 or wider; y in x's dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

ACTIVATIONS = (None, "silu")


def check_conv_inputs(x: Tensor, weight: Tensor, bias: Tensor | None, activation: str | None) -> tuple[Tensor, int]:
    """The (C, K) view of `weight` and K, after checking the shapes against x (B, T, C); raises ValueError."""
    if x.dim() != 3:
        raise ValueError(f"x must be (B, T, C), got shape {tuple(x.shape)}; add the missing batch or time axis.")
    C = x.shape[-1]
    if weight.dim() == 3 and weight.shape[1] == 1:
        weight = weight[:, 0]
    if weight.dim() != 2 or weight.shape[0] != C:
        raise ValueError(
            f"weight must be (C, 1, K) or (C, K) with C = {C} (x's last axis), got {tuple(weight.shape)}; pass the "
            "depthwise nn.Conv1d's weight."
        )
    if bias is not None and tuple(bias.shape) != (C,):
        raise ValueError(f"bias must be ({C},) or None, got {tuple(bias.shape)}.")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}.")
    return weight, weight.shape[1]


def causal_conv_torch(x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None) -> Tensor:
    """Depthwise causal conv (and activation) as a sum of shifted, per-channel scaled copies of x.

    Element-wise in the (B, T, C) layout: no transposes, and torch.compile fuses it with the ops around it.

    Args:
        x: (B, T, C) input.
        weight: (C, 1, K) or (C, K) taps.
        bias: (C,) or None.
        activation: None or "silu".

    Returns:
        (B, T, C) in x's dtype (computed in the promoted dtype of x and weight).
    """
    taps, K = check_conv_inputs(x, weight, bias, activation)
    T = x.shape[1]
    taps = taps.t()  # (K, C)
    padded = F.pad(x, (0, 0, K - 1, 0))  # (B, T + K - 1, C)
    last = padded[:, K - 1:]
    y = last * taps[K - 1] if bias is None else torch.addcmul(bias, last, taps[K - 1])  # (B, T, C)
    for k in range(K - 1):
        y = torch.addcmul(y, padded[:, k:k + T], taps[k])  # (B, T, C)
    if activation == "silu":
        y = F.silu(y)
    return y.to(x.dtype)
