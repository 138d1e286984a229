"""The mLSTM block's causal conv (+ SiLU) and block-diagonal q, k, v maps fused in Triton: `conv_qkv_triton`.

One forward kernel reads x once (and the block partners of each channel by index, cached) and writes xc and
qkv = [q | k | v]; the backward is two kernels: the gradient of the conv pre-activation with the shares of dWq,
dWk, then dx with the shares of dWv and of the conv's taps and bias (`triton_qkv_kernels.py`). They replace a conv
kernel, three dense (C, C) matmuls with zeros outside the diagonal blocks (and their six backward matmuls) and the
passes that assemble their gradients. Registered as torch custom ops (`xlstm_ts::conv_qkv`,
`xlstm_ts::conv_qkv_backward`) with fake implementations, so torch.compile keeps them in its graph and CUDA graphs
capture them; autocast leaves them alone. Same function as `conv_qkv--torch`; contract in `qkv_torch.py`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._fast_launch import FastLauncher
from .qkv_torch import check_qkv_inputs
from .torch_ref import check_conv_inputs
from .triton_conv import MAX_TAPS, _tiles
from .triton_qkv_kernels import _conv_qkv_fwd_kernel_tl, _qkv_bwd_gates_kernel_tl, _qkv_bwd_input_kernel_tl

_FWD = FastLauncher(_conv_qkv_fwd_kernel_tl)
_BWD_GATES = FastLauncher(_qkv_bwd_gates_kernel_tl)
_BWD_INPUT = FastLauncher(_qkv_bwd_input_kernel_tl)

# (time steps, channels, num_warps) of the tiles: the forward's, the backward's
FWD_BLOCK = (16, 64, 8)
BWD_BLOCK = (8, 64, 8)
MAX_BLOCK = 4  # the backward keeps one register vector per block place


@torch.library.custom_op("xlstm_ts::conv_qkv", mutates_args=())
def _conv_qkv(
    x: Tensor, weight: Tensor, bias: Tensor | None, wq: Tensor, wk: Tensor, wv: Tensor, silu: bool
) -> tuple[Tensor, Tensor]:
    """xc (B, T, C), qkv (B, T, 3C), contiguous in x's dtype; weight (C, K) and wq, wk, wv contiguous."""
    B, T, C = x.shape
    xc = torch.empty(B, T, C, dtype=x.dtype, device=x.device)  # (B, T, C)
    qkv = torch.empty(B, T, 3 * C, dtype=x.dtype, device=x.device)  # (B, T, 3C)
    if xc.numel() == 0:
        return xc, qkv
    BT, BC, NT, NCB = _tiles(T, C, FWD_BLOCK)
    _FWD[(B * NT, NCB)](
        x, weight, weight if bias is None else bias, wq, wk, wv, xc, qkv, T, C, NT, *x.stride(),
        K=weight.shape[1], BS=wq.shape[1], BT=BT, BC=BC, HAS_BIAS=bias is not None, SILU=silu,
        num_warps=FWD_BLOCK[2],
    )  # fmt: skip
    return xc, qkv


@_conv_qkv.register_fake
def _conv_qkv_fake(x, weight, bias, wq, wk, wv, silu):
    B, T, C = x.shape
    return x.new_empty(B, T, C), x.new_empty(B, T, 3 * C)


def _blocks(shares: Tensor, like: Tensor) -> Tensor:
    """(B, BS, C) per-sequence shares -> the (NB, BS, BS) gradient in like's dtype ([m, c] -> [c // BS, m, c % BS])."""
    NB, BS, _ = like.shape
    return shares.sum(0).view(BS, NB, BS).transpose(0, 1).to(like.dtype).contiguous()  # (NB, BS, BS)


