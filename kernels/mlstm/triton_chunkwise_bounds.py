"""Triton kernels for the segmented chunkwise mLSTM: the states and state gradients at segment boundaries.

A long sequence with few batch * heads leaves most of the GPU idle when one program walks all its chunks. The
segmented layout cuts the sequence into G segments of CPS chunks and runs the forward and backward kernels on all
segments at once (`triton_chunkwise_fwd.py`, `triton_chunkwise_bwd.py`). Each segment needs:

- forward: the stabilized state (C, n, m) entering it. `_mlstm_bounds_fwd_kernel_tl` walks the chunks carrying
  only the state (one (BK, L) x (L, BV) dot per chunk, no outputs), split over DQK blocks as well as DHV blocks;
- backward: the gradient of the state leaving it, and the gradient routed to m there.
  `_mlstm_bounds_bwd_kernel_tl` walks the chunks backward carrying dC = decay dC + (q^ w0)^T dnum,
  dn = decay dn + (q^ w0)^T dz and the stabilizer routing of `triton_chunkwise_gates.py`.

Buffers, contiguous fp32 (`bounds_forward` may store cs in bf16/fp16), entry g for segment g (state head
index hh * G + g):
cs (B, NH * G, DQK, DHV), ns (B, NH * G, DQK), ms (B, NH * G): the entering states (entry 0 = the initial state);
dcs, dns like cs, ns, and dms (NV, B, NH * G): the leaving-state gradients (entry G-1 = the upstream ones). dms
holds per-DHV-block shares of the gradient routed to m, net of <dC_L, C_L> + <dn_L, n_L>, which the segment kernel
adds itself.
"""

import triton
import triton.language as tl

from .triton_chunkwise_bounds_rows import _given_carry, _given_step
from .triton_chunkwise_common import (
    _carry,
    _chunk_end_m,
    _chunk_gates,
    _dot,
    _entering_state,
    _gate_terms,
    _load_gates,
    _tile,
    _walk_gates,
)
from .triton_chunkwise_gates import (
    _branches,
    _branches_of,
    _den_terms,
    _dz,
    _inv_den,
    _route_stabilizer,
    _row_terms,
    _walk_rows,
)


@triton.jit
def _program(NV, NH, DQK, DHV, BK: tl.constexpr, BV: tl.constexpr):
    """This program's (DQK block, DHV block, batch * head) of the (NKB * NV, BNH) grid, its offsets and masks; n
    (mask_n) belongs to DHV block 0."""
    pid_kv = tl.program_id(0)
    pid_k, pid_v = pid_kv // NV, pid_kv % NV
    pid_bh = tl.program_id(1).to(tl.int64)
    offs_k = pid_k * BK + tl.arange(0, BK)
    offs_v = pid_v * BV + tl.arange(0, BV)
    mask_k = offs_k < DQK
    mask_v = offs_v < DHV
    mask_kv = mask_k[:, None] & mask_v[None, :]
    mask_n = mask_k & (pid_v == 0)
    return pid_k, pid_v, pid_bh, pid_bh // NH, pid_bh % NH, offs_k, offs_v, mask_k, mask_v, mask_kv, mask_n


@triton.jit
def _store_state(c_ptr, n_ptr, m_ptr, row, C, n, m, DQK, DHV, offs_k, offs_v, mask_kv, mask_n, mask_m):
    """Write one (C (BK, BV), n (BK,), m) block as entry `row` of contiguous (rows, DQK, DHV), (rows, DQK), (rows,)."""
    tl.store(c_ptr + row * DQK * DHV + offs_k[:, None] * DHV + offs_v[None, :], C.to(c_ptr.dtype.element_ty),
             mask=mask_kv)
    tl.store(n_ptr + row * DQK + offs_k, n, mask=mask_n)
    tl.store(m_ptr + row, m, mask=mask_m)


