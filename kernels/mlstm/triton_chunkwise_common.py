"""Triton device helpers shared by the chunkwise mLSTM kernels (forward, backward, segment boundaries): dots,
gates, strided tiles, the entering state and the state carried across a chunk; and the host's stride arguments.

Inputs are read through their strides (any layout, e.g. a (B, S, NH, D) tensor viewed as (B, NH, S, D), or an
expanded upstream gradient with stride 0) and cast to fp32 after loading, so the host never copies or casts them.
"""

import triton
import triton.language as tl
from torch import Tensor


def _strides(x: Tensor | None, ndim: int) -> tuple[int, ...]:
    """The first `ndim` strides of x; zeros for an absent tensor, which the kernel then does not read."""
    return (0,) * ndim if x is None else tuple(x.stride()[:ndim])


@triton.jit
def _dot(a, b, LOWP: tl.constexpr):
    """a @ b with fp32 accumulation; operands cast to bf16 (LOWP=1), fp16 (LOWP=2), TF32 (LOWP=3) or exact fp32 (0);
    LOWP=4 rounds the operands to bf16 and multiplies them in fp32, the same numbers as LOWP=1 (bf16 products are
    exact in fp32), for the Triton interpreter, whose bf16 dot is wrong.

    The backward of bf16/fp16 inputs uses TF32: the inputs are exact in TF32, and the fp32 intermediates (weighted
    scores, dh / den, states) keep 3 more mantissa bits, which the cancelling gate-gradient sums need.
    """
    if LOWP == 1:
        out = tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))
    elif LOWP == 2:
        out = tl.dot(a.to(tl.float16), b.to(tl.float16))
    elif LOWP == 3:
        out = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="tf32")
    elif LOWP == 4:  # bf16 operands, emulated: what LOWP=1 computes, for the Triton interpreter
        out = tl.dot(a.to(tl.bfloat16).to(tl.float32), b.to(tl.bfloat16).to(tl.float32), input_precision="ieee")
    else:
        out = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return out


@triton.jit
def _logsigmoid(x):
    # min(x, 0) - log(1 + exp(-|x|)): no overflow for large |x|
    return tl.minimum(x, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(x)))


@triton.jit
def _tile(base, rows, cols, stride_row, stride_col, mask):
    """(len(rows), len(cols)) tile of a strided matrix, zero where masked; loaded in its own dtype."""
    return tl.load(base + rows[:, None] * stride_row + cols[None, :] * stride_col, mask=mask, other=0.0)


@triton.jit
def _chunk_gates(i_base, f_base, stride_i, stride_f, t, mask_t):
    """Gate terms of one chunk from the raw pre-activations, in fp32.

    Returns i~ (L,), f~ (L,), log f (L,), the local log-forget cumsum b (L,) and the chunk total g (the decay
    weights come from `_row_weights` / `_decay_weights`). Padding (t >= S) gets i~ = -inf and log f = 0: it leaves
    the state unchanged.
    """
    i_raw, f_raw = _load_gates(i_base, f_base, stride_i, stride_f, t, mask_t)
    return _gate_terms(i_raw, f_raw, mask_t)


@triton.jit
def _load_gates(i_base, f_base, stride_i, stride_f, t, mask_t):
    """The raw gate pre-activations i~, f~ (L,) of one chunk in their own dtype (i~ = -inf and f~ = 0 past S); a
    chunk loop may load the next chunk's while it works on this one (the first use waits for the load)."""
    i_raw = tl.load(i_base + t * stride_i, mask=mask_t, other=float("-inf"))  # (L,)
    f_raw = tl.load(f_base + t * stride_f, mask=mask_t, other=0.0)  # (L,)
    return i_raw, f_raw


@triton.jit
def _walk_gates(i_base, f_base, stride_i, stride_f, t, mask_t, S, i_next, f_next, L: tl.constexpr,
                PREFETCH: tl.constexpr):  # fmt: skip
    """`_chunk_gates` of the chunk at steps t in a walk over chunks, plus the raw gates the walk carries: with
    PREFETCH, this chunk's come from (i_next, f_next), loaded during the last chunk (the walk loads the first chunk's
    with `_load_gates` before it starts), and the next chunk's are loaded now; else this chunk's are loaded here.

    Returns i~, f~, log f, b (L,), g and the raw (i_next, f_next) for the next chunk (unchanged without PREFETCH)."""
    if PREFETCH:
        i_raw, f_raw = i_next, f_next
        i_next, f_next = _load_gates(i_base, f_base, stride_i, stride_f, t + L, t + L < S)
    else:
        i_raw, f_raw = _load_gates(i_base, f_base, stride_i, stride_f, t, mask_t)
    i_g, f_g, log_f, b, g = _gate_terms(i_raw, f_raw, mask_t)
    return i_g, f_g, log_f, b, g, i_next, f_next


@triton.jit
def _gate_terms(i_raw, f_raw, mask_t):
    """`_chunk_gates` from gates `_load_gates` loaded: i~, f~, log f, b (L,) and g, in fp32."""
    i_g = i_raw.to(tl.float32)  # (L,)
    f_g = f_raw.to(tl.float32)  # (L,)
    log_f = tl.where(mask_t, _logsigmoid(f_g), 0.0)  # (L,)
    b = tl.cumsum(log_f, axis=0)  # (L,)
    g = tl.sum(log_f, axis=0)
    return i_g, f_g, log_f, b, g


