"""Triton forward of the chunkwise mLSTM for one chunk from zero states, with the chunk's steps in blocks of 32.

The training calls of patched forecasters are one chunk (S <= 64) from zero states whose last states are not
returned. The general forward (`triton_chunkwise_fwd.py`) forms the chunk's (L, L) fp32 tiles at once (log decay,
weights, scores): at L = 64 and 4 warps ptxas gives it 238-249 registers (by input layout), so two programs share
an SM and the loads of one are hidden only by the other. This kernel cuts the steps into blocks of R = 32 as the
one-chunk backward does (`triton_one_chunk_bwd.py`) and forms only the (R, R) pairs on or below the diagonal:

- row block 1 (steps 32..63) with key blocks 0 and 1,
- row block 0 with key block 0 (the diagonal).

Programs may be persistent (`PERSISTENT`): a grid of P programs, program p taking the batch * heads p, p + P, ...
in a loop whose loads Triton may software-pipeline (`STAGES`), so the next head's tiles arrive while this one
computes.

Same function, dot modes and rounding points as the general kernel's one-chunk path: per step
m_t = max(b_t, max_{s <= t} (b_t - b_s + i~_s)) (b the log-forget cumsum from the chunk start; a running max,
`_row_m`), weights exp(b_t - b_s + i~_s - m_t), z_t = sum_s of the weighted scores,
h_t = num_t / (max(|z_t|, e^{-m_t}) + eps).
"""

import functools

import torch
import triton
import triton.language as tl

from .._fast_launch import FastLauncher
from .triton_chunkwise_common import _dot, _row_m, _tile
from .triton_one_chunk_bwd import ROWS, _block_gates, _head_bases, _program_heads

# one-chunk forwards from zero states without last states, with one DHV block, heads of at least MIN_DQK (padded)
# and inputs of a dtype in DTYPES run this kernel while ENABLED (it matches the general forward in function:
# tests/kernels/test_mlstm_one_chunk_fwd.py). H200, bf16, CUDA-graph timings (`benchmarks/mlstm_one_chunk.py`,
# mlstm_one_chunk.md), forward alone at (1024, 4, 64, 64): general 0.0945 ms, this kernel 4 per SM with 2 stages and
# 128 registers 0.0802; with the one-chunk backward at 2 per SM, 2 stages, no cap, the compiled graphed bf16 step at
# (1024, 64, 128) took 5.54 against 6.05 ms (mmmm) and 5.45 against 5.76 (msmm). fp32 inputs keep the general
# forward (not timed with this launch). At (64, 4, 64, 64) the kernel is 1.8 us slower (0.0082 against 0.0064 ms).
ENABLED = True
MIN_DQK = 64
DTYPES: tuple[torch.dtype, ...] = (torch.bfloat16, torch.float16)
# persistent programs per SM on CUDA (None: one program per batch * head), software-pipelining stages of their
# loop, num_warps (None: the general forward's) and register cap (None: none) of the launch
PER_SM: int | None = 4
STAGES = 2
NUM_WARPS: int | None = None
MAXNREG: int | None = 128
# SMs a persistent grid assumes off CUDA (the interpreter): a few, so that the tests walk the loop
_SMS_OFF_CUDA = 2


@triton.jit
def _log_weights(b_r, b_j, i_j, DIAG: tl.constexpr):
    """(R, R) log decay b_t - b_s + i~_s of row block b_r and key block (b_j, i_j); -inf above the diagonal of a
    diagonal pair (DIAG)."""
    log_d = b_r[:, None] - b_j[None, :] + i_j[None, :]  # (R, R)
    if DIAG:
        offs = tl.arange(0, b_r.shape[0])
        log_d = tl.where(offs[:, None] >= offs[None, :], log_d, float("-inf"))
    return log_d


