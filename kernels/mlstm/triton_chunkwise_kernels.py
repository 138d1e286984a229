"""Triton device code for the chunkwise mLSTM: one forward and one backward kernel, no host logic.

Both kernels run one program per (DHV block, batch * head) and loop over the chunks of the sequence in time order,
keeping the stabilized state C (DQK x BV block), n (DQK) and its stabilizer m in registers ("limit chunk" layout:
the whole chunk of L time steps, L x L scores, lives in one program). The host wrappers, the autograd function and
the public entry point are in `triton_chunkwise.py`; the math and the gradient identities are in README.md and in
the docstring of `triton_chunkwise.py`.

Layout of every tensor argument: batch and head flattened to BNH = B * NH and contiguous.
"""

import triton
import triton.language as tl


@triton.jit
def _dot(a, b, LOWP: tl.constexpr):
    """a @ b with fp32 accumulation; operands cast to bf16 (LOWP=1), fp16 (LOWP=2), TF32 (LOWP=3) or exact fp32 (0).

    The backward of bf16/fp16 inputs uses TF32: the inputs are exact in TF32, and the fp32 intermediates (weighted
    scores, dh / den, states) keep 3 more mantissa bits, which the cancelling gate-gradient sums need.
    """
    if LOWP == 1:
        out = tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))
    elif LOWP == 2:
        out = tl.dot(a.to(tl.float16), b.to(tl.float16))
    elif LOWP == 3:
        out = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="tf32")
    else:
        out = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return out


@triton.jit
def _logsigmoid(x):
    # min(x, 0) - log(1 + exp(-|x|)): no overflow for large |x|
    return tl.minimum(x, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(x)))


@triton.jit
def _chunk_gates(i_ptr, f_ptr, t, mask_t, causal):
    """Gate terms of one chunk: i~ (L,), local log-forget cumsum b (L,), chunk total g, log-decay matrix (L, L)."""
    i_g = tl.load(i_ptr + t, mask=mask_t, other=float("-inf")).to(tl.float32)  # (L,) padding: i~ = -inf
    f_g = tl.load(f_ptr + t, mask=mask_t, other=0.0).to(tl.float32)  # (L,)
    log_f = tl.where(mask_t, _logsigmoid(f_g), 0.0)  # (L,) padding: log f = 0, state unchanged
    b = tl.cumsum(log_f, axis=0)  # (L,)
    g = tl.sum(log_f, axis=0)
    log_d = b[:, None] - b[None, :] + i_g[None, :]  # (L, L) row t, column s
    log_d = tl.where(causal, log_d, float("-inf"))  # (L, L)
    return i_g, b, g, log_d


