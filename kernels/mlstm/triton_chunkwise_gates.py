"""Triton device code for the gate gradients of the chunkwise mLSTM backward, and the sum over DHV blocks.

The backward kernel (`triton_chunkwise_bwd.py`) walks the chunks backward in time, so the reverse cumulative sums
of the gate gradients are carried across chunks as scalars and finished within a chunk by the helpers here:

- `_row_terms`: per-step 1 / (den_t + eps) (`_den_terms`), <dh_t, h_t> from the saved h, and the gradient dz_t of
  z_t = n~_t . q^_t (`_dz`);
- `_route_stabilizer`: a gradient on m_t flows back through m_t = max(log f_t + m_{t-1}, i~_t) along the steps
  where the forget branch was the max, until an input-branch step (to its i~) or the start (to m0): a linear
  recurrence run backward in time, per chunk as a reverse associative scan plus a carried scalar.

Every gate gradient is linear in the upstream gradient of the block's DHV columns, so a program with one DHV block
computes its share; with several blocks, `_mlstm_chunkwise_bwd_sum_kernel_tl` adds the shares (and those of dq, dk)
and casts to the input dtypes. `row_dots` sums <dh_t, h_t> over every column once, ahead of kernels that would each
read the saved h for it (the chunk-parallel backward).
"""

import torch
import triton
import triton.language as tl

from .._fast_launch import fast
from .._ints import cdiv, next_power_of_2
from .triton_chunkwise_common import _dot, _load_gates, _logsigmoid, _tile


@triton.jit
def _den_terms(z_ptr, m_ptr, t, mask_t, eps):
    """z_t, m_t (contiguous (S,) rows of this batch * head) at the steps t, and 1 / (max(|z_t|, e^{-m_t}) + eps)."""
    z = tl.load(z_ptr + t, mask=mask_t, other=0.0)  # (L,)
    m_row = tl.load(m_ptr + t, mask=mask_t, other=0.0)  # (L,)
    return z, m_row, _inv_den(z, m_row, eps)


@triton.jit
def _inv_den(z, m_row, eps):
    """1 / (max(|z_t|, e^{-m_t}) + eps) (L,) of loaded z_t, m_t."""
    return 1.0 / (tl.maximum(tl.abs(z), tl.exp(-m_row)) + eps)


@triton.jit
def _dz(z, m_row, inv_den, hd_all, pid_v, DETACH: tl.constexpr):
    """Gradient of z_t from <dh_t, h_t> over every DHV column: nonzero only in DHV block 0, where |z| > e^{-m},
    and never with a detached normalizer."""
    if DETACH:
        dz = tl.zeros_like(z)
    else:
        sign = tl.where(z > 0, 1.0, -1.0)  # (L,) z != 0 wherever it is used
        dz = tl.where((tl.abs(z) > tl.exp(-m_row)) & (pid_v == 0), -hd_all * inv_den * sign, 0.0)  # (L,)
    return dz


@triton.jit
def _dq_with_hd(
    q, k, w, w0, qk_w, ds, dnum, z, m_row, inv_den, C_in, n_in, pid_v, qk_scale,
    HAS_IN: tl.constexpr, DETACH: tl.constexpr, LOWP: tl.constexpr, OUT_LOWP: tl.constexpr,
):  # fmt: skip
    """dq of a chunk whose <dh_t, h_t> comes from its own dots instead of a saved h (one DHV block):
    <dh_t, h_t> = <dnum_t, num_t> with num_t = sum_s qk_w[t, s] v_s (+ w0_t C_in^T q^_t with an entering state), so
    it is the row sum of qk_w * (dnum v^T) (+ w0_t <q^_t, C_in dnum_t>).

    Args:
        q, k: (L, BK) tiles; w (L, L) decay weights, w0 (L,) the entering state's; qk_w (L, L) = w * q^ k^T, the
            forward's weighted scores; ds (L, L) = dnum v^T; dnum (L, BV) = dh / (den + eps); z, m_row, inv_den (L,);
            C_in (BK, BV), n_in (BK,): the entering state (read only if HAS_IN).

    Returns:
        dq (L, BK) (scaled by qk_scale), ds + dz (L, L), <dh, h> (L,), dz (L,).
    """
    hd = tl.sum(qk_w * ds, axis=1)  # (L,)
    if HAS_IN:
        dnum_c = _dot(dnum, tl.trans(C_in), LOWP)  # (L, BK)
        hd += w0 * qk_scale * tl.sum(q.to(tl.float32) * dnum_c, axis=1)
    dz = _dz(z, m_row, inv_den, hd, pid_v, DETACH)  # (L,)
    ds = ds + dz[:, None]
    dq = _dot(w * ds, k, OUT_LOWP)  # (L, BK)
    if HAS_IN:
        dq += w0[:, None] * (dnum_c + dz[:, None] * n_in[None, :])
    return dq * qk_scale, ds, hd, dz