@triton.jit
def _store_rows(h_ptr, z_ptr, m_ptr, row0, t, mask_t, offs_v, mask_v, DHV, num, z, m_row, eps):
    """h = num / (max(|z|, e^{-m}) + eps), z and m of one block's steps t, into the contiguous (BNH, S, ...) outputs."""
    den = tl.maximum(tl.abs(z), tl.exp(-m_row)) + eps  # (R,)
    h = num * (1.0 / den)[:, None]  # (R, BV)
    off = (row0 + t[:, None]) * DHV + offs_v[None, :]  # (R, BV)
    tl.store(h_ptr + off, h.to(h_ptr.dtype.element_ty), mask=mask_t[:, None] & mask_v[None, :])
    tl.store(z_ptr + row0 + t, z, mask=mask_t)
    tl.store(m_ptr + row0 + t, m_row, mask=mask_t)


@triton.jit
def _mlstm_one_chunk_fwd_kernel_tl(
    q_ptr,  # (B, NH, S, DQK), strides sq_*
    k_ptr,  # (B, NH, S, DQK), strides sk_*
    v_ptr,  # (B, NH, S, DHV), strides sv_*
    i_ptr,  # (B, NH, S), strides si_*
    f_ptr,  # (B, NH, S), strides sf_*
    h_ptr,  # out (BNH, S, DHV) contiguous, input dtype
    z_ptr,  # out (BNH, S) fp32: n~_t . q^_t before abs/max
    m_ptr,  # out (BNH, S) fp32: stabilizer m_t
    sq_b, sq_h, sq_s, sq_d,
    sk_b, sk_h, sk_s, sk_d,
    sv_b, sv_h, sv_s, sv_d,
    si_b, si_h, si_s,
    sf_b, sf_h, sf_s,
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
    PERSISTENT: tl.constexpr,
    STAGES: tl.constexpr,
):  # fmt: skip
    offs_r = tl.arange(0, R)
    offs_k = tl.arange(0, BK)
    offs_v = tl.arange(0, BV)
    mask_k = offs_k < DQK
    mask_v = offs_v < DHV
    t0 = offs_r
    mask_0 = t0 < S
    mask_0k = mask_0[:, None] & mask_k[None, :]
    mask_0v = mask_0[:, None] & mask_v[None, :]
    t1 = R + offs_r
    mask_1 = t1 < S
    mask_1k = mask_1[:, None] & mask_k[None, :]
    mask_1v = mask_1[:, None] & mask_v[None, :]
    first, step = _program_heads(BNH, PERSISTENT)
    for bh in tl.range(first, BNH, step, num_stages=STAGES):
        pid, q_base, k_base, v_base, i_base, f_base = _head_bases(
            bh, NH, q_ptr, k_ptr, v_ptr, i_ptr, f_ptr, sq_b, sq_h, sk_b, sk_h, sv_b, sv_h, si_b, si_h, sf_b, sf_h
        )  # fmt: skip
        row0 = pid * S  # step 0 in the contiguous (BNH, S, ...) outputs

        # block 0: rows 0..R-1 with key block 0
        q_0 = _tile(q_base, t0, offs_k, sq_s, sq_d, mask_0k)  # (R, BK)
        k_0 = _tile(k_base, t0, offs_k, sk_s, sk_d, mask_0k)  # (R, BK)
        v_0 = _tile(v_base, t0, offs_v, sv_s, sv_d, mask_0v)  # (R, BV)
        i_0, f_0, log_f0, b_0 = _block_gates(i_base, f_base, si_s, sf_s, t0, mask_0, 0.0)  # (R,) each
        log_00 = _log_weights(b_0, b_0, i_0, True)  # (R, R)
        m_0 = _row_m(b_0, i_0, 0.0)  # (R,)
        s_00 = _dot(q_0, tl.trans(k_0), QK_LOWP) * qk_scale * tl.exp(log_00 - m_0[:, None])  # (R, R)
        _store_rows(h_ptr, z_ptr, m_ptr, row0, t0, mask_0, offs_v, mask_v, DHV, _dot(s_00, v_0, LOWP),
                    tl.sum(s_00, axis=1), m_0, eps)  # fmt: skip

        if TWO:  # block 1: rows R..2R-1 with key blocks 0 and 1
            q_1 = _tile(q_base, t1, offs_k, sq_s, sq_d, mask_1k)  # (R, BK)
            k_1 = _tile(k_base, t1, offs_k, sk_s, sk_d, mask_1k)  # (R, BK)
            v_1 = _tile(v_base, t1, offs_v, sv_s, sv_d, mask_1v)  # (R, BV)
            i_1, f_1, log_f1, b_1 = _block_gates(i_base, f_base, si_s, sf_s, t1, mask_1, tl.sum(log_f0, axis=0))
            log_10 = _log_weights(b_1, b_0, i_0, False)  # (R, R)
            log_11 = _log_weights(b_1, b_1, i_1, True)  # (R, R)
            m_1 = _row_m(b_1, i_1, tl.maximum(tl.max(i_0 - b_0, axis=0), 0.0))  # (R,)
            s_10 = _dot(q_1, tl.trans(k_0), QK_LOWP) * qk_scale * tl.exp(log_10 - m_1[:, None])  # (R, R)
            s_11 = _dot(q_1, tl.trans(k_1), QK_LOWP) * qk_scale * tl.exp(log_11 - m_1[:, None])  # (R, R)
            num_1 = _dot(s_10, v_0, LOWP) + _dot(s_11, v_1, LOWP)  # (R, BV)
            z_1 = tl.sum(s_10, axis=1) + tl.sum(s_11, axis=1)  # (R,)
            _store_rows(h_ptr, z_ptr, m_ptr, row0, t1, mask_1, offs_v, mask_v, DHV, num_1, z_1, m_1, eps)


