"""Triton backward of the chunkwise mLSTM for one chunk from zero states, with the chunk's steps in blocks of 32.

The training calls of patched forecasters are one chunk (S <= 64) from zero states, with no gradient on the last
states. The general backward (`triton_chunkwise_bwd.py`) forms the whole chunk's (L, L) fp32 tiles at once (decay
weights, scores, dnum v^T and their products): at L = 64 and 4 warps it runs at the register limit and spills. This
kernel cuts the chunk's steps into blocks of R = 32, as rows (queries) and as columns (keys), and forms only the
(R, R) pairs on or below the diagonal, 3 of the 4 at L = 64:

- row block 1 (steps 32..63) pairs with key blocks 0 and 1: its dq, the final dk and dv of key block 1, and key
  block 0's share from these rows;
- row block 0 pairs with key block 0 (the diagonal): its dq and the rest of key block 0's dk and dv.

The per-step gate gradients go block by block backward in time, their reverse cumulative sums (the log-forget
gradient, the stabilizer's route) carried between the blocks as the general kernel carries them between chunks.
A chunk of at most 32 steps is one block.

Programs may be persistent (`PERSISTENT`; `triton_chunkwise.ONE_CHUNK_PER_SM`): a grid of P programs, program p
taking the batch * heads p, p + P, ... in a loop that Triton may software-pipeline (`STAGES`); by default one program
per batch * head.

Same function, dot modes and rounding points as the general kernel's one-chunk path with <dh_t, h_t> summed from the
step's own weighted scores and dnum v^T (`HD_FROM_DOTS`: one DHV block, bf16/fp16 inputs), which it replaces there
(`triton_chunkwise.ONE_CHUNK_BLOCKS`).
"""

import triton
import triton.language as tl

from .triton_chunkwise_common import _dot, _logsigmoid, _tile
from .triton_chunkwise_gates import _branches, _den_terms, _dz, _route_stabilizer

# steps per row and key block
ROWS = 32


@triton.jit
def _block_gates(i_base, f_base, si_s, sf_s, t, mask_t, b_before):
    """i~ (R,), f~ (R,), log f (R,) and the log-forget cumsum b (R,) from the chunk start, for the steps t of one
    block; `b_before` is the sum of log f over the blocks before it. Padding (t >= S): i~ = -inf, log f = 0."""
    i_g = tl.load(i_base + t * si_s, mask=mask_t, other=float("-inf")).to(tl.float32)  # (R,)
    f_g = tl.load(f_base + t * sf_s, mask=mask_t, other=0.0).to(tl.float32)  # (R,)
    log_f = tl.where(mask_t, _logsigmoid(f_g), 0.0)  # (R,)
    return i_g, f_g, log_f, tl.cumsum(log_f, axis=0) + b_before


@triton.jit
def _program_heads(BNH, PERSISTENT: tl.constexpr):
    """(first, step) of the batch * heads a program takes, first, first + step, ... below BNH: its own only, or with
    PERSISTENT every P-th from its id (P programs)."""
    if PERSISTENT:
        first, step = tl.program_id(0), tl.num_programs(0)
    else:
        first, step = tl.program_id(0), BNH
    return first, step


@triton.jit
def _head_bases(bh, NH, q_ptr, k_ptr, v_ptr, i_ptr, f_ptr, sq_b, sq_h, sk_b, sk_h, sv_b, sv_h, si_b, si_h, sf_b, sf_h):
    """pid (int64) and the bases of q, k, v, i, f of batch * head `bh`."""
    pid = bh + tl.zeros((), dtype=tl.int64)  # 64-bit offsets (tl.range yields int32)
    bb, hh = pid // NH, pid % NH
    return (pid, q_ptr + bb * sq_b + hh * sq_h, k_ptr + bb * sk_b + hh * sk_h, v_ptr + bb * sv_b + hh * sv_h,
            i_ptr + bb * si_b + hh * si_h, f_ptr + bb * sf_b + hh * sf_h)  # fmt: skip


