"""Triton device code for one recurrent mLSTM step (decoding): one program per (DHV block, batch * head).

The host wrapper and the public `mlstm_step_triton` are in `triton_step.py`. Layout: batch and head flattened to
BNH = B * NH, all tensors contiguous.
"""

import triton
import triton.language as tl


@triton.jit
def _mlstm_step_fwd_kernel_tl(
    q_ptr,  # (BNH, DQK)
    k_ptr,  # (BNH, DQK)
    v_ptr,  # (BNH, DHV)
    i_ptr,  # (BNH,)
    f_ptr,  # (BNH,)
    c_ptr,  # (BNH, DQK, DHV) fp32
    n_ptr,  # (BNH, DQK) fp32
    m_ptr,  # (BNH,) fp32
    h_ptr,  # out (BNH, DHV), input dtype
    c_out_ptr,  # out (BNH, DQK, DHV) fp32
    n_out_ptr,  # out (BNH, DQK) fp32
    m_out_ptr,  # out (BNH,) fp32
    DQK,
    DHV,
    qk_scale,
    eps,
    BK: tl.constexpr,
    BV: tl.constexpr,
):
    pid_v = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)
    offs_k = tl.arange(0, BK)
    offs_v = pid_v * BV + tl.arange(0, BV)
    mask_k = offs_k < DQK
    mask_v = offs_v < DHV
    mask_kv = mask_k[:, None] & mask_v[None, :]
    state_kv = pid_bh * DQK * DHV + offs_k[:, None] * DHV + offs_v[None, :]  # (BK, BV)

    q = tl.load(q_ptr + pid_bh * DQK + offs_k, mask=mask_k, other=0.0).to(tl.float32) * qk_scale  # (BK,)
    k = tl.load(k_ptr + pid_bh * DQK + offs_k, mask=mask_k, other=0.0).to(tl.float32)  # (BK,)
    v = tl.load(v_ptr + pid_bh * DHV + offs_v, mask=mask_v, other=0.0).to(tl.float32)  # (BV,)
    i_pre = tl.load(i_ptr + pid_bh).to(tl.float32)
    f_pre = tl.load(f_ptr + pid_bh).to(tl.float32)
    C = tl.load(c_ptr + state_kv, mask=mask_kv, other=0.0)  # (BK, BV)
    n = tl.load(n_ptr + pid_bh * DQK + offs_k, mask=mask_k, other=0.0)  # (BK,)
    m = tl.load(m_ptr + pid_bh)

    log_f = tl.minimum(f_pre, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(f_pre)))
    m_new = tl.maximum(log_f + m, i_pre)
    f_act = tl.exp(log_f + m - m_new)
    i_act = tl.exp(i_pre - m_new)
    C = f_act * C + i_act * k[:, None] * v[None, :]  # (BK, BV)
    n = f_act * n + i_act * k  # (BK,)
    num = tl.sum(q[:, None] * C, axis=0)  # (BV,)
    den = tl.maximum(tl.abs(tl.sum(q * n, axis=0)), tl.exp(-m_new)) + eps
    tl.store(h_ptr + pid_bh * DHV + offs_v, (num / den).to(h_ptr.dtype.element_ty), mask=mask_v)
    tl.store(c_out_ptr + state_kv, C, mask=mask_kv)
    tl.store(n_out_ptr + pid_bh * DQK + offs_k, n, mask=mask_k & (pid_v == 0))
    tl.store(m_out_ptr + pid_bh, m_new, mask=pid_v == 0)
