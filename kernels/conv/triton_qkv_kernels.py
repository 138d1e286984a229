"""Triton kernels of the fused causal conv (+ SiLU) and block-diagonal q, k, v maps (`triton_qkv.py`).

Channel c sits in block b = c // BS at place j = c % BS; its block's channels are g + m, g = b BS, m < BS. With
a_c the conv pre-activation and xc_c = act(a_c):

    q_c = sum_m xc_{g+m} Wq[b, m, j],  k_c likewise with Wk,  v_c = sum_m x_{g+m} Wv[b, m, j].

A tile of (BT steps, BC channels) reads its block partners by index (g + m, cached loads) and recomputes the conv
at them, so nothing but xc and qkv is written. Backward, with dq, dk, dv the parts of dqkv and dxc the gradient of
xc from elsewhere:

    ga_c = (dxc_c + sum_m dq_{g+m} Wq[b, j, m] + dk_{g+m} Wk[b, j, m]) act'(a_c)    (`_qkv_bwd_gates_kernel_tl`)
    dx_c = sum_m dv_{g+m} Wv[b, j, m] + sum_k w_k ga_{t+K-1-k, c}                 (`_qkv_bwd_input_kernel_tl`)
    dWq[b, m, j] = sum_t xc_{g+m} dq_c,  dWk alike,  dWv[b, m, j] = sum_t x_{g+m} dv_c,
    dw_k = sum_t ga_t x_{t-K+1+k},  db = sum_t ga_t.

The backward kernels run one program per (sequence, channel block), walk the sequence in tiles and keep their
shares of the weight gradients in registers, one named (BC,) vector per block place m (BS <= 4) and per tap
(K <= 8), written once per sequence and summed by the host (deterministic).
"""

import triton
import triton.language as tl

from .triton_conv_kernels import _preactivation


@triton.jit
def _act(a, SILU: tl.constexpr):
    if SILU:
        a = a * tl.sigmoid(a)
    return a


@triton.jit
def _act_grad(a, SILU: tl.constexpr):
    """d act / d a at a."""
    if SILU:
        s = tl.sigmoid(a)
        return s + a * s * (1.0 - s)
    return tl.full(a.shape, 1.0, tl.float32)


@triton.jit
def _pick(m: tl.constexpr, term, a0, a1, a2, a3):
    """(a0, a1, a2, a3) with term added to a_m."""
    if m == 0:
        a0 += term
    elif m == 1:
        a1 += term
    elif m == 2:
        a2 += term
    else:
        a3 += term
    return a0, a1, a2, a3