@triton.jit
def _store_grad_state(dc_ptr, dn_ptr, dm_ptr, sc_ptr, row, tile, dC, dn, dm, DQK, DHV, offs_k, offs_v, mask_kv,
                      mask_n, mask_m, SCALED: tl.constexpr):  # fmt: skip
    """`_store_state` for the state gradients; SCALED: dC goes to fp16 storage divided by a power of two, which
    entry `tile` of sc_ptr keeps (fp32), so that the block's largest |dC| lies in [2^14, 2^15)."""
    if SCALED:
        amax = tl.max(tl.max(tl.abs(dC), axis=1), axis=0)
        scale = tl.exp2(tl.floor(tl.log2(tl.maximum(amax, 1e-30))) - 14.0)  # all-zero blocks stay zero
        dC = dC * (1.0 / scale)  # exact: a power of two
        tl.store(sc_ptr + tile, scale)
    _store_state(dc_ptr, dn_ptr, dm_ptr, row, dC, dn, dm, DQK, DHV, offs_k, offs_v, mask_kv, mask_n, mask_m)


@triton.jit
def _mlstm_bounds_fwd_kernel_tl(
    k_ptr,  # (B, NH, S, DQK), strides sk_*
    v_ptr,  # (B, NH, S, DHV), strides sv_*
    i_ptr,  # (B, NH, S), strides si_*
    f_ptr,  # (B, NH, S), strides sf_*
    c0_ptr,  # (B, NH, DQK, DHV) initial C, strides sc_*; read only if HAS_INIT
    n0_ptr,  # (B, NH, DQK), strides sn_*
    m0_ptr,  # (B, NH[, 1]), strides sm_*
    cs_ptr,  # out (BNH * G, DQK, DHV) entering C of each segment, fp32 (or bf16/fp16: `bounds_forward`)
    ns_ptr,  # out (BNH * G, DQK) fp32
    ms_ptr,  # out (BNH * G,) fp32
    cl_ptr,  # out (BNH, DQK, DHV) fp32 last C; written only if NEED_LAST
    nl_ptr,  # out (BNH, DQK) fp32
    ml_ptr,  # out (BNH,) fp32
    ga_ptr,  # (BNH, S) fp32 a_s of `bounds_gates`; read if GATES_GIVEN
    gt_ptr,  # (N_GATE_TERMS, BNH * ceil(S / L)) fp32 g and max_s a_s of `bounds_gates`; read if GATES_GIVEN
    sk_b, sk_h, sk_s, sk_d,
    sv_b, sv_h, sv_s, sv_d,
    si_b, si_h, si_s,
    sf_b, sf_h, sf_s,
    sc_b, sc_h, sc_k, sc_v,
    sn_b, sn_h, sn_k,
    sm_b, sm_h,
    NH,
    S,
    DQK,
    DHV,
    G,
    CPS,
    NV,
    L: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    LOWP: tl.constexpr,
    HAS_INIT: tl.constexpr,
    NEED_LAST: tl.constexpr,
    PREFETCH: tl.constexpr,
    GATES_GIVEN: tl.constexpr = False,  # each chunk's gate terms from `bounds_gates` (ga_ptr, gt_ptr)
):  # fmt: skip
    pid_k, pid_v, pid_bh, bb, hh, offs_k, offs_v, mask_k, mask_v, mask_kv, mask_n = _program(NV, NH, DQK, DHV, BK, BV)
    offs_l = tl.arange(0, L)
    first = (pid_v == 0) & (pid_k == 0)
    k_base = k_ptr + bb * sk_b + hh * sk_h
    v_base = v_ptr + bb * sv_b + hh * sv_h
    i_base = i_ptr + bb * si_b + hh * si_h
    f_base = f_ptr + bb * sf_b + hh * sf_h

    C, n, m_prev = _entering_state(
        c0_ptr + bb * sc_b + hh * sc_h, n0_ptr + bb * sn_b + hh * sn_h, m0_ptr + bb * sm_b + hh * sm_h,
        offs_k, offs_v, sc_k, sc_v, sn_k, mask_k, mask_kv, HAS_INIT, BK, BV,
    )  # (BK, BV), (BK,), ()

    # walk to the last segment's start, storing the state entering each segment; then, for the last states, on
    NC = tl.cdiv(S, L)
    walk_end = (G - 1) * CPS
    if NEED_LAST:
        walk_end = NC
    # the gates of the next chunk load while this one is carried (PREFETCH): the carry's whole chain starts from
    # them, and k and v are already pipelined into shared memory
    i_next, f_next = _load_gates(i_base, f_base, si_s, sf_s, offs_l, offs_l < S)  # (L,) each
    for c in range(0, walk_end):
        if c % CPS == 0:
            _store_state(cs_ptr, ns_ptr, ms_ptr, pid_bh * G + c // CPS, C, n, m_prev, DQK, DHV, offs_k, offs_v,
                         mask_kv, mask_n, first)  # fmt: skip
        t = c * L + offs_l  # (L,)
        mask_t = t < S
        k = _tile(k_base, t, offs_k, sk_s, sk_d, mask_t[:, None] & mask_k[None, :])  # (L, BK)
        v = _tile(v_base, t, offs_v, sv_s, sv_d, mask_t[:, None] & mask_v[None, :])  # (L, BV)
        if GATES_GIVEN:
            a_row = tl.load(ga_ptr + pid_bh * S + t, mask=mask_t, other=float("-inf"))  # (L,)
            crow = pid_bh * NC + c
            C, n, m_prev = _given_carry(a_row, tl.load(gt_ptr + crow), tl.load(gt_ptr + NC * tl.num_programs(1) + crow),
                                        m_prev, C, n, k, v, LOWP)  # fmt: skip
        else:
            i_g, f_g, log_f, b, g, i_next, f_next = _walk_gates(i_base, f_base, si_s, sf_s, t, mask_t, S, i_next,
                                                                f_next, L, PREFETCH)  # fmt: skip
            m_new = _chunk_end_m(m_prev, i_g, b, g)
            C, n = _carry(C, n, m_prev, m_new, k, v, i_g, b, g, LOWP)
            m_prev = m_new
    if NEED_LAST:
        _store_state(cl_ptr, nl_ptr, ml_ptr, pid_bh, C, n, m_prev, DQK, DHV, offs_k, offs_v, mask_kv, mask_n, first)
    else:
        _store_state(cs_ptr, ns_ptr, ms_ptr, pid_bh * G + G - 1, C, n, m_prev, DQK, DHV, offs_k, offs_v, mask_kv,
                     mask_n, first)  # fmt: skip