_FWD_ONE = FastLauncher(_mlstm_one_chunk_fwd_kernel_tl)


def use_one_chunk_forward(L: int, BK: int, NV: int, one_chunk: bool, plain: bool, dtype: torch.dtype) -> bool:
    """Whether a forward runs this kernel: one chunk of at most 2 * ROWS steps with one DHV block, heads of at least
    MIN_DQK (padded DQK block BK), inputs of a dtype in DTYPES, and `plain`: zero initial states, no last states, no
    fp32 copy of h, no segments."""
    return (ENABLED and one_chunk and plain and NV == 1 and L <= 2 * ROWS and BK >= MIN_DQK
            and dtype in DTYPES)  # fmt: skip


@functools.lru_cache(maxsize=8)
def sm_count(device: torch.device) -> int:
    """SMs of a CUDA device; `_SMS_OFF_CUDA` elsewhere."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else _SMS_OFF_CUDA


def grid_programs(BNH: int, per_sm: int | None, device: torch.device) -> int:
    """Programs of a one-chunk launch over BNH batch * heads: one per head, or per_sm per SM (persistent)."""
    return BNH if per_sm is None else min(BNH, per_sm * sm_count(device))


def reg_cap(cap: int | None) -> dict[str, int]:
    """The maxnreg launch option of a register cap (none for None)."""
    return {"maxnreg": cap} if cap else {}


def one_chunk_forward(q, k, v, i, f, h, z, m, eps: float, L: int, BK: int, BV: int, lowp: int, qk_lowp: int,
                      num_warps: int) -> None:  # fmt: skip
    """Launch the kernel: h (B, NH, S, DHV), z, m (B, NH, S) fp32 are written; q, k, v, i, f read through their
    strides; L, BK, BV and the dot modes as for the general forward."""
    B, NH, S, DQK = q.shape
    DHV = v.shape[-1]
    BNH = B * NH
    _FWD_ONE[(grid_programs(BNH, PER_SM, q.device),)](
        q, k, v, i, f, h, z, m,
        *q.stride(), *k.stride(), *v.stride(), *i.stride(), *f.stride(),
        NH, BNH, S, DQK, DHV, DQK**-0.5, eps,
        R=min(L, ROWS), TWO=L > ROWS, BK=BK, BV=BV, LOWP=lowp, QK_LOWP=qk_lowp,
        PERSISTENT=PER_SM is not None, STAGES=STAGES, num_warps=NUM_WARPS or num_warps, **reg_cap(MAXNREG),
    )  # fmt: skip
