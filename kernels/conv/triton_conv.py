"""Depthwise causal conv (+ SiLU) in Triton, as torch custom ops: `causal_conv_triton`.

The forward and the backward are registered ops (`xlstm_ts::causal_conv`, `xlstm_ts::causal_conv_backward`) with
shape-only fake implementations, so torch.compile keeps them inside a compiled graph (no graph break) and CUDA
graphs capture them; autocast leaves them alone: y and dx come out in x's dtype, the taps and bias stay in theirs.

Against the shifted-products form under torch.compile, which materialized a padded copy of x, an fp32 pre-activation
and a padded fp32 dx in the backward, these read x once each way (the backward recomputes the pre-activation) and
write y, then g = dy act'(a) (in dy's dtype), dx and per-program shares of dw and db. Same function as
`causal_conv--torch`; contract in `torch_ref.py`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._fast_launch import FastLauncher
from .._ints import cdiv, next_power_of_2
from .torch_ref import check_conv_inputs
from .triton_conv_kernels import _causal_conv_dx_kernel_tl, _causal_conv_fwd_kernel_tl, _causal_conv_grad_kernel_tl

_FWD = FastLauncher(_causal_conv_fwd_kernel_tl)
_GRAD = FastLauncher(_causal_conv_grad_kernel_tl)
_DX = FastLauncher(_causal_conv_dx_kernel_tl)

# (time steps, channels, num_warps) of the tiles (channels are contiguous in memory): the forward's, the backward's
# g, dw, db kernel's and its dx kernel's; small enough per thread to stay in registers on sm_90 (`_testing_sm90`).
# H200, bf16 + SiLU, 256 of 512 channels, (B, T) = (1024, 64) and (256, 336): forward 0.046 / 0.049 ms at 16 x 128
# against 0.082 / 0.105 at 16 x 64; backward 0.210 / 0.184 ms with dx tiles of 16 x 128 against 0.262 / 0.249 at
# 16 x 64; g tiles of 8 x 64 (4 warps) 0.199 / 0.266 against 0.263 / 0.249 at 16 x 64 (8 warps): the g kernel
# takes GRAD_BLOCK_SHORT for sequences of up to SHORT_STEPS steps (many short walks), GRAD_BLOCK for longer ones
FWD_BLOCK = (16, 128, 4)
GRAD_BLOCK = (16, 64, 8)
GRAD_BLOCK_SHORT = (8, 64, 4)
SHORT_STEPS = 64
DX_BLOCK = (16, 128, 4)
MAX_TAPS = 8  # the backward sums dw in one register tile per tap

# g = dy act'(a), which the backward's dx kernel reads K times, is stored in dy's dtype when that is bf16 or fp16
# (the precision dy arrived in; dx, a sum of K products with g, comes out in that dtype too), else in fp32
G_IN_DY_DTYPE = True


def _tiles(T: int, C: int, block: tuple[int, int, int]) -> tuple[int, int, int, int]:
    """(BT, BC, NT time blocks, NCB channel blocks) of a (B, T, C) call in tiles of at most `block`."""
    BT = min(next_power_of_2(T), block[0])
    BC = min(max(next_power_of_2(C), 16), block[1])
    return BT, BC, cdiv(T, BT), cdiv(C, BC)


@torch.library.custom_op("xlstm_ts::causal_conv", mutates_args=())
def _conv(x: Tensor, weight: Tensor, bias: Tensor | None, silu: bool) -> Tensor:
    """y (B, T, C) contiguous in x's dtype; weight (C, K) contiguous."""
    B, T, C = x.shape
    y = torch.empty(B, T, C, dtype=x.dtype, device=x.device)  # (B, T, C)
    if y.numel() == 0:
        return y
    BT, BC, NT, NCB = _tiles(T, C, FWD_BLOCK)
    _FWD[(B * NT, NCB)](
        x, weight, weight if bias is None else bias, y, T, C, NT, *x.stride(),
        weight, weight, weight, y, y,  # the q, k, v arguments: unused without QKV (`triton_conv_qkv.py`)
        K=weight.shape[1], BT=BT, BC=BC, HAS_BIAS=bias is not None, SILU=silu, num_warps=FWD_BLOCK[2],
    )  # fmt: skip
    return y


@_conv.register_fake
def _conv_fake(x: Tensor, weight: Tensor, bias: Tensor | None, silu: bool) -> Tensor:
    return x.new_empty(x.shape)