@triton.jit
def _mlstm_bounds_bwd_kernel_tl(
    q_ptr,  # (B, NH, S, DQK), strides sq_*
    i_ptr,  # (B, NH, S), strides si_*
    f_ptr,  # (B, NH, S), strides sf_*
    h_ptr,  # (BNH, S, DHV) contiguous h from the forward
    z_ptr,  # (BNH, S) fp32 z_t from the forward
    m_ptr,  # (BNH, S) fp32 m_t from the forward
    hd_ptr,  # (BNH, S) fp32 <dh_t, h_t> over every column (`row_dots`); read instead of h if HD_GIVEN
    rows_ptr,  # (2, BNH, S) fp32 per-step factors of `bounds_rows`; read if ROWS_GIVEN
    terms_ptr,  # (N_CHUNK_TERMS, BNH * ceil(S / L)) fp32 per-chunk terms of `bounds_rows`; read if ROWS_GIVEN
    cl_ptr,  # (BNH, DQK, DHV) fp32 last C from the forward; read only if HAS_DC or HAS_DN
    nl_ptr,  # (BNH, DQK) fp32 last n
    dh_ptr,  # (B, NH, S, DHV) upstream gradient of h, strides sdh_*
    dcl_ptr,  # (B, NH, DQK, DHV) upstream gradient of the last C, strides sdc_*; read only if HAS_DC
    dnl_ptr,  # (B, NH, DQK), strides sdn_*; read only if HAS_DN
    dml_ptr,  # (B, NH), strides sdm_*; read only if HAS_DM
    dcs_ptr,  # out (BNH * G, DQK, DHV) gradient of the state leaving each segment: fp32, or fp16 if SCALED
    dsc_ptr,  # out (BNH * G, NKB, NV) fp32 scale of each block of dcs; written only if SCALED
    dns_ptr,  # out (BNH * G, DQK) fp32
    dms_ptr,  # out (NV, BNH * G) fp32 per-DHV-block share of the gradient routed to m at each segment end
    sq_b, sq_h, sq_s, sq_d,
    si_b, si_h, si_s,
    sf_b, sf_h, sf_s,
    sdh_b, sdh_h, sdh_s, sdh_d,
    sdc_b, sdc_h, sdc_k, sdc_v,
    sdn_b, sdn_h, sdn_k,
    sdm_b, sdm_h,
    NH,
    S,
    DQK,
    DHV,
    BNH,
    G,
    CPS,
    NV,
    qk_scale,
    eps,
    L: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    NKB: tl.constexpr,
    LOWP: tl.constexpr,
    HAS_DC: tl.constexpr,
    HAS_DN: tl.constexpr,
    HAS_DM: tl.constexpr,
    MULTI_V: tl.constexpr,
    DETACH: tl.constexpr,
    HD_GIVEN: tl.constexpr,
    PREFETCH: tl.constexpr,  # needs HD_GIVEN: each chunk's rows (`_walk_rows`) load while the chunk before is carried
    SCALED: tl.constexpr,  # dcs in fp16, each (BK, BV) block divided by its power-of-two scale in dsc
    ROWS_GIVEN: tl.constexpr = False,  # each chunk's factors from `bounds_rows` (rows_ptr, terms_ptr)
):  # fmt: skip
    pid_k, pid_v, pid_bh, bb, hh, offs_k, offs_v, mask_k, mask_v, mask_kv, mask_n = _program(NV, NH, DQK, DHV, BK, BV)
    offs_l = tl.arange(0, L)
    z_on = tl.where(pid_v == 0, 1.0, 0.0)  # the normalizer column of V' = [V, 1] belongs to DHV block 0
    q_base = q_ptr + bb * sq_b + hh * sq_h
    i_base = i_ptr + bb * si_b + hh * si_h
    f_base = f_ptr + bb * sf_b + hh * sf_h
    dh_base = dh_ptr + bb * sdh_b + hh * sdh_h
    h_base = h_ptr + pid_bh * S * DHV
    zm_off = pid_bh * S

    # the last segment's upstream: the caller's gradients of the last states
    dC = tl.zeros((BK, BV), dtype=tl.float32)
    dn = tl.zeros((BK,), dtype=tl.float32)
    last_dot = tl.zeros((), dtype=tl.float32)  # this DHV block's <dC_L, C_L> + <dn_L, n_L>, over all of DQK
    dc_base = dcl_ptr + bb * sdc_b + hh * sdc_h
    dn_base = dnl_ptr + bb * sdn_b + hh * sdn_h
    for kb in range(0, NKB):
        ks = kb * BK + tl.arange(0, BK)
        mask_ks = ks < DQK
        if HAS_DC:
            dC_kb = _tile(dc_base, ks, offs_v, sdc_k, sdc_v, mask_ks[:, None] & mask_v[None, :]).to(tl.float32)
            C_kb = _tile(cl_ptr + pid_bh * DQK * DHV, ks, offs_v, DHV, 1, mask_ks[:, None] & mask_v[None, :])
            last_dot += tl.sum(tl.sum(dC_kb * C_kb, axis=1), axis=0)
        if HAS_DN:
            dn_kb = tl.load(dn_base + ks * sdn_k, mask=mask_ks, other=0.0).to(tl.float32) * z_on
            n_kb = tl.load(nl_ptr + pid_bh * DQK + ks, mask=mask_ks, other=0.0)
            last_dot += tl.sum(dn_kb * n_kb, axis=0)
    if HAS_DC:
        dC = _tile(dc_base, offs_k, offs_v, sdc_k, sdc_v, mask_kv).to(tl.float32)
    if HAS_DN:
        dn = tl.load(dn_base + offs_k * sdn_k, mask=mask_k, other=0.0).to(tl.float32) * z_on
    dm_last = -last_dot
    if HAS_DM:
        dm_last += tl.load(dml_ptr + bb * sdm_b + hh * sdm_h).to(tl.float32) * z_on
    row = pid_bh * G + G - 1
    _store_grad_state(dcs_ptr, dns_ptr, dms_ptr + pid_v * BNH * G, dsc_ptr, row, (row * NKB + pid_k) * NV + pid_v,
                      dC, dn, dm_last, DQK, DHV, offs_k, offs_v, mask_kv, mask_n, pid_k == 0, SCALED)  # fmt: skip

    # walk backward to segment 1's first chunk, storing the gradient of the state leaving each segment
    NC = tl.cdiv(S, L)
    m_carry = tl.zeros((), dtype=tl.float32)  # gradient reaching m at the later chunk's first step
    if PREFETCH:
        rows = _walk_rows(z_ptr + zm_off, m_ptr + zm_off, hd_ptr + zm_off, i_base, f_base, si_s, sf_s, (NC - 1) * L,
                          S, L)  # fmt: skip
    for cc in range(0, NC - CPS):
        c = NC - 1 - cc
        t = c * L + offs_l  # (L,)
        mask_t = t < S
        q = _tile(q_base, t, offs_k, sq_s, sq_d, mask_t[:, None] & mask_k[None, :])  # (L, BK)
        dh = _tile(dh_base, t, offs_v, sdh_s, sdh_d, mask_t[:, None] & mask_v[None, :]).to(tl.float32)  # (L, BV)
        if ROWS_GIVEN:  # every factor but the carried values from `bounds_rows`
            dC, dn, m_carry, dm_to_prev = _given_step(rows_ptr + zm_off, terms_ptr, BNH * S, BNH * NC, pid_bh * NC + c,
                                                      t, mask_t, q, dh, dC, dn, m_carry, dm_last, z_on, LOWP, DETACH)
        else:
            if PREFETCH:  # this chunk's rows, loaded during the last one; the next chunk's now
                z, m_row, hd_all, i_raw, f_raw, m_before, i_after, f_after, m_in, m_end = rows
                rows = _walk_rows(z_ptr + zm_off, m_ptr + zm_off, hd_ptr + zm_off, i_base, f_base, si_s, sf_s,
                                  c * L - L, S, L)  # fmt: skip
                inv_den = _inv_den(z, m_row, eps)  # (L,)
                i_g, f_g, log_f, b, g = _gate_terms(i_raw, f_raw, mask_t)
            elif HD_GIVEN:
                z, m_row, inv_den = _den_terms(z_ptr + zm_off, m_ptr + zm_off, t, mask_t, eps)  # (L,) each
                hd_all = tl.load(hd_ptr + zm_off + t, mask=mask_t, other=0.0)  # (L,)
            if HD_GIVEN:  # the whole row's <dh, h>, counted by DHV block 0 (the blocks' shares of dm add up the same)
                hd = hd_all * z_on
                dz = _dz(z, m_row, inv_den, hd_all, pid_v, DETACH)
            else:
                z, m_row, inv_den, hd, dz = _row_terms(
                    z_ptr + zm_off, m_ptr + zm_off, h_base, dh_base, sdh_s, sdh_d, dh, t, mask_t, offs_v, pid_v, DHV,
                    eps, BV, MULTI_V, DETACH,
                )  # fmt: skip
            if not PREFETCH:
                m_end = tl.load(m_ptr + zm_off + tl.minimum(c * L + L - 1, S - 1))
                m_in = tl.load(m_ptr + zm_off + c * L - 1)  # c >= 1
                i_g, f_g, log_f, b, g = _chunk_gates(i_base, f_base, si_s, sf_s, t, mask_t)
            w0 = tl.where(mask_t, tl.exp(b + m_in - m_row), 0.0)  # (L,)
            q_w = q.to(tl.float32) * (w0 * qk_scale)[:, None]  # (L, BK)
            decay = tl.exp(g + m_in - m_end)
            dC = decay * dC + _dot(tl.trans(q_w), dh * inv_den[:, None], LOWP)  # (BK, BV)
            dn = decay * dn + tl.sum(q_w * dz[:, None], axis=0)  # (BK,)
            dm_to_prev = tl.zeros((), dtype=tl.float32)
            if not DETACH:
                dm = -eps * hd * inv_den + tl.where(t == S - 1, dm_last, 0.0)  # (L,)
                if PREFETCH:
                    forget, forget_next = _branches_of(m_before, i_after, f_after, t, S, log_f, i_g, m_row, m_in)
                else:
                    forget, forget_next = _branches(
                        m_ptr + zm_off, i_base, f_base, si_s, sf_s, t, mask_t, S, log_f, i_g, m_row, m_in
                    )  # fmt: skip
                reach, m_carry = _route_stabilizer(dm, forget_next, m_carry)
                forget_first = tl.sum(tl.where(offs_l == 0, forget.to(tl.float32), 0.0), axis=0)
                dm_to_prev = forget_first * m_carry  # what reaches m before the chunk
        if c % CPS == 0:
            row = pid_bh * G + c // CPS - 1
            _store_grad_state(dcs_ptr, dns_ptr, dms_ptr + pid_v * BNH * G, dsc_ptr, row,
                              (row * NKB + pid_k) * NV + pid_v, dC, dn, dm_to_prev, DQK, DHV, offs_k, offs_v, mask_kv,
                              mask_n, pid_k == 0, SCALED)  # fmt: skip
