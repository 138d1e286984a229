"""Triton device code for the sLSTM: a persistent forward and a persistent reverse-time backward kernel.

One program per (head, batch tile of BB rows) loops over all time steps with the head's four recurrent matrices
R[head, g] (DH x DH) held on chip (FlashRNN style): in fp32 up to DH = 64; beyond, in fp16 scaled by powers of two
(LOWP >= 2, see `_fp16_r` in `triton_slstm.py`), or, for exact fp32 dots (RELOAD_R), re-read from L2 at every step,
one gate at a time, since four fp32 matrices do not fit next to the dot operands. The forward stores the gate
pre-activations and the states of every step (fp32); the backward walks back in time from them, so no step is
recomputed. dR and db are a batched matmul / sum over the stored gate gradients, done by the host wrapper in
`triton_slstm.py`. Both loops load the next step's tiles (input parts, stored gates and states, upstream gradient)
at the start of a step, so their latency overlaps the step's dots: on an H200 at (B, S, D, NH) = (1024, 64, 128, 4)
bf16 the forward went from 0.286 to 0.143 ms, and at (64, 512, 256, 4) from 2.05 to 1.04 ms (fw+bw 4.11 -> 3.20).

Layouts: wx, gates (B, S, 4, NH, DH); states per step (B, S, NH, DH); initial/last states (B, NH, DH);
r (NH, 4, DH, DH); b (NH, 4, DH). All contiguous.
"""

import triton
import triton.language as tl

from .triton_slstm_common import (
    _fp16_columns,
    _fp16_rows_dot,
    _fp16_shared_columns,
    _h_before,
    _load_gate_matrices,
    _load_gates,
    _logsigmoid,
    _operand,
    _rdot,
    _states_before,
    _weight_grad_dot,
)