@triton.jit
def _weights(b_r, m_r, mask_r, b_j, i_j, DIAG: tl.constexpr):
    """(R, R) decay weights exp(b_t - b_s + i~_s - m_t) of row block (b_r, m_r) and key block (b_j, i_j), zero
    above the diagonal of a diagonal pair (DIAG) and on padded rows."""
    log_d = b_r[:, None] - b_j[None, :] + i_j[None, :] - m_r[:, None]  # (R, R)
    keep = mask_r[:, None]  # (R, 1)
    if DIAG:
        offs = tl.arange(0, b_r.shape[0])
        keep = keep & (offs[:, None] >= offs[None, :])  # (R, R)
    return tl.exp(tl.where(keep, log_d, float("-inf")))


@triton.jit
def _pair(q_r, dnum_r, k_j, v_j, w, qk_scale, LOWP: tl.constexpr, QK_LOWP: tl.constexpr):
    """The weighted scores w * q^ k^T (R, R) and dnum v^T (R, R) of one (row block, key block) pair."""
    qk = _dot(q_r, tl.trans(k_j), QK_LOWP) * qk_scale  # (R, R)
    return w * qk, _dot(dnum_r, tl.trans(v_j), LOWP)


@triton.jit
def _gate_grads(
    hd, dz, z, di, inv_den, t, mask_t, log_f, f_g, i_g, m_row, m_in, cum_carry, m_carry,
    m_base, i_base, f_base, si_s, sf_s, di_base, df_base, S, eps, DETACH: tl.constexpr,
):  # fmt: skip
    """Store di, df of one block's steps t, given <dh, h> (hd), dz, z, <k, dk> (di) and 1 / (den + eps) there;
    carries in and returns the reverse sum of d(cumsum log f) and the stabilizer gradient over the later blocks."""
    d_cum = hd + dz * z - di  # (R,) d(cumsum log f)_t
    dlog_f = tl.cumsum(d_cum, axis=0, reverse=True) + cum_carry  # (R,)
    cum_carry += tl.sum(d_cum, axis=0)
    if not DETACH:
        # m enters h through eps; route that gradient back through m_t = max(log f_t + m_{t-1}, i~_t)
        forget, forget_next = _branches(m_base, i_base, f_base, si_s, sf_s, t, mask_t, S, log_f, i_g, m_row, m_in)
        reach, m_carry = _route_stabilizer(-eps * hd * inv_den, forget_next, m_carry)
        di += tl.where(forget, 0.0, reach)
        dlog_f += tl.where(forget, reach, 0.0)
    df = dlog_f * tl.exp(log_f - f_g)  # d log f / d f~ = sigmoid(-f~)
    tl.store(di_base + t, di.to(di_base.dtype.element_ty), mask=mask_t)
    tl.store(df_base + t, df.to(df_base.dtype.element_ty), mask=mask_t)
    return cum_carry, m_carry