def backward_buffers(dy: Tensor, x: Tensor, K: int, has_bias: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Outputs of the backward kernels: dx (B, T, C) in x's dtype, g = dy act'(a) (B, T, C) (`G_IN_DY_DTYPE`), and
    fp32 per-sequence shares of dw (B, C, K) and db (B, C) (no rows without bias)."""
    B, T, C = x.shape
    dx = torch.empty(B, T, C, dtype=x.dtype, device=x.device)
    low = G_IN_DY_DTYPE and dy.dtype in (torch.bfloat16, torch.float16)
    g = torch.empty(B, T, C, dtype=dy.dtype if low else torch.float32, device=x.device)
    dw_shares = torch.empty(B, C, K, dtype=torch.float32, device=x.device)  # their sum is dw's layout
    db_shares = torch.empty(B if has_bias else 0, C, dtype=torch.float32, device=x.device)
    return dx, g, dw_shares, db_shares


def tap_sums(dw_shares: Tensor, db_shares: Tensor, weight: Tensor, bias: Tensor | None,
             x: Tensor) -> tuple[Tensor, Tensor]:  # fmt: skip
    """(dw (C, K) in the taps' dtype, db (C,) in the bias's or an empty tensor without bias) from their shares."""
    dw = dw_shares.sum(0).to(weight.dtype)  # no transposed copy (none at all for fp32 taps)
    return dw, db_shares.sum(0).to(bias.dtype) if bias is not None else x.new_empty(0)


@torch.library.custom_op("xlstm_ts::causal_conv_backward", mutates_args=())
def _conv_backward(
    dy: Tensor, x: Tensor, weight: Tensor, bias: Tensor | None, silu: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """(dx (B, T, C) in x's dtype, dw (C, K) in weight's, db (C,) in bias's or an empty tensor without bias)."""
    B, T, C = x.shape
    K = weight.shape[1]
    dx, g, dw_shares, db_shares = backward_buffers(dy, x, K, bias is not None)
    if dx.numel() > 0:
        grad_block = GRAD_BLOCK_SHORT if T <= SHORT_STEPS else GRAD_BLOCK
        BT, BC, _, NCB = _tiles(T, C, grad_block)
        _GRAD[(B, NCB)](
            x, weight, weight if bias is None else bias, dy, g, dw_shares, db_shares, T, C,
            *x.stride(), *dy.stride(), dy, weight, weight, 0, 0, 0,
            K=K, BT=BT, BC=BC, HAS_BIAS=bias is not None, SILU=silu, num_warps=grad_block[2],
        )  # fmt: skip
        BT, BC, NT, NCB = _tiles(T, C, DX_BLOCK)
        _DX[(B * NT, NCB)](g, weight, dx, T, C, NT, g, weight, 0, 0, 0, K=K, BT=BT, BC=BC, num_warps=DX_BLOCK[2])
    else:
        dw_shares.zero_()
        db_shares.zero_()
    return dx, *tap_sums(dw_shares, db_shares, weight, bias, x)


@_conv_backward.register_fake
def _conv_backward_fake(dy: Tensor, x: Tensor, weight: Tensor, bias: Tensor | None, silu: bool):
    db = bias.new_empty(bias.shape) if bias is not None else x.new_empty(0)
    return x.new_empty(x.shape), weight.new_empty(weight.shape), db


def _setup_context(ctx, inputs, output) -> None:
    x, weight, bias, silu = inputs
    ctx.save_for_backward(x, weight, bias)
    ctx.silu = silu


def _backward(ctx, dy):
    x, weight, bias = ctx.saved_tensors
    dx, dw, db = _conv_backward(dy, x, weight, bias, ctx.silu)
    return dx, dw, (db if bias is not None else None), None


_conv.register_autograd(_backward, setup_context=_setup_context)


def causal_conv_triton(x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None) -> Tensor:
    """Depthwise causal conv (and activation) in Triton: same contract as `causal_conv--torch`.

    Args:
        x: (B, T, C), float32, bfloat16 or float16, any strides.
        weight: (C, 1, K) or (C, K) taps.
        bias: (C,) or None.
        activation: None or "silu".

    Returns:
        (B, T, C) contiguous, in x's dtype.
    """
    taps, K = check_conv_inputs(x, weight, bias, activation)
    if K > MAX_TAPS:
        raise ValueError(f"causal_conv--triton takes up to {MAX_TAPS} taps, got {K}; use causal_conv--torch or "
                         "nn.Conv1d for wider convolutions.")  # fmt: skip
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"causal_conv--triton takes float32, bfloat16 or float16 x, got {x.dtype}; use "
                         "causal_conv--torch for other dtypes.")  # fmt: skip
    if x.device != taps.device or (bias is not None and bias.device != x.device):
        where = f"{x.device}, {taps.device}" + ("" if bias is None else f", {bias.device}")
        raise ValueError(f"x, weight and bias must be on one device, got {where}; move them with .to(x.device).")
    return _conv(x, taps.contiguous(), bias, activation == "silu")


causal_conv_triton.compile_traceable = True  # a custom op: torch.compile keeps it in the graph