@torch.library.custom_op("xlstm_ts::conv_qkv_backward", mutates_args=())
def _conv_qkv_backward(
    dxc: Tensor, dqkv: Tensor, x: Tensor, weight: Tensor, bias: Tensor | None, wq: Tensor, wk: Tensor, wv: Tensor,
    silu: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(dx, dweight (C, K), dbias (C,) or empty, dwq, dwk, dwv), each in its input's dtype."""
    B, T, C = x.shape
    K, BS = weight.shape[1], wq.shape[1]
    dx = torch.empty(B, T, C, dtype=x.dtype, device=x.device)  # (B, T, C)
    f32 = dict(dtype=torch.float32, device=x.device)
    ga = torch.empty(B, T, C, **f32)  # (B, T, C) gradient of the conv pre-activation
    dwq, dwk, dwv = (torch.empty(B, BS, C, **f32) for _ in range(3))  # (B, BS, C) shares
    dw = torch.empty(B, K, C, **f32)  # (B, K, C)
    db = torch.empty(B if bias is not None else 0, C, **f32)  # (B, C)
    if dx.numel() > 0:
        BT, BC, _, NCB = _tiles(T, C, BWD_BLOCK)
        common = dict(K=K, BS=BS, BT=BT, BC=BC, HAS_BIAS=bias is not None, num_warps=BWD_BLOCK[2])
        _BWD_GATES[(B, NCB)](
            x, weight, weight if bias is None else bias, wq, wk, dxc, dqkv, ga, dwq, dwk, T, C,
            *x.stride(), *dxc.stride(), *dqkv.stride(), SILU=silu, **common,
        )  # fmt: skip
        _BWD_INPUT[(B, NCB)](
            x, weight, wv, ga, dqkv, dx, dwv, dw, db, T, C, *x.stride(), *dqkv.stride(), **common,
        )  # fmt: skip
    else:
        for t in (dwq, dwk, dwv, dw, db):
            t.zero_()
    dbias = db.sum(0).to(bias.dtype) if bias is not None else x.new_empty(0)  # (C,)
    dweight = dw.sum(0).t().to(weight.dtype).contiguous()  # (C, K)
    return dx, dweight, dbias, _blocks(dwq, wq), _blocks(dwk, wk), _blocks(dwv, wv)


@_conv_qkv_backward.register_fake
def _conv_qkv_backward_fake(dxc, dqkv, x, weight, bias, wq, wk, wv, silu):
    dbias = bias.new_empty(bias.shape) if bias is not None else x.new_empty(0)
    return (x.new_empty(x.shape), weight.new_empty(weight.shape), dbias, wq.new_empty(wq.shape),
            wk.new_empty(wk.shape), wv.new_empty(wv.shape))  # fmt: skip


def _setup_context(ctx, inputs, output) -> None:
    x, weight, bias, wq, wk, wv, silu = inputs
    ctx.save_for_backward(x, weight, bias, wq, wk, wv)
    ctx.silu = silu


def _backward(ctx, dxc, dqkv):
    x, weight, bias, wq, wk, wv = ctx.saved_tensors
    B, T, C = x.shape
    if dxc is None:
        dxc = x.new_zeros(B, T, C)
    if dqkv is None:
        dqkv = x.new_zeros(B, T, 3 * C)
    dx, dweight, dbias, dwq, dwk, dwv = _conv_qkv_backward(dxc, dqkv, x, weight, bias, wq, wk, wv, ctx.silu)
    return dx, dweight, (dbias if bias is not None else None), dwq, dwk, dwv, None


_conv_qkv.register_autograd(_backward, setup_context=_setup_context)


def conv_qkv_triton(x: Tensor, conv_weight: Tensor, conv_bias: Tensor | None, wq: Tensor, wk: Tensor, wv: Tensor,
                    activation: str | None = "silu") -> tuple[Tensor, Tensor]:  # fmt: skip
    """Causal conv (+ activation) and block-diagonal q, k, v in Triton: same contract as `conv_qkv--torch`.

    Args:
        x: (B, T, C), float32, bfloat16 or float16, any strides.
        conv_weight: (C, 1, K) or (C, K) taps, K <= 8. conv_bias: (C,) or None.
        wq, wk, wv: (NB, BS, BS) blocks, NB * BS = C, BS <= 4.
        activation: None or "silu".

    Returns:
        xc (B, T, C) and qkv (B, T, 3C) = [q | k | v], contiguous, in x's dtype.
    """
    taps, K = check_conv_inputs(x, conv_weight, conv_bias, activation)
    _, BS = check_qkv_inputs(x, wq, wk, wv)
    if K > MAX_TAPS or BS > MAX_BLOCK:
        raise ValueError(f"conv_qkv--triton takes up to {MAX_TAPS} taps and blocks of up to {MAX_BLOCK}, got {K} "
                         f"taps and blocks of {BS}; use conv_qkv--torch.")  # fmt: skip
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"conv_qkv--triton takes float32, bfloat16 or float16 x, got {x.dtype}; use "
                         "conv_qkv--torch for other dtypes.")  # fmt: skip
    tensors = [conv_weight, wq, wk, wv] + ([] if conv_bias is None else [conv_bias])
    if any(t.device != x.device for t in tensors):
        raise ValueError(f"x and the weights must be on one device, got x on {x.device} and weights on "
                         f"{sorted({str(t.device) for t in tensors})}; move them with .to(x.device).")  # fmt: skip
    return _conv_qkv(x, taps.contiguous(), conv_bias, wq.contiguous(), wk.contiguous(), wv.contiguous(),
                     activation == "silu")  # fmt: skip


conv_qkv_triton.compile_traceable = True  # a custom op: torch.compile keeps it in the graph