@triton.jit
def _mlstm_chunkwise_fwd_kernel_tl(
    q_ptr,  # (BNH, S, DQK)
    k_ptr,  # (BNH, S, DQK)
    v_ptr,  # (BNH, S, DHV)
    i_ptr,  # (BNH, S)
    f_ptr,  # (BNH, S)
    c0_ptr,  # (BNH, DQK, DHV) fp32
    n0_ptr,  # (BNH, DQK) fp32
    m0_ptr,  # (BNH,) fp32
    h_ptr,  # out (BNH, S, DHV), input dtype
    h32_ptr,  # out (BNH, S, DHV) fp32 copy of h for the backward, written only if STORE_H32
    z_ptr,  # out (BNH, S) fp32: n~_t . q^_t before abs/max
    m_ptr,  # out (BNH, S) fp32: stabilizer m_t
    cl_ptr,  # out (BNH, DQK, DHV) fp32
    nl_ptr,  # out (BNH, DQK) fp32
    ml_ptr,  # out (BNH,) fp32
    S,
    DQK,
    DHV,
    qk_scale,
    eps,
    L: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    LOWP: tl.constexpr,
    STORE_H32: tl.constexpr,
):
    pid_v = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)
    offs_l = tl.arange(0, L)
    offs_k = tl.arange(0, BK)
    offs_v = pid_v * BV + tl.arange(0, BV)
    mask_k = offs_k < DQK
    mask_v = offs_v < DHV
    first = pid_v == 0
    causal = offs_l[:, None] >= offs_l[None, :]  # (L, L)

    q_base = q_ptr + pid_bh * S * DQK
    k_base = k_ptr + pid_bh * S * DQK
    v_base = v_ptr + pid_bh * S * DHV
    h_base = h_ptr + pid_bh * S * DHV
    gate_off = pid_bh * S
    state_kv = offs_k[:, None] * DHV + offs_v[None, :]  # (BK, BV)
    mask_kv = mask_k[:, None] & mask_v[None, :]

    C = tl.load(c0_ptr + pid_bh * DQK * DHV + state_kv, mask=mask_kv, other=0.0)  # (BK, BV)
    n = tl.load(n0_ptr + pid_bh * DQK + offs_k, mask=mask_k, other=0.0)  # (BK,)
    m_prev = tl.load(m0_ptr + pid_bh)

    for c in range(0, tl.cdiv(S, L)):
        t = c * L + offs_l  # (L,)
        mask_t = t < S
        mask_tk = mask_t[:, None] & mask_k[None, :]
        mask_tv = mask_t[:, None] & mask_v[None, :]
        q = tl.load(q_base + t[:, None] * DQK + offs_k[None, :], mask=mask_tk, other=0.0)  # (L, BK)
        k = tl.load(k_base + t[:, None] * DQK + offs_k[None, :], mask=mask_tk, other=0.0)  # (L, BK)
        v = tl.load(v_base + t[:, None] * DHV + offs_v[None, :], mask=mask_tv, other=0.0)  # (L, BV)
        i_g, b, g, log_d = _chunk_gates(i_ptr + gate_off, f_ptr + gate_off, t, mask_t, causal)

        m_row = tl.maximum(b + m_prev, tl.max(log_d, axis=1))  # (L,) m_t of the recurrent form
        w = tl.exp(log_d - m_row[:, None])  # (L, L), 0 above the diagonal
        w0 = tl.exp(b + m_prev - m_row)  # (L,) weight of the entering state
        scores = _dot(q, tl.trans(k), LOWP) * qk_scale * w  # (L, L)
        num = _dot(scores, v, LOWP) + (w0 * qk_scale)[:, None] * _dot(q, C, LOWP)  # (L, BV)
        z = tl.sum(scores, axis=1) + w0 * qk_scale * tl.sum(q.to(tl.float32) * n[None, :], axis=1)  # (L,)
        den = tl.maximum(tl.abs(z), tl.exp(-m_row)) + eps  # (L,)
        h = num / den[:, None]  # (L, BV)
        tl.store(h_base + t[:, None] * DHV + offs_v[None, :], h.to(h_ptr.dtype.element_ty), mask=mask_tv)
        if STORE_H32:
            tl.store(h32_ptr + pid_bh * S * DHV + t[:, None] * DHV + offs_v[None, :], h, mask=mask_tv)
        tl.store(z_ptr + gate_off + t, z, mask=mask_t & first)
        tl.store(m_ptr + gate_off + t, m_row, mask=mask_t & first)

        # carry the state to the chunk end: key s enters with log weight g - b_s + i~_s
        a = g - b + i_g  # (L,)
        m_new = tl.maximum(g + m_prev, tl.max(a, axis=0))
        decay = tl.exp(g + m_prev - m_new)
        k_w = k.to(tl.float32) * tl.exp(a - m_new)[:, None]  # (L, BK)
        C = decay * C + _dot(tl.trans(k_w), v, LOWP)  # (BK, BV)
        n = decay * n + tl.sum(k_w, axis=0)  # (BK,)
        m_prev = m_new

    tl.store(cl_ptr + pid_bh * DQK * DHV + state_kv, C, mask=mask_kv)
    tl.store(nl_ptr + pid_bh * DQK + offs_k, n, mask=mask_k & first)
    tl.store(ml_ptr + pid_bh, m_prev, mask=first)


