"""Causal conv + SiLU and the grouped q, k, v maps of the mLSTM block in Triton, as custom ops: `conv_qkv--triton`.

The block's q and k maps read x_c = silu(conv(x_m)) and its v map reads x_m; all three are block diagonal with small
blocks (4 x 4 by default), so within a group of W channels (64 for the default widths) each map is one dense (W, W)
tile. The conv kernels of `triton_conv_kernels.py` already hold a (steps, channels) tile of x_m and x_c: with QKV,
and a channel block of one group, the forward also writes q|k and v from that tile (tensor-core dots of W), and the
backward adds the maps' input gradients to its g and dx kernels. A fourth kernel sums the maps' weight gradients over
row slices. Against the conv op followed by three dense (C, C) matmuls with zeros outside the blocks, the maps do
1 / G of the arithmetic and x_m and x_c are read once each way.

`ENABLED` switches the block's use of this op (`kernel_choice.conv_qkv_for`); the op itself is always available
by name. Same function as `conv_qkv--torch`; contract in `conv_qkv_torch.py`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._fast_launch import FastLauncher
from .._ints import cdiv, next_power_of_2
from .._precision import INTERPRETED, fp32_uses_tf32
from .conv_qkv_torch import check_group_weights
from .torch_ref import check_conv_inputs
from .triton_conv import MAX_TAPS, backward_buffers, tap_sums
from .triton_conv_kernels import (
    _causal_conv_dx_kernel_tl,
    _causal_conv_fwd_kernel_tl,
    _causal_conv_grad_kernel_tl,
    _group_dw_kernel_tl,
)

ENABLED = False
"""Whether the mLSTM block runs this op on CUDA in place of the conv op and the dense q, k, v matmuls. Off: on an
H200 (bf16, `benchmarks/conv_qkv.py`, conv_qkv.md) the op's fastest tiles took 0.77 ms forward + backward at
(1024, 64, 256) against 0.51 for the conv op and the dense matmuls, and the compiled graphed training step at
(1024, 64, 128) 7.15 against 6.04 ms (mmmm), 6.66 against 5.76 (msmm)."""

_FWD = FastLauncher(_causal_conv_fwd_kernel_tl)
_GRAD = FastLauncher(_causal_conv_grad_kernel_tl)
_DX = FastLauncher(_causal_conv_dx_kernel_tl)
_DW = FastLauncher(_group_dw_kernel_tl)

# (time steps, num_warps) of the forward's, the g kernel's and the dx kernel's tiles (channels: one group); dots need
# at least 16 rows. (rows, num_warps) of the weight-gradient kernel's tiles, and rows per program (its row slices).
# Compiled for sm_90 without a GPU (bf16, 256 channels in groups of 64, `benchmarks/conv_qkv.py --sm90`), registers
# per thread, no spills: forward 130 at 16 x 4 (254 at 32 x 4, 178 at 64 x 8); g kernel 124 at 16 x 8 (172 at
# 16 x 4); dx 56 at 16 x 4; weight gradients 50 at 64 x 8 (72 at 64 x 4). Not timed on a GPU yet.
FWD_TILE = (16, 4)
GRAD_TILE = (16, 8)
DX_TILE = (16, 4)
DW_TILE = (64, 8)
DW_ROWS = 1024
WIDTHS = (16, 32, 64, 128)  # group widths the kernels take (power-of-two dot tiles)


def _dot_mode(dtype: torch.dtype) -> int:
    """`_dot` mode of the maps: the operands' own dtype with fp32 sums (TF32 for fp32 under torch's 'high' matmul
    precision). The interpreter takes exact fp32 dots: every operand already holds a value of its dtype (loaded from
    memory or rounded in the kernel), so the products are the device's, and its half-precision dots are wrong."""
    if INTERPRETED or (dtype == torch.float32 and not fp32_uses_tf32()):
        return 0
    return {torch.float32: 3, torch.bfloat16: 1, torch.float16: 2}[dtype]


def _steps(T: int, tile: int) -> tuple[int, int]:
    """(BT, number of time tiles) for tiles of at most `tile` steps and at least 16 (the dots' rows)."""
    BT = max(16, min(next_power_of_2(T), tile))
    return BT, cdiv(T, BT)


