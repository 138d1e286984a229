"""Per-chunk terms of the boundary walks, computed for every chunk at once ahead of them.

The backward boundary kernel (`triton_chunkwise_bounds.py`) carries, chunk by chunk from the last,
    dC <- decay dC + (q^ w0)^T dnum,   dn <- decay dn + (q^ w0)^T dz,   m_carry <- route of dm through the chunk,
and by itself derives every factor from the gates, z, m and <dh, h> inside that sequential loop. All of them but
the carried values depend on one chunk only, so one program per (chunk, batch * head) forms them here, in
parallel, together with <dh_t, h_t> (`row_dots`' sum), and the walk keeps only the loads, one dot and a few
multiply-adds per chunk:
    rows[0, t] = w0_t / sqrt(DQK) / (den_t + eps)    (dnum's factor, applied to dh),
    rows[1, t] = w0_t / sqrt(DQK) dz_t               (dn's factor, DHV block 0 only),
and per chunk the scalars of
    decay = exp(g + m_in - m_end),
    m_carry_new = gain m_carry + base + last_gain dm_last,   dm_to_prev = forget_first m_carry_new,
where `_route_stabilizer` is linear in its upstream dm and carry: base is what the eps terms of the chunk's steps
route to its first step (DHV block 0 only), gain what a unit carry from the chunk after does, and last_gain what a
unit gradient at step S-1 does (zero but in the chunk holding S-1; dm_last is each DHV block's own share).

The forward boundary walk (opt-in, `bounds_gates`) likewise reads each chunk's gate terms from one parallel pass:
a_s = g - b_s + i~_s (the log weight of key s in the chunk's leaving state, -inf past S), the chunk total g of
log f and max_s a_s; then m_end = max(g + m_in, max_s a_s) and C <- e^{g + m_in - m_end} C + (k e^{a - m_end})^T v.
"""

import torch
import triton
import triton.language as tl

from .._fast_launch import fast
from .._ints import cdiv, next_power_of_2
from .triton_chunkwise_common import _chunk_gates, _dot
from .triton_chunkwise_gates import _branches, _den_terms, _dz, _row_dot

N_CHUNK_TERMS = 5  # decay, gain, base, last_gain, forget_first
N_GATE_TERMS = 2  # g, max_s a_s


@triton.jit
def _given_step(rows_base, terms_ptr, ROWS, NT, crow, t, mask_t, q, dh, dC, dn, m_carry, dm_last, z_on,
                LOWP: tl.constexpr, DETACH: tl.constexpr):  # fmt: skip
    """One chunk of the backward boundary walk from `bounds_rows`' terms.

    Args:
        rows_base: this batch * head's first entry of rows[0] ((S,) rows, rows[1] ROWS entries on); terms_ptr: the
            (N_CHUNK_TERMS, NT) terms, crow this chunk's column; t, mask_t: its steps (L,); q (L, BK), dh (L, BV) fp32:
            its tiles; dC (BK, BV), dn (BK,), m_carry: the carried values; dm_last: this program's share of the
            gradient on m at step S-1; z_on: 1.0 in DHV block 0, else 0.0.

    Returns:
        dC, dn, m_carry carried across the chunk, and dm_to_prev, what reaches m before it.
    """
    w_dnum = tl.load(rows_base + t, mask=mask_t, other=0.0)  # (L,)
    w_dz = tl.load(rows_base + ROWS + t, mask=mask_t, other=0.0) * z_on  # (L,)
    decay = tl.load(terms_ptr + crow)
    dC = decay * dC + _dot(tl.trans(q), dh * w_dnum[:, None], LOWP)  # (BK, BV)
    dn = decay * dn + tl.sum(q.to(tl.float32) * w_dz[:, None], axis=0)  # (BK,)
    dm_to_prev = tl.zeros((), dtype=tl.float32)
    if not DETACH:
        gain = tl.load(terms_ptr + NT + crow)
        base = tl.load(terms_ptr + 2 * NT + crow)
        last_gain = tl.load(terms_ptr + 3 * NT + crow)
        m_carry = gain * m_carry + base * z_on + last_gain * dm_last
        dm_to_prev = tl.load(terms_ptr + 4 * NT + crow) * m_carry
    return dC, dn, m_carry, dm_to_prev


