"""Triton forward kernel of the chunkwise mLSTM: the whole forward in one launch.

One program per (DHV block, batch * head) loops over the chunks of the sequence in time order, keeping the
stabilized state C (DQK x BV block), n (DQK) and its stabilizer m in registers ("limit chunk" layout: the whole
chunk of L time steps, L x L scores, lives in one program). It reads q, k, v, i, f and the optional initial states
through their strides in their own dtypes, starts from zero states without any buffer when none are given, and
writes h, the per-step z_t = n~_t . q^_t and m_t the backward needs, and the last states when asked for
(NEED_LAST). A sequence of one chunk (ONE_CHUNK) skips the state terms that are zero or unused: the entering state
without initial states, the leaving state when the last states are not returned. With STORE_STATES it also
writes the state entering each chunk, and the last one, for a backward without its recomputing pass.

Segments (SEGMENTED, G > 1): the sequence is cut into G segments of SEG_LEN steps (a whole number of chunks),
one program per (DHV block, batch * head, segment), so long sequences with few batch * heads fill the GPU. Each
segment starts from its entering state, read from a (B, NH * G, ...) buffer that `triton_chunkwise_bounds.py`
fills; state head index hh * G + g. Without SEGMENTED, G and SEG_LEN are not read and the kernel is the plain
layout's.

RAW (a DQK block of a wider head, `triton_chunkwise_ksplit.py`): h is the block's unnormalized numerator and z its
share of n~_t . q^_t, written to an fp32 h; with RAW_ADD the shares are added to what h and z hold (the earlier
blocks' sum: each element has one writer per launch, and the blocks' launches run in stream order). The caller
normalizes the sum.
"""

import triton
import triton.language as tl

from .triton_chunkwise_common import (
    _carry,
    _chunk_end_m,
    _dot,
    _entering_state,
    _load_gates,
    _row_weights,
    _tile,
    _walk_gates,
)


