"""Triton kernels of the depthwise causal conv (+ SiLU): the forward, and a backward in two kernels.

Tiles of (BT time steps, BC channels) of one sequence; x is read through its strides in its own dtype (a slice of a
wider projection output needs no copy), the taps and the bias in fp32, sums in fp32. The forward runs one program
per (sequence * time tile, channel block).

Forward: a_t = bias + sum_k w_k x_{t-K+1+k};  y_t = silu(a_t) (SILU) or a_t, stored in y's dtype.
Backward, with g_t = dy_t * act'(a_t):
1. `_causal_conv_grad_kernel_tl`, one program per (sequence, channel block) walking the sequence in tiles:
   recomputes a_t from x, writes g (in dy's dtype for bf16/fp16, else fp32) and sums its share of
   dw_k = sum_t g_t x_{t-K+1+k} and db = sum_t g_t in registers (one named tile per tap, K <= 8, reduced over time
   at the end), written once per sequence and summed by the host (deterministic);
2. `_causal_conv_dx_kernel_tl`, tiled as the forward: dx_t = sum_k w_k g_{t+K-1-k} (g = 0 beyond T).
A tile of dx needs g on K - 1 steps after it: one kernel that recomputed a (and g) at every shift read x K^2 + 2K
times per element instead of 2K, and was several times slower than the forward on an H200.

With QKV the same kernels also run the grouped q, k, v maps of the mLSTM block (`triton_conv_qkv.py`): a channel
block is then one group of W channels, and the forward also writes q|k = y @ [Wq_g | Wk_g] and v = x @ Wv_g from
the tile it holds; the g kernel adds dq @ Wq_g^T + dk @ Wk_g^T to dy before act'(a), and the dx kernel adds
dv @ Wv_g^T. `_group_dw_kernel_tl` sums the maps' weight gradients a^T b over row slices.
"""

import triton
import triton.language as tl

from ..mlstm.triton_chunkwise_common import _dot


@triton.jit
def _shifted(x_base, t, c, mask_c, T, sx_t, sx_c, k: tl.constexpr, K: tl.constexpr, BT: tl.constexpr,
             BC: tl.constexpr):  # fmt: skip
    """x at steps t - K + 1 + k (the steps tap k meets), (BT, BC) fp32, 0 outside [0, T); zeros for k >= K."""
    if k < K:
        s = t - (K - 1) + k
        m = ((s >= 0) & (s < T))[:, None] & mask_c[None, :]
        return tl.load(x_base + s[:, None] * sx_t + c[None, :] * sx_c, mask=m, other=0.0).to(tl.float32)
    else:
        return tl.zeros((BT, BC), dtype=tl.float32)


@triton.jit
def _tap(w_ptr, c, mask_c, k: tl.constexpr, K: tl.constexpr, BC: tl.constexpr):
    """Tap k of channels c, (BC,) fp32; zeros for k >= K."""
    if k < K:
        return tl.load(w_ptr + c * K + k, mask=mask_c, other=0.0).to(tl.float32)
    else:
        return tl.zeros((BC,), dtype=tl.float32)


@triton.jit
def _preactivation(x_base, w_ptr, b_ptr, t, c, mask_c, T, sx_t, sx_c, K: tl.constexpr, BT: tl.constexpr,
                   BC: tl.constexpr, HAS_BIAS: tl.constexpr):  # fmt: skip
    """a at steps t (BT,) and channels c (BC,): (BT, BC) fp32; steps outside [0, T) read x as 0."""
    a = tl.zeros((BT, BC), dtype=tl.float32)
    if HAS_BIAS:
        a += tl.load(b_ptr + c, mask=mask_c, other=0.0).to(tl.float32)[None, :]
    for k in tl.static_range(K):
        a += _shifted(x_base, t, c, mask_c, T, sx_t, sx_c, k, K, BT, BC) * _tap(w_ptr, c, mask_c, k, K, BC)[None, :]
    return a


@triton.jit
def _store_tap_share(out, dw, mask_c, k: tl.constexpr, K: tl.constexpr):
    """Store tap k's share of dw, the (BT, BC) products summed over time, at out + k; nothing for k >= K."""
    if k < K:
        tl.store(out + k, tl.sum(dw, axis=0), mask=mask_c)


@triton.jit
def _time_tile(T, C, NT, BT: tl.constexpr, BC: tl.constexpr):
    """This program's sequence, steps t (BT,), channels c (BC,) and channel mask, on a (B * NT, channel blocks) grid."""
    pid, pid_c = tl.program_id(0).to(tl.int64), tl.program_id(1)
    pid_b, pid_t = pid // NT, pid % NT
    c = pid_c * BC + tl.arange(0, BC)
    return pid_b, pid_t * BT + tl.arange(0, BT), c, c < C


