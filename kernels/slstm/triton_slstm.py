"""sLSTM in Triton: host wrappers, the autograd function and the public `slstm_triton` (same function as slstm--torch).

The forward kernel keeps the head's recurrent matrices on chip (fp32 up to DH = 64; for wider heads as scaled fp16,
or with `recurrent_fp16=False` and for exact fp32 dots re-read in fp32 from L2 at every step) and loops over time;
it stores the gate pre-activations and the states of every step (fp32), which the reverse-time backward kernel
reads. The backward is the exact chain rule of the step, including the branch of m_t = max(log f_t + m_{t-1}, i~_t).
dR and db are sums over all rows and steps: where `_weight_grads_in_kernel` says so, the backward kernel sums them
in registers (one part per program, added up here) and writes the gate gradients in the input dtype; otherwise they
are reduced here from fp32 gate gradients with one batched matmul.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._autograd import forward_only, needs_grad
from .._ints import cdiv, next_power_of_2
from .._precision import INTERPRETED, fp32_uses_tf32
from .torch_ref import SLSTMState, _check_inputs, _initial_states
from .triton_slstm_kernels import _slstm_bwd_kernel_tl, _slstm_fwd_kernel_tl

_LOWP = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 1}


def _fp16_r(dtype: torch.dtype, BD: int, allowed: bool) -> bool:
    """Whether the kernels hold the recurrent matrices on chip in fp16 and run the h @ R (and dg @ R^T) dots on fp16
    operands with fp32 accumulation: where `allowed` (the default; not for slstm--triton_fp32r), for DH > 64 with
    bf16/fp16 inputs, or fp32 inputs where TF32 is allowed.

    Four fp32 (BD, BD) matrices do not fit on chip next to the dot operands beyond DH = 64, so the fp32 kernels
    re-read them from L2 at every step, one gate at a time (23 ms forward at (B, S, D, NH) = (16, 2048, 512, 4) bf16
    on an H200; 7 ms with fp16 matrices). The operands are scaled by powers of two into fp16's range (each column of
    R, each row of the gate gradients), so the products keep 10 mantissa bits, as TF32's do; bf16 operands (7 bits)
    let the errors of long backward passes grow past the bf16 tolerance. Against the fp64 reference on an H200 the
    fp16 dots were as accurate as the TF32 dots of the fp32 path or more (gradient error ratios 1e-4 to 3e-3 over
    (8, 2, 128) and (19, 1, 96), S 1-257, bf16/fp16/fp32-TF32), once the test inputs keep the stabilizer max off its
    ties (`xlstm_ts.kernels._testing.slstm_tie_free`): at a tie both paths take either branch by rounding, which
    moved a few gradient entries by O(1) (ratios 2-7e-2, in different cases for the two paths)."""
    if not allowed or BD <= 64:
        return False
    return dtype != torch.float32 or fp32_uses_tf32()


def _lowp(dtype: torch.dtype, fp16_r: bool = False) -> int:
    """Dot mode of h @ R: scaled fp16 operands (2; their fp32 emulation, 3, under the Triton interpreter) where
    `_fp16_r` says so, TF32 (1) for bf16/fp16 inputs and for fp32 under torch's 'high'/'medium' fp32 matmul
    precision, exact fp32 (0) otherwise."""
    if fp16_r:
        return 3 if INTERPRETED else 2
    return 1 if dtype == torch.float32 and fp32_uses_tf32() else _LOWP[dtype]


def _launch_config(B: int, DH: int) -> tuple[int, int, int]:
    """Batch tile BB, padded head dimension BD and num_warps."""
    if DH > 128:
        raise ValueError(
            f"slstm--triton supports head dimensions DH <= 128, got DH={DH}; use more heads (NH) or slstm--torch."
        )
    BD = max(next_power_of_2(DH), 16)
    BB = 16 if B <= 4096 or BD > 32 else 32
    num_warps = 4 if BD <= 32 else 8
    return BB, BD, num_warps


def _weight_grads_in_kernel(dtype: torch.dtype, BD: int, programs: int) -> bool:
    """Whether the backward kernel sums dR and db itself (four more (BD, BD) fp32 accumulators and dots per step).

    Measured fw+bw on an H200 (kernel / host, ms): bf16 (B, S, D, NH) = (1024, 64, 128, 4) 0.71-0.85 / 0.95-1.00,
    (256, 32, 256, 4) 0.60-0.87 / 1.05-1.09, (256, 336, 128, 4) 1.41 / 1.57; but (64, 512, 256, 4), 16 programs
    whose serial steps get longer, 3.31 / 3.20, and fp32 (1024, 64, 128, 4) 1.24 / 1.20 (the gain of bf16 inputs
    is partly the gate gradients written in bf16). DH > 64 re-reads R (no room for the accumulators)."""
    return BD <= 64 and dtype != torch.float32 and programs >= 64


def _recurrent_weight_grad(h_prev: Tensor, dg: Tensor) -> Tensor:
    """dR[h, g] = sum over (b, t) of h_{t-1}^T dg~_t, as a split-K batched matmul.

    One (DH x B*S) @ (B*S x 4*DH) product per head has a tiny output and a huge reduction, for which cuBLAS picks
    a kernel that runs on a handful of SMs (2.3 ms at B*S = 65536 on an H200); splitting the reduction into KC
    batches and summing the partial products keeps the GPU busy.

    Args:
        h_prev: (B, S, NH, DH) states entering each step. dg: (B, S, 4, NH, DH) gate pre-activation gradients.

    Returns:
        (NH, 4, DH, DH).
    """
    B, S, _, NH, DH = dg.shape
    KC = math.gcd(B * S, 64)
    rows = B * S // KC
    hp = h_prev.reshape(KC, rows, NH, DH).permute(2, 0, 3, 1)  # (NH, KC, DH, rows)
    dgr = dg.reshape(KC, rows, 4 * NH * DH).view(KC, rows, 4, NH, DH).permute(3, 0, 1, 2, 4)  # (NH, KC, rows, 4, DH)
    dr = torch.matmul(hp, dgr.reshape(NH, KC, rows, 4 * DH)).sum(1)  # (NH, DH, 4 * DH)
    return dr.view(NH, DH, 4, DH).permute(0, 2, 1, 3)  # (NH, 4, DH, DH)


class _SLSTMTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, wx, r, b, h0, c0, n0, m0, recurrent_fp16):
        B, S, _, NH, DH = wx.shape
        BB, BD, num_warps = _launch_config(B, DH)
        wx = wx.contiguous()
        r32, b32 = r.float().contiguous(), b.float().contiguous()
        h0, c0, n0, m0 = (x.float().contiguous() for x in (h0, c0, n0, m0))
        f32 = {"dtype": torch.float32, "device": wx.device}
        out = torch.empty(B, S, NH, DH, dtype=wx.dtype, device=wx.device)  # (B, S, NH, DH)
        gates = torch.empty(B, S, 4, NH, DH, **f32)  # (B, S, 4, NH, DH)
        hs, cs, ns, ms = (torch.empty(B, S, NH, DH, **f32) for _ in range(4))  # (B, S, NH, DH) each
        grid = (NH, cdiv(B, BB))
        fp16_r = _fp16_r(wx.dtype, BD, recurrent_fp16)
        _slstm_fwd_kernel_tl[grid](
            wx, r32, b32, h0, c0, n0, m0, out, gates, hs, cs, ns, ms,
            B, S, NH, DH, BB=BB, BD=BD, LOWP=_lowp(wx.dtype, fp16_r), RELOAD_R=BD > 64 and not fp16_r,
            num_warps=num_warps, num_stages=1 if BD > 64 else 3,
        )  # fmt: skip
        ctx.save_for_backward(r32, gates, h0, c0, n0, m0, hs, cs, ns, ms)
        ctx.config = (BB, BD, num_warps, wx.dtype, r.dtype, b.dtype, fp16_r)
        last = tuple(x[:, -1].clone() for x in (hs, cs, ns, ms))  # (B, NH, DH) each
        return (out, *last)

    @staticmethod
    def backward(ctx, dout, dh_last, dc_last, dn_last, dm_last):
        r32, gates, h0, c0, n0, m0, hs, cs, ns, ms = ctx.saved_tensors
        BB, BD, num_warps, wx_dtype, r_dtype, b_dtype, fp16_r = ctx.config
        B, S, _, NH, DH = gates.shape
        dout = dout.contiguous()
        dh_last, dc_last, dn_last, dm_last = (x.float().contiguous() for x in (dh_last, dc_last, dn_last, dm_last))
        tiles = cdiv(B, BB)
        acc_w = _weight_grads_in_kernel(wx_dtype, BD, NH * tiles)
        dg = torch.empty_like(gates, dtype=wx_dtype if acc_w else torch.float32)  # (B, S, 4, NH, DH)
        dh0, dc0, dn0, dm0 = (torch.empty_like(h0) for _ in range(4))  # (B, NH, DH) each
        f32 = {"dtype": torch.float32, "device": dg.device}
        dr_parts = torch.empty(NH, tiles if acc_w else 0, 4, DH, DH, **f32)  # (NH, tiles, 4, DH, DH)
        db_parts = torch.empty(NH, tiles if acc_w else 0, 4, DH, **f32)  # (NH, tiles, 4, DH)
        _slstm_bwd_kernel_tl[(NH, tiles)](
            r32, gates, h0, c0, n0, m0, hs, cs, ns, ms, dout, dh_last, dc_last, dn_last, dm_last,
            dg, dh0, dc0, dn0, dm0, dr_parts, db_parts,
            B, S, NH, DH, BB=BB, BD=BD, LOWP=_lowp(wx_dtype, fp16_r), RELOAD_R=BD > 64 and not fp16_r, ACC_W=acc_w,
            num_warps=num_warps, num_stages=1 if BD > 64 else 3,
        )  # fmt: skip
        if acc_w:
            dr, db = dr_parts.sum(1), db_parts.sum(1)  # (NH, 4, DH, DH), (NH, 4, DH)
        else:
            h_prev = torch.cat([h0.unsqueeze(1), hs[:, :-1]], dim=1)  # (B, S, NH, DH)
            dr = _recurrent_weight_grad(h_prev, dg)  # (NH, 4, DH, DH)
            db = dg.sum(dim=(0, 1)).transpose(0, 1)  # (NH, 4, DH)
        return dg.to(wx_dtype), dr.to(r_dtype), db.to(b_dtype), dh0, dc0, dn0, dm0, None


def slstm_triton(
    wx: Tensor,
    r: Tensor,
    b: Tensor,
    initial_states: SLSTMState | None = None,
    return_last_states: bool = False,
    recurrent_fp16: bool = True,
) -> Tensor | tuple[Tensor, SLSTMState]:
    """sLSTM over a sequence in Triton (forward and backward); the same function as slstm--torch.

    Args:
        wx: (B, S, 4, NH, DH) input parts of the gate pre-activations, gates (i, f, z, o); float32, bfloat16 or
            float16; DH <= 128.
        r: (NH, 4, DH, DH) recurrent weights; h (a row vector) multiplies r[head, gate] from the left.
        b: (NH, 4, DH) gate biases.
        initial_states: (h, c, n, m), each (B, NH, DH), or None for h = c = n = 0 and m = -inf. Default: None.
        return_last_states: also return the states after the last step. Default: False.
        recurrent_fp16: for DH > 64 (bf16/fp16 inputs, or fp32 under TF32), hold R on chip in fp16 and run the
            recurrent dots on power-of-two-scaled fp16 operands (about 3x faster forward at DH = 128) instead of
            re-reading fp32 R from L2 at every step (False, slstm--triton_fp32r); see `_fp16_r`. Exact fp32 dots
            (fp32 inputs under 'highest' precision) always keep fp32 R. Default: True.

    Returns:
        h (B, S, NH, DH) in the dtype of wx; with return_last_states, (h, (h_last, c, n, m)), each state
        (B, NH, DH) in float32.
    """
    B, S, NH, DH = _check_inputs(wx, r, b)
    if wx.dtype not in _LOWP:
        raise ValueError(
            f"slstm--triton takes float32, bfloat16 or float16 wx, got {wx.dtype}; cast it, or use slstm--torch."
        )
    if r.device != wx.device or b.device != wx.device:
        raise ValueError(f"wx, r, b must be on one device, got {wx.device}, {r.device}, {b.device}.")
    h0, c0, n0, m0 = _initial_states(initial_states, (B, NH, DH), torch.float32, wx.device)
    args = (wx, r, b, h0, c0, n0, m0, recurrent_fp16)
    out, h, c, n, m = _SLSTMTriton.apply(*args) if needs_grad(*args[:7]) else forward_only(_SLSTMTriton, *args)
    if not return_last_states:
        return out
    return out, (h, c, n, m)


def slstm_triton_fp16r(
    wx: Tensor,
    r: Tensor,
    b: Tensor,
    initial_states: SLSTMState | None = None,
    return_last_states: bool = False,
) -> Tensor | tuple[Tensor, SLSTMState]:
    """`slstm_triton` with `recurrent_fp16=True` named explicitly (the default since it matched the fp32 path's
    accuracy): fp16 recurrent matrices and dots for heads wider than 64."""
    return slstm_triton(wx, r, b, initial_states, return_last_states, recurrent_fp16=True)


def slstm_triton_fp32r(
    wx: Tensor,
    r: Tensor,
    b: Tensor,
    initial_states: SLSTMState | None = None,
    return_last_states: bool = False,
) -> Tensor | tuple[Tensor, SLSTMState]:
    """`slstm_triton` with `recurrent_fp16=False`: for heads wider than 64 the fp32 recurrent matrices are re-read
    from L2 at every step, one gate at a time, with TF32 dots for bf16/fp16 inputs (about 3x slower forward)."""
    return slstm_triton(wx, r, b, initial_states, return_last_states, recurrent_fp16=False)
