"""One chunk's gradients in one pass over the DQK blocks, for heads whose value columns fit one block (opt-in).

The chunk-parallel gradient kernel (`triton_chunkwise_parallel_bwd.py`) forms dq and dk in a loop over DQK blocks
with an inner loop over DHV blocks, then dv in a second loop: dh, v and k are read three times, q and the leaving
state gradient dC twice. With all DHV columns in one block (DHV <= 128), this pass loads dh and v once ahead of the
loop, and each DQK block of q, k, C_in and dC once inside it, where it adds that block's share to every product that
needs it: dq and dk of the block, and the (L, L) scores q^ k^T and the (L, DHV) product k dC that dv takes after the
loop. The identities are the gradient kernel's (its docstring); only the order of the work differs.

Per chunk of L steps, with w the decay weights, w0 the entering state's weights and e the keys' weights in the
leaving state (`_decay_weights`, as the gradient kernel forms them):
    dnum = dh / (den + eps);  ds = dnum v^T + dz;  then per DQK block:
    dq = ((w ds) k + w0 (dnum C_in^T + dz n_in)) / sqrt(DQK),  dk = (w ds)^T q^ + e (v dC^T + dn),
    qk += q^ k^T,  k dC += k dC;  after the loop dv = (w qk)^T dnum + e (k dC).

`_chunk_dv` is the gradient kernel's dv of one chunk on its own (its parts 0 and 2).
"""

import triton
import triton.language as tl

from .triton_chunkwise_common import _dot, _tile
from .triton_chunkwise_gates import _dz