@triton.jit
def _max2(a, b):
    return tl.maximum(a, b)


@triton.jit
def _row_offset(u, m_prev):
    """r_t = m_t - b_t = max(m_prev, max_{s <= t} u_s) (L,) for u = i~ - b: a running max over the chunk's steps."""
    return tl.maximum(m_prev, tl.associative_scan(u, 0, _max2))


@triton.jit
def _row_m(b, i_g, m_prev):
    """m_t of the recurrent form at every step of a chunk, max(b_t + m_prev, max_{s <= t} (b_t - b_s + i~_s)), as
    b_t + max(m_prev, running max of i~_s - b_s): a scan over the L steps instead of a row max over the (L, L)
    log-decay matrix (which the compiler also kept in a second layout for that max). -inf padding stays out."""
    return b + _row_offset(i_g - b, m_prev)


LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def _outer_weights(u, r, mask):
    """exp(u_s - r_t) (L, L) where mask, else 0: one subtraction and one exp2 per element (log2 units)."""
    return tl.exp2(tl.where(mask, (u * LOG2E)[None, :] - (r * LOG2E)[:, None], float("-inf")))


@triton.jit
def _decay_weights(b, i_g, m_row, mask):
    """The decay weights exp(b_t - b_s + i~_s - m_t) (L, L) where mask, else 0, from a chunk's gates and its stored
    stabilizer m_t, as exp((i~_s - b_s) - (m_t - b_t)): no (L, L) log-decay matrix."""
    return _outer_weights(i_g - b, m_row - b, mask)


@triton.jit
def _row_weights(b, i_g, m_prev, log_scale, causal):
    """The forward's weights of a chunk: m_t (L,) as `_row_m`, the causal matrix scale * exp(b_t - b_s + i~_s - m_t)
    (L, L) (0 above the diagonal and for padded keys) and the entering state's exp(b_t + m_prev - m_t) (L,).

    With r_t = m_t - b_t = max(m_prev, running max of i~_s - b_s), the exponent is (i~_s - b_s) - (r_t - log_scale):
    a column vector minus a row vector, in log2 units, so each of the L * L weights is one subtraction and one exp2
    (the scale, log_scale = log(qk_scale), rides in the row vector)."""
    u = i_g - b  # (L,)
    r = _row_offset(u, m_prev)  # (L,) m_t - b_t
    return b + r, _outer_weights(u, r - log_scale, causal), tl.exp(m_prev - r)


@triton.jit
def _entering_state(c_base, n_base, m_addr, offs_k, offs_v, sc_k, sc_v, sn_k, mask_k, mask_kv,
                    HAS: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr):  # fmt: skip
    """The stabilized state (C (BK, BV), n (BK,), m) read through its strides in fp32, or zeros without one (HAS)."""
    if HAS:
        C = _tile(c_base, offs_k, offs_v, sc_k, sc_v, mask_kv).to(tl.float32)  # (BK, BV)
        n = tl.load(n_base + offs_k * sn_k, mask=mask_k, other=0.0).to(tl.float32)  # (BK,)
        m = tl.load(m_addr).to(tl.float32)
    else:
        C = tl.zeros((BK, BV), dtype=tl.float32)
        n = tl.zeros((BK,), dtype=tl.float32)
        m = tl.zeros((), dtype=tl.float32)
    return C, n, m


@triton.jit
def _chunk_entering_state(cs_ptr, ns_ptr, row_c, c0_base, n0_base, offs_k, offs_v, sc_k, sc_v, sn_k, mask_k, mask_kv,
                          DQK, DHV, STORED: tl.constexpr):  # fmt: skip
    """The state (C (BK, BV), n (BK,)) entering a chunk in fp32: the one the forward stored at row `row_c` of the
    contiguous (BNH * (NC + 1), DQK[, DHV]) buffers (STORED), else the initial state read through its strides."""
    if STORED:
        C = _tile(cs_ptr + row_c * DQK * DHV, offs_k, offs_v, DHV, 1, mask_kv)  # (BK, BV)
        n = tl.load(ns_ptr + row_c * DQK + offs_k, mask=mask_k, other=0.0)  # (BK,)
    else:
        C = _tile(c0_base, offs_k, offs_v, sc_k, sc_v, mask_kv).to(tl.float32)  # (BK, BV)
        n = tl.load(n0_base + offs_k * sn_k, mask=mask_k, other=0.0).to(tl.float32)  # (BK,)
    return C, n


@triton.jit
def _chunk_end_m(m_prev, i_g, b, g):
    """m at the chunk's last step from m before it: max(g + m_prev, max_s (g - b_s + i~_s))."""
    return tl.maximum(g + m_prev, tl.max(g - b + i_g, axis=0))


@triton.jit
def _carry(C, n, m_prev, m_new, k, v, i_g, b, g, LOWP: tl.constexpr):
    """The state (C, n) after one chunk, stabilized by m_new: key s enters with log weight g - b_s + i~_s."""
    a = g - b + i_g  # (L,)
    decay = tl.exp(g + m_prev - m_new)
    k_w = k.to(tl.float32) * tl.exp(a - m_new)[:, None]  # (L, BK)
    C = decay * C + _dot(tl.trans(k_w), v, LOWP)  # (BK, BV)
    n = decay * n + tl.sum(k_w, axis=0)  # (BK,)
    return C, n
