"""Triton backward kernel of the chunkwise mLSTM: every input gradient, gate gradients included, in one launch.

One program per (DHV block, batch * head), two passes over the chunks with the state in registers:
1. forward in time: recompute the entering states (C, n) of each chunk from the saved m_t and form dq;
2. backward in time: carry (dC, dn), the gradient of the state leaving each chunk, and form dk, dv, and the gate
   gradients with their reverse cumulative sums carried across chunks as scalars (see `triton_chunkwise_gates.py`
   and the docstring of `triton_chunkwise.py` for the identities).
A sequence of one chunk (ONE_CHUNK, the short sequences of patched forecasters) forms dq in pass 2 from the initial
state, so the chunk's tiles, scores and weights are loaded and computed once; state terms that are zero for it (no
upstream dC/dn, no initial state) are skipped. With STORED (states the forward wrote), pass 1 is skipped too: pass 2
forms dq from the stored entering state of each chunk.
With one DHV block the program writes the final gradients in the input dtypes; with several, dq, dk, di, df and
dm0 go to per-block fp32 buffers that `_mlstm_chunkwise_bwd_sum_kernel_tl` adds up.

Segments (SEGMENTED, G > 1, see `triton_chunkwise_fwd.py`): one program per (DHV block, batch * head, segment),
each starting from the segment's entering state and ending with the gradients of its leaving state, read from
(B, NH * G, ...) buffers filled by `triton_chunkwise_bounds.py` (the m buffer then holds per-DHV-block shares
of the gradient routed to m at the segment end, already net of <dC_L, C_L> + <dn_L, n_L>). Only segment 0 writes
dC0, dn0, dm0.

HD_FROM_DOTS (one DHV block, dq formed in pass 2): <dh_t, h_t> = <dnum_t, num_t> is summed from the chunk's own
weighted scores and dnum v^T (and the entering state's term), so h is not read and the forward keeps no fp32 copy.

K_FIRST (DQK blocks of a wider head, `triton_chunkwise_ksplit.py`): each DQK block's launch reads its columns of q,
k and rows of the states and writes its share of every gradient; the terms that do not split by DQK (<dh, h>,
dz z, the eps route to m, the user's dm_L) are counted by the first block only (K_FIRST=True, the default); so is,
with SEGMENTED, the boundary kernel's share of the gradient routed to m at the segment end (net of the whole state's
<dC_L, C_L> + <dn_L, n_L>).
"""

import triton
import triton.language as tl

from .triton_chunkwise_common import (
    _carry,
    _chunk_entering_state,
    _chunk_gates,
    _decay_weights,
    _dot,
    _entering_state,
    _logsigmoid,
    _tile,
)
from .triton_chunkwise_gates import _branches, _den_terms, _dq_with_hd, _route_stabilizer, _row_terms