@triton.jit
def _row_terms(
    z_ptr, m_ptr, h_base, dh_base, sdh_s, sdh_d, dh, t, mask_t, offs_v, pid_v, DHV, eps,
    BV: tl.constexpr, MULTI_V: tl.constexpr, DETACH: tl.constexpr,
):  # fmt: skip
    """Per-step terms of one chunk for one DHV block, <dh, h> from the saved h.

    Args:
        z_ptr, m_ptr: z_t and m_t of this batch * head (contiguous (S,)). h_base: h (S, DHV) contiguous.
        dh_base: upstream dh (S, DHV) with strides sdh_s, sdh_d. dh: this block's (L, BV) fp32 tile of dh.

    Returns:
        z (L,), m (L,), inv_den = 1 / (max(|z|, e^{-m}) + eps) (L,), this block's share of <dh, h> (L,), and
        dz (L,) (`_dz`).
    """
    z, m_row, inv_den = _den_terms(z_ptr, m_ptr, t, mask_t, eps)
    mask_tv = mask_t[:, None] & (offs_v < DHV)[None, :]
    h = _tile(h_base, t, offs_v, DHV, 1, mask_tv).to(tl.float32)  # (L, BV)
    hd = tl.sum(dh * h, axis=1)  # (L,)
    hd_all = hd
    if MULTI_V and not DETACH:
        # dz needs <dh, h> over every column: block 0 adds the other blocks' columns
        v_end = tl.where(pid_v == 0, DHV, 0)
        for v0 in range(BV, v_end, BV):
            cols = v0 + tl.arange(0, BV)  # (BV,)
            mask_o = mask_t[:, None] & (cols < DHV)[None, :]
            dh_o = _tile(dh_base, t, cols, sdh_s, sdh_d, mask_o).to(tl.float32)  # (L, BV)
            h_o = _tile(h_base, t, cols, DHV, 1, mask_o).to(tl.float32)  # (L, BV)
            hd_all += tl.sum(dh_o * h_o, axis=1)
    return z, m_row, inv_den, hd, _dz(z, m_row, inv_den, hd_all, pid_v, DETACH)


@triton.jit
def _branches(m_base, i_base, f_base, si_s, sf_s, t, mask_t, S, log_f, i_g, m_row, m_in):
    """Which branch of m_t = max(log f_t + m_{t-1}, i~_t) the steps t of one chunk took, and step t+1.

    Args:
        m_base: m_t of this batch * head (contiguous (S,)); i_base, f_base: gate pre-activations, strides si_s, sf_s.
        t: (L,) steps of the chunk, t[0] its first; log_f, i_g, m_row: (L,) the chunk's log f, i~ and m.
        m_in: m before the chunk's first step.

    Returns:
        forget (L,): step t took the forget branch; forget_next (L,) 1.0 where step t+1 took it (0.0 at t = S-1).
    """
    m_before, i_next, f_next = _branch_loads(m_base, i_base, f_base, si_s, sf_s, t, mask_t, S)
    return _branches_of(m_before, i_next, f_next, t, S, log_f, i_g, m_row, m_in)


@triton.jit
def _branch_loads(m_base, i_base, f_base, si_s, sf_s, t, mask_t, S):
    """What `_branches` reads for the steps t: m_{t-1} (L,) (0 at the chunk's first step, which takes m_in), and
    i~_{t+1}, f~_{t+1} (L,) in their own dtype (0 from S on); a chunk walk may load the next chunk's ahead."""
    offs_l = tl.arange(0, t.shape[0])
    m_before = tl.load(m_base + t - 1, mask=mask_t & (offs_l > 0), other=0.0)  # (L,) m_{t-1}
    has_next = t + 1 < S
    i_next = tl.load(i_base + (t + 1) * si_s, mask=has_next, other=0.0)  # (L,)
    f_next = tl.load(f_base + (t + 1) * sf_s, mask=has_next, other=0.0)  # (L,)
    return m_before, i_next, f_next


@triton.jit
def _branches_of(m_before, i_next, f_next, t, S, log_f, i_g, m_row, m_in):
    """`_branches` from what `_branch_loads` read."""
    offs_l = tl.arange(0, t.shape[0])
    m_before = tl.where(offs_l == 0, m_in, m_before)
    forget = log_f + m_before >= i_g  # (L,)
    f_next = f_next.to(tl.float32)
    forget_next = (t + 1 < S) & (_logsigmoid(f_next) + m_row >= i_next.to(tl.float32))  # (L,)
    return forget, tl.where(forget_next, 1.0, 0.0)