@triton.jit
def _mlstm_bounds_rows_kernel_tl(
    h_ptr,  # (BNH, S, DHV) contiguous fp32 h from the forward
    dh_ptr,  # (B, NH, S, DHV) upstream gradient of h, strides sdh_*
    z_ptr, m_ptr,  # (BNH, S) fp32 z_t and m_t from the forward
    i_ptr, f_ptr,  # (B, NH, S) gate pre-activations, strides si_*, sf_*
    hd_ptr,  # out (BNH, S) fp32 <dh_t, h_t> over every column
    rows_ptr,  # out (2, BNH, S) fp32 the walk's two per-step factors (module docstring)
    terms_ptr,  # out (N_CHUNK_TERMS, BNH * NC) fp32 the walk's per-chunk scalars
    sdh_b, sdh_h, sdh_s, sdh_d,
    si_b, si_h, si_s,
    sf_b, sf_h, sf_s,
    NH, S, DHV, BNH, NC, qk_scale, eps,
    L: tl.constexpr,
    BV: tl.constexpr,
    DETACH: tl.constexpr,
):  # fmt: skip
    c = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)
    bb, hh = pid_bh // NH, pid_bh % NH
    offs_l = tl.arange(0, L)
    t = c * L + offs_l  # (L,)
    mask_t = t < S
    row0 = pid_bh * S
    dh_base = dh_ptr + bb * sdh_b + hh * sdh_h
    i_base = i_ptr + bb * si_b + hh * si_h
    f_base = f_ptr + bb * sf_b + hh * sf_h

    hd = _row_dot(h_ptr + row0 * DHV, dh_base, sdh_s, sdh_d, t, mask_t, DHV, BV)  # (L,) <dh_t, h_t>
    tl.store(hd_ptr + row0 + t, hd, mask=mask_t)

    z, m_row, inv_den = _den_terms(z_ptr + row0, m_ptr + row0, t, mask_t, eps)  # (L,) each
    i_g, f_g, log_f, b, g = _chunk_gates(i_base, f_base, si_s, sf_s, t, mask_t)
    m_in = tl.load(m_ptr + row0 + c * L - 1, mask=c >= 1, other=0.0)  # the walk never reaches chunk 0
    m_end = tl.load(m_ptr + row0 + tl.minimum(c * L + L - 1, S - 1))
    w0 = tl.where(mask_t, tl.exp(b + m_in - m_row), 0.0) * qk_scale  # (L,)
    tl.store(rows_ptr + row0 + t, w0 * inv_den, mask=mask_t)
    tl.store(rows_ptr + BNH * S + row0 + t, w0 * _dz(z, m_row, inv_den, hd, 0, DETACH), mask=mask_t)

    crow = pid_bh * NC + c
    NT = BNH * NC
    tl.store(terms_ptr + crow, tl.exp(g + m_in - m_end))
    if not DETACH:
        forget, forget_next = _branches(m_ptr + row0, i_base, f_base, si_s, sf_s, t, mask_t, S, log_f, i_g, m_row,
                                        m_in)  # fmt: skip
        # `_route_stabilizer` sends dm_t to the first step times the product of forget_next over the steps before
        # t: 0 / 1 factors, so that product is 1 up to the chunk's first 0 (at `stop`) and 0 after it
        stop = tl.min(tl.where(forget_next == 0.0, offs_l, L), axis=0)
        gain = tl.where(stop == L, 1.0, 0.0)  # a carry enters after the last step
        base = tl.sum(tl.where(offs_l <= stop, -eps * hd * inv_den, 0.0), axis=0)
        last_gain = tl.sum(tl.where((t == S - 1) & (offs_l <= stop), 1.0, 0.0), axis=0)
        forget_first = tl.sum(tl.where(offs_l == 0, forget.to(tl.float32), 0.0), axis=0)
        tl.store(terms_ptr + NT + crow, gain)
        tl.store(terms_ptr + 2 * NT + crow, base)
        tl.store(terms_ptr + 3 * NT + crow, last_gain)
        tl.store(terms_ptr + 4 * NT + crow, forget_first)