@triton.jit
def _mlstm_chunkwise_bwd_kernel_tl(
    q_ptr,  # (BNH, S, DQK)
    k_ptr,  # (BNH, S, DQK)
    v_ptr,  # (BNH, S, DHV)
    i_ptr,  # (BNH, S)
    f_ptr,  # (BNH, S)
    c0_ptr,  # (BNH, DQK, DHV) fp32
    n0_ptr,  # (BNH, DQK) fp32
    m0_ptr,  # (BNH,) fp32
    m_ptr,  # (BNH, S) fp32, m_t saved by the forward
    dh_ptr,  # (BNH, S, DHV) upstream gradient of h
    inv_den_ptr,  # (BNH, S) fp32: 1 / (max(|z_t|, exp(-m_t)) + eps)
    dz_ptr,  # (BNH, S) fp32: gradient of z_t (0 with a detached normalizer)
    dcl_ptr,  # (BNH, DQK, DHV) fp32 upstream gradient of the last C
    dnl_ptr,  # (BNH, DQK) fp32 upstream gradient of the last n
    dq_ptr,  # out (NV, BNH, S, DQK) fp32, one partial sum per DHV block
    dk_ptr,  # out (NV, BNH, S, DQK) fp32, one partial sum per DHV block
    dv_ptr,  # out (BNH, S, DHV) fp32
    dc0_ptr,  # out (BNH, DQK, DHV) fp32
    dn0_ptr,  # out (BNH, DQK) fp32
    S,
    DQK,
    DHV,
    BNH,
    qk_scale,
    L: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    LOWP: tl.constexpr,
):
    pid_v = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)
    offs_l = tl.arange(0, L)
    offs_k = tl.arange(0, BK)
    offs_v = pid_v * BV + tl.arange(0, BV)
    mask_k = offs_k < DQK
    mask_v = offs_v < DHV
    # the normalizer column of V' = [V, 1] belongs to the first DHV block only
    z_on = tl.where(pid_v == 0, 1.0, 0.0)
    causal = offs_l[:, None] >= offs_l[None, :]  # (L, L)

    q_base = q_ptr + pid_bh * S * DQK
    k_base = k_ptr + pid_bh * S * DQK
    v_base = v_ptr + pid_bh * S * DHV
    dh_base = dh_ptr + pid_bh * S * DHV
    dv_base = dv_ptr + pid_bh * S * DHV
    part_off = (pid_v * BNH + pid_bh) * S * DQK
    gate_off = pid_bh * S
    state_kv = offs_k[:, None] * DHV + offs_v[None, :]  # (BK, BV)
    mask_kv = mask_k[:, None] & mask_v[None, :]
    NC = tl.cdiv(S, L)
    m_init = tl.load(m0_ptr + pid_bh)

    # pass 1, forward in time: recompute the entering states and form dq
    C = tl.load(c0_ptr + pid_bh * DQK * DHV + state_kv, mask=mask_kv, other=0.0)  # (BK, BV)
    n = tl.load(n0_ptr + pid_bh * DQK + offs_k, mask=mask_k, other=0.0)  # (BK,)
    m_prev = m_init
    for c in range(0, NC):
        t = c * L + offs_l  # (L,)
        mask_t = t < S
        mask_tk = mask_t[:, None] & mask_k[None, :]
        mask_tv = mask_t[:, None] & mask_v[None, :]
        k = tl.load(k_base + t[:, None] * DQK + offs_k[None, :], mask=mask_tk, other=0.0)  # (L, BK)
        v = tl.load(v_base + t[:, None] * DHV + offs_v[None, :], mask=mask_tv, other=0.0)  # (L, BV)
        dh = tl.load(dh_base + t[:, None] * DHV + offs_v[None, :], mask=mask_tv, other=0.0).to(tl.float32)
        inv_den = tl.load(inv_den_ptr + gate_off + t, mask=mask_t, other=0.0)  # (L,)
        dz = tl.load(dz_ptr + gate_off + t, mask=mask_t, other=0.0) * z_on  # (L,)
        m_row = tl.load(m_ptr + gate_off + t, mask=mask_t, other=0.0)  # (L,)
        m_end = tl.load(m_ptr + gate_off + tl.minimum(c * L + L - 1, S - 1))
        i_g, b, g, log_d = _chunk_gates(i_ptr + gate_off, f_ptr + gate_off, t, mask_t, causal)

        w = tl.where(causal & mask_t[:, None], tl.exp(log_d - m_row[:, None]), 0.0)  # (L, L)
        w0 = tl.where(mask_t, tl.exp(b + m_prev - m_row), 0.0)  # (L,)
        dnum = dh * inv_den[:, None]  # (L, BV)
        ds = _dot(dnum, tl.trans(v), LOWP) + dz[:, None]  # (L, L)
        dq = _dot(w * ds, k, LOWP) + w0[:, None] * (_dot(dnum, tl.trans(C), LOWP) + dz[:, None] * n[None, :])
        dq = dq * qk_scale  # (L, BK)
        tl.store(dq_ptr + part_off + t[:, None] * DQK + offs_k[None, :], dq, mask=mask_tk)

        a = g - b + i_g  # (L,)
        decay = tl.exp(g + m_prev - m_end)
        k_w = k.to(tl.float32) * tl.exp(a - m_end)[:, None]  # (L, BK)
        C = decay * C + _dot(tl.trans(k_w), v, LOWP)  # (BK, BV)
        n = decay * n + tl.sum(k_w, axis=0)  # (BK,)
        m_prev = m_end

    # pass 2, backward in time: carry dC, dn (gradient of the state leaving each chunk) and form dk, dv
    dC = tl.load(dcl_ptr + pid_bh * DQK * DHV + state_kv, mask=mask_kv, other=0.0)  # (BK, BV)
    dn = tl.load(dnl_ptr + pid_bh * DQK + offs_k, mask=mask_k, other=0.0) * z_on  # (BK,)
    for cc in range(0, NC):
        c = NC - 1 - cc
        t = c * L + offs_l  # (L,)
        mask_t = t < S
        mask_tk = mask_t[:, None] & mask_k[None, :]
        mask_tv = mask_t[:, None] & mask_v[None, :]
        q = tl.load(q_base + t[:, None] * DQK + offs_k[None, :], mask=mask_tk, other=0.0)  # (L, BK)
        k = tl.load(k_base + t[:, None] * DQK + offs_k[None, :], mask=mask_tk, other=0.0)  # (L, BK)
        v = tl.load(v_base + t[:, None] * DHV + offs_v[None, :], mask=mask_tv, other=0.0)  # (L, BV)
        dh = tl.load(dh_base + t[:, None] * DHV + offs_v[None, :], mask=mask_tv, other=0.0).to(tl.float32)
        inv_den = tl.load(inv_den_ptr + gate_off + t, mask=mask_t, other=0.0)  # (L,)
        dz = tl.load(dz_ptr + gate_off + t, mask=mask_t, other=0.0) * z_on  # (L,)
        m_row = tl.load(m_ptr + gate_off + t, mask=mask_t, other=0.0)  # (L,)
        m_end = tl.load(m_ptr + gate_off + tl.minimum(c * L + L - 1, S - 1))
        m_in = tl.load(m_ptr + gate_off + tl.maximum(c * L - 1, 0))
        m_in = tl.where(c > 0, m_in, m_init)
        i_g, b, g, log_d = _chunk_gates(i_ptr + gate_off, f_ptr + gate_off, t, mask_t, causal)

        w = tl.where(causal & mask_t[:, None], tl.exp(log_d - m_row[:, None]), 0.0)  # (L, L)
        w0 = tl.where(mask_t, tl.exp(b + m_in - m_row), 0.0)  # (L,)
        e = tl.exp(g - b + i_g - m_end)  # (L,) weight of key s in the leaving state, 0 on padding
        decay = tl.exp(g + m_in - m_end)
        dnum = dh * inv_den[:, None]  # (L, BV)
        qk = _dot(q, tl.trans(k), LOWP) * qk_scale  # (L, L)
        ds = _dot(dnum, tl.trans(v), LOWP) + dz[:, None]  # (L, L)
        dk = _dot(tl.trans(w * ds), q, LOWP) * qk_scale  # (L, BK)
        dk += e[:, None] * (_dot(v, tl.trans(dC), LOWP) + dn[None, :])
        dv = _dot(tl.trans(w * qk), dnum, LOWP) + e[:, None] * _dot(k, dC, LOWP)  # (L, BV)
        tl.store(dk_ptr + part_off + t[:, None] * DQK + offs_k[None, :], dk, mask=mask_tk)
        tl.store(dv_base + t[:, None] * DHV + offs_v[None, :], dv, mask=mask_tv)

        q_w = q.to(tl.float32) * (w0 * qk_scale)[:, None]  # (L, BK)
        dC = decay * dC + _dot(tl.trans(q_w), dnum, LOWP)  # (BK, BV)
        dn = decay * dn + tl.sum(q_w * dz[:, None], axis=0)  # (BK,)

    tl.store(dc0_ptr + pid_bh * DQK * DHV + state_kv, dC, mask=mask_kv)
    tl.store(dn0_ptr + pid_bh * DQK + offs_k, dn, mask=mask_k & (pid_v == 0))