@triton.jit
def _mlstm_chunkwise_bwd_kernel_tl(
    q_ptr,  # (B, NH, S, DQK), strides sq_*
    k_ptr,  # (B, NH, S, DQK), strides sk_*
    v_ptr,  # (B, NH, S, DHV), strides sv_*
    i_ptr,  # (B, NH, S), strides si_*
    f_ptr,  # (B, NH, S), strides sf_*
    c0_ptr,  # (B, NH * G, DQK, DHV) entering C of each segment, strides sc_*; read only if HAS_INIT
    n0_ptr,  # (B, NH * G, DQK), strides sn_*
    m0_ptr,  # (B, NH * G[, 1]), strides sm_*
    h_ptr,  # (BNH, S, DHV) contiguous, h from the forward (fp32 for bf16/fp16 inputs)
    z_ptr,  # (BNH, S) fp32 z_t from the forward
    m_ptr,  # (BNH, S) fp32 m_t from the forward
    dh_ptr,  # (B, NH, S, DHV) upstream gradient of h, strides sdh_*
    dcl_ptr,  # (B, NH * G, DQK, DHV) upstream gradient of the leaving C, strides sdc_*; read only if HAS_DC
    dnl_ptr,  # (B, NH * G, DQK) upstream gradient of the leaving n, strides sdn_*; read only if HAS_DN
    dml_ptr,  # (NV, B, NH * G) upstream gradient of the leaving m, strides sdm_*; read only if HAS_DM
    dq_ptr,  # out (NV, BNH, S, DQK): fp32 shares, or with NV = 1 the final dq in the dtype of q
    dk_ptr,  # out (NV, BNH, S, DQK), as dq
    dv_ptr,  # out (BNH, S, DHV), dtype of v
    di_ptr,  # out (NV, BNH, S), as dq
    df_ptr,  # out (NV, BNH, S), as dq
    dc0_ptr,  # out (BNH, DQK, DHV), dtype of c0; written only if STORE_D0
    dn0_ptr,  # out (BNH, DQK), dtype of n0
    dm0_ptr,  # out (NV, BNH), as dq
    cs_ptr,  # (BNH, NC + 1, DQK, DHV) fp32 state entering each chunk, and the last, from the forward; if STORED
    ns_ptr,  # (BNH, NC + 1, DQK) fp32, as cs
    sq_b, sq_h, sq_s, sq_d,
    sk_b, sk_h, sk_s, sk_d,
    sv_b, sv_h, sv_s, sv_d,
    si_b, si_h, si_s,
    sf_b, sf_h, sf_s,
    sc_b, sc_h, sc_k, sc_v,
    sn_b, sn_h, sn_k,
    sm_b, sm_h,
    sdh_b, sdh_h, sdh_s, sdh_d,
    sdc_b, sdc_h, sdc_k, sdc_v,
    sdn_b, sdn_h, sdn_k,
    sdm_v, sdm_b, sdm_h,
    NH,
    S_all,
    DQK,
    DHV,
    BNH,
    G,
    SEG_LEN,
    qk_scale,
    eps,
    L: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    LOWP: tl.constexpr,
    QK_LOWP: tl.constexpr,
    OUT_LOWP: tl.constexpr,
    HAS_INIT: tl.constexpr,
    STORE_D0: tl.constexpr,
    HAS_DC: tl.constexpr,
    HAS_DN: tl.constexpr,
    HAS_DM: tl.constexpr,
    MULTI_V: tl.constexpr,
    DETACH: tl.constexpr,
    ONE_CHUNK: tl.constexpr,
    SEGMENTED: tl.constexpr,
    STORED: tl.constexpr,
    K_FIRST: tl.constexpr = True,
    HD_FROM_DOTS: tl.constexpr = False,
):  # fmt: skip
    pid_v = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)
    S = S_all
    if SEGMENTED:  # program = (batch * head, segment): S becomes the segment's length, t counts from its start
        seg = pid_bh % G
        pid_bh = pid_bh // G
        seg0 = seg * SEG_LEN
        S = tl.minimum(SEG_LEN, S_all - seg0)
    bb, hh = pid_bh // NH, pid_bh % NH
    hs = hh  # head index of the entering states and the upstream state gradients
    row0 = pid_bh * S_all  # row of step 0 in the contiguous (BNH, S, ...) buffers
    offs_l = tl.arange(0, L)
    offs_k = tl.arange(0, BK)
    offs_v = pid_v * BV + tl.arange(0, BV)
    mask_k = offs_k < DQK
    mask_v = offs_v < DHV
    mask_kv = mask_k[:, None] & mask_v[None, :]
    # the normalizer column of V' = [V, 1] (and so z, n, m) belongs to the first DHV block only
    z_on = tl.where(pid_v == 0, 1.0, 0.0)
    causal = offs_l[:, None] >= offs_l[None, :]  # (L, L)

    q_base = q_ptr + bb * sq_b + hh * sq_h
    k_base = k_ptr + bb * sk_b + hh * sk_h
    v_base = v_ptr + bb * sv_b + hh * sv_h
    i_base = i_ptr + bb * si_b + hh * si_h
    f_base = f_ptr + bb * sf_b + hh * sf_h
    dh_base = dh_ptr + bb * sdh_b + hh * sdh_h
    if SEGMENTED:
        hs = hh * G + seg
        row0 += seg0
        q_base += seg0 * sq_s
        k_base += seg0 * sk_s
        v_base += seg0 * sv_s
        i_base += seg0 * si_s
        f_base += seg0 * sf_s
        dh_base += seg0 * sdh_s
    prow = pid_v.to(tl.int64) * BNH * S_all + row0  # row of step 0 in the (NV, BNH, S, ...) outputs
    h_base = h_ptr + row0 * DHV
    zm_off = row0
    part = pid_v * BNH + pid_bh  # index of this program's share in the (NV, BNH) dm0 output
    NC = tl.cdiv(S, L)

    c0_base = c0_ptr + bb * sc_b + hs * sc_h
    n0_base = n0_ptr + bb * sn_b + hs * sn_h
    C, n, m_init = _entering_state(
        c0_base, n0_base, m0_ptr + bb * sm_b + hs * sm_h, offs_k, offs_v, sc_k, sc_v, sn_k, mask_k, mask_kv,
        HAS_INIT, BK, BV,
    )  # (BK, BV), (BK,), ()

    # pass 1, forward in time: recompute the entering states and form dq. With one chunk, pass 2 forms dq (the
    # entering state is the initial one) and this pass only builds the last state, when an upstream dC or dn needs it
    NC1 = NC
    if (ONE_CHUNK and not (HAS_DC or HAS_DN)) or STORED:  # STORED: pass 2 loads the entering states instead
        NC1 = 0 * NC
    m_prev = m_init
    for c in range(0, NC1):
        t = c * L + offs_l  # (L,)
        mask_t = t < S
        mask_tk = mask_t[:, None] & mask_k[None, :]
        mask_tv = mask_t[:, None] & mask_v[None, :]
        k = _tile(k_base, t, offs_k, sk_s, sk_d, mask_tk)  # (L, BK)
        v = _tile(v_base, t, offs_v, sv_s, sv_d, mask_tv)  # (L, BV)
        m_end = tl.load(m_ptr + zm_off + tl.minimum(c * L + L - 1, S - 1))
        i_g, f_g, log_f, b, g = _chunk_gates(i_base, f_base, si_s, sf_s, t, mask_t)
        if not ONE_CHUNK:
            dh = _tile(dh_base, t, offs_v, sdh_s, sdh_d, mask_tv).to(tl.float32)  # (L, BV)
            z, m_row, inv_den, hd, dz = _row_terms(
                z_ptr + zm_off, m_ptr + zm_off, h_base, dh_base, sdh_s, sdh_d, dh, t, mask_t, offs_v, pid_v, DHV,
                eps, BV, MULTI_V, DETACH,
            )  # fmt: skip
            w = _decay_weights(b, i_g, m_row, causal & mask_t[:, None])  # (L, L)
            w0 = tl.where(mask_t, tl.exp(b + m_prev - m_row), 0.0)  # (L,)
            dnum = dh * inv_den[:, None]  # (L, BV)
            ds = _dot(dnum, tl.trans(v), LOWP) + dz[:, None]  # (L, L)
            dq = _dot(w * ds, k, OUT_LOWP) + w0[:, None] * (_dot(dnum, tl.trans(C), LOWP) + dz[:, None] * n[None, :])
            dq = dq * qk_scale  # (L, BK)
            dq_off = (prow + t[:, None]) * DQK + offs_k[None, :]  # (L, BK)
            tl.store(dq_ptr + dq_off, dq.to(dq_ptr.dtype.element_ty), mask=mask_tk)

        C, n = _carry(C, n, m_prev, m_end, k, v, i_g, b, g, LOWP)  # to the chunk end, with the saved m there
        m_prev = m_end

    # pass 2, backward in time: carry dC, dn (gradient of the state leaving each chunk) and form dk, dv, di, df
    dC = tl.zeros((BK, BV), dtype=tl.float32)
    dn = tl.zeros((BK,), dtype=tl.float32)
    if HAS_DC:
        dC = _tile(dcl_ptr + bb * sdc_b + hs * sdc_h, offs_k, offs_v, sdc_k, sdc_v, mask_kv).to(tl.float32)
    if HAS_DN:
        dn = tl.load(dnl_ptr + bb * sdn_b + hs * sdn_h + offs_k * sdn_k, mask=mask_k, other=0.0).to(tl.float32)
        dn = dn * z_on
    if STORED and (HAS_DC or HAS_DN):
        C = _tile(cs_ptr + (pid_bh * (NC + 1) + NC) * DQK * DHV, offs_k, offs_v, DHV, 1, mask_kv)  # (BK, BV)
        n = tl.load(ns_ptr + (pid_bh * (NC + 1) + NC) * DQK + offs_k, mask=mask_k, other=0.0)  # (BK,)
    # C, n are now the last states: <dC_L, C_L> + <dn_L, n_L> is the gradient of the last log-forget cumsum
    last_dot = tl.sum(tl.sum(dC * C, axis=1), axis=0) + tl.sum(dn * n, axis=0)
    dm_last = tl.zeros((), dtype=tl.float32)
    if HAS_DM:
        dm_last = tl.load(dml_ptr + pid_v * sdm_v + bb * sdm_b + hs * sdm_h).to(tl.float32)
        if not SEGMENTED:
            dm_last = dm_last * z_on - last_dot  # the user's gradient of m_L, net of the state terms
            if not K_FIRST:  # the user's share belongs to the first DQK block
                dm_last = -last_dot
        elif not K_FIRST:  # the boundary kernel's share is net of the whole state's terms: counted by one block
            dm_last = tl.zeros((), dtype=tl.float32)
    elif not SEGMENTED:
        dm_last = -last_dot
    cum_carry = tl.zeros((), dtype=tl.float32)  # sum of d(cumsum log f) over the later chunks
    m_carry = tl.zeros((), dtype=tl.float32)  # gradient reaching m at the later chunk's first step
    for cc in range(0, NC):
        c = NC - 1 - cc
        t = c * L + offs_l  # (L,)
        mask_t = t < S
        mask_tk = mask_t[:, None] & mask_k[None, :]
        mask_tv = mask_t[:, None] & mask_v[None, :]
        q = _tile(q_base, t, offs_k, sq_s, sq_d, mask_tk)  # (L, BK)
        k = _tile(k_base, t, offs_k, sk_s, sk_d, mask_tk)  # (L, BK)
        v = _tile(v_base, t, offs_v, sv_s, sv_d, mask_tv)  # (L, BV)
        dh = _tile(dh_base, t, offs_v, sdh_s, sdh_d, mask_tv).to(tl.float32)  # (L, BV)
        if HD_FROM_DOTS:  # <dh, h> and dz follow from this chunk's dots below
            z, m_row, inv_den = _den_terms(z_ptr + zm_off, m_ptr + zm_off, t, mask_t, eps)  # (L,) each
        else:
            z, m_row, inv_den, hd, dz = _row_terms(
                z_ptr + zm_off, m_ptr + zm_off, h_base, dh_base, sdh_s, sdh_d, dh, t, mask_t, offs_v, pid_v, DHV,
                eps, BV, MULTI_V, DETACH,
            )  # fmt: skip
        m_end = tl.load(m_ptr + zm_off + tl.minimum(c * L + L - 1, S - 1))
        m_in = tl.load(m_ptr + zm_off + tl.maximum(c * L - 1, 0))
        m_in = tl.where(c > 0, m_in, m_init)
        i_g, f_g, log_f, b, g = _chunk_gates(i_base, f_base, si_s, sf_s, t, mask_t)

        w = _decay_weights(b, i_g, m_row, causal & mask_t[:, None])  # (L, L)
        w0 = tl.where(mask_t, tl.exp(b + m_in - m_row), 0.0)  # (L,)
        e = tl.exp(g - b + i_g - m_end)  # (L,) weight of key s in the leaving state, 0 on padding
        decay = tl.exp(g + m_in - m_end)
        dnum = dh * inv_den[:, None]  # (L, BV)
        qk = _dot(q, tl.trans(k), QK_LOWP) * qk_scale  # (L, L)
        C_in, n_in = C, n  # the state entering this chunk, for dq in this pass; read only with an entering state
        if (ONE_CHUNK or STORED) and (STORED or HAS_INIT):
            C_in, n_in = _chunk_entering_state(
                cs_ptr, ns_ptr, pid_bh * (NC + 1) + c, c0_base, n0_base, offs_k, offs_v, sc_k, sc_v, sn_k, mask_k,
                mask_kv, DQK, DHV, STORED,
            )  # (BK, BV), (BK,)
        if HD_FROM_DOTS:  # one pass (one chunk or stored states), with <dh, h> from this chunk's own dots
            dq, ds, hd, dz = _dq_with_hd(
                q, k, w, w0, w * qk, _dot(dnum, tl.trans(v), LOWP), dnum, z, m_row, inv_den, C_in, n_in, pid_v,
                qk_scale, STORED or HAS_INIT, DETACH, LOWP, OUT_LOWP,
            )  # (L, BK), (L, L), (L,), (L,)
        else:
            ds = _dot(dnum, tl.trans(v), LOWP) + dz[:, None]  # (L, L)
            if ONE_CHUNK or STORED:  # dq as pass 1 forms it, from the initial state or the one the forward stored
                dq = _dot(w * ds, k, OUT_LOWP)  # (L, BK)
                if STORED or HAS_INIT:
                    dq += w0[:, None] * (_dot(dnum, tl.trans(C_in), LOWP) + dz[:, None] * n_in[None, :])
                dq = dq * qk_scale
        if ONE_CHUNK or STORED:
            dq_off = (prow + t[:, None]) * DQK + offs_k[None, :]  # (L, BK)
            tl.store(dq_ptr + dq_off, dq.to(dq_ptr.dtype.element_ty), mask=mask_tk)
        dk = _dot(tl.trans(w * ds), q, LOWP) * qk_scale  # (L, BK)
        dv = _dot(tl.trans(w * qk), dnum, OUT_LOWP)  # (L, BV)
        if not ONE_CHUNK or (HAS_DC or HAS_DN):  # the gradient of the leaving state (zero for one chunk without them)
            dk += e[:, None] * (_dot(v, tl.trans(dC), LOWP) + dn[None, :])
            dv += e[:, None] * _dot(k, dC, LOWP)
        dk_off = (prow + t[:, None]) * DQK + offs_k[None, :]  # (L, BK)
        tl.store(dk_ptr + dk_off, dk.to(dk_ptr.dtype.element_ty), mask=mask_tk)
        di = tl.sum(k.to(tl.float32) * dk, axis=1)  # (L,) di_s = <k_s, dk_s>, before the stabilizer terms
        dv_off = (row0 + t[:, None]) * DHV + offs_v[None, :]  # (L, BV)
        tl.store(dv_ptr + dv_off, dv.to(dv_ptr.dtype.element_ty), mask=mask_tv)
        if not ONE_CHUNK or HAS_INIT:  # the gradient of the entering state (only dC0, dn0 read it for one chunk)
            q_w = q.to(tl.float32) * (w0 * qk_scale)[:, None]  # (L, BK)
            dC = decay * dC + _dot(tl.trans(q_w), dnum, LOWP)  # (BK, BV)
            dn = decay * dn + tl.sum(q_w * dz[:, None], axis=0)  # (BK,)

        # d(cumsum log f)_t = <dh_t, h_t> + dz_t z_t - di_t (+ last_dot at S-1); d log f is its reverse cumsum
        is_last = t == S - 1
        shared = hd + dz * z  # (L,) counted by the first DQK block only
        if not K_FIRST:
            shared = tl.zeros_like(shared)
        d_cum = shared - di + tl.where(is_last, last_dot, 0.0)  # (L,)
        dlog_f = tl.cumsum(d_cum, axis=0, reverse=True) + cum_carry  # (L,)
        cum_carry += tl.sum(d_cum, axis=0)
        if not DETACH:
            # m enters h through eps and the last states through e^{-m_L}; route those gradients through the max
            dm = tl.where(is_last, dm_last, 0.0)  # (L,)
            if K_FIRST:
                dm += -eps * hd * inv_den
            forget, forget_next = _branches(
                m_ptr + zm_off, i_base, f_base, si_s, sf_s, t, mask_t, S, log_f, i_g, m_row, m_in
            )  # (L,), (L,)
            reach, m_carry = _route_stabilizer(dm, forget_next, m_carry)
            di += tl.where(forget, 0.0, reach)
            dlog_f += tl.where(forget, reach, 0.0)
        df = dlog_f * tl.exp(log_f - f_g)  # (L,) d log f / d f~ = sigmoid(-f~) = exp(logsigmoid(f~) - f~)
        tl.store(di_ptr + prow + t, di.to(di_ptr.dtype.element_ty), mask=mask_t)
        tl.store(df_ptr + prow + t, df.to(df_ptr.dtype.element_ty), mask=mask_t)

    if STORE_D0:
        # dm0 = <C0, dC0> + <n0, dn0> plus the stabilizer gradient that reached the start
        C0 = _tile(c0_base, offs_k, offs_v, sc_k, sc_v, mask_kv).to(tl.float32)  # (BK, BV)
        n0 = tl.load(n0_base + offs_k * sn_k, mask=mask_k, other=0.0).to(tl.float32)  # (BK,)
        dm0 = tl.sum(tl.sum(C0 * dC, axis=1), axis=0) + tl.sum(n0 * dn, axis=0)
        if not DETACH:
            forget_0 = _logsigmoid(tl.load(f_base).to(tl.float32)) + m_init >= tl.load(i_base).to(tl.float32)
            dm0 += tl.where(forget_0, m_carry, 0.0)
        dc0_off = pid_bh * DQK * DHV + offs_k[:, None] * DHV + offs_v[None, :]  # (BK, BV)
        mask_c, mask_n = mask_kv, mask_k & (pid_v == 0)
        if SEGMENTED:  # only segment 0 starts from the initial state
            mask_c, mask_n = mask_c & (seg == 0), mask_n & (seg == 0)
            tl.store(dm0_ptr + part, dm0.to(dm0_ptr.dtype.element_ty), mask=seg == 0)
        else:
            tl.store(dm0_ptr + part, dm0.to(dm0_ptr.dtype.element_ty))
        tl.store(dc0_ptr + dc0_off, dC.to(dc0_ptr.dtype.element_ty), mask=mask_c)
        tl.store(dn0_ptr + pid_bh * DQK + offs_k, dn.to(dn0_ptr.dtype.element_ty), mask=mask_n)