@triton.jit
def _walk_rows(z_base, m_base, hd_base, i_base, f_base, si_s, sf_s, s0, S, L: tl.constexpr):
    """Everything the backward boundary walk reads per chunk but its q and dh tiles, for the chunk of L steps from
    s0 (the walk loads the next chunk's while it carries this one): z, m, <dh, h> and the raw gates (L,) at its
    steps, `_branch_loads`' three rows, and m before its first step (0 for the first chunk) and at its last."""
    t = s0 + tl.arange(0, L)  # (L,)
    mask_t = t < S
    z = tl.load(z_base + t, mask=mask_t, other=0.0)  # (L,)
    m_row = tl.load(m_base + t, mask=mask_t, other=0.0)  # (L,)
    hd_all = tl.load(hd_base + t, mask=mask_t, other=0.0)  # (L,)
    i_raw, f_raw = _load_gates(i_base, f_base, si_s, sf_s, t, mask_t)  # (L,) each
    m_before, i_after, f_after = _branch_loads(m_base, i_base, f_base, si_s, sf_s, t, mask_t, S)  # (L,) each
    m_in = tl.load(m_base + s0 - 1, mask=s0 >= 1, other=0.0)
    m_end = tl.load(m_base + tl.minimum(s0 + L - 1, S - 1))
    return z, m_row, hd_all, i_raw, f_raw, m_before, i_after, f_after, m_in, m_end


@triton.jit
def _then(a1, b1, a2, b2):
    """Compose two steps of the recurrence z_t = a_t z_{t+1} + b_t, for a reverse associative scan."""
    return a1 * a2, b1 * a2 + b2


@triton.jit
def _route_stabilizer(dm, forget_next, carry):
    """Gradient reach_t reaching m_t for the steps of one chunk: reach_t = dm_t + forget_{t+1} reach_{t+1}.

    Args:
        dm: (L,) upstream gradient on m_t.
        forget_next: (L,) 1.0 where step t+1 took the forget branch (log f_{t+1} + m_t >= i~_{t+1}), else 0.0;
            its last entry is about the first step of the chunk after (0.0 at t = S-1).
        carry: reach at the first step of the chunk after (0 for the last chunk).

    Returns:
        reach (L,), and reach at this chunk's first step, the carry for the chunk before.
    """
    gain, reach = tl.associative_scan((forget_next, dm), axis=0, combine_fn=_then, reverse=True)  # (L,), (L,)
    reach += gain * carry  # gain_t = product of forget_next over [t, L)
    offs = tl.arange(0, reach.shape[0])
    return reach, tl.sum(tl.where(offs == 0, reach, 0.0), axis=0)


@triton.jit
def _mlstm_chunkwise_bwd_sum_kernel_tl(
    dq_part_ptr,  # (NV, BNH, S, DQK) fp32 per-block shares
    dk_part_ptr,  # (NV, BNH, S, DQK) fp32
    di_part_ptr,  # (NV, BNH, S) fp32
    df_part_ptr,  # (NV, BNH, S) fp32
    dm0_part_ptr,  # (NV, BNH) fp32, read only if HAS_INIT
    dq_ptr,  # out (BNH, S, DQK), dtype of q
    dk_ptr,  # out (BNH, S, DQK), dtype of k
    di_ptr,  # out (BNH, S), dtype of i
    df_ptr,  # out (BNH, S), dtype of f
    dm0_ptr,  # out (BNH,), dtype of m0
    NV,
    BNH,
    S,
    DQK,
    BS: tl.constexpr,
    BK: tl.constexpr,
    HAS_INIT: tl.constexpr,
):
    pid_s = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)
    t = pid_s * BS + tl.arange(0, BS)  # (BS,)
    offs_k = tl.arange(0, BK)
    mask_t = t < S
    mask_tk = mask_t[:, None] & (offs_k < DQK)[None, :]
    row_k = t[:, None] * DQK + offs_k[None, :]  # (BS, BK)
    dq = tl.zeros((BS, BK), dtype=tl.float32)
    dk = tl.zeros((BS, BK), dtype=tl.float32)
    di = tl.zeros((BS,), dtype=tl.float32)
    df = tl.zeros((BS,), dtype=tl.float32)
    dm0 = tl.zeros((), dtype=tl.float32)
    for p in range(0, NV):
        part = p * BNH + pid_bh
        dq += tl.load(dq_part_ptr + part * S * DQK + row_k, mask=mask_tk, other=0.0)
        dk += tl.load(dk_part_ptr + part * S * DQK + row_k, mask=mask_tk, other=0.0)
        di += tl.load(di_part_ptr + part * S + t, mask=mask_t, other=0.0)
        df += tl.load(df_part_ptr + part * S + t, mask=mask_t, other=0.0)
        if HAS_INIT:
            dm0 += tl.load(dm0_part_ptr + part)
    tl.store(dq_ptr + pid_bh * S * DQK + row_k, dq.to(dq_ptr.dtype.element_ty), mask=mask_tk)
    tl.store(dk_ptr + pid_bh * S * DQK + row_k, dk.to(dk_ptr.dtype.element_ty), mask=mask_tk)
    tl.store(di_ptr + pid_bh * S + t, di.to(di_ptr.dtype.element_ty), mask=mask_t)
    tl.store(df_ptr + pid_bh * S + t, df.to(df_ptr.dtype.element_ty), mask=mask_t)
    if HAS_INIT:
        tl.store(dm0_ptr + pid_bh, dm0.to(dm0_ptr.dtype.element_ty), mask=pid_s == 0)