@triton.jit
def _conv_qkv_fwd_kernel_tl(
    x_ptr,  # (B, T, C), strides sx_*
    w_ptr,  # (C, K) contiguous taps
    b_ptr,  # (C,) conv bias; read only if HAS_BIAS
    wq_ptr,  # (NB, BS, BS) contiguous
    wk_ptr,
    wv_ptr,
    xc_ptr,  # out (B, T, C) contiguous
    qkv_ptr,  # out (B, T, 3C) contiguous
    T, C, NT,
    sx_b, sx_t, sx_c,
    K: tl.constexpr,
    BS: tl.constexpr,
    BT: tl.constexpr,
    BC: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SILU: tl.constexpr,
):  # fmt: skip
    pid, pid_c = tl.program_id(0).to(tl.int64), tl.program_id(1)  # (sequence * time block, channel block)
    pid_b, pid_t = pid // NT, pid % NT
    t = pid_t * BT + tl.arange(0, BT)
    c = pid_c * BC + tl.arange(0, BC)
    mask_c = c < C
    mask_t = t < T
    mask = mask_t[:, None] & mask_c[None, :]
    g, j = (c // BS) * BS, c % BS  # (BC,) first channel of c's block, c's place in it
    x_base = x_ptr + pid_b * sx_b
    xc = tl.zeros((BT, BC), dtype=tl.float32)
    q = tl.zeros((BT, BC), dtype=tl.float32)
    k = tl.zeros((BT, BC), dtype=tl.float32)
    v = tl.zeros((BT, BC), dtype=tl.float32)
    for m in tl.static_range(BS):
        col = g + m  # (BC,) the block partner m of each channel
        xc_m = _act(_preactivation(x_base, w_ptr, b_ptr, t, col, mask_c, T, sx_t, sx_c, K, BT, BC, HAS_BIAS), SILU)
        x_m = tl.load(x_base + t[:, None] * sx_t + col[None, :] * sx_c, mask=mask, other=0.0).to(tl.float32)
        w_off = g * BS + m * BS + j  # (BC,) W[b, m, j]
        q += xc_m * tl.load(wq_ptr + w_off, mask=mask_c, other=0.0).to(tl.float32)[None, :]
        k += xc_m * tl.load(wk_ptr + w_off, mask=mask_c, other=0.0).to(tl.float32)[None, :]
        v += x_m * tl.load(wv_ptr + w_off, mask=mask_c, other=0.0).to(tl.float32)[None, :]
        xc += tl.where((j == m)[None, :], xc_m, 0.0)
    row = pid_b * T + t  # (BT,)
    tl.store(xc_ptr + row[:, None] * C + c[None, :], xc.to(xc_ptr.dtype.element_ty), mask=mask)
    out = qkv_ptr + row[:, None] * (3 * C) + c[None, :]  # (BT, BC)
    tl.store(out, q.to(qkv_ptr.dtype.element_ty), mask=mask)
    tl.store(out + C, k.to(qkv_ptr.dtype.element_ty), mask=mask)
    tl.store(out + 2 * C, v.to(qkv_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _qkv_bwd_gates_kernel_tl(
    x_ptr,  # (B, T, C), strides sx_*
    w_ptr,  # (C, K) contiguous taps
    b_ptr,  # (C,) conv bias; read only if HAS_BIAS
    wq_ptr,  # (NB, BS, BS) contiguous
    wk_ptr,
    dxc_ptr,  # (B, T, C) gradient of xc, strides sdc_*
    dqkv_ptr,  # (B, T, 3C) gradient of qkv, strides sdq_*
    ga_ptr,  # out (B, T, C) fp32 gradient of the conv pre-activation
    dwq_ptr,  # out (B, BS, C) fp32: entry [s, m, c] = sequence s's share of dWq[c // BS, m, c % BS]
    dwk_ptr,  # out (B, BS, C) fp32, as dwq
    T, C,
    sx_b, sx_t, sx_c,
    sdc_b, sdc_t, sdc_c,
    sdq_b, sdq_t, sdq_c,
    K: tl.constexpr,
    BS: tl.constexpr,
    BT: tl.constexpr,
    BC: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SILU: tl.constexpr,
):  # fmt: skip
    pid_b, pid_c = tl.program_id(0).to(tl.int64), tl.program_id(1)  # (sequence, channel block): walks all of T
    c = pid_c * BC + tl.arange(0, BC)
    mask_c = c < C
    g, j = (c // BS) * BS, c % BS
    x_base = x_ptr + pid_b * sx_b
    dq_base = dqkv_ptr + pid_b * sdq_b
    dk_base = dq_base + C * sdq_c
    zero = tl.zeros((BC,), dtype=tl.float32)
    q0, q1, q2, q3 = zero, zero, zero, zero  # shares of dWq[b, m, j], m = 0..3
    k0, k1, k2, k3 = zero, zero, zero, zero
    for t0 in range(0, T, BT):
        t = t0 + tl.arange(0, BT)
        mask = (t < T)[:, None] & mask_c[None, :]
        own = t[:, None] * sdq_t + c[None, :] * sdq_c  # (BT, BC)
        dq = tl.load(dq_base + own, mask=mask, other=0.0).to(tl.float32)
        dk = tl.load(dk_base + own, mask=mask, other=0.0).to(tl.float32)
        dxc = tl.load(dxc_ptr + pid_b * sdc_b + t[:, None] * sdc_t + c[None, :] * sdc_c, mask=mask, other=0.0)
        dxc = dxc.to(tl.float32)
        a = tl.zeros((BT, BC), dtype=tl.float32)
        for m in tl.static_range(BS):
            col = g + m
            a_m = _preactivation(x_base, w_ptr, b_ptr, t, col, mask_c, T, sx_t, sx_c, K, BT, BC, HAS_BIAS)
            xc_m = _act(a_m, SILU)
            q0, q1, q2, q3 = _pick(m, tl.sum(xc_m * dq, axis=0), q0, q1, q2, q3)
            k0, k1, k2, k3 = _pick(m, tl.sum(xc_m * dk, axis=0), k0, k1, k2, k3)
            part = t[:, None] * sdq_t + col[None, :] * sdq_c  # (BT, BC) the partner's gradients
            dq_m = tl.load(dq_base + part, mask=mask, other=0.0).to(tl.float32)
            dk_m = tl.load(dk_base + part, mask=mask, other=0.0).to(tl.float32)
            w_off = g * BS + j * BS + m  # (BC,) W[b, j, m]
            dxc += dq_m * tl.load(wq_ptr + w_off, mask=mask_c, other=0.0).to(tl.float32)[None, :]
            dxc += dk_m * tl.load(wk_ptr + w_off, mask=mask_c, other=0.0).to(tl.float32)[None, :]
            a += tl.where((j == m)[None, :], a_m, 0.0)
        ga = dxc * _act_grad(a, SILU)
        tl.store(ga_ptr + (pid_b * T + t)[:, None] * C + c[None, :], ga, mask=mask)
    out_q = dwq_ptr + pid_b * BS * C + c
    out_k = dwk_ptr + pid_b * BS * C + c
    for m in tl.static_range(BS):
        if m == 0:
            tl.store(out_q, q0, mask=mask_c)
            tl.store(out_k, k0, mask=mask_c)
        elif m == 1:
            tl.store(out_q + C, q1, mask=mask_c)
            tl.store(out_k + C, k1, mask=mask_c)
        elif m == 2:
            tl.store(out_q + 2 * C, q2, mask=mask_c)
            tl.store(out_k + 2 * C, k2, mask=mask_c)
        else:
            tl.store(out_q + 3 * C, q3, mask=mask_c)
            tl.store(out_k + 3 * C, k3, mask=mask_c)


@triton.jit
def _qkv_bwd_input_kernel_tl(
    x_ptr,  # (B, T, C), strides sx_*
    w_ptr,  # (C, K) contiguous taps
    wv_ptr,  # (NB, BS, BS) contiguous
    ga_ptr,  # (B, T, C) fp32 contiguous, from `_qkv_bwd_gates_kernel_tl`
    dqkv_ptr,  # (B, T, 3C) gradient of qkv, strides sdq_*
    dx_ptr,  # out (B, T, C) contiguous
    dwv_ptr,  # out (B, BS, C) fp32, as dwq above
    dw_ptr,  # out (B, K, C) fp32: each sequence's share of the conv taps' gradient
    db_ptr,  # out (B, C) fp32: each sequence's share of the conv bias' gradient; written only if HAS_BIAS
    T, C,
    sx_b, sx_t, sx_c,
    sdq_b, sdq_t, sdq_c,
    K: tl.constexpr,
    BS: tl.constexpr,
    BT: tl.constexpr,
    BC: tl.constexpr,
    HAS_BIAS: tl.constexpr,
):  # fmt: skip
    pid_b, pid_c = tl.program_id(0).to(tl.int64), tl.program_id(1)  # (sequence, channel block): walks all of T
    c = pid_c * BC + tl.arange(0, BC)
    mask_c = c < C
    g, j = (c // BS) * BS, c % BS
    x_base = x_ptr + pid_b * sx_b
    dv_base = dqkv_ptr + pid_b * sdq_b + 2 * C * sdq_c
    ga_base = ga_ptr + pid_b * T * C
    zero = tl.zeros((BC,), dtype=tl.float32)
    v0, v1, v2, v3 = zero, zero, zero, zero  # shares of dWv[b, m, j]
    w0, w1, w2, w3 = zero, zero, zero, zero  # shares of the taps' gradient, taps 0..3 and 4..7
    w4, w5, w6, w7 = zero, zero, zero, zero
    db = zero
    for t0 in range(0, T, BT):
        t = t0 + tl.arange(0, BT)
        mask = (t < T)[:, None] & mask_c[None, :]
        dv = tl.load(dv_base + t[:, None] * sdq_t + c[None, :] * sdq_c, mask=mask, other=0.0).to(tl.float32)
        dx = tl.zeros((BT, BC), dtype=tl.float32)
        for m in tl.static_range(BS):
            col = g + m
            x_m = tl.load(x_base + t[:, None] * sx_t + col[None, :] * sx_c, mask=mask, other=0.0).to(tl.float32)
            v0, v1, v2, v3 = _pick(m, tl.sum(x_m * dv, axis=0), v0, v1, v2, v3)
            dv_m = tl.load(dv_base + t[:, None] * sdq_t + col[None, :] * sdq_c, mask=mask, other=0.0)
            w_v = tl.load(wv_ptr + g * BS + j * BS + m, mask=mask_c, other=0.0).to(tl.float32)  # (BC,) Wv[b, j, m]
            dx += dv_m.to(tl.float32) * w_v[None, :]
        for s in tl.static_range(K):  # ga at steps t + s meets tap K - 1 - s of dx_t
            ts = t + s
            mask_s = (ts < T)[:, None] & mask_c[None, :]
            ga = tl.load(ga_base + ts[:, None] * C + c[None, :], mask=mask_s, other=0.0)
            dx += ga * tl.load(w_ptr + c * K + (K - 1 - s), mask=mask_c, other=0.0).to(tl.float32)[None, :]
        ga = tl.load(ga_base + t[:, None] * C + c[None, :], mask=mask, other=0.0)  # this tile's own steps
        db += tl.sum(ga, axis=0)
        for k in tl.static_range(K):
            s_k = t - (K - 1) + k
            m_k = ((s_k >= 0) & (s_k < T))[:, None] & mask_c[None, :]
            xs = tl.load(x_base + s_k[:, None] * sx_t + c[None, :] * sx_c, mask=m_k, other=0.0).to(tl.float32)
            term = tl.sum(ga * xs, axis=0)
            if k < 4:
                w0, w1, w2, w3 = _pick(k, term, w0, w1, w2, w3)
            else:
                w4, w5, w6, w7 = _pick(k - 4, term, w4, w5, w6, w7)
        tl.store(dx_ptr + (pid_b * T + t)[:, None] * C + c[None, :], dx.to(dx_ptr.dtype.element_ty), mask=mask)
    if HAS_BIAS:
        tl.store(db_ptr + pid_b * C + c, db, mask=mask_c)
    out_v = dwv_ptr + pid_b * BS * C + c
    out_w = dw_ptr + pid_b * K * C + c
    for m in tl.static_range(BS):
        if m == 0:
            tl.store(out_v, v0, mask=mask_c)
        elif m == 1:
            tl.store(out_v + C, v1, mask=mask_c)
        elif m == 2:
            tl.store(out_v + 2 * C, v2, mask=mask_c)
        else:
            tl.store(out_v + 3 * C, v3, mask=mask_c)
    for k in tl.static_range(K):
        if k == 0:
            tl.store(out_w, w0, mask=mask_c)
        elif k == 1:
            tl.store(out_w + C, w1, mask=mask_c)
        elif k == 2:
            tl.store(out_w + 2 * C, w2, mask=mask_c)
        elif k == 3:
            tl.store(out_w + 3 * C, w3, mask=mask_c)
        elif k == 4:
            tl.store(out_w + 4 * C, w4, mask=mask_c)
        elif k == 5:
            tl.store(out_w + 5 * C, w5, mask=mask_c)
        elif k == 6:
            tl.store(out_w + 6 * C, w6, mask=mask_c)
        else:
            tl.store(out_w + 7 * C, w7, mask=mask_c)