@triton.jit
def _slstm_fwd_kernel_tl(
    wx_ptr,  # (B, S, 4, NH, DH)
    r_ptr,  # (NH, 4, DH, DH) fp32
    b_ptr,  # (NH, 4, DH) fp32
    h0_ptr, c0_ptr, n0_ptr, m0_ptr,  # (B, NH, DH) fp32 each
    out_ptr,  # out (B, S, NH, DH), input dtype
    gates_ptr,  # out (B, S, 4, NH, DH) fp32 pre-activations
    hs_ptr, cs_ptr, ns_ptr, ms_ptr,  # out (B, S, NH, DH) fp32 states after each step
    B,
    S,
    NH,
    DH,
    BB: tl.constexpr,
    BD: tl.constexpr,
    LOWP: tl.constexpr,
    RELOAD_R: tl.constexpr,
):  # fmt: skip
    head = tl.program_id(0)
    offs_b = (tl.program_id(1) * BB + tl.arange(0, BB)).to(tl.int64)
    offs_d = tl.arange(0, BD)
    mask_b = offs_b < B
    mask_d = offs_d < DH
    mask = mask_b[:, None] & mask_d[None, :]  # (BB, BD)
    mask_r = mask_d[:, None] & mask_d[None, :]  # (BD, BD)

    r_off = head * 4 * DH * DH + offs_d[:, None] * DH + offs_d[None, :]  # (BD, BD)
    if not RELOAD_R:
        r_i, r_f, r_z, r_o = _load_gate_matrices(r_ptr, r_off, DH, mask_r)
        # fp16 dots (LOWP >= 2): each column scaled by a power of two into fp16's range, the scale applied after
        r_i, s_i = _fp16_columns(r_i, LOWP)
        r_f, s_f = _fp16_columns(r_f, LOWP)
        r_z, s_z = _fp16_columns(r_z, LOWP)
        r_o, s_o = _fp16_columns(r_o, LOWP)
    b_off = head * 4 * DH + offs_d
    b_i = tl.load(b_ptr + b_off, mask=mask_d, other=0.0)[None, :]
    b_f = tl.load(b_ptr + b_off + DH, mask=mask_d, other=0.0)[None, :]
    b_z = tl.load(b_ptr + b_off + 2 * DH, mask=mask_d, other=0.0)[None, :]
    b_o = tl.load(b_ptr + b_off + 3 * DH, mask=mask_d, other=0.0)[None, :]

    st_off = offs_b[:, None] * NH * DH + head * DH + offs_d[None, :]  # (BB, BD) into (B, NH, DH)
    h = tl.load(h0_ptr + st_off, mask=mask, other=0.0)
    c = tl.load(c0_ptr + st_off, mask=mask, other=0.0)
    n = tl.load(n0_ptr + st_off, mask=mask, other=1.0)
    m = tl.load(m0_ptr + st_off, mask=mask, other=0.0)

    # the loop carries this step's input parts, loaded one step ahead so the loads overlap the step before
    x_i, x_f, x_z, x_o = _load_gates(wx_ptr, head, offs_b, offs_d, 0, S, NH, DH, mask, RELOAD_R)
    for t in range(0, S):
        seq_off = offs_b[:, None] * S * NH * DH + t * NH * DH + head * DH + offs_d[None, :]  # (BB, BD)
        gx_off = offs_b[:, None] * S * 4 * NH * DH + t * 4 * NH * DH + head * DH + offs_d[None, :]  # (BB, BD)
        if RELOAD_R:
            # one (BD, BD) matrix on chip at a time (a runtime loop, not unrolled): the pre-activations go through
            # the gates buffer and are read back after a barrier
            for g in range(0, 4):
                r_g = tl.load(r_ptr + r_off + g * DH * DH, mask=mask_r, other=0.0)  # (BD, BD)
                b_g = tl.load(b_ptr + b_off + g * DH, mask=mask_d, other=0.0)[None, :]
                x_g = tl.load(wx_ptr + gx_off + g * NH * DH, mask=mask, other=0.0).to(tl.float32)
                tl.store(gates_ptr + gx_off + g * NH * DH, x_g + b_g + _rdot(h, r_g, LOWP), mask=mask)
            tl.debug_barrier()
            i_pre = tl.load(gates_ptr + gx_off, mask=mask, other=0.0)
            f_pre = tl.load(gates_ptr + gx_off + NH * DH, mask=mask, other=0.0)
            z_pre = tl.load(gates_ptr + gx_off + 2 * NH * DH, mask=mask, other=0.0)
            o_pre = tl.load(gates_ptr + gx_off + 3 * NH * DH, mask=mask, other=0.0)
        else:
            n_i, n_f, n_z, n_o = _load_gates(wx_ptr, head, offs_b, offs_d, t + 1, S, NH, DH, mask, RELOAD_R)
            h_op = _operand(h, LOWP)  # |h| <= 1: no scale
            i_pre = x_i + b_i + _rdot(h_op, r_i, LOWP) * s_i
            f_pre = x_f + b_f + _rdot(h_op, r_f, LOWP) * s_f
            z_pre = x_z + b_z + _rdot(h_op, r_z, LOWP) * s_z
            o_pre = x_o + b_o + _rdot(h_op, r_o, LOWP) * s_o
            x_i, x_f, x_z, x_o = n_i, n_f, n_z, n_o
            tl.store(gates_ptr + gx_off, i_pre, mask=mask)
            tl.store(gates_ptr + gx_off + NH * DH, f_pre, mask=mask)
            tl.store(gates_ptr + gx_off + 2 * NH * DH, z_pre, mask=mask)
            tl.store(gates_ptr + gx_off + 3 * NH * DH, o_pre, mask=mask)

        log_f = _logsigmoid(f_pre)
        m_new = tl.maximum(log_f + m, i_pre)  # m = -inf on the first step from zero states: m_new = i~
        i_act = tl.exp(i_pre - m_new)
        f_act = tl.exp(log_f + m - m_new)
        c = f_act * c + i_act * (2.0 * tl.sigmoid(2.0 * z_pre) - 1.0)  # tanh
        n = f_act * n + i_act
        h = tl.where(mask, tl.sigmoid(o_pre) * c / n, 0.0)  # padded lanes stay 0: they feed the next dot
        m = m_new
        tl.store(out_ptr + seq_off, h.to(out_ptr.dtype.element_ty), mask=mask)
        tl.store(hs_ptr + seq_off, h, mask=mask)
        tl.store(cs_ptr + seq_off, c, mask=mask)
        tl.store(ns_ptr + seq_off, n, mask=mask)
        tl.store(ms_ptr + seq_off, m, mask=mask)


