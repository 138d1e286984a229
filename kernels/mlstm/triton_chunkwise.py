"""Chunkwise mLSTM in Triton: host wrappers, the autograd function and the public `mlstm_chunkwise_triton`.

Forward: one kernel, one program per (DHV block, batch * head), looping over chunks with the state in registers.
It writes h and, per time step, z_t = n~_t . q^_t and the stabilizer m_t (no chunk states are stored).

Backward (true gradient): with den_t = max(|z_t|, exp(-m_t)), num_t = C~_t^T q^_t and m held constant,
    dnum_t = dh_t / (den_t + eps),  dden_t = -<dh_t, h_t> / (den_t + eps),  dz_t = dden_t sign(z_t) [|z_t| > e^{-m_t}],
and num, z are one gated linear-attention readout with V' = [V, 1], so the kernel runs a gated linear-attention
backward with dH' = [dnum, dz] (recomputing the chunk states). The gate gradients then follow from identities
(all elementwise or (B, NH, S) work, done here in torch):
    di_s = <k_s, dk_s>;   d(cumsum log f)_t = <dH'_t, H'_t> - di_t  (+ <dC_L, C_L> + <dn_L, n_L> at t = S-1);
    d log f = reverse cumsum of that;  df = d log f * sigmoid(-f);  dm0 = <C0, dC0> + <n0, dn0>.
The stabilizer enters the output only through eps (dh_t/dm_t = -eps h_t / (den_t + eps)) and the last states
through C_L = e^{-m_L} C^u; those upstream gradients on m_t are routed back through m_t = max(log f_t + m_{t-1}, i~_t)
by `_route_stabilizer_grad`, which makes the gradient exact. With detach_normalizer=True, den and m are constants
(mlstm_kernels' custom backward): dz = 0 and no routing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
from torch import Tensor

from ._common import MLSTMState, check_sequence_inputs, initial_states, pack_states
from .triton_chunkwise_kernels import _mlstm_chunkwise_bwd_kernel_tl, _mlstm_chunkwise_fwd_kernel_tl

_LOWP = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
# set by benchmarks/kernels.py for its one block-size sweep; None picks num_warps from the tile sizes
NUM_WARPS_OVERRIDE: int | None = None


def _launch_config(S: int, DQK: int, DHV: int, chunk_size: int, dtype: torch.dtype) -> tuple[int, int, int, int]:
    """Chunk length L, padded DQK block BK, DHV block BV and num_warps for one call."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}; 64 is a good default.")
    if not 1 <= DQK <= 256 or not 1 <= DHV <= 256:
        raise ValueError(
            f"mlstm_chunkwise--triton supports head dimensions up to 256, got DQK={DQK}, DHV={DHV}; "
            "use mlstm_chunkwise--torch for larger heads, or split the heads."
        )
    # tl.dot needs every dimension >= 16; the chunk is a power of two in [16, 128], no longer than needed
    L = min(max(triton.next_power_of_2(chunk_size), 16), 128, max(triton.next_power_of_2(S), 16))
    BK = max(triton.next_power_of_2(DQK), 16)
    BV = min(max(triton.next_power_of_2(DHV), 16), 64)
    if BK >= 128 and L > 32:
        L = 32  # keep the (L, BK) tiles and the (BK, BV) state in registers
    if BK >= 256 and dtype == torch.float32:
        L, BV = 16, 32  # fp32 / TF32 dot operands of a 256-wide head overflow shared memory (242 KB > 227 KB)
    num_warps = 4 if BK * BV <= 64 * 64 else 8
    return L, BK, BV, NUM_WARPS_OVERRIDE or num_warps