@triton.jit
def _group_map(a, w_ptr, BC: tl.constexpr, TRANSPOSED: tl.constexpr, DOT: tl.constexpr):
    """a (BT, BC) @ W (or W^T with TRANSPOSED) for this program's (BC, BC) group of w_ptr, fp32 (`_dot` mode DOT)."""
    i = tl.arange(0, BC)
    if TRANSPOSED:
        w = tl.load(w_ptr + tl.program_id(1) * BC * BC + i[:, None] + i[None, :] * BC)  # (out, in) of (in, out)
    else:
        w = tl.load(w_ptr + tl.program_id(1) * BC * BC + i[:, None] * BC + i[None, :])
    return _dot(a, w, DOT)


@triton.jit
def _causal_conv_fwd_kernel_tl(
    x_ptr,  # (B, T, C), strides sx_*
    w_ptr,  # (C, K) contiguous taps
    b_ptr,  # (C,) bias; read only if HAS_BIAS
    y_ptr,  # out (B, T, C) contiguous
    T, C, NT,
    sx_b, sx_t, sx_c,
    wq_ptr, wk_ptr, wv_ptr,  # (C / BC, BC, BC) contiguous groups of the q, k, v maps (in x out), in y's dtype; QKV
    qk_ptr,  # out (B, T, 2C) contiguous: [q | k]; QKV only
    v_ptr,  # out (B, T, C) contiguous; QKV only
    K: tl.constexpr,
    BT: tl.constexpr,
    BC: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SILU: tl.constexpr,
    QKV: tl.constexpr = False,
    DOT: tl.constexpr = 0,
):  # fmt: skip
    pid_b, t, c, mask_c = _time_tile(T, C, NT, BT, BC)
    a = _preactivation(x_ptr + pid_b * sx_b, w_ptr, b_ptr, t, c, mask_c, T, sx_t, sx_c, K, BT, BC, HAS_BIAS)
    if SILU:
        a = a * tl.sigmoid(a)
    mask = (t < T)[:, None] & mask_c[None, :]
    y = a.to(y_ptr.dtype.element_ty)  # (BT, BC): the maps multiply y as stored
    tl.store(y_ptr + pid_b * T * C + t[:, None] * C + c[None, :], y, mask=mask)
    if QKV:
        row = (pid_b * T + t)[:, None]  # (BT, 1)
        out = qk_ptr + row * 2 * C + c[None, :]
        tl.store(out, _group_map(y, wq_ptr, BC, False, DOT).to(y.dtype), mask=mask)
        tl.store(out + C, _group_map(y, wk_ptr, BC, False, DOT).to(y.dtype), mask=mask)
        xt = tl.load(x_ptr + pid_b * sx_b + t[:, None] * sx_t + c[None, :] * sx_c, mask=mask, other=0.0)
        tl.store(v_ptr + row * C + c[None, :], _group_map(xt, wv_ptr, BC, False, DOT).to(y.dtype), mask=mask)