@triton.jit
def _mlstm_one_chunk_bwd_kernel_tl(
    q_ptr,  # (B, NH, S, DQK), strides sq_*
    k_ptr,  # (B, NH, S, DQK), strides sk_*
    v_ptr,  # (B, NH, S, DHV), strides sv_*
    i_ptr,  # (B, NH, S), strides si_*
    f_ptr,  # (B, NH, S), strides sf_*
    z_ptr,  # (BNH, S) fp32 z_t from the forward
    m_ptr,  # (BNH, S) fp32 m_t from the forward
    dh_ptr,  # (B, NH, S, DHV) upstream gradient of h, strides sdh_*
    dq_ptr,  # out (BNH, S, DQK), dtype of q
    dk_ptr,  # out (BNH, S, DQK), dtype of k
    dv_ptr,  # out (BNH, S, DHV), dtype of v
    di_ptr,  # out (BNH, S), dtype of i
    df_ptr,  # out (BNH, S), dtype of f
    sq_b, sq_h, sq_s, sq_d,
    sk_b, sk_h, sk_s, sk_d,
    sv_b, sv_h, sv_s, sv_d,
    si_b, si_h, si_s,
    sf_b, sf_h, sf_s,
    sdh_b, sdh_h, sdh_s, sdh_d,
    NH,
    BNH,
    S,
    DQK,
    DHV,
    qk_scale,
    eps,
    R: tl.constexpr,
    TWO: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    LOWP: tl.constexpr,
    QK_LOWP: tl.constexpr,
    OUT_LOWP: tl.constexpr,
    DETACH: tl.constexpr,
    PERSISTENT: tl.constexpr = False,
    STAGES: tl.constexpr = 1,
):  # fmt: skip
    offs_r = tl.arange(0, R)
    offs_k = tl.arange(0, BK)
    offs_v = tl.arange(0, BV)
    mask_k = offs_k < DQK
    mask_v = offs_v < DHV
    first, step = _program_heads(BNH, PERSISTENT)
    for bh in tl.range(first, BNH, step, num_stages=STAGES):
        pid, q_base, k_base, v_base, i_base, f_base = _head_bases(
            bh, NH, q_ptr, k_ptr, v_ptr, i_ptr, f_ptr, sq_b, sq_h, sk_b, sk_h, sv_b, sv_h, si_b, si_h, sf_b, sf_h
        )  # fmt: skip
        dh_base = dh_ptr + (pid // NH) * sdh_b + (pid % NH) * sdh_h
        row0 = pid * S  # step 0 in the contiguous (BNH, S, ...) buffers
        z_base, m_base, di_base, df_base = z_ptr + row0, m_ptr + row0, di_ptr + row0, df_ptr + row0

        # key block 0 (steps 0..R-1)
        t0 = offs_r
        mask_0 = t0 < S
        k_0 = _tile(k_base, t0, offs_k, sk_s, sk_d, mask_0[:, None] & mask_k[None, :])  # (R, BK)
        v_0 = _tile(v_base, t0, offs_v, sv_s, sv_d, mask_0[:, None] & mask_v[None, :])  # (R, BV)
        i_0, f_0, log_f0, b_0 = _block_gates(i_base, f_base, si_s, sf_s, t0, mask_0, 0.0)  # (R,) each
        z_0, m_0, inv_0 = _den_terms(z_base, m_base, t0, mask_0, eps)  # (R,) each

        cum_carry = tl.zeros((), dtype=tl.float32)
        m_carry = tl.zeros((), dtype=tl.float32)
        dk_0 = tl.zeros((R, BK), dtype=tl.float32)  # key block 0's dk (unscaled) and dv from row block 1
        dv_0 = tl.zeros((R, BV), dtype=tl.float32)
        if TWO:  # row block 1 (steps R..2R-1) with key blocks 0 and 1
            t1 = R + offs_r
            mask_1 = t1 < S
            mask_1k = mask_1[:, None] & mask_k[None, :]
            mask_1v = mask_1[:, None] & mask_v[None, :]
            k_1 = _tile(k_base, t1, offs_k, sk_s, sk_d, mask_1k)  # (R, BK)
            v_1 = _tile(v_base, t1, offs_v, sv_s, sv_d, mask_1v)  # (R, BV)
            q_1 = _tile(q_base, t1, offs_k, sq_s, sq_d, mask_1k)  # (R, BK)
            i_1, f_1, log_f1, b_1 = _block_gates(i_base, f_base, si_s, sf_s, t1, mask_1, tl.sum(log_f0, axis=0))
            z_1, m_1, inv_1 = _den_terms(z_base, m_base, t1, mask_1, eps)  # (R,) each
            dnum_1 = _tile(dh_base, t1, offs_v, sdh_s, sdh_d, mask_1v).to(tl.float32) * inv_1[:, None]  # (R, BV)
            w_10 = _weights(b_1, m_1, mask_1, b_0, i_0, False)  # (R, R)
            w_11 = _weights(b_1, m_1, mask_1, b_1, i_1, True)  # (R, R)
            p_10, ds_10 = _pair(q_1, dnum_1, k_0, v_0, w_10, qk_scale, LOWP, QK_LOWP)  # (R, R) each
            p_11, ds_11 = _pair(q_1, dnum_1, k_1, v_1, w_11, qk_scale, LOWP, QK_LOWP)  # (R, R) each
            hd_1 = tl.sum(p_10 * ds_10, axis=1) + tl.sum(p_11 * ds_11, axis=1)  # (R,) <dh_t, h_t>
            dz_1 = _dz(z_1, m_1, inv_1, hd_1, 0, DETACH)  # (R,)
            a_10 = w_10 * (ds_10 + dz_1[:, None])  # (R, R) gradient of the weighted scores, over qk_scale
            a_11 = w_11 * (ds_11 + dz_1[:, None])
            dq_1 = (_dot(a_10, k_0, OUT_LOWP) + _dot(a_11, k_1, OUT_LOWP)) * qk_scale  # (R, BK)
            dk_1 = _dot(tl.trans(a_11), q_1, LOWP) * qk_scale  # (R, BK)
            dv_1 = _dot(tl.trans(p_11), dnum_1, OUT_LOWP)  # (R, BV)
            dk_0 = _dot(tl.trans(a_10), q_1, LOWP)
            dv_0 = _dot(tl.trans(p_10), dnum_1, OUT_LOWP)
            off_1k = (row0 + t1[:, None]) * DQK + offs_k[None, :]  # (R, BK)
            tl.store(dq_ptr + off_1k, dq_1.to(dq_ptr.dtype.element_ty), mask=mask_1k)
            tl.store(dk_ptr + off_1k, dk_1.to(dk_ptr.dtype.element_ty), mask=mask_1k)
            off_1v = (row0 + t1[:, None]) * DHV + offs_v[None, :]  # (R, BV)
            tl.store(dv_ptr + off_1v, dv_1.to(dv_ptr.dtype.element_ty), mask=mask_1v)
            di_1 = tl.sum(k_1.to(tl.float32) * dk_1, axis=1)  # (R,) <k_s, dk_s>
            m_in1 = tl.load(m_base + R - 1)  # m before the block's first step
            cum_carry, m_carry = _gate_grads(
                hd_1, dz_1, z_1, di_1, inv_1, t1, mask_1, log_f1, f_1, i_1, m_1, m_in1, cum_carry, m_carry,
                m_base, i_base, f_base, si_s, sf_s, di_base, df_base, S, eps, DETACH,
            )  # fmt: skip

        # row block 0 with key block 0
        mask_0k = mask_0[:, None] & mask_k[None, :]
        mask_0v = mask_0[:, None] & mask_v[None, :]
        q_0 = _tile(q_base, t0, offs_k, sq_s, sq_d, mask_0k)  # (R, BK)
        dnum_0 = _tile(dh_base, t0, offs_v, sdh_s, sdh_d, mask_0v).to(tl.float32) * inv_0[:, None]  # (R, BV)
        w_00 = _weights(b_0, m_0, mask_0, b_0, i_0, True)  # (R, R)
        p_00, ds_00 = _pair(q_0, dnum_0, k_0, v_0, w_00, qk_scale, LOWP, QK_LOWP)  # (R, R) each
        hd_0 = tl.sum(p_00 * ds_00, axis=1)  # (R,)
        dz_0 = _dz(z_0, m_0, inv_0, hd_0, 0, DETACH)  # (R,)
        a_00 = w_00 * (ds_00 + dz_0[:, None])  # (R, R)
        dq_0 = _dot(a_00, k_0, OUT_LOWP) * qk_scale  # (R, BK)
        dk_0 = (dk_0 + _dot(tl.trans(a_00), q_0, LOWP)) * qk_scale  # (R, BK)
        dv_0 = dv_0 + _dot(tl.trans(p_00), dnum_0, OUT_LOWP)  # (R, BV)
        off_0k = (row0 + t0[:, None]) * DQK + offs_k[None, :]  # (R, BK)
        tl.store(dq_ptr + off_0k, dq_0.to(dq_ptr.dtype.element_ty), mask=mask_0k)
        tl.store(dk_ptr + off_0k, dk_0.to(dk_ptr.dtype.element_ty), mask=mask_0k)
        off_0v = (row0 + t0[:, None]) * DHV + offs_v[None, :]  # (R, BV)
        tl.store(dv_ptr + off_0v, dv_0.to(dv_ptr.dtype.element_ty), mask=mask_0v)
        di_0 = tl.sum(k_0.to(tl.float32) * dk_0, axis=1)  # (R,)
        _gate_grads(
            hd_0, dz_0, z_0, di_0, inv_0, t0, mask_0, log_f0, f_0, i_0, m_0, tl.zeros((), dtype=tl.float32), cum_carry,
            m_carry, m_base, i_base, f_base, si_s, sf_s, di_base, df_base, S, eps, DETACH,
        )  # fmt: skip
