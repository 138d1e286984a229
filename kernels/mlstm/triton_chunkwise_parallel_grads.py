"""Triton kernels of the chunk-parallel mLSTM backward (`triton_chunkwise_parallel_bwd.py` launches them): every
chunk's gradients at once, one program per (chunk, batch * head), given the gradient of the state leaving each chunk
from the backward boundary kernel. The identities are listed in `triton_chunkwise_parallel_bwd.py`."""

import triton
import triton.language as tl

from .triton_chunkwise_common import _chunk_gates, _decay_weights, _dot, _logsigmoid, _tile
from .triton_chunkwise_gates import _branches, _den_terms, _dz, _route_stabilizer


@triton.jit
def _dc_tile(dc_base, sc_base, offs_k, offs_v, mask_kv, k0, v0, DHV, BK_S, BV_S, NV_S, SCALED: tl.constexpr):
    """The (BK, BV) block of a chunk's leaving-state gradient at rows offs_k, columns offs_v (first ones k0, v0),
    fp32. dc_base: the chunk's (DQK, DHV) gradient, contiguous; SCALED: stored in fp16, with one scale per (BK_S,
    BV_S) block of the boundary kernel (sc_base: the chunk's (NKB_S, NV_S) scales), which holds this block whole."""
    dC = _tile(dc_base, offs_k, offs_v, DHV, 1, mask_kv).to(tl.float32)  # (BK, BV)
    if SCALED:
        dC = dC * tl.load(sc_base + (k0 // BK_S) * NV_S + v0 // BV_S)
    return dC


@triton.jit
def _chunk_dv(q_base, k_base, v_base, dh_base, dc_base, sc_base, dv_base, t, mask_t, inv_den, w, e,
              sq_s, sq_d, sk_s, sk_d, sdh_s, sdh_d, DQK, DHV, qk_scale, BK_S, BV_S, NV_S,
              L: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, QK_LOWP: tl.constexpr, OUT_LOWP: tl.constexpr,
              STATE_LOWP: tl.constexpr, SCALED: tl.constexpr):  # fmt: skip
    """dv of one chunk, per DHV block: (w q^ k^T)^T dnum + e (k dC), with q^ k^T over the DQK blocks first.
    dc_base, sc_base: the chunk's leaving-state gradient and its scales (`_dc_tile`); dv_base: its first row of dv
    (rows of DHV)."""
    qk = tl.zeros((L, L), dtype=tl.float32)
    for kb in range(0, tl.cdiv(DQK, BK)):
        offs_k = kb * BK + tl.arange(0, BK)
        mask_tk = mask_t[:, None] & (offs_k < DQK)[None, :]
        qk += _dot(_tile(q_base, t, offs_k, sq_s, sq_d, mask_tk), tl.trans(_tile(k_base, t, offs_k, sk_s, sk_d,
                                                                                 mask_tk)), QK_LOWP)  # fmt: skip
    w_qk = w * qk * qk_scale  # (L, L)
    for vb in range(0, tl.cdiv(DHV, BV)):
        offs_v = vb * BV + tl.arange(0, BV)
        mask_v = offs_v < DHV
        mask_tv = mask_t[:, None] & mask_v[None, :]
        dnum = _tile(dh_base, t, offs_v, sdh_s, sdh_d, mask_tv).to(tl.float32) * inv_den[:, None]  # (L, BV)
        k_dc = tl.zeros((L, BV), dtype=tl.float32)  # k dC
        for kb in range(0, tl.cdiv(DQK, BK)):
            offs_k = kb * BK + tl.arange(0, BK)
            mask_k = offs_k < DQK
            k = _tile(k_base, t, offs_k, sk_s, sk_d, mask_t[:, None] & mask_k[None, :])  # (L, BK)
            dC = _dc_tile(dc_base, sc_base, offs_k, offs_v, mask_k[:, None] & mask_v[None, :], kb * BK, vb * BV, DHV,
                          BK_S, BV_S, NV_S, SCALED)  # (BK, BV)
            k_dc += _dot(k, dC, STATE_LOWP)
        dv = _dot(tl.trans(w_qk), dnum, OUT_LOWP) + e[:, None] * k_dc  # (L, BV)
        tl.store(dv_base + t[:, None] * DHV + offs_v[None, :], dv.to(dv_base.dtype.element_ty), mask=mask_tv)


@triton.jit
def _dq_dk_sweep(q_base, k_base, v_base, dh_base, cs_ptr, ns_ptr, dns_ptr, dc_base, sc_base, dq_ptr, dk_ptr, row, row0,
                 t, mask_t, inv_den, w_ds, w0, dz, e, sq_s, sq_d, sk_s, sk_d, sv_s, sv_d, sdh_s, sdh_d, DQK, DHV,
                 qk_scale, BK_S, BV_S, NV_S, L: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, LOWP: tl.constexpr,
                 OUT_LOWP: tl.constexpr, STATE_LOWP: tl.constexpr, SCALED: tl.constexpr, FORM_DQ: tl.constexpr,
                 FORM_DK: tl.constexpr):  # fmt: skip
    """One sweep over the DQK blocks of a chunk: dq (FORM_DQ) and / or dk (FORM_DK), with the entering state's and the
    leaving-state gradient's terms over DHV blocks. Returns (di, k_e, state_dot) of dk's terms (zeros without
    FORM_DK): sum_k k_s dk_s and sum_k k_s (dC v_s + dn) (L,) per key s, and <dC, C_in> + <dn, n_in>."""
    di = tl.zeros((L,), dtype=tl.float32)
    k_e = tl.zeros((L,), dtype=tl.float32)  # sum_k k_s (dC v_s + dn) per key s
    state_dot = tl.zeros((), dtype=tl.float32)  # <dC, C_in> + <dn, n_in>
    for kb in range(0, tl.cdiv(DQK, BK)):
        offs_k = kb * BK + tl.arange(0, BK)
        mask_k = offs_k < DQK
        mask_tk = mask_t[:, None] & mask_k[None, :]
        k = _tile(k_base, t, offs_k, sk_s, sk_d, mask_tk)  # (L, BK)
        dnum_c = tl.zeros((L, BK), dtype=tl.float32)  # dnum C_in^T
        v_dc = tl.zeros((L, BK), dtype=tl.float32)  # v dC^T
        for vb in range(0, tl.cdiv(DHV, BV)):
            offs_v = vb * BV + tl.arange(0, BV)
            mask_v = offs_v < DHV
            mask_tv = mask_t[:, None] & mask_v[None, :]
            mask_kv = mask_k[:, None] & mask_v[None, :]
            C = _tile(cs_ptr + row * DQK * DHV, offs_k, offs_v, DHV, 1, mask_kv).to(tl.float32)  # (BK, BV)
            if FORM_DQ:
                dnum = _tile(dh_base, t, offs_v, sdh_s, sdh_d, mask_tv).to(tl.float32) * inv_den[:, None]  # (L, BV)
                dnum_c += _dot(dnum, tl.trans(C), STATE_LOWP)
            if FORM_DK:
                v = _tile(v_base, t, offs_v, sv_s, sv_d, mask_tv)  # (L, BV)
                dC = _dc_tile(dc_base, sc_base, offs_k, offs_v, mask_kv, kb * BK, vb * BV, DHV, BK_S, BV_S, NV_S,
                              SCALED)  # (BK, BV)
                v_dc += _dot(v, tl.trans(dC), LOWP)
                state_dot += tl.sum(tl.sum(dC * C, axis=1), axis=0)
        n_in = tl.load(ns_ptr + row * DQK + offs_k, mask=mask_k, other=0.0)  # (BK,)
        out_k = (row0 + t[:, None]) * DQK + offs_k[None, :]  # (L, BK)
        if FORM_DQ:
            dq = _dot(w_ds, k, OUT_LOWP) + w0[:, None] * (dnum_c + dz[:, None] * n_in[None, :])  # (L, BK)
            tl.store(dq_ptr + out_k, (dq * qk_scale).to(dq_ptr.dtype.element_ty), mask=mask_tk)
        if FORM_DK:
            q = _tile(q_base, t, offs_k, sq_s, sq_d, mask_tk)  # (L, BK)
            dn = tl.load(dns_ptr + row * DQK + offs_k, mask=mask_k, other=0.0)  # (BK,)
            state_dot += tl.sum(dn * n_in, axis=0)
            ek = v_dc + dn[None, :]  # (L, BK)
            dk = _dot(tl.trans(w_ds), q, LOWP) * qk_scale + e[:, None] * ek  # (L, BK)
            k32 = k.to(tl.float32)
            di += tl.sum(k32 * dk, axis=1)
            k_e += tl.sum(k32 * ek, axis=1)
            tl.store(dk_ptr + out_k, dk.to(dk_ptr.dtype.element_ty), mask=mask_tk)
    return di, k_e, state_dot


@triton.jit
def _mlstm_chunk_bwd_kernel_tl(
    q_ptr, k_ptr, v_ptr, i_ptr, f_ptr,  # q, k (B, NH, S, DQK), v (B, NH, S, DHV), i, f (B, NH, S); strides s*_
    cs_ptr, ns_ptr, ms_ptr,  # (BNH * NC, DQK, DHV), (BNH * NC, DQK), (BNH * NC,) entering states, fp32 (C: or bf16)
    dcs_ptr, dns_ptr,  # (BNH * NC, DQK, DHV), (BNH * NC, DQK) gradients of the leaving states: fp32 (dC: or SCALED)
    dsc_ptr,  # (BNH * NC, NKB_S, NV_S) fp32 scales of the boundary kernel's (BK_S, BV_S) blocks of dC; read if SCALED
    dms_ptr,  # (NVB, BNH * NC) fp32 shares of the gradient routed to m at the chunk end
    h_ptr, z_ptr, m_ptr,  # (BNH, S, DHV) fp32 h (read unless HD_GIVEN), (BNH, S) z and m from the forward, contiguous
    hd_ptr,  # (BNH, S) fp32 <dh_t, h_t> (`row_dots`); read if HD_GIVEN
    dh_ptr,  # (B, NH, S, DHV) upstream gradient of h, strides sdh_*
    c0_ptr, n0_ptr, m0_ptr,  # initial states (B, NH, DQK, DHV), (B, NH, DQK), (B, NH[, 1]); read if STORE_D0
    dq_ptr, dk_ptr,  # out (BNH, S, DQK), dtypes of q, k
    dv_ptr,  # out (BNH, S, DHV), dtype of v
    di_ptr, df_ptr,  # out (BNH, S), dtypes of i, f
    dc0_ptr, dn0_ptr, dm0_ptr,  # out (BNH, DQK, DHV), (BNH, DQK), (BNH,); written if STORE_D0
    sq_b, sq_h, sq_s, sq_d,
    sk_b, sk_h, sk_s, sk_d,
    sv_b, sv_h, sv_s, sv_d,
    si_b, si_h, si_s,
    sf_b, sf_h, sf_s,
    sdh_b, sdh_h, sdh_s, sdh_d,
    sc_b, sc_h, sc_k, sc_v,
    sn_b, sn_h, sn_k,
    sm_b, sm_h,
    NH, S_all, DQK, DHV, NC, NVB, BNH, qk_scale, eps, BK_S, BV_S, NKB_S, NV_S,
    L: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    LOWP: tl.constexpr,
    QK_LOWP: tl.constexpr,
    OUT_LOWP: tl.constexpr,
    STORE_D0: tl.constexpr,
    DETACH: tl.constexpr,
    STATE_LOWP: tl.constexpr,  # dot mode of dq's dnum C_in^T and dv's k dC (LOWP, or OUT_LOWP: STATE_OUT_DOTS)
    HD_GIVEN: tl.constexpr,
    PART: tl.constexpr,  # 0: every gradient; 1: all but dv; 2: dv; 3: dq; 4: all but dq and dv; 5: all but dq
    SCALED: tl.constexpr,  # dC stored in fp16 in scaled blocks (`bounds_backward`)
    DQ_SWEEP: tl.constexpr = False,  # PARTs 0 and 1 (dq and dk): a sweep over the DQK blocks forming dq, then dk
):  # fmt: skip
    c = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)
    bb, hh = pid_bh // NH, pid_bh % NH
    row = pid_bh * NC + c  # this chunk's entries in the state buffers
    dc_base, sc_base = dcs_ptr + row * DQK * DHV, dsc_ptr + row * NKB_S * NV_S
    seg0 = c * L
    S = tl.minimum(L, S_all - seg0)  # steps of this chunk; t counts from its start
    offs_l = tl.arange(0, L)
    t = offs_l
    mask_t = t < S
    causal = offs_l[:, None] >= offs_l[None, :]  # (L, L)
    q_base = q_ptr + bb * sq_b + hh * sq_h + seg0 * sq_s
    k_base = k_ptr + bb * sk_b + hh * sk_h + seg0 * sk_s
    v_base = v_ptr + bb * sv_b + hh * sv_h + seg0 * sv_s
    i_base = i_ptr + bb * si_b + hh * si_h + seg0 * si_s
    f_base = f_ptr + bb * sf_b + hh * sf_h + seg0 * sf_s
    dh_base = dh_ptr + bb * sdh_b + hh * sdh_h + seg0 * sdh_s
    row0 = pid_bh * S_all + seg0  # row of this chunk's first step in the contiguous (BNH, S, ...) buffers
    h_base = h_ptr + row0 * DHV

    z, m_row, inv_den = _den_terms(z_ptr + row0, m_ptr + row0, t, mask_t, eps)  # (L,) each
    i_g, f_g, log_f, b, g = _chunk_gates(i_base, f_base, si_s, sf_s, t, mask_t)
    m_in = tl.load(ms_ptr + row)
    m_end = tl.load(m_ptr + row0 + S - 1)
    w = _decay_weights(b, i_g, m_row, causal & mask_t[:, None])  # (L, L)
    w0 = tl.where(mask_t, tl.exp(b + m_in - m_row), 0.0)  # (L,)
    e = tl.exp(g - b + i_g - m_end)  # (L,) weight of key s in the leaving state, 0 on padding
    decay = tl.exp(g + m_in - m_end)

    if PART == 2:
        _chunk_dv(q_base, k_base, v_base, dh_base, dc_base, sc_base, dv_ptr + row0 * DHV, t, mask_t, inv_den, w, e,
                  sq_s, sq_d, sk_s, sk_d, sdh_s, sdh_d, DQK, DHV, qk_scale, BK_S, BV_S, NV_S, L, BK, BV, QK_LOWP,
                  OUT_LOWP, STATE_LOWP, SCALED)  # fmt: skip
        return

    # dnum v^T and <dh, h> over the DHV columns
    ds = tl.zeros((L, L), dtype=tl.float32)
    hd = tl.zeros((L,), dtype=tl.float32)
    for vb in range(0, tl.cdiv(DHV, BV)):
        offs_v = vb * BV + tl.arange(0, BV)
        mask_tv = mask_t[:, None] & (offs_v < DHV)[None, :]
        dh = _tile(dh_base, t, offs_v, sdh_s, sdh_d, mask_tv).to(tl.float32)  # (L, BV)
        v = _tile(v_base, t, offs_v, sv_s, sv_d, mask_tv)  # (L, BV)
        ds += _dot(dh * inv_den[:, None], tl.trans(v), LOWP)
        if not HD_GIVEN:
            hd += tl.sum(dh * _tile(h_base, t, offs_v, DHV, 1, mask_tv), axis=1)
    if HD_GIVEN:
        hd = tl.load(hd_ptr + row0 + t, mask=mask_t, other=0.0)  # (L,)
    dz = _dz(z, m_row, inv_den, hd, 0, DETACH)  # (L,)
    ds += dz[:, None]
    w_ds = w * ds  # (L, L)

    # dq, dk per DQK block (PART 3 forms dq alone, PARTs 4 and 5 dk without dq; DQ_SWEEP: dq in a sweep of its own
    # first, then dk, so fewer (L, BK) tiles are live at once)
    FORM_DQ: tl.constexpr = PART != 4 and PART != 5
    FORM_DK: tl.constexpr = PART != 3
    SPLIT: tl.constexpr = DQ_SWEEP and FORM_DQ and FORM_DK
    if SPLIT:
        _dq_dk_sweep(q_base, k_base, v_base, dh_base, cs_ptr, ns_ptr, dns_ptr, dc_base, sc_base, dq_ptr, dk_ptr, row,
                     row0, t, mask_t, inv_den, w_ds, w0, dz, e, sq_s, sq_d, sk_s, sk_d, sv_s, sv_d, sdh_s, sdh_d, DQK,
                     DHV, qk_scale, BK_S, BV_S, NV_S, L, BK, BV, LOWP, OUT_LOWP, STATE_LOWP, SCALED, True, False)
    di, k_e, state_dot = _dq_dk_sweep(
        q_base, k_base, v_base, dh_base, cs_ptr, ns_ptr, dns_ptr, dc_base, sc_base, dq_ptr, dk_ptr, row, row0, t,
        mask_t, inv_den, w_ds, w0, dz, e, sq_s, sq_d, sk_s, sk_d, sv_s, sv_d, sdh_s, sdh_d, DQK, DHV, qk_scale, BK_S,
        BV_S, NV_S, L, BK, BV, LOWP, OUT_LOWP, STATE_LOWP, SCALED, FORM_DQ and not SPLIT, FORM_DK,
    )  # fmt: skip
    if PART == 3:
        return
    last_dot = decay * state_dot + tl.sum(e * k_e, axis=0)  # <dC, C_L> + <dn, n_L>

    if PART == 0 or PART == 5:  # dv here, after dq and dk: its q^ k^T is not live across their loop
        _chunk_dv(q_base, k_base, v_base, dh_base, dc_base, sc_base, dv_ptr + row0 * DHV, t, mask_t, inv_den, w, e,
                  sq_s, sq_d, sk_s, sk_d, sdh_s, sdh_d, DQK, DHV, qk_scale, BK_S, BV_S, NV_S, L, BK, BV, QK_LOWP,
                  OUT_LOWP, STATE_LOWP, SCALED)  # fmt: skip

    # gate gradients: d(cumsum log f), its reverse cumsum within the chunk, the stabilizer route
    is_last = t == S - 1
    d_cum = hd + dz * z - di + tl.where(is_last, last_dot, 0.0)  # (L,)
    dlog_f = tl.cumsum(d_cum, axis=0, reverse=True)  # (L,)
    m_carry = tl.zeros((), dtype=tl.float32)
    if not DETACH:
        dm_end = tl.zeros((), dtype=tl.float32)
        for p in range(0, NVB):  # the boundary kernel's shares, net of <dC, C_L> + <dn, n_L>
            dm_end += tl.load(dms_ptr + p * BNH * NC + row)
        dm = tl.where(is_last, dm_end, 0.0) - eps * hd * inv_den  # (L,)
        forget, forget_next = _branches(m_ptr + row0, i_base, f_base, si_s, sf_s, t, mask_t, S, log_f, i_g, m_row,
                                        m_in)  # fmt: skip
        reach, m_carry = _route_stabilizer(dm, forget_next, m_carry)
        di += tl.where(forget, 0.0, reach)
        dlog_f += tl.where(forget, reach, 0.0)
    df = dlog_f * tl.exp(log_f - f_g)  # (L,) d log f / d f~ = sigmoid(-f~)
    tl.store(di_ptr + row0 + t, di.to(di_ptr.dtype.element_ty), mask=mask_t)
    tl.store(df_ptr + row0 + t, df.to(df_ptr.dtype.element_ty), mask=mask_t)

    if STORE_D0:  # the initial state's gradients, from the first chunk: dC0 = decay dC + (q^ w0)^T dnum
        if c == 0:
            dm0 = tl.zeros((), dtype=tl.float32)
            c0_base = c0_ptr + bb * sc_b + hh * sc_h
            for kb in range(0, tl.cdiv(DQK, BK)):
                offs_k = kb * BK + tl.arange(0, BK)
                mask_k = offs_k < DQK
                q_w = _tile(q_base, t, offs_k, sq_s, sq_d, mask_t[:, None] & mask_k[None, :]).to(tl.float32)
                q_w = q_w * (w0 * qk_scale)[:, None]  # (L, BK)
                for vb in range(0, tl.cdiv(DHV, BV)):
                    offs_v = vb * BV + tl.arange(0, BV)
                    mask_v = offs_v < DHV
                    mask_kv = mask_k[:, None] & mask_v[None, :]
                    dnum = _tile(dh_base, t, offs_v, sdh_s, sdh_d, mask_t[:, None] & mask_v[None, :]).to(tl.float32)
                    dC = _dc_tile(dc_base, sc_base, offs_k, offs_v, mask_kv, kb * BK, vb * BV, DHV, BK_S, BV_S,
                                  NV_S, SCALED)  # (BK, BV)
                    dC0 = decay * dC + _dot(tl.trans(q_w), dnum * inv_den[:, None], LOWP)  # (BK, BV)
                    C0 = _tile(c0_base, offs_k, offs_v, sc_k, sc_v, mask_kv).to(tl.float32)
                    dm0 += tl.sum(tl.sum(C0 * dC0, axis=1), axis=0)
                    out = pid_bh * DQK * DHV + offs_k[:, None] * DHV + offs_v[None, :]
                    tl.store(dc0_ptr + out, dC0.to(dc0_ptr.dtype.element_ty), mask=mask_kv)
                dn0 = decay * tl.load(dns_ptr + row * DQK + offs_k, mask=mask_k, other=0.0)
                dn0 += tl.sum(q_w * dz[:, None], axis=0)  # (BK,)
                n0 = tl.load(n0_ptr + bb * sn_b + hh * sn_h + offs_k * sn_k, mask=mask_k, other=0.0).to(tl.float32)
                dm0 += tl.sum(n0 * dn0, axis=0)
                tl.store(dn0_ptr + pid_bh * DQK + offs_k, dn0.to(dn0_ptr.dtype.element_ty), mask=mask_k)
            if not DETACH:
                m0 = tl.load(m0_ptr + bb * sm_b + hh * sm_h).to(tl.float32)
                forget_0 = _logsigmoid(tl.load(f_base).to(tl.float32)) + m0 >= tl.load(i_base).to(tl.float32)
                dm0 += tl.where(forget_0, m_carry, 0.0)
            tl.store(dm0_ptr + pid_bh, dm0.to(dm0_ptr.dtype.element_ty))