def _route_stabilizer_grad(
    dm: Tensor, log_f: Tensor, i: Tensor, m: Tensor, m0: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Backpropagate upstream gradients dm (B, NH, S) on m_t through m_t = max(log f_t + m_{t-1}, i~_t).

    A gradient on m_t flows back along the steps where the forget branch was the max, until a step where the input
    branch was (it goes to that i~) or the start (it goes to m0). This is a segmented reverse cumsum.

    Returns:
        di (B, NH, S), dlog_f (B, NH, S), dm0 (B, NH).
    """
    S = dm.shape[-1]
    m_prev = torch.cat([m0.unsqueeze(-1), m[..., :-1]], dim=-1)  # (B, NH, S)
    forget = (log_f + m_prev) >= i  # (B, NH, S)
    rev = dm.flip(-1).cumsum(-1).flip(-1)  # (B, NH, S) sum of dm over u >= t
    rev_ext = F.pad(rev, (0, 1))  # (B, NH, S + 1), rev_ext[S] = 0
    steps = torch.arange(S, device=dm.device).expand_as(dm)
    input_at = torch.where(forget, S, steps)  # (B, NH, S) index of input-branch steps, S elsewhere
    input_at = F.pad(input_at, (0, 1), value=S)  # (B, NH, S + 1)
    next_input = input_at.flip(-1).cummin(-1).values.flip(-1)  # (B, NH, S + 1) first input step >= t
    carry = rev - rev_ext.gather(-1, next_input[..., 1:])  # (B, NH, S) total gradient reaching m_t
    di = torch.where(forget, 0.0, carry)
    dlog_f = torch.where(forget, carry, 0.0)
    dm0 = rev[..., 0] - rev_ext.gather(-1, next_input[..., :1]).squeeze(-1)  # (B, NH)
    return di, dlog_f, dm0


class _MLSTMChunkwiseTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, i, f, C0, n0, m0, eps, chunk_size, detach_normalizer):
        B, NH, S, DQK = q.shape
        DHV = v.shape[-1]
        # the backward runs fp32/TF32 dots for every input dtype: size the tiles for fp32 when a gradient is needed
        grad = any(ctx.needs_input_grad)
        L, BK, BV, num_warps = _launch_config(S, DQK, DHV, chunk_size, torch.float32 if grad else q.dtype)
        q, k, v, i, f = (x.contiguous() for x in (q, k, v, i, f))
        C0, n0, m0 = C0.float().contiguous(), n0.float().contiguous(), m0.float().contiguous()
        h = torch.empty(B, NH, S, DHV, dtype=q.dtype, device=q.device)  # (B, NH, S, DHV)
        # the backward needs <dh, h> unrounded and as exact as its own TF32 dots (the df identity cancels): with a
        # gradient, bf16/fp16 inputs run the forward dots in TF32 and keep an fp32 copy of h
        store_h32 = grad and q.dtype != torch.float32
        h32 = torch.empty(B, NH, S, DHV, dtype=torch.float32, device=q.device) if store_h32 else h
        z = torch.empty(B, NH, S, dtype=torch.float32, device=q.device)  # (B, NH, S)
        m = torch.empty(B, NH, S, dtype=torch.float32, device=q.device)  # (B, NH, S)
        C_last = torch.empty(B, NH, DQK, DHV, dtype=torch.float32, device=q.device)  # (B, NH, DQK, DHV)
        n_last = torch.empty(B, NH, DQK, dtype=torch.float32, device=q.device)  # (B, NH, DQK)
        m_last = torch.empty(B, NH, dtype=torch.float32, device=q.device)  # (B, NH)
        grid = (triton.cdiv(DHV, BV), B * NH)
        _mlstm_chunkwise_fwd_kernel_tl[grid](
            q, k, v, i, f, C0, n0, m0, h, h32, z, m, C_last, n_last, m_last,
            S, DQK, DHV, DQK**-0.5, eps,
            L=L, BK=BK, BV=BV, LOWP=3 if store_h32 else _LOWP[q.dtype], STORE_H32=store_h32, num_warps=num_warps,
        )  # fmt: skip
        ctx.save_for_backward(q, k, v, i, f, C0, n0, m0, h32, z, m, C_last, n_last)
        ctx.config = (eps, L, BK, BV, num_warps, detach_normalizer)
        return h, C_last, n_last, m_last

    @staticmethod
    def backward(ctx, dh, dC_last, dn_last, dm_last):
        q, k, v, i, f, C0, n0, m0, h, z, m, C_last, n_last = ctx.saved_tensors
        eps, L, BK, BV, num_warps, detach = ctx.config
        B, NH, S, DQK = q.shape
        DHV = v.shape[-1]
        dh = torch.zeros_like(h, dtype=q.dtype) if dh is None else dh.contiguous()
        dC_last = torch.zeros_like(C_last) if dC_last is None else dC_last.float().contiguous()
        dn_last = torch.zeros_like(n_last) if dn_last is None else dn_last.float().contiguous()

        denom = torch.maximum(z.abs(), torch.exp(-m)) + eps  # (B, NH, S)
        dh_dot_h = (dh.float() * h.float()).sum(-1)  # (B, NH, S)
        dden = -dh_dot_h / denom  # (B, NH, S)
        if detach:
            dz = torch.zeros_like(z)
        else:
            dz = torch.where(z.abs() > torch.exp(-m), dden * torch.sign(z), 0.0)  # (B, NH, S)

        NV = triton.cdiv(DHV, BV)
        dq_part = torch.empty(NV, B, NH, S, DQK, dtype=torch.float32, device=q.device)
        dk_part = torch.empty(NV, B, NH, S, DQK, dtype=torch.float32, device=q.device)
        dv = torch.empty(B, NH, S, DHV, dtype=torch.float32, device=q.device)
        dC0 = torch.empty_like(C0)
        dn0 = torch.empty_like(n0)
        _mlstm_chunkwise_bwd_kernel_tl[(NV, B * NH)](
            q, k, v, i, f, C0, n0, m0, m, dh, (1.0 / denom).contiguous(), dz.contiguous(), dC_last, dn_last,
            dq_part, dk_part, dv, dC0, dn0,
            S, DQK, DHV, B * NH, DQK**-0.5,
            L=L, BK=BK, BV=BV, LOWP=0 if q.dtype == torch.float32 else 3, num_warps=num_warps,
        )  # fmt: skip
        dq, dk = (dq_part[0], dk_part[0]) if NV == 1 else (dq_part.sum(0), dk_part.sum(0))  # (B, NH, S, DQK)

        log_f = F.logsigmoid(f.float())  # (B, NH, S)
        di = (k.float() * dk).sum(-1)  # (B, NH, S)
        d_cum = dh_dot_h + dz * z - di  # (B, NH, S) gradient of the log-forget cumsum at t
        last_state_dot = (dC_last * C_last).sum((-2, -1)) + (dn_last * n_last).sum(-1)  # (B, NH)
        d_cum[..., -1] += last_state_dot
        dlog_f = d_cum.flip(-1).cumsum(-1).flip(-1)  # (B, NH, S)
        dm0 = (C0 * dC0).sum((-2, -1)) + (n0 * dn0).sum(-1)  # (B, NH)
        if not detach:
            dm = eps * dden  # (B, NH, S) the eps path of h_t through m_t
            dm[..., -1] += -last_state_dot + (0.0 if dm_last is None else dm_last.float())
            di_m, dlog_f_m, dm0_m = _route_stabilizer_grad(dm, log_f, i.float(), m, m0)
            di, dlog_f, dm0 = di + di_m, dlog_f + dlog_f_m, dm0 + dm0_m
        df = dlog_f * torch.sigmoid(-f.float())  # (B, NH, S)
        grads = (dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), di.to(i.dtype), df.to(f.dtype), dC0, dn0, dm0)
        return (*grads, None, None, None)


def mlstm_chunkwise_triton(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    i: Tensor,
    f: Tensor,
    c_initial: Tensor | None = None,
    n_initial: Tensor | None = None,
    m_initial: Tensor | None = None,
    return_last_states: bool = False,
    eps: float = 1e-6,
    chunk_size: int = 64,
    detach_normalizer: bool = False,
) -> Tensor | tuple[Tensor, MLSTMState]:
    """mLSTM over a sequence, chunkwise, in Triton (forward and backward), same function as mlstm_chunkwise--torch.

    Args:
        q: (B, NH, S, DQK) queries, float32, bfloat16 or float16; DQK <= 256.
        k: (B, NH, S, DQK) keys.
        v: (B, NH, S, DHV) values; DHV <= 256.
        i: (B, NH, S) input-gate pre-activations.
        f: (B, NH, S) forget-gate pre-activations.
        c_initial: (B, NH, DQK, DHV) initial stabilized C, or None for zeros. Default: None.
        n_initial: (B, NH, DQK) initial stabilized n, or None for zeros. Default: None.
        m_initial: (B, NH, 1) or (B, NH) initial stabilizer, or None for zeros. Default: None.
        return_last_states: also return the states after the last step. Default: False.
        eps: added to the denominator max(|n^T q|, exp(-m)). Default: 1e-6.
        chunk_size: time steps per chunk, rounded up to a power of two in [16, 128] (and down to 32 for DQK > 64).
            Changes rounding only. Default: 64.
        detach_normalizer: treat the denominator and m as constants in the backward, as mlstm_kernels' custom
            backward does; the gradient is then not the true gradient where |n^T q| > exp(-m). Default: False.

    Returns:
        h (B, NH, S, DHV) in the dtype of q; with return_last_states, (h, (C, n, m)) with C (B, NH, DQK, DHV),
        n (B, NH, DQK), m (B, NH, 1) in float32.
    """
    B, NH, S, DQK, DHV = check_sequence_inputs(q, k, v, i, f)
    if q.dtype not in _LOWP:
        raise ValueError(
            f"mlstm_chunkwise--triton takes float32, bfloat16 or float16 inputs, got {q.dtype}; "
            "cast the inputs, or use mlstm_chunkwise--torch for float64."
        )
    if any(x.dtype != q.dtype for x in (k, v)) or q.device != k.device or q.device != v.device:
        raise ValueError(
            f"q, k, v must share dtype and device, got {q.dtype}/{k.dtype}/{v.dtype} on {q.device}/{k.device}/"
            f"{v.device}; cast them to one dtype."
        )
    C0, n0, m0 = initial_states(c_initial, n_initial, m_initial, (B, NH, DQK, DHV), torch.float32, q.device)
    h, C, n, m = _MLSTMChunkwiseTriton.apply(q, k, v, i, f, C0, n0, m0, eps, chunk_size, detach_normalizer)
    if not return_last_states:
        return h
    return h, pack_states(C, n, m)