@triton.jit
def _causal_conv_grad_kernel_tl(
    x_ptr,  # (B, T, C), strides sx_*
    w_ptr,  # (C, K) contiguous taps
    b_ptr,  # (C,) bias; read only if HAS_BIAS
    dy_ptr,  # (B, T, C) upstream gradient, strides sdy_*
    g_ptr,  # out (B, T, C) contiguous: g = dy * act'(a), fp32 or dy's bf16/fp16 (`triton_conv.G_IN_DY_DTYPE`)
    dw_ptr,  # out (B, C, K) fp32: each sequence's share of dw, in the taps' (C, K) layout
    db_ptr,  # out (B, C) fp32: each sequence's share of db; written only if HAS_BIAS
    T, C,
    sx_b, sx_t, sx_c,
    sdy_b, sdy_t, sdy_c,
    dqk_ptr,  # (B, T, 2C) gradient of [q | k], strides sdqk_*; QKV only
    wq_ptr, wk_ptr,  # (C / BC, BC, BC) contiguous groups of the q and k maps, in dqk's dtype; QKV only
    sdqk_b, sdqk_t, sdqk_c,
    K: tl.constexpr,
    BT: tl.constexpr,
    BC: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SILU: tl.constexpr,
    QKV: tl.constexpr = False,
    DOT: tl.constexpr = 0,
):  # fmt: skip
    pid_b, pid_c = tl.program_id(0).to(tl.int64), tl.program_id(1)  # (sequence, channel block): walks all of T
    c = pid_c * BC + tl.arange(0, BC)
    mask_c = c < C
    x_base = x_ptr + pid_b * sx_b
    # products summed element-wise over the walk, one named (BT, BC) tile per tap, and reduced over time once at the
    # end: a reduction per tile and tap (across warps) made the walk several times slower than the forward (H200)
    db = tl.zeros((BT, BC), dtype=tl.float32)
    dw0 = tl.zeros((BT, BC), dtype=tl.float32)
    dw1 = tl.zeros((BT, BC), dtype=tl.float32)
    dw2 = tl.zeros((BT, BC), dtype=tl.float32)
    dw3 = tl.zeros((BT, BC), dtype=tl.float32)
    dw4 = tl.zeros((BT, BC), dtype=tl.float32)
    dw5 = tl.zeros((BT, BC), dtype=tl.float32)
    dw6 = tl.zeros((BT, BC), dtype=tl.float32)
    dw7 = tl.zeros((BT, BC), dtype=tl.float32)
    w0, w1 = _tap(w_ptr, c, mask_c, 0, K, BC), _tap(w_ptr, c, mask_c, 1, K, BC)
    w2, w3 = _tap(w_ptr, c, mask_c, 2, K, BC), _tap(w_ptr, c, mask_c, 3, K, BC)
    w4, w5 = _tap(w_ptr, c, mask_c, 4, K, BC), _tap(w_ptr, c, mask_c, 5, K, BC)
    w6, w7 = _tap(w_ptr, c, mask_c, 6, K, BC), _tap(w_ptr, c, mask_c, 7, K, BC)
    bias = tl.zeros((BC,), dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(b_ptr + c, mask=mask_c, other=0.0).to(tl.float32)
    for t0 in range(0, T, BT):
        t = t0 + tl.arange(0, BT)
        mask = (t < T)[:, None] & mask_c[None, :]
        g = tl.load(dy_ptr + pid_b * sdy_b + t[:, None] * sdy_t + c[None, :] * sdy_c, mask=mask, other=0.0)
        g = g.to(tl.float32)
        if QKV:  # + dq Wq^T + dk Wk^T: the maps' share of dy
            dq_ptr = dqk_ptr + pid_b * sdqk_b + t[:, None] * sdqk_t + c[None, :] * sdqk_c
            g += _group_map(tl.load(dq_ptr, mask=mask, other=0.0), wq_ptr, BC, True, DOT)
            g += _group_map(tl.load(dq_ptr + C * sdqk_c, mask=mask, other=0.0), wk_ptr, BC, True, DOT)
        # the K shifted tiles of x, read once for the pre-activation and for dw (taps >= K are zeros, compiled away)
        x0 = _shifted(x_base, t, c, mask_c, T, sx_t, sx_c, 0, K, BT, BC)
        x1 = _shifted(x_base, t, c, mask_c, T, sx_t, sx_c, 1, K, BT, BC)
        x2 = _shifted(x_base, t, c, mask_c, T, sx_t, sx_c, 2, K, BT, BC)
        x3 = _shifted(x_base, t, c, mask_c, T, sx_t, sx_c, 3, K, BT, BC)
        x4 = _shifted(x_base, t, c, mask_c, T, sx_t, sx_c, 4, K, BT, BC)
        x5 = _shifted(x_base, t, c, mask_c, T, sx_t, sx_c, 5, K, BT, BC)
        x6 = _shifted(x_base, t, c, mask_c, T, sx_t, sx_c, 6, K, BT, BC)
        x7 = _shifted(x_base, t, c, mask_c, T, sx_t, sx_c, 7, K, BT, BC)
        if SILU:
            a = bias[None, :] + x0 * w0[None, :] + x1 * w1[None, :] + x2 * w2[None, :] + x3 * w3[None, :]
            a += x4 * w4[None, :] + x5 * w5[None, :] + x6 * w6[None, :] + x7 * w7[None, :]
            s = tl.sigmoid(a)
            g = g * (s + a * s * (1.0 - s))
        tl.store(g_ptr + (pid_b * T + t)[:, None] * C + c[None, :], g.to(g_ptr.dtype.element_ty), mask=mask)
        db += g
        dw0 += g * x0
        dw1 += g * x1
        dw2 += g * x2
        dw3 += g * x3
        dw4 += g * x4
        dw5 += g * x5
        dw6 += g * x6
        dw7 += g * x7
    if HAS_BIAS:
        tl.store(db_ptr + pid_b * C + c, tl.sum(db, axis=0), mask=mask_c)
    out = dw_ptr + pid_b * C * K + c * K  # (BC,) addresses of tap 0 in the (C, K) share
    _store_tap_share(out, dw0, mask_c, 0, K)
    _store_tap_share(out, dw1, mask_c, 1, K)
    _store_tap_share(out, dw2, mask_c, 2, K)
    _store_tap_share(out, dw3, mask_c, 3, K)
    _store_tap_share(out, dw4, mask_c, 4, K)
    _store_tap_share(out, dw5, mask_c, 5, K)
    _store_tap_share(out, dw6, mask_c, 6, K)
    _store_tap_share(out, dw7, mask_c, 7, K)


@triton.jit
def _causal_conv_dx_kernel_tl(
    g_ptr,  # (B, T, C) contiguous, from `_causal_conv_grad_kernel_tl`
    w_ptr,  # (C, K) contiguous taps
    dx_ptr,  # out (B, T, C) contiguous
    T, C, NT,
    dv_ptr,  # (B, T, C) gradient of v, strides sdv_*; QKV only
    wv_ptr,  # (C / BC, BC, BC) contiguous groups of the v map, in dv's dtype; QKV only
    sdv_b, sdv_t, sdv_c,
    K: tl.constexpr,
    BT: tl.constexpr,
    BC: tl.constexpr,
    QKV: tl.constexpr = False,
    DOT: tl.constexpr = 0,
):  # fmt: skip
    pid_b, t, c, mask_c = _time_tile(T, C, NT, BT, BC)
    g_base = g_ptr + pid_b * T * C
    dx = tl.zeros((BT, BC), dtype=tl.float32)
    for j in tl.static_range(K):  # g at steps t + j meets tap K - 1 - j of dx_t
        tj = t + j
        mask = (tj < T)[:, None] & mask_c[None, :]
        g = tl.load(g_base + tj[:, None] * C + c[None, :], mask=mask, other=0.0).to(tl.float32)
        dx += g * _tap(w_ptr, c, mask_c, K - 1 - j, K, BC)[None, :]
    mask_t = (t < T)[:, None] & mask_c[None, :]
    if QKV:  # + dv Wv^T
        dv = tl.load(dv_ptr + pid_b * sdv_b + t[:, None] * sdv_t + c[None, :] * sdv_c, mask=mask_t, other=0.0)
        dx += _group_map(dv, wv_ptr, BC, True, DOT)
    tl.store(dx_ptr + (pid_b * T + t)[:, None] * C + c[None, :], dx.to(dx_ptr.dtype.element_ty), mask=mask_t)


@triton.jit
def _group_dw_kernel_tl(
    a_ptr,  # (B, T, C) the maps' input, strides sa_*
    b_ptr,  # (B, T, MAPS * C) their output gradients side by side, strides sb_*
    out_ptr,  # out (S, 3, C / BC, BC, BC) fp32: this row slice's share of each map's (in x out) group gradient
    N, T, C, ROWS, FIRST,  # N = B * T rows; ROWS per program; the maps' shares start at out index FIRST
    sa_b, sa_t, sa_c,
    sb_b, sb_t, sb_c,
    BC: tl.constexpr,
    BN: tl.constexpr,
    DOT: tl.constexpr,
):  # fmt: skip
    """One program per (row slice, group, map): sum over its rows of a_g^T b_g, (BC, BC) in fp32."""
    pid_s, pid_g, pid_m = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    c = pid_g * BC + tl.arange(0, BC)
    b_base = b_ptr + pid_m * C * sb_c
    acc = tl.zeros((BC, BC), dtype=tl.float32)
    start = pid_s.to(tl.int64) * ROWS
    end = tl.minimum(start + ROWS, N)
    for r0 in range(start, end, BN):
        n = r0 + tl.arange(0, BN)  # (BN,) int64 rows
        m = n < end
        bi, ti = n // T, n % T
        a = tl.load(a_ptr + bi[None, :] * sa_b + ti[None, :] * sa_t + c[:, None] * sa_c, mask=m[None, :], other=0.0)
        b = tl.load(b_base + bi[:, None] * sb_b + ti[:, None] * sb_t + c[None, :] * sb_c, mask=m[:, None], other=0.0)
        acc += _dot(a, b, DOT)  # (BC, BN) @ (BN, BC)
    i = tl.arange(0, BC)
    G = C // BC
    out = out_ptr + ((pid_s.to(tl.int64) * 3 + FIRST + pid_m) * G + pid_g) * BC * BC  # 64-bit: many row slices
    tl.store(out + i[:, None] * BC + i[None, :], acc)
