"""Chunk-parallel forward of the chunkwise mLSTM in Triton (opt-in): every chunk's output at once from its state.

The plain forward (`triton_chunkwise_fwd.py`) walks every chunk of a sequence in one program, its (DQK, BV) state in
registers. This forward splits the work in two launches:

1. the state entering every chunk: the segment-boundary kernel (`triton_chunkwise_bounds.py`) with one segment per
   chunk, which carries only the state, in (64, BV) blocks of (DQK, DHV), and stores it per chunk (fp32; C in the
   input dtype for bf16/fp16 inputs, whose output dots round it to that dtype anyway: `NO_GRAD_STATES_IN_INPUT_DTYPE`);
2. the output of every chunk at once, one program per (DHV block, chunk, batch * head), from its entering state:
   h = ((q^ k^T * W) v + w0 q^ C) / (max(|z|, e^{-m}) + eps), with the DQK columns in blocks of 64 inside the
   program (any DQK up to 512 in one launch, small tiles).

Same function, stabilizer and rounding points as the plain forward; the cost is the stored states (B * NH * NC (DQK,
DHV) blocks, written once and read once; fp32, or the input dtype for bf16/fp16 inputs). It runs calls that need no
gradient, and the output kernel also serves the segmented layout (`triton_chunkwise_segments.py`) when its segments
are at most MAX_SEGMENT steps long: it then writes the fp32 h, z and m the segmented backward
(`triton_chunkwise_parallel_bwd.py`) reads, in place of the chunk-walking forward kernel (column blocks included:
one launch over all DQK columns). By default (`auto_parallel`) both run on CUDA for heads wider than 64 over
sequences of 1024 steps or more, where they were faster; elsewhere the chunk-walking kernels.
`benchmarks/mlstm_segments.py --parallel-forward` times both against the plain layout.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._fast_launch import fast
from .._ints import cdiv, next_power_of_2
from . import triton_chunkwise_segments as segments
from .triton_chunkwise_common import _chunk_end_m, _chunk_gates, _dot, _row_weights, _tile
from .triton_chunkwise_modes import _fwd_lowp, _low_operands, _on_device, _qk_lowp
from .triton_chunkwise_segments import _k_block, bounds_forward

# use the chunk-parallel forward for calls without gradients over more than one chunk, and the chunk-parallel
# kernels in the segmented layout's short segments: True always, False never, None (default) where `auto_parallel`
# picks them
PARALLEL_FORWARD: bool | None = None

# where the chunk-parallel kernels run by default (CUDA, `SEGMENT_CHUNKS_OVERRIDE` unset): heads wider than
# AUTO_MIN_DQK and sequences of at least AUTO_MIN_S steps, calls with gradients in segments of MAX_SEGMENT steps.
# H200, bf16, fw+bw against the chunk-walking layouts (benchmarks/results/mlstm_segments.md, abe4fca): 128-wide heads
# (16, 4, 2048, 128) 1.56 against 2.05 ms, (32, 8, 1024, 128) 2.99 against 4.01, (2, 4, 4096, 128) 1.11 against
# 1.35; 256 and 512 wide (8, 16, 4096, 256) 19.1 against 27.2, (8, 8, 8192, 512) 67.1 against 115.8; without
# gradients 0.30-0.80x of the plain forward there. At 64-wide heads they lost or tied ((64, 4, 512, 64) 1.19 against
# 0.55 ms, (16, 4, 2048, 64) 1.27 against 1.06, (1, 4, 8192, 64) 1.51 against 1.52).
AUTO_MIN_DQK = 65
AUTO_MIN_S = 1024

# longest segment the chunk-parallel kernels take as one chunk: their (L, L) tiles
MAX_SEGMENT = 64

# num_warps of the output kernel (an A/B knob of benchmarks/mlstm_segments.py --parallel-variants)
OUT_NUM_WARPS = 4
# DHV columns per program of the output kernel (a power of two >= 16; None: at most 64, as the boundary kernels'):
# OUT_VALUE_BLOCK where its dots take bf16/fp16 operands (bf16/fp16 inputs, except heads above 128 with gradients),
# FP32_DOTS_VALUE_BLOCK where they run in TF32 or fp32 (fp32 inputs; heads above 128 with gradients, whose output
# kernel keeps TF32). Each program forms its chunk's q k^T once, so wider blocks form it fewer times. H100, bf16, at
# 128 against 64 columns with bf16 dots (one stage, `LOWP_STATE_STAGES`; h bit-identical on every call and as close
# to fp64, 0.24 % of its RMS at (16, 4, 2048, 128)): without gradients (16, 4, 2048, 128) 0.208 against 0.254 ms,
# (8, 16, 4096, 256) 2.232 against 2.805, (8, 8, 8192, 512) 7.95 against 9.87 (8 warps at 128: 0.255, 2.81, 9.83);
# fw+bw at (16, 4, 2048, 128) 0.999 against 1.050. With TF32 dots (fw+bw, default stages) 64 columns ran faster:
# (8, 16, 4096, 256) 11.45 against 11.64 ms, (8, 8, 8192, 512) 36.18 against 37.77 (two H100s, same session).
OUT_VALUE_BLOCK: int | None = 128
FP32_DOTS_VALUE_BLOCK: int | None = None
# software-pipelining stages of the output kernel when its dots take bf16/fp16 state tiles as stored (None:
# Triton's default, 3). Triton 3.6 on sm_90 pipelines those tiles into the dot, and the pipelined kernel gave
# wrong, run-to-run different h: H100, bf16 forward without gradients, relative RMS error against fp64 0.6-0.9 % at
# the default 3 stages, 4-5 % at 2 stages or 8 warps, at (16, 4, 2048, 128) and (8, 16, 1024, 256), and 3-50 % at
# 128 columns; with gradients at (4, 4, 2048, 128) h, dq, dk, di, df 16-19 % off. At 1 stage, or with fp32 states,
# 0.24 % and bit-identical repeats, with bit-identical gradients too. Widening the loaded bf16 tiles to fp32 before
# the dot (at the default stages) did not help: h still differed between calls, 0.53 % off fp64. Output kernels
# with TF32 dots (heads above 128 with gradients: the bf16 tiles are converted in registers) repeat bit for bit at
# the default stages, as close to fp64 as at 1 stage ((2, 2, 2048, 256) and (2, 2, 2048, 512): h, dq, dk, dv, di,
# df 1.6-2.8e-3 either way), and keep them: fw+bw (8, 16, 4096, 256) 11.64 against 11.89 ms, (8, 8, 8192, 512)
# 37.77 against 38.63. Cost of 1 stage with bf16 dots at 64 columns, H100: fw 0.236 -> 0.257 ms, fw+bw 1.034 ->
# 1.056 at (16, 4, 2048, 128). None keeps the default (A/B timings only)
LOWP_STATE_STAGES: int | None = 1

# steps per chunk of the boundary kernels' carry ahead of the chunk-parallel kernels, where it divides the segment
# (else the layout's chunks: 32 steps for heads above 64 with gradients). H200, bf16, fw+bw with carries of 64
# against 32 (4 warps; 8 were slower): (16, 4, 2048, 128) 1.46 against 1.56 ms, (8, 16, 4096, 256) 17.3 against
# 19.1, (8, 8, 8192, 512) 59.6 against 66.6; the boundary kernels 0.38 / 0.48, 6.0 / 7.8 and 23.9 / 31.1 ms.
CARRY = 64

# a forward without gradients of bf16/fp16 inputs stores the entering states C in the input dtype instead of fp32:
# the output kernel multiplies them with q in that dtype anyway (dots of the input dtype), so the dots see the same
# operands (under the interpreter h, z, m and the last states come out bit-identical; a GPU's dot may sum them in
# another order), and the states' bytes, written once and read once, halve. H100, bf16, forward without gradients
# at 64 DHV columns per program, input-dtype against fp32 states: (16, 4, 2048, 128) 0.232 against 0.272 ms, peak
# 0.10 against 0.17 GB; (8, 16, 4096, 256) 2.651 against 3.149 ms, 1.35 against 2.43 GB; (8, 8, 8192, 512) 9.525
# against 11.391 ms, 4.85 against 9.15 GB. False keeps fp32 states (A/B timings). Calls with gradients: below
NO_GRAD_STATES_IN_INPUT_DTYPE = True
# a forward without gradients stores the entering state of every second chunk only (the boundary kernel carrying
# chunks of PAIR_CARRY steps where they divide the pair): the odd chunk's program reads the even chunk's keys and
# values as well (which the even chunk's program reads at about the same time) and takes them in the way the stored
# state enters, as an (L, L) block of scores: q^T C_odd = decay q^T C_pair + sum_s w_s (q . k_s) v_s, never forming
# the carried state. Half the states' bytes, written once and read twice; two more (L, DQK) x (DQK, L) and
# (L, L) x (L, BV) dots for half the programs. H100, bf16, forward without gradients, paired against one state per
# chunk: (16, 4, 2048, 128) 0.157 against 0.186-0.189 ms (boundary kernel 65 against 97 us, output kernel 89 both
# ways), (32, 8, 1024, 128) 0.296 against 0.348, (8, 8, 2048, 128) 0.157 against 0.185; a 64-step carry 0.180,
# 0.333, 0.179. False: one state per chunk (A/B timings)
PAIRED_STATES = True
PAIR_CARRY = 128
# num_warps of the output kernel with paired states (offline sm_90, (16, 4, 2048, 128) bf16, 128 value columns:
# 4 warps 255 registers, 8 warps 184, no stack either way). H100, same calls: 8 warps 0.209-0.212, 0.399-0.403 and
# 0.209 ms (output kernel 142 us at the first shape)
PAIR_NUM_WARPS = 4
# widest head (DQK and DHV) that pairs, for bf16/fp16 inputs only. Offline sm_90: at 512-wide fp32 heads the
# boundary kernel's 128-step carry needs 256 KB of shared memory (more than sm_90 has); with fp32 inputs (exact fp32
# dots, fp32 states) the first paired output kernel, which carried the state across the even chunk, spilled 3.9 KB
# per thread at 128-wide heads (the score-block kernel has not been compiled or timed for fp32)
PAIR_MAX_HEAD = 128
# DHV columns per program of the boundary kernel with paired states (a power of two >= 16, capped at the head's
# padded width; None: at most 64, as unpaired). Its programs carry the state across twice the steps between stores,
# so fewer, wider programs walk them with less overhead. H100, bf16, forward without gradients, 64 DQK x 128 DHV
# against 64 x 64 columns per program (4 warps, h bit-identical): (16, 4, 2048, 128) 0.1503 / 0.1485 against 0.1605 /
# 0.1589 ms, (32, 8, 1024, 128) 0.2855 / 0.2845 against 0.2998 / 0.3024 (128 x 64: 0.204 and 0.382; 64 x 128 at 8
# warps 0.160 and 0.303)
PAIR_BOUNDS_VALUE_BLOCK: int | None = 128
# DHV columns per program of the forward boundary kernel of a bf16/fp16 call with gradients through these kernels
# (a power of two >= 16, capped at the head's padded width; heads up to PAIR_MAX_HEAD; None: the call's DHV block, at
# most 64, as the backward boundary kernel's). H100, bf16 fw+bw at (16, 4, 2048, 128), both boundary kernels in
# 64 x 128 against 64 x 64 blocks (benchmarks/mlstm_segments.py --parallel-variants --gpu-ms): forward boundary
# kernel 74.6-74.9 against 92.5-95.4 us per call, the backward one 208-209 against 154 (so it keeps 64); this knob
# alone (07929db): 74.8 against 92.5 us, the call's kernels 911 against 928 us
GRAD_BOUNDS_VALUE_BLOCK: int | None = 128
# a call with gradients of bf16/fp16 inputs through these kernels and without initial states stores the entering C
# in the input dtype as well: the output kernel's dots round it to that dtype (heads up to 128,
# `triton_chunkwise.PARALLEL_GRAD_FWD_LOWP`; wider heads' TF32 dots keep 3 bits more), and so does the backward's dq
# dot (`STATE_OUT_DOTS`). Its one fp32 use is the gate gradients' sum <dC, C_in>: from zero states bf16 rounding
# left every gradient where fp32 states had it (interpreter, 8 seeds each of (1, 2, 37, 40, 24) and (1, 2, 63, 24,
# 40), worst df 0.0083 against 0.0086 of its RMS at i~ ~ -10), while a given initial state, carried decayed in every
# stored state, took df to 0.027 there: calls with one keep fp32. The states are written once and read twice
# (outputs, backward). False keeps fp32 (A/B timings)
GRAD_STATES_IN_INPUT_DTYPE = True


@triton.jit
def _mlstm_chunk_out_kernel_tl(
    q_ptr, k_ptr, v_ptr, i_ptr, f_ptr,  # q, k (B, NH, S, DQK), v (B, NH, S, DHV), i, f (B, NH, S); strides s*_
    cs_ptr,  # (BNH * NS, DQK, DHV) state entering each chunk (PAIR: each pair), contiguous; fp32 or the dot dtype
    ns_ptr,  # (BNH * NS, DQK) fp32
    ms_ptr,  # (BNH * NS,) fp32
    h_ptr,  # out (BNH, S, DHV) contiguous, input dtype (or fp32)
    h32_ptr,  # out (BNH, S, DHV) contiguous fp32 copy of h for the backward; written only if STORE_H32
    z_ptr,  # out (BNH, S) fp32: n~_t . q^_t before abs/max
    m_ptr,  # out (BNH, S) fp32: stabilizer m_t
    sq_b, sq_h, sq_s, sq_d,
    sk_b, sk_h, sk_s, sk_d,
    sv_b, sv_h, sv_s, sv_d,
    si_b, si_h, si_s,
    sf_b, sf_h, sf_s,
    NH,
    S,
    DQK,
    DHV,
    NS,
    qk_scale,
    eps,
    L: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    LOWP: tl.constexpr,
    QK_LOWP: tl.constexpr,
    STORE_H32: tl.constexpr,
    PAIR: tl.constexpr = False,
):  # fmt: skip
    pid_v = tl.program_id(0)
    c = tl.program_id(1)
    pid_bh = tl.program_id(2).to(tl.int64)
    bb, hh = pid_bh // NH, pid_bh % NH
    if PAIR:  # one stored state per pair of chunks (NS of them per head), entering the even chunk
        row = pid_bh * NS + c // 2
    else:
        row = pid_bh * NS + c  # this chunk's entering state
    offs_l = tl.arange(0, L)
    offs_v = pid_v * BV + tl.arange(0, BV)
    mask_v = offs_v < DHV
    t = c * L + offs_l  # (L,)
    mask_t = t < S
    causal = offs_l[:, None] >= offs_l[None, :]  # (L, L)

    q_base = q_ptr + bb * sq_b + hh * sq_h
    k_base = k_ptr + bb * sk_b + hh * sk_h
    v_base = v_ptr + bb * sv_b + hh * sv_h
    i_base = i_ptr + bb * si_b + hh * si_h
    f_base = f_ptr + bb * sf_b + hh * sf_h
    i_g, f_g, log_f, b, g = _chunk_gates(i_base, f_base, si_s, sf_s, t, mask_t)
    m_prev = tl.load(ms_ptr + row)
    if PAIR:  # an odd chunk also reads the even chunk before it: its keys enter like the stored state's
        odd = c % 2 == 1
        tp = t - L  # (L,) the steps of the chunk before
        mask_p = (tp >= 0) & odd  # (L,)
        i_p, _, _, b_p, g_p = _chunk_gates(i_base, f_base, si_s, sf_s, tp, mask_p)  # padding: i~ -inf, g 0
        m_stored = m_prev
        m_prev = _chunk_end_m(m_stored, i_p, b_p, g_p)  # m after the chunk before (m_stored where even)
        decay = tl.exp(g_p + m_stored - m_prev)  # the stored state's weight in the state entering this chunk
        w_p = tl.exp(g_p - b_p + i_p - m_prev)  # (L,) the chunk before's keys' weights there, 0 on padding
    # m_t of the recurrent form (L,), qk_scale times the decay weights (L, L), the entering state's weight (L,)
    m_row, w, w0 = _row_weights(b, i_g, m_prev, tl.log(qk_scale), causal)

    scores = tl.zeros((L, L), dtype=tl.float32)
    scores_p = tl.zeros((L, L), dtype=tl.float32)  # PAIR, odd chunks: q^T k of the chunk before's keys, unscaled
    qc = tl.zeros((L, BV), dtype=tl.float32)  # q^T C of the entering state, unscaled
    qn = tl.zeros((L,), dtype=tl.float32)  # q . n of the entering state, unscaled
    for kb in range(0, tl.cdiv(DQK, BK)):
        offs_k = kb * BK + tl.arange(0, BK)
        mask_k = offs_k < DQK
        mask_tk = mask_t[:, None] & mask_k[None, :]
        q = _tile(q_base, t, offs_k, sq_s, sq_d, mask_tk)  # (L, BK)
        k = _tile(k_base, t, offs_k, sk_s, sk_d, mask_tk)  # (L, BK)
        scores += _dot(q, tl.trans(k), QK_LOWP)
        C = _tile(cs_ptr + row * DQK * DHV, offs_k, offs_v, DHV, 1, mask_k[:, None] & mask_v[None, :])  # (BK, BV)
        n = tl.load(ns_ptr + row * DQK + offs_k, mask=mask_k, other=0.0)  # (BK,)
        qc += _dot(q, C, LOWP)
        qn += tl.sum(q.to(tl.float32) * n[None, :], axis=1)
        if PAIR:
            if odd:
                k_p = _tile(k_base, tp, offs_k, sk_s, sk_d, mask_p[:, None] & mask_k[None, :])  # (L, BK)
                scores_p += _dot(q, tl.trans(k_p), QK_LOWP)
    if PAIR:  # q^T of the state entering an odd chunk: decay q^T C + sum_s w_p[s] (q . k_s) v_s, and the same for n
        if odd:
            v_p = _tile(v_base, tp, offs_v, sv_s, sv_d, mask_p[:, None] & mask_v[None, :])  # (L, BV)
            scores_p = scores_p * w_p[None, :]  # (L, L)
            qc = decay * qc + _dot(scores_p, v_p, LOWP)
            qn = decay * qn + tl.sum(scores_p, axis=1)

    v = _tile(v_base, t, offs_v, sv_s, sv_d, mask_t[:, None] & mask_v[None, :])  # (L, BV)
    scores = scores * w  # (L, L)
    num = _dot(scores, v, LOWP) + (w0 * qk_scale)[:, None] * qc  # (L, BV)
    z = tl.sum(scores, axis=1) + w0 * qk_scale * qn  # (L,)
    den = tl.maximum(tl.abs(z), tl.exp(-m_row)) + eps  # (L,)
    h = num * (1.0 / den)[:, None]  # (L, BV)
    h_off = (pid_bh * S + t)[:, None] * DHV + offs_v[None, :]  # (L, BV)
    mask_tv = mask_t[:, None] & mask_v[None, :]
    tl.store(h_ptr + h_off, h.to(h_ptr.dtype.element_ty), mask=mask_tv)
    if STORE_H32:
        tl.store(h32_ptr + h_off, h, mask=mask_tv)
    tl.store(z_ptr + pid_bh * S + t, z, mask=mask_t & (pid_v == 0))
    tl.store(m_ptr + pid_bh * S + t, m_row, mask=mask_t & (pid_v == 0))


def grad_state_dtype(dtype: torch.dtype, has_init: bool) -> torch.dtype:
    """dtype of the entering C a call with gradients stores for these kernels (`GRAD_STATES_IN_INPUT_DTYPE`)."""
    half = dtype in (torch.bfloat16, torch.float16)
    return dtype if half and not has_init and GRAD_STATES_IN_INPUT_DTYPE else torch.float32


def grad_bounds_block(DQK: int, DHV: int, BV: int, dtype: torch.dtype) -> int:
    """DHV block of the forward boundary kernel of a call with gradients through these kernels, whose own is BV
    (`GRAD_BOUNDS_VALUE_BLOCK`)."""
    half = dtype in (torch.bfloat16, torch.float16)
    if GRAD_BOUNDS_VALUE_BLOCK is None or not half or max(DQK, DHV) > PAIR_MAX_HEAD:
        return BV
    return min(GRAD_BOUNDS_VALUE_BLOCK, max(next_power_of_2(DHV), 16))


def auto_parallel(S: int, DQK: int, device: torch.device) -> bool:
    """Whether the default rule (`PARALLEL_FORWARD` None) runs a call through the chunk-parallel kernels: on CUDA,
    DQK >= AUTO_MIN_DQK and S >= AUTO_MIN_S, unless `SEGMENT_CHUNKS_OVERRIDE` forces a layout."""
    return (
        PARALLEL_FORWARD is None
        and S >= AUTO_MIN_S
        and DQK >= AUTO_MIN_DQK
        and device.type == "cuda"
        and segments.SEGMENT_CHUNKS_OVERRIDE is None
    )


def parallel_plan(S: int, L: int) -> tuple[int, int]:
    """(G, CPS) of the default chunk-parallel layout with gradients: segments of MAX_SEGMENT steps (CPS chunks of L)."""
    CPS = max(MAX_SEGMENT // L, 1)
    return cdiv(cdiv(S, L), CPS), CPS


def layout(S: int, L: int, DQK: int, programs: int, device: torch.device, grad: bool) -> tuple[int, int, bool]:
    """(G, CPS, chunk-parallel) of a call in chunks of L steps: the default rule's 64-step segments through the
    chunk-parallel kernels for calls with gradients where `auto_parallel` picks them, else `segment_plan`'s layout
    (`programs`: DHV blocks x batch * heads of the plain launch), through the chunk-parallel kernels only where
    `parallel_outputs` takes it."""
    auto = grad and L <= MAX_SEGMENT and auto_parallel(S, DQK, device)
    G, CPS = parallel_plan(S, L) if auto else segments.segment_plan(S, L, programs, device)
    return G, CPS, parallel_outputs(G, CPS, L, auto)


def parallel_outputs(G: int, CPS: int, L: int, auto: bool = False) -> bool:
    """Whether a segmented forward of G segments of CPS chunks of L steps forms its outputs with the output kernel
    (every segment at once from its entering state, as one chunk of CPS * L steps) instead of the chunk-walking
    forward kernel: for segments of at most `MAX_SEGMENT` steps, while `PARALLEL_FORWARD` asks for it or the call
    was planned by the default rule (`auto`). Same buffers for the backward (h32, z, m, the segments' states), which
    then runs `triton_chunkwise_parallel_bwd.py`."""
    wanted = auto or bool(PARALLEL_FORWARD)
    return wanted and G > 1 and CPS * L <= MAX_SEGMENT and CPS & (CPS - 1) == 0  # a power of two


def use_parallel_forward(S: int, chunk_size: int, DQK: int, device: torch.device) -> bool:
    """Whether a call without gradients (the caller checks that last: it costs host time) takes the chunk-parallel
    forward: over more than one chunk, while `PARALLEL_FORWARD` asks for it or the default rule (`auto_parallel`)
    picks it."""
    wanted = bool(PARALLEL_FORWARD) or auto_parallel(S, DQK, device)
    return wanted and S > chunk_length(S, chunk_size)


def chunk_length(S: int, chunk_size: int) -> int:
    """Chunk length of the chunk-parallel forward: chunk_size rounded up to a power of two in [16, 128], no longer
    than the sequence needs (the (L, L) scores and the (L, BV) sums are its largest tiles)."""
    return min(max(next_power_of_2(chunk_size), 16), 128, max(next_power_of_2(S), 16))


def chunk_outputs(q, k, v, i, f, states: tuple, NC: int, L: int, eps: float, lowp: int, qk_lowp: int,
                  h, h32, z, m, pair: bool = False) -> None:  # fmt: skip
    """Launch the output kernel over every chunk: h (and the fp32 copy h32 unless None), z and m (BNH, S) from the
    chunks' entering states (cs (B, NH * NC, DQK, DHV), ns, ms as `bounds_forward` returns them with one segment
    per chunk of L steps; with `pair`, one per pair of chunks: NH * ceil(NC / 2)). lowp / qk_lowp: dot modes, already
    mapped for the interpreter; lowp picks the DHV columns per program (`OUT_VALUE_BLOCK` or
    `FP32_DOTS_VALUE_BLOCK`) and the pipeline stages (`LOWP_STATE_STAGES`)."""
    B, NH, S, DQK = q.shape
    DHV = v.shape[-1]
    low_dots = _low_operands(lowp)  # bf16 / fp16 operands; else TF32 / fp32
    value_block = OUT_VALUE_BLOCK if low_dots else FP32_DOTS_VALUE_BLOCK
    BV = _k_block(DHV)[0] if value_block is None else min(value_block, max(next_power_of_2(DHV), 16))
    BK = _k_block(DQK)[0]  # blocks of at most 64 columns, as the boundary kernels'
    low_states = states[0].dtype != torch.float32  # bf16/fp16 states: read at LOWP_STATE_STAGES by bf16/fp16 dots
    capped = low_states and low_dots and LOWP_STATE_STAGES is not None
    stages = {"num_stages": LOWP_STATE_STAGES} if capped else {}
    fast(_mlstm_chunk_out_kernel_tl)[(cdiv(DHV, BV), NC, B * NH)](
        q, k, v, i, f, *states, h, h if h32 is None else h32, z, m,
        *q.stride(), *k.stride(), *v.stride(), *i.stride(), *f.stride(),
        NH, S, DQK, DHV, cdiv(NC, 2) if pair else NC, DQK**-0.5, eps,
        L=L, BK=BK, BV=BV, LOWP=lowp, QK_LOWP=qk_lowp, STORE_H32=h32 is not None, PAIR=pair,
        num_warps=PAIR_NUM_WARPS if pair else OUT_NUM_WARPS, **stages,
    )  # fmt: skip


def parallel_forward(q, k, v, i, f, C0, n0, m0, eps: float, chunk_size: int, need_last: bool) -> tuple:
    """h (B, NH, S, DHV) in q's dtype, and with need_last the last states (C (B, NH, DQK, DHV), n (B, NH, DQK),
    m (B, NH), fp32; else None each). The dots run in the plain forward's modes for a call without gradients."""
    from .triton_chunkwise import _K_LAUNCH, _launch_config  # imports this module

    B, NH, S, DQK = q.shape
    DHV = v.shape[-1]
    _launch_config(S, min(DQK, _K_LAUNCH), DHV, chunk_size, q.dtype)  # the plain path's argument checks
    lowp = _on_device(_fwd_lowp(q.dtype, False))
    L = chunk_length(S, chunk_size)
    NC = cdiv(S, L)
    BV = _k_block(DHV)[0]
    # the states at every L-step boundary, carried in chunks of CARRY steps where they divide L (at 64 the boundary
    # kernel keeps 1376 B of stack per thread for sm_90, and still ran faster than at 32; see CARRY), else of L
    half = q.dtype in (torch.bfloat16, torch.float16)  # its dots run in that dtype
    state_dtype = q.dtype if half and NO_GRAD_STATES_IN_INPUT_DTYPE else torch.float32
    # one stored state per two chunks, carried in chunks of PAIR_CARRY steps: bf16/fp16 heads up to PAIR_MAX_HEAD
    pair = PAIRED_STATES and NC > 1 and half and max(DQK, DHV) <= PAIR_MAX_HEAD
    G, CPS = (cdiv(NC, 2), 2) if pair else (NC, 1)
    carry = PAIR_CARRY if pair else CARRY
    if pair and PAIR_BOUNDS_VALUE_BLOCK is not None:
        BV = min(PAIR_BOUNDS_VALUE_BLOCK, max(next_power_of_2(DHV), 16))
    states, last = bounds_forward(k, v, i, f, C0, n0, m0, G, CPS, L, BV, lowp, need_last, carry, state_dtype)
    f32 = {"dtype": torch.float32, "device": q.device}
    h = torch.empty(B, NH, S, DHV, dtype=q.dtype, device=q.device)  # (B, NH, S, DHV)
    z, m = torch.empty(B, NH, S, **f32), torch.empty(B, NH, S, **f32)  # (B, NH, S) each
    chunk_outputs(q, k, v, i, f, states, NC, L, eps, lowp, _on_device(_qk_lowp(q.dtype, lowp)), h, None, z, m, pair)
    C_last, n_last, m_last = last if need_last else (None, None, None)
    return h, C_last, n_last, m_last