@triton.jit
def _mlstm_chunkwise_fwd_kernel_tl(
    q_ptr,  # (B, NH, S, DQK), strides sq_*
    k_ptr,  # (B, NH, S, DQK), strides sk_*
    v_ptr,  # (B, NH, S, DHV), strides sv_*
    i_ptr,  # (B, NH, S), strides si_*
    f_ptr,  # (B, NH, S), strides sf_*
    c0_ptr,  # (B, NH * G, DQK, DHV) entering C of each segment, strides sc_*; read only if HAS_INIT
    n0_ptr,  # (B, NH * G, DQK) entering n, strides sn_*
    m0_ptr,  # (B, NH * G[, 1]) entering m, strides sm_*
    h_ptr,  # out (BNH, S, DHV) contiguous, input dtype
    h32_ptr,  # out (BNH, S, DHV) contiguous fp32 copy of h for the backward, written only if STORE_H32
    z_ptr,  # out (BNH, S) fp32: n~_t . q^_t before abs/max
    m_ptr,  # out (BNH, S) fp32: stabilizer m_t
    cl_ptr,  # out (BNH, DQK, DHV) fp32 last C; written only if NEED_LAST
    nl_ptr,  # out (BNH, DQK) fp32 last n
    ml_ptr,  # out (BNH,) fp32 last m
    cs_ptr,  # out (BNH, NC + 1, DQK, DHV) fp32 state entering each chunk, then the last; written only if STORE_STATES
    ns_ptr,  # out (BNH, NC + 1, DQK) fp32, as cs
    sq_b, sq_h, sq_s, sq_d,
    sk_b, sk_h, sk_s, sk_d,
    sv_b, sv_h, sv_s, sv_d,
    si_b, si_h, si_s,
    sf_b, sf_h, sf_s,
    sc_b, sc_h, sc_k, sc_v,
    sn_b, sn_h, sn_k,
    sm_b, sm_h,
    NH,
    S_all,
    DQK,
    DHV,
    G,
    SEG_LEN,
    qk_scale,
    eps,
    L: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    LOWP: tl.constexpr,
    QK_LOWP: tl.constexpr,
    STORE_H32: tl.constexpr,
    HAS_INIT: tl.constexpr,
    ONE_CHUNK: tl.constexpr,
    NEED_LAST: tl.constexpr,
    SEGMENTED: tl.constexpr,
    STORE_STATES: tl.constexpr,
    RAW: tl.constexpr = False,
    RAW_ADD: tl.constexpr = False,
    PREFETCH: tl.constexpr = False,
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
    hs = hh  # head index of the entering state
    row0 = pid_bh * S_all  # row of step 0 in the contiguous (BNH, S, ...) outputs
    offs_l = tl.arange(0, L)
    offs_k = tl.arange(0, BK)
    offs_v = pid_v * BV + tl.arange(0, BV)
    mask_k = offs_k < DQK
    mask_v = offs_v < DHV
    mask_kv = mask_k[:, None] & mask_v[None, :]
    first = pid_v == 0
    causal = offs_l[:, None] >= offs_l[None, :]  # (L, L)
    log_scale = tl.log(qk_scale)

    q_base = q_ptr + bb * sq_b + hh * sq_h
    k_base = k_ptr + bb * sk_b + hh * sk_h
    v_base = v_ptr + bb * sv_b + hh * sv_h
    i_base = i_ptr + bb * si_b + hh * si_h
    f_base = f_ptr + bb * sf_b + hh * sf_h
    if SEGMENTED:
        hs = hh * G + seg
        row0 += seg0
        q_base += seg0 * sq_s
        k_base += seg0 * sk_s
        v_base += seg0 * sv_s
        i_base += seg0 * si_s
        f_base += seg0 * sf_s
    out_base = row0 * DHV
    gate_off = row0

    C, n, m_prev = _entering_state(
        c0_ptr + bb * sc_b + hs * sc_h, n0_ptr + bb * sn_b + hs * sn_h, m0_ptr + bb * sm_b + hs * sm_h,
        offs_k, offs_v, sc_k, sc_v, sn_k, mask_k, mask_kv, HAS_INIT, BK, BV,
    )  # (BK, BV), (BK,), ()

    i_next, f_next = _load_gates(i_base, f_base, si_s, sf_s, offs_l, offs_l < S)  # (L,) each, for PREFETCH
    for c in range(0, tl.cdiv(S, L)):
        t = c * L + offs_l  # (L,)
        mask_t = t < S
        mask_tk = mask_t[:, None] & mask_k[None, :]
        mask_tv = mask_t[:, None] & mask_v[None, :]
        q = _tile(q_base, t, offs_k, sq_s, sq_d, mask_tk)  # (L, BK)
        k = _tile(k_base, t, offs_k, sk_s, sk_d, mask_tk)  # (L, BK)
        v = _tile(v_base, t, offs_v, sv_s, sv_d, mask_tv)  # (L, BV)
        i_g, f_g, log_f, b, g, i_next, f_next = _walk_gates(i_base, f_base, si_s, sf_s, t, mask_t, S, i_next, f_next,
                                                            L, PREFETCH)  # fmt: skip

        # m_t of the recurrent form (L,), qk_scale times the decay weights (L, L), the entering state's weight (L,)
        m_row, w, w0 = _row_weights(b, i_g, m_prev, log_scale, causal)
        scores = _dot(q, tl.trans(k), QK_LOWP) * w  # (L, L)
        num = _dot(scores, v, LOWP)  # (L, BV)
        z = tl.sum(scores, axis=1)  # (L,)
        if HAS_INIT or not ONE_CHUNK:  # the entering state (zero for a single chunk without initial states)
            num += (w0 * qk_scale)[:, None] * _dot(q, C, LOWP)
            z += w0 * qk_scale * tl.sum(q.to(tl.float32) * n[None, :], axis=1)
        h_off = out_base + t[:, None] * DHV + offs_v[None, :]  # (L, BV)
        if RAW:  # a DQK block's share of the numerator (and z), added to the earlier blocks' sum; normalized later
            h = num  # (L, BV)
            if RAW_ADD:
                h += tl.load(h_ptr + h_off, mask=mask_tv, other=0.0)
                z += tl.load(z_ptr + gate_off + t, mask=mask_t, other=0.0)
        else:
            den = tl.maximum(tl.abs(z), tl.exp(-m_row)) + eps  # (L,)
            h = num * (1.0 / den)[:, None]  # (L, BV)
        tl.store(h_ptr + h_off, h.to(h_ptr.dtype.element_ty), mask=mask_tv)
        if STORE_H32:
            tl.store(h32_ptr + h_off, h, mask=mask_tv)
        tl.store(z_ptr + gate_off + t, z, mask=mask_t & first)
        tl.store(m_ptr + gate_off + t, m_row, mask=mask_t & first)

        if STORE_STATES:  # for the backward's dq, which then needs no second pass
            row_c = pid_bh * (tl.cdiv(S, L) + 1) + c
            tl.store(cs_ptr + row_c * DQK * DHV + offs_k[:, None] * DHV + offs_v[None, :], C, mask=mask_kv)
            tl.store(ns_ptr + row_c * DQK + offs_k, n, mask=mask_k & first)
        if NEED_LAST or not ONE_CHUNK:
            m_new = _chunk_end_m(m_prev, i_g, b, g)  # carry the state to the chunk end
            C, n = _carry(C, n, m_prev, m_new, k, v, i_g, b, g, LOWP)
            m_prev = m_new

    if STORE_STATES:
        row_c = pid_bh * (tl.cdiv(S, L) + 1) + tl.cdiv(S, L)
        tl.store(cs_ptr + row_c * DQK * DHV + offs_k[:, None] * DHV + offs_v[None, :], C, mask=mask_kv)
        tl.store(ns_ptr + row_c * DQK + offs_k, n, mask=mask_k & first)
    if NEED_LAST:
        tl.store(cl_ptr + pid_bh * DQK * DHV + offs_k[:, None] * DHV + offs_v[None, :], C, mask=mask_kv)
        tl.store(nl_ptr + pid_bh * DQK + offs_k, n, mask=mask_k & first)
        tl.store(ml_ptr + pid_bh, m_prev, mask=first)