@torch.library.custom_op("xlstm_ts::conv_qkv", mutates_args=())
def _conv_qkv(x: Tensor, weight: Tensor, bias: Tensor | None, wq: Tensor, wk: Tensor, wv: Tensor,
              silu: bool) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """(x_c (B, T, C), qk (B, T, 2C), v (B, T, C)) contiguous in x's dtype; weight (C, K), wq/wk/wv (G, W, W)
    contiguous in x's dtype."""
    B, T, C = x.shape
    G, W = wq.shape[0], wq.shape[1]
    xc = torch.empty(B, T, C, dtype=x.dtype, device=x.device)  # (B, T, C)
    qk = torch.empty(B, T, 2 * C, dtype=x.dtype, device=x.device)  # (B, T, 2C)
    v = torch.empty(B, T, C, dtype=x.dtype, device=x.device)  # (B, T, C)
    if xc.numel() == 0:
        return xc, qk, v
    BT, NT = _steps(T, FWD_TILE[0])
    _FWD[(B * NT, G)](
        x, weight, weight if bias is None else bias, xc, T, C, NT, *x.stride(), wq, wk, wv, qk, v,
        K=weight.shape[1], BT=BT, BC=W, HAS_BIAS=bias is not None, SILU=silu, QKV=True, DOT=_dot_mode(x.dtype),
        num_warps=FWD_TILE[1],
    )  # fmt: skip
    return xc, qk, v


@_conv_qkv.register_fake
def _conv_qkv_fake(x, weight, bias, wq, wk, wv, silu):
    B, T, C = x.shape
    return x.new_empty(B, T, C), x.new_empty(B, T, 2 * C), x.new_empty(B, T, C)


