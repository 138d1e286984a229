"""Gate pre-activations of the mLSTM block: a linear map of concat(a, b) to a few outputs, without the concatenation.

The map has few outputs (2 NH: one input and one forget gate per head) and wide inputs (q, k and v). Its input
gradients, dy @ W, are then rank-2NH products. As matmuls they write a full (N, features) tensor that the backward
adds to the cell's dq, dk, dv afterwards; inside a compiled graph they are written here as 2NH broadcast products
instead, which the compiler fuses into that addition (and into the re-layout of the cell's gradients), so the
product never goes through memory. Same function either way.

H200, compiled and graphed bf16 training step (forward, backward, AdamW), same call: (1024, 64, 128) mmmm 5.98
against 6.08 ms with the matmul backward, msmm 5.75 against 5.87, (256, 336, 128) msmm 9.79 against 9.97.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# the most outputs whose input gradients are formed as broadcast products (one fused multiply-add per output and
# input element); wider maps keep the matmul
MAX_UNROLLED_OUTPUTS = 32


def _rank_products(dy: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """dy @ weight as a sum of broadcast products (element-wise ops the compiler fuses). dy (..., J), weight (J, F)
    -> (..., F) in fp32 (fp64 for fp64 inputs)."""
    dtype = torch.promote_types(dy.dtype, torch.float32)
    out = dy[..., 0:1].to(dtype) * weight[0].to(dtype)  # (..., F)
    for j in range(1, weight.shape[0]):
        out = out + dy[..., j : j + 1].to(dtype) * weight[j].to(dtype)
    return out


class _TwoInputLinear(torch.autograd.Function):
    """y = a @ W[:, :Fa]^T + b @ W[:, Fa:]^T + bias; the backward forms da, db as rank products when `unrolled`."""

    @staticmethod
    def forward(ctx, a, b, weight, bias, unrolled: bool):
        split = a.shape[-1]
        ctx.save_for_backward(a, b, weight)
        ctx.unrolled = unrolled
        return F.linear(a, weight[:, :split]) + F.linear(b, weight[:, split:], bias)  # (..., J)

    @staticmethod
    def backward(ctx, dy):  # dy (..., J)
        a, b, weight = ctx.saved_tensors
        split = a.shape[-1]
        wa, wb = weight[:, :split], weight[:, split:]  # (J, Fa), (J, Fb)
        need = ctx.needs_input_grad  # only the gradients autograd asks for (need[3] is False without a bias)
        input_grad = _rank_products if ctx.unrolled else lambda g, w: g @ w.to(g.dtype)
        da = input_grad(dy, wa).to(a.dtype) if need[0] else None
        db = input_grad(dy, wb).to(b.dtype) if need[1] else None
        dy2 = dy.reshape(-1, dy.shape[-1]).t()  # (J, N)
        dw = dbias = None
        if need[2]:
            dw = torch.cat([dy2 @ a.reshape(-1, split).to(dy.dtype), dy2 @ b.reshape(-1, b.shape[-1]).to(dy.dtype)], 1)
            dw = dw.to(weight.dtype)
        if need[3]:
            dbias = dy2.to(torch.promote_types(dy.dtype, torch.float32)).sum(1).to(weight.dtype)  # (J,)
        return da, db, dw, dbias, None


def two_input_linear(
    a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
    unrolled: bool | None = None,
) -> torch.Tensor:  # fmt: skip
    """F.linear(concat(a, b, -1), weight, bias) without writing the concatenation (or keeping it for the backward).

    Args:
        a: (..., Fa); b: (..., Fb) with the same leading dims.
        weight: (J, Fa + Fb); bias: (J,) or None.
        unrolled: form the input gradients as J broadcast products (True) or as matmuls (False); None: products
            inside torch.compile for up to MAX_UNROLLED_OUTPUTS outputs (fused there), matmuls in eager mode.

    Returns:
        (..., J); under autocast in its dtype, as F.linear.
    """
    if weight.shape[1] != a.shape[-1] + b.shape[-1]:
        raise ValueError(
            f"weight takes {weight.shape[1]} input features, but a and b have {a.shape[-1]} + {b.shape[-1]}; "
            "pass a weight of shape (outputs, a features + b features)."
        )
    if unrolled is None:
        unrolled = torch.compiler.is_compiling() and weight.shape[0] <= MAX_UNROLLED_OUTPUTS
    device = a.device.type
    if torch.is_autocast_enabled(device):  # cast as autocast would for F.linear, then run without it
        dtype = torch.get_autocast_dtype(device)
        with torch.autocast(device, enabled=False):
            cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
            return _TwoInputLinear.apply(cast(a), cast(b), cast(weight), cast(bias), unrolled)
    return _TwoInputLinear.apply(a, b, weight, bias, unrolled)