@triton.jit
def _slstm_bwd_kernel_tl(
    r_ptr,  # (NH, 4, DH, DH) fp32
    gates_ptr,  # (B, S, 4, NH, DH) fp32 pre-activations from the forward
    h0_ptr, c0_ptr, n0_ptr, m0_ptr,  # (B, NH, DH) fp32 initial states
    hs_ptr, cs_ptr, ns_ptr, ms_ptr,  # (B, S, NH, DH) fp32 states after each step
    dout_ptr,  # (B, S, NH, DH) upstream gradient of h
    dhl_ptr, dcl_ptr, dnl_ptr, dml_ptr,  # (B, NH, DH) fp32 upstream gradients of the last states
    dg_ptr,  # out (B, S, 4, NH, DH) gradients of the pre-activations (= dwx); fp32, or the input dtype with ACC_W
    dh0_ptr, dc0_ptr, dn0_ptr, dm0_ptr,  # out (B, NH, DH) fp32
    dr_ptr,  # out with ACC_W (NH, batch tiles, 4, DH, DH) fp32: this program's part of dR
    db_ptr,  # out with ACC_W (NH, batch tiles, 4, DH) fp32: this program's part of db
    B,
    S,
    NH,
    DH,
    BB: tl.constexpr,
    BD: tl.constexpr,
    LOWP: tl.constexpr,
    RELOAD_R: tl.constexpr,
    ACC_W: tl.constexpr,
):  # fmt: skip
    head = tl.program_id(0)
    offs_b = (tl.program_id(1) * BB + tl.arange(0, BB)).to(tl.int64)
    offs_d = tl.arange(0, BD)
    mask_b = offs_b < B
    mask_d = offs_d < DH
    mask = mask_b[:, None] & mask_d[None, :]  # (BB, BD)
    mask_r = mask_d[:, None] & mask_d[None, :]  # (BD, BD)

    # transposed recurrent matrices: dh_{t-1} = sum_g dg~ @ R_g^T
    rt_off = head * 4 * DH * DH + offs_d[None, :] * DH + offs_d[:, None]  # (BD, BD)
    if not RELOAD_R:
        rt_i, rt_f, rt_z, rt_o = _load_gate_matrices(r_ptr, rt_off, DH, mask_r)
        # fp16 dots (LOWP >= 2): one power-of-two scale per column of the R_g^T, shared by the four gates
        rt_i, rt_f, rt_z, rt_o, s_rt = _fp16_shared_columns(rt_i, rt_f, rt_z, rt_o, LOWP)

    st_off = offs_b[:, None] * NH * DH + head * DH + offs_d[None, :]  # (BB, BD)
    dh_rec = tl.load(dhl_ptr + st_off, mask=mask, other=0.0)
    dc = tl.load(dcl_ptr + st_off, mask=mask, other=0.0)
    dn = tl.load(dnl_ptr + st_off, mask=mask, other=0.0)
    dm = tl.load(dml_ptr + st_off, mask=mask, other=0.0)

    # the loop carries step t's tiles, loaded one step ahead so the loads overlap the step after (in time) it
    g_i, g_f, g_z, g_o = _load_gates(gates_ptr, head, offs_b, offs_d, S - 1, S, NH, DH, mask, False)
    c, n, m = _states_before(cs_ptr, ns_ptr, ms_ptr, c0_ptr, n0_ptr, m0_ptr, head, offs_b, offs_d, S, S, NH, DH, mask)
    c_prev, n_prev, m_prev = _states_before(cs_ptr, ns_ptr, ms_ptr, c0_ptr, n0_ptr, m0_ptr, head, offs_b, offs_d,
                                            S - 1, S, NH, DH, mask)  # fmt: skip
    seq_base = offs_b[:, None] * S * NH * DH + head * DH + offs_d[None, :]  # (BB, BD) at step 0
    d_out = tl.load(dout_ptr + seq_base + (S - 1) * NH * DH, mask=mask, other=0.0).to(tl.float32)
    if ACC_W:
        # dR and db of this program's rows, summed over time in registers: dR_g += h_{t-1}^T dg~_t, db_g += dg~_t
        h_prev = _h_before(hs_ptr, h0_ptr, head, offs_b, offs_d, S - 1, S, NH, DH, mask)
        dr_i = tl.zeros([BD, BD], dtype=tl.float32)
        dr_f, dr_z, dr_o = dr_i, dr_i, dr_i
        db_i = tl.zeros([BB, BD], dtype=tl.float32)
        db_f, db_z, db_o = db_i, db_i, db_i
    for tt in range(0, S):
        t = S - 1 - tt
        gx_off = offs_b[:, None] * S * 4 * NH * DH + t * 4 * NH * DH + head * DH + offs_d[None, :]  # (BB, BD)
        # step t - 1's tiles (zeros and unused past the start)
        p_i, p_f, p_z, p_o = _load_gates(gates_ptr, head, offs_b, offs_d, t - 1, S, NH, DH, mask, False)
        p_c, p_n, p_m = _states_before(cs_ptr, ns_ptr, ms_ptr, c0_ptr, n0_ptr, m0_ptr, head, offs_b, offs_d, t - 1,
                                       S, NH, DH, mask)  # fmt: skip
        p_out = tl.load(dout_ptr + seq_base + (t - 1) * NH * DH, mask=mask & (t >= 1), other=0.0)
        i_pre, f_pre, z_pre, o_pre = g_i, g_f, g_z, g_o
        dh = d_out + dh_rec

        log_f = _logsigmoid(f_pre)
        i_act = tl.exp(i_pre - m)
        f_act = tl.exp(log_f + m_prev - m)
        z_act = 2.0 * tl.sigmoid(2.0 * z_pre) - 1.0
        o_act = tl.sigmoid(o_pre)
        ratio = c / n
        do_pre = dh * ratio * o_act * (1.0 - o_act)
        dc += dh * o_act / n
        dn -= dh * o_act * ratio / n
        d_log_f_act = (dc * c_prev + dn * n_prev) * f_act  # gradient of log f' = log f + m_{t-1} - m_t
        d_log_i_act = (dc * z_act + dn) * i_act  # gradient of log i' = i~ - m_t
        dz_pre = dc * i_act * (1.0 - z_act * z_act)
        dm_t = dm - d_log_f_act - d_log_i_act  # total gradient on m_t
        forget = (log_f + m_prev) >= i_pre  # the branch max() took
        d_log_f = d_log_f_act + tl.where(forget, dm_t, 0.0)
        di_pre = d_log_i_act + tl.where(forget, 0.0, dm_t)
        df_pre = d_log_f * tl.sigmoid(-f_pre)
        dm = d_log_f_act + tl.where(forget, dm_t, 0.0)
        dc = dc * f_act
        dn = dn * f_act
        di_pre = tl.where(mask, di_pre, 0.0)
        df_pre = tl.where(mask, df_pre, 0.0)
        dz_pre = tl.where(mask, dz_pre, 0.0)
        do_pre = tl.where(mask, do_pre, 0.0)
        dg_ty = dg_ptr.dtype.element_ty
        tl.store(dg_ptr + gx_off, di_pre.to(dg_ty), mask=mask)
        tl.store(dg_ptr + gx_off + NH * DH, df_pre.to(dg_ty), mask=mask)
        tl.store(dg_ptr + gx_off + 2 * NH * DH, dz_pre.to(dg_ty), mask=mask)
        tl.store(dg_ptr + gx_off + 3 * NH * DH, do_pre.to(dg_ty), mask=mask)
        if ACC_W:
            p_h = _h_before(hs_ptr, h0_ptr, head, offs_b, offs_d, t - 1, S, NH, DH, mask)
            dr_i += _weight_grad_dot(h_prev, di_pre, LOWP)
            dr_f += _weight_grad_dot(h_prev, df_pre, LOWP)
            dr_z += _weight_grad_dot(h_prev, dz_pre, LOWP)
            dr_o += _weight_grad_dot(h_prev, do_pre, LOWP)
            db_i, db_f, db_z, db_o = db_i + di_pre, db_f + df_pre, db_z + dz_pre, db_o + do_pre
            h_prev = p_h
        if RELOAD_R:
            # one (BD, BD) matrix on chip at a time: read this step's gate gradients back after a barrier
            tl.debug_barrier()
            dh_rec = tl.zeros([BB, BD], dtype=tl.float32)
            for g in range(0, 4):
                dg_g = tl.load(dg_ptr + gx_off + g * NH * DH, mask=mask, other=0.0)  # (BB, BD)
                rt_g = tl.load(r_ptr + rt_off + g * DH * DH, mask=mask_r, other=0.0)  # (BD, BD)
                dh_rec += _rdot(dg_g, rt_g, LOWP)
        else:
            if LOWP >= 2:
                dh_rec = _fp16_rows_dot(di_pre, df_pre, dz_pre, do_pre, rt_i, rt_f, rt_z, rt_o, LOWP) * s_rt
            else:
                dh_rec = _rdot(di_pre, rt_i, LOWP) + _rdot(df_pre, rt_f, LOWP)
                dh_rec += _rdot(dz_pre, rt_z, LOWP) + _rdot(do_pre, rt_o, LOWP)
        g_i, g_f, g_z, g_o = p_i, p_f, p_z, p_o
        c, n, m = c_prev, n_prev, m_prev
        c_prev, n_prev, m_prev = p_c, p_n, p_m
        d_out = p_out.to(tl.float32)

    tl.store(dh0_ptr + st_off, dh_rec, mask=mask)
    tl.store(dc0_ptr + st_off, dc, mask=mask)
    tl.store(dn0_ptr + st_off, dn, mask=mask)
    tl.store(dm0_ptr + st_off, dm, mask=mask)
    if ACC_W:
        part = head * tl.num_programs(1) + tl.program_id(1)  # this program's slot
        r_out = part * 4 * DH * DH + offs_d[:, None] * DH + offs_d[None, :]  # (BD, BD)
        tl.store(dr_ptr + r_out, dr_i, mask=mask_r)
        tl.store(dr_ptr + r_out + DH * DH, dr_f, mask=mask_r)
        tl.store(dr_ptr + r_out + 2 * DH * DH, dr_z, mask=mask_r)
        tl.store(dr_ptr + r_out + 3 * DH * DH, dr_o, mask=mask_r)
        b_out = part * 4 * DH + offs_d
        tl.store(db_ptr + b_out, tl.sum(db_i, axis=0), mask=mask_d)
        tl.store(db_ptr + b_out + DH, tl.sum(db_f, axis=0), mask=mask_d)
        tl.store(db_ptr + b_out + 2 * DH, tl.sum(db_z, axis=0), mask=mask_d)
        tl.store(db_ptr + b_out + 3 * DH, tl.sum(db_o, axis=0), mask=mask_d)