@torch.library.custom_op("xlstm_ts::conv_qkv_backward", mutates_args=())
def _conv_qkv_backward(dxc: Tensor, dqk: Tensor, dv: Tensor, x: Tensor, xc: Tensor, weight: Tensor,
                       bias: Tensor | None, wq: Tensor, wk: Tensor, wv: Tensor,
                       silu: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(dx (B, T, C) in x's dtype, dw (C, K) and db (C,) as the conv's (db empty without bias), dwq, dwk, dwv
    (G, W, W) in the maps' dtype); dxc, dqk, dv: the gradients of the forward's outputs, any strides."""
    B, T, C = x.shape
    K, G, W = weight.shape[1], wq.shape[0], wq.shape[1]
    mode, N = _dot_mode(x.dtype), B * T
    dx, g, dw_shares, db_shares = backward_buffers(dxc, x, K, bias is not None)  # g: (dxc + the maps' share) act'
    S = cdiv(N, DW_ROWS)
    map_shares = torch.empty(S, 3, G, W, W, dtype=torch.float32, device=x.device)  # (S, 3, G, W, W): q, k, v
    if N * C > 0:
        BT, _ = _steps(T, GRAD_TILE[0])
        _GRAD[(B, G)](
            x, weight, weight if bias is None else bias, dxc, g, dw_shares, db_shares, T, C, *x.stride(),
            *dxc.stride(), dqk, wq, wk, *dqk.stride(),
            K=K, BT=BT, BC=W, HAS_BIAS=bias is not None, SILU=silu, QKV=True, DOT=mode, num_warps=GRAD_TILE[1],
        )  # fmt: skip
        BT, NT = _steps(T, DX_TILE[0])
        _DX[(B * NT, G)](g, weight, dx, T, C, NT, dv, wv, *dv.stride(), K=K, BT=BT, BC=W, QKV=True, DOT=mode,
                         num_warps=DX_TILE[1])  # fmt: skip
        meta = {"BC": W, "BN": DW_TILE[0], "DOT": mode, "num_warps": DW_TILE[1]}
        _DW[(S, G, 2)](xc, dqk, map_shares, N, T, C, DW_ROWS, 0, *xc.stride(), *dqk.stride(), **meta)
        _DW[(S, G, 1)](x, dv, map_shares, N, T, C, DW_ROWS, 2, *x.stride(), *dv.stride(), **meta)
    else:
        dw_shares.zero_()
        db_shares.zero_()
        map_shares.zero_()
    maps = map_shares.sum(0)  # (3, G, W, W)
    dw, db = tap_sums(dw_shares, db_shares, weight, bias, x)  # (C, K), (C,)
    dwq, dwk, dwv = (maps[i].to(w.dtype, copy=True) for i, w in enumerate((wq, wk, wv)))  # no aliased outputs
    return dx, dw, db, dwq, dwk, dwv


@_conv_qkv_backward.register_fake
def _conv_qkv_backward_fake(dxc, dqk, dv, x, xc, weight, bias, wq, wk, wv, silu):
    db = bias.new_empty(bias.shape) if bias is not None else x.new_empty(0)
    return (x.new_empty(x.shape), weight.new_empty(weight.shape), db, wq.new_empty(wq.shape), wk.new_empty(wk.shape),
            wv.new_empty(wv.shape))  # fmt: skip


def _setup_context(ctx, inputs, output) -> None:
    x, weight, bias, wq, wk, wv, silu = inputs
    ctx.save_for_backward(x, output[0], weight, bias, wq, wk, wv)
    ctx.silu = silu


def _backward(ctx, dxc, dqk, dv):
    x, xc, weight, bias, wq, wk, wv = ctx.saved_tensors
    dxc = torch.zeros_like(xc) if dxc is None else dxc
    dqk = x.new_zeros(*x.shape[:-1], 2 * x.shape[-1]) if dqk is None else dqk
    dv = torch.zeros_like(xc) if dv is None else dv
    dx, dw, db, dwq, dwk, dwv = _conv_qkv_backward(dxc, dqk, dv, x, xc, weight, bias, wq, wk, wv, ctx.silu)
    return dx, dw, (db if bias is not None else None), dwq, dwk, dwv, None


_conv_qkv.register_autograd(_backward, setup_context=_setup_context)


def conv_qkv_triton(x: Tensor, conv_weight: Tensor, conv_bias: Tensor | None, wq: Tensor, wk: Tensor, wv: Tensor,
                    activation: str | None = "silu") -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """Causal conv (and activation) of x and the grouped q, k, v maps in Triton: same contract as `conv_qkv--torch`.

    Args:
        x: (B, T, C), float32, bfloat16 or float16, any strides.
        conv_weight: (C, 1, K) or (C, K) taps, K <= 8; conv_bias: (C,) or None.
        wq, wk, wv: (G, W, W) groups of the block-diagonal maps (in x out), W in `WIDTHS`; the maps run in x's dtype
            (as a matmul under autocast does), with fp32 sums.
        activation: None or "silu".

    Returns:
        x_c (B, T, C), qk (B, T, 2C) = [q | k], v (B, T, C): contiguous, in x's dtype.
    """
    taps, K = check_conv_inputs(x, conv_weight, conv_bias, activation)
    _, W = check_group_weights(x, wq, wk, wv)
    if K > MAX_TAPS:
        raise ValueError(f"conv_qkv--triton takes up to {MAX_TAPS} taps, got {K}; run the conv and the maps apart.")
    if W not in WIDTHS:
        raise ValueError(f"conv_qkv--triton takes groups of {WIDTHS} channels, got W = {W}; pick the width with "
                         "conv_qkv_torch.group_width(C, block_size).")  # fmt: skip
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"conv_qkv--triton takes float32, bfloat16 or float16 x, got {x.dtype}; use "
                         "conv_qkv--torch for other dtypes.")  # fmt: skip
    tensors = [taps, wq, wk, wv] + ([] if conv_bias is None else [conv_bias])
    if any(t.device != x.device for t in tensors):
        raise ValueError(f"x, the conv taps and bias and wq, wk, wv must be on one device, got x on {x.device} and "
                         f"{sorted({str(t.device) for t in tensors})}; move them with .to(x.device).")  # fmt: skip
    maps = [w.to(x.dtype).contiguous() for w in (wq, wk, wv)]
    return _conv_qkv(x, taps.contiguous(), conv_bias, *maps, activation == "silu")


conv_qkv_triton.compile_traceable = True  # a custom op: torch.compile keeps it in the graph