@triton.jit
def _chunk_grads_one_pass(
    q_base, k_base, v_base, dh_base, h_base, hd_row,  # the chunk's first rows; hd_row: its <dh, h> (HD_GIVEN)
    c_base, dc_base, n_base, dn_base,  # entering state C_in (DQK, DHV), n_in (DQK); leaving-state gradients dC, dn
    dq_base, dk_base, dv_base,  # the chunk's first rows of dq, dk (rows of DQK) and dv (rows of DHV), contiguous
    t, mask_t, z, m_row, inv_den, w, w0, e,  # (L,) steps, mask, z, m, 1 / den; (L, L) w; (L,) w0, e
    sq_s, sq_d, sk_s, sk_d, sv_s, sv_d, sdh_s, sdh_d, DQK, DHV, qk_scale,
    L: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, LOWP: tl.constexpr, QK_LOWP: tl.constexpr,
    OUT_LOWP: tl.constexpr, STATE_LOWP: tl.constexpr, HD_GIVEN: tl.constexpr, DETACH: tl.constexpr,
):  # fmt: skip
    """Stores dq, dk, dv of one chunk (BV >= DHV: one value block); returns di (L,) (<k_s, dk_s>), the keys'
    <k_s, dC v_s + dn> (L,), <dC, C_in> + <dn, n_in> (), <dh_t, h_t> (L,) and dz (L,) for the gate gradients."""
    offs_v = tl.arange(0, BV)
    mask_v = offs_v < DHV
    mask_tv = mask_t[:, None] & mask_v[None, :]
    dh = _tile(dh_base, t, offs_v, sdh_s, sdh_d, mask_tv).to(tl.float32)  # (L, BV)
    if HD_GIVEN:
        hd = tl.load(hd_row + t, mask=mask_t, other=0.0)  # (L,)
    else:
        hd = tl.sum(dh * _tile(h_base, t, offs_v, DHV, 1, mask_tv), axis=1)  # (L,)
    dnum = dh * inv_den[:, None]  # (L, BV)
    v = _tile(v_base, t, offs_v, sv_s, sv_d, mask_tv)  # (L, BV)
    dz = _dz(z, m_row, inv_den, hd, 0, DETACH)  # (L,)
    w_ds = w * (_dot(dnum, tl.trans(v), LOWP) + dz[:, None])  # (L, L)

    qk = tl.zeros((L, L), dtype=tl.float32)  # q^ k^T / qk_scale, summed over the DQK blocks
    k_dc = tl.zeros((L, BV), dtype=tl.float32)  # k dC
    di = tl.zeros((L,), dtype=tl.float32)
    k_e = tl.zeros((L,), dtype=tl.float32)
    state_dot = tl.zeros((), dtype=tl.float32)
    for kb in range(0, tl.cdiv(DQK, BK)):
        offs_k = kb * BK + tl.arange(0, BK)
        mask_k = offs_k < DQK
        mask_tk = mask_t[:, None] & mask_k[None, :]
        mask_kv = mask_k[:, None] & mask_v[None, :]
        k = _tile(k_base, t, offs_k, sk_s, sk_d, mask_tk)  # (L, BK)
        q = _tile(q_base, t, offs_k, sq_s, sq_d, mask_tk)  # (L, BK)
        C = _tile(c_base, offs_k, offs_v, DHV, 1, mask_kv).to(tl.float32)  # (BK, BV)
        dC = _tile(dc_base, offs_k, offs_v, DHV, 1, mask_kv)  # (BK, BV) fp32
        n_in = tl.load(n_base + offs_k, mask=mask_k, other=0.0)  # (BK,)
        dn = tl.load(dn_base + offs_k, mask=mask_k, other=0.0)  # (BK,)
        qk += _dot(q, tl.trans(k), QK_LOWP)
        k_dc += _dot(k, dC, STATE_LOWP)
        state_dot += tl.sum(tl.sum(dC * C, axis=1), axis=0) + tl.sum(dn * n_in, axis=0)
        out_k = t[:, None] * DQK + offs_k[None, :]  # (L, BK)
        dq = _dot(w_ds, k, OUT_LOWP) + w0[:, None] * (_dot(dnum, tl.trans(C), STATE_LOWP) + dz[:, None] * n_in[None, :])
        tl.store(dq_base + out_k, (dq * qk_scale).to(dq_base.dtype.element_ty), mask=mask_tk)
        ek = _dot(v, tl.trans(dC), LOWP) + dn[None, :]  # (L, BK) dC v_s + dn per key s
        dk = _dot(tl.trans(w_ds), q, LOWP) * qk_scale + e[:, None] * ek  # (L, BK)
        k32 = k.to(tl.float32)
        di += tl.sum(k32 * dk, axis=1)
        k_e += tl.sum(k32 * ek, axis=1)
        tl.store(dk_base + out_k, dk.to(dk_base.dtype.element_ty), mask=mask_tk)
    dv = _dot(tl.trans(w * qk * qk_scale), dnum, OUT_LOWP) + e[:, None] * k_dc  # (L, BV)
    tl.store(dv_base + t[:, None] * DHV + offs_v[None, :], dv.to(dv_base.dtype.element_ty), mask=mask_tv)
    return di, k_e, state_dot, hd, dz


@triton.jit
def _chunk_dv(q_base, k_base, v_base, dh_base, dc_base, dv_base, t, mask_t, inv_den, w, e,
              sq_s, sq_d, sk_s, sk_d, sdh_s, sdh_d, DQK, DHV, qk_scale,
              L: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, QK_LOWP: tl.constexpr, OUT_LOWP: tl.constexpr,
              STATE_LOWP: tl.constexpr):  # fmt: skip
    """dv of one chunk, per DHV block: (w q^ k^T)^T dnum + e (k dC), with q^ k^T over the DQK blocks first.
    dc_base: the chunk's (DQK, DHV) leaving-state gradient, contiguous; dv_base: its first row of dv (rows of DHV)."""
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
            dC = _tile(dc_base, offs_k, offs_v, DHV, 1, mask_k[:, None] & mask_v[None, :])  # (BK, BV)
            k_dc += _dot(k, dC, STATE_LOWP)
        dv = _dot(tl.trans(w_qk), dnum, OUT_LOWP) + e[:, None] * k_dc  # (L, BV)
        tl.store(dv_base + t[:, None] * DHV + offs_v[None, :], dv.to(dv_base.dtype.element_ty), mask=mask_tv)