def bounds_rows(h: torch.Tensor, dh: torch.Tensor, z: torch.Tensor, m: torch.Tensor, i: torch.Tensor,
                f: torch.Tensor, L: int, qk_scale: float, eps: float, detach: bool) -> tuple:  # fmt: skip
    """<dh_t, h_t> and the backward boundary walk's per-step and per-chunk terms for chunks of L steps.

    Args:
        h: the forward's fp32 h (B, NH, S, DHV), contiguous; dh: its upstream gradient (any strides); z, m: the
            forward's (B, NH, S) fp32 rows; i, f: the gate pre-activations (B, NH, S). qk_scale: 1 / sqrt(DQK).

    Returns:
        hd (B, NH, S) fp32 (as `row_dots`), and (rows (2, B * NH, S), terms (N_CHUNK_TERMS, B * NH * NC)) fp32, NC
        = ceil(S / L): what `bounds_backward(..., rows=)` reads (the module docstring).
    """
    B, NH, S, DHV = dh.shape
    NC = cdiv(S, L)
    f32 = {"dtype": torch.float32, "device": dh.device}
    hd = torch.empty(B, NH, S, **f32)  # (B, NH, S)
    rows = torch.empty(2, B * NH, S, **f32)  # (2, BNH, S)
    terms = torch.empty(N_CHUNK_TERMS, B * NH * NC, **f32)  # a detached walk reads only the decays
    fast(_mlstm_bounds_rows_kernel_tl)[(NC, B * NH)](
        h, dh, z, m, i, f, hd, rows, terms, *dh.stride(), *i.stride(), *f.stride(),
        NH, S, DHV, B * NH, NC, qk_scale, eps,
        L=L, BV=min(64, max(16, next_power_of_2(DHV))), DETACH=detach, num_warps=4,
    )  # fmt: skip
    return hd, (rows, terms)


@triton.jit
def _given_carry(a_row, g, a_max, m_prev, C, n, k, v, LOWP: tl.constexpr):
    """The state (C (BK, BV), n (BK,)) and m after one chunk of the forward walk from `bounds_gates`' terms: a_row
    (L,) its keys' log weights, g and a_max its scalars; k (L, BK), v (L, BV) its tiles."""
    m_new = tl.maximum(g + m_prev, a_max)
    decay = tl.exp(g + m_prev - m_new)
    k_w = k.to(tl.float32) * tl.exp(a_row - m_new)[:, None]  # (L, BK)
    C = decay * C + _dot(tl.trans(k_w), v, LOWP)  # (BK, BV)
    n = decay * n + tl.sum(k_w, axis=0)  # (BK,)
    return C, n, m_new


@triton.jit
def _mlstm_bounds_gates_kernel_tl(
    i_ptr, f_ptr,  # (B, NH, S) gate pre-activations, strides si_*, sf_*
    a_ptr,  # out (BNH, S) fp32 a_s = g - b_s + i~_s of each step's chunk (-inf past S)
    terms_ptr,  # out (N_GATE_TERMS, BNH * NC) fp32 g and max_s a_s per chunk
    si_b, si_h, si_s,
    sf_b, sf_h, sf_s,
    NH, S, BNH, NC,
    L: tl.constexpr,
):  # fmt: skip
    c = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)
    bb, hh = pid_bh // NH, pid_bh % NH
    t = c * L + tl.arange(0, L)  # (L,)
    mask_t = t < S
    i_g, f_g, log_f, b, g = _chunk_gates(i_ptr + bb * si_b + hh * si_h, f_ptr + bb * sf_b + hh * sf_h, si_s, sf_s, t,
                                         mask_t)  # fmt: skip
    a = g - b + i_g  # (L,)
    tl.store(a_ptr + pid_bh * S + t, a, mask=mask_t)
    crow = pid_bh * NC + c
    tl.store(terms_ptr + crow, g)
    tl.store(terms_ptr + BNH * NC + crow, tl.max(a, axis=0))


def bounds_gates(i: torch.Tensor, f: torch.Tensor, L: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward boundary walk's gate terms for chunks of L steps (the module docstring): a (B * NH, S) and
    (g, max_s a_s) (N_GATE_TERMS, B * NH * ceil(S / L)), fp32, from the gate pre-activations i, f (B, NH, S)."""
    B, NH, S = i.shape
    NC = cdiv(S, L)
    a = torch.empty(B * NH, S, dtype=torch.float32, device=i.device)  # (BNH, S)
    terms = torch.empty(N_GATE_TERMS, B * NH * NC, dtype=torch.float32, device=i.device)
    fast(_mlstm_bounds_gates_kernel_tl)[(NC, B * NH)](
        i, f, a, terms, *i.stride(), *f.stride(), NH, S, B * NH, NC, L=L, num_warps=1,
    )  # fmt: skip
    return a, terms