def sum_shares(dq, dk, di, df, dm0, q, k, i, f, m0, BK: int) -> tuple:
    """Add the per-DHV-block fp32 shares (NV, B, NH, ...) of dq, dk, di, df, dm0 in one launch, in the input dtypes."""
    NV, B, NH, S, DQK = dq.shape
    out = lambda shape, x: torch.empty(shape, dtype=x.dtype, device=q.device)
    dq_sum, dk_sum = out((B, NH, S, DQK), q), out((B, NH, S, DQK), k)  # (B, NH, S, DQK)
    di_sum, df_sum = out((B, NH, S), i), out((B, NH, S), f)  # (B, NH, S)
    dm0_sum = None if dm0 is None else out(m0.shape, m0)  # (B, NH[, 1])
    BS = min(128, 2048 // BK)  # (BS, BK) tiles of 2048 elements: no register spills
    fast(_mlstm_chunkwise_bwd_sum_kernel_tl)[(cdiv(S, BS), B * NH)](
        dq, dk, di, df, dq if dm0 is None else dm0, dq_sum, dk_sum, di_sum, df_sum,
        dq_sum if dm0 is None else dm0_sum, NV, B * NH, S, DQK, BS=BS, BK=BK, HAS_INIT=dm0 is not None, num_warps=4,
    )  # fmt: skip
    return dq_sum, dk_sum, di_sum, df_sum, dm0_sum


@triton.jit
def _row_dot(h_base, dh_base, sdh_s, sdh_d, t, mask_t, DHV, BV: tl.constexpr):
    """<dh_t, h_t> (len(t),) fp32 over every column, in blocks of BV: h_base the contiguous fp32 (S, DHV) h of one
    batch * head, dh_base its dh with strides sdh_s, sdh_d."""
    hd = tl.zeros(t.shape, dtype=tl.float32)
    for v0 in range(0, DHV, BV):
        cols = v0 + tl.arange(0, BV)  # (BV,)
        mask = mask_t[:, None] & (cols < DHV)[None, :]
        dh = _tile(dh_base, t, cols, sdh_s, sdh_d, mask).to(tl.float32)  # (len(t), BV)
        hd += tl.sum(dh * _tile(h_base, t, cols, DHV, 1, mask), axis=1)
    return hd


@triton.jit
def _mlstm_row_dots_kernel_tl(
    h_ptr,  # (BNH, S, DHV) contiguous fp32 h from the forward
    dh_ptr,  # (B, NH, S, DHV) upstream gradient of h, strides sdh_*
    hd_ptr,  # out (BNH, S) fp32 <dh_t, h_t>
    sdh_b, sdh_h, sdh_s, sdh_d,
    NH, S, DHV,
    BS: tl.constexpr,
    BV: tl.constexpr,
):  # fmt: skip
    pid_s = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)
    t = pid_s * BS + tl.arange(0, BS)  # (BS,)
    mask_t = t < S
    dh_base = dh_ptr + (pid_bh // NH) * sdh_b + (pid_bh % NH) * sdh_h
    hd = _row_dot(h_ptr + pid_bh * S * DHV, dh_base, sdh_s, sdh_d, t, mask_t, DHV, BV)  # (BS,)
    tl.store(hd_ptr + pid_bh * S + t, hd, mask=mask_t)


def row_dots(h: torch.Tensor, dh: torch.Tensor) -> torch.Tensor:
    """<dh_t, h_t> (B, NH, S) fp32 of the saved fp32 h (B, NH, S, DHV, contiguous) and dh (any strides)."""
    B, NH, S, DHV = dh.shape
    hd = torch.empty(B, NH, S, dtype=torch.float32, device=dh.device)  # (B, NH, S)
    BS = 64
    fast(_mlstm_row_dots_kernel_tl)[(cdiv(S, BS), B * NH)](
        h, dh, hd, *dh.stride(), NH, S, DHV, BS=BS, BV=min(64, max(16, next_power_of_2(DHV))), num_warps=4,
    )  # fmt: skip
    return hd
