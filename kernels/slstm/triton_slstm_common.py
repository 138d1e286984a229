"""Triton device helpers of the sLSTM kernels: the recurrent dot, tile loads of gates and states, the weight-gradient
dot. Layouts as in `triton_slstm_kernels.py`."""

import triton
import triton.language as tl


@triton.jit
def _rdot(h, r, LOWP: tl.constexpr):
    """h @ r in fp32: exact (LOWP=0) or TF32 (LOWP=1, for bf16/fp16 inputs)."""
    if LOWP == 1:
        out = tl.dot(h, r, input_precision="tf32")
    else:
        out = tl.dot(h, r, input_precision="ieee")
    return out


@triton.jit
def _load_gate_matrices(r_ptr, off, DH, mask_r):
    """The four (BD, BD) recurrent matrices of one head at offsets `off` (transposed if `off` is)."""
    r_i = tl.load(r_ptr + off, mask=mask_r, other=0.0)
    r_f = tl.load(r_ptr + off + DH * DH, mask=mask_r, other=0.0)
    r_z = tl.load(r_ptr + off + 2 * DH * DH, mask=mask_r, other=0.0)
    r_o = tl.load(r_ptr + off + 3 * DH * DH, mask=mask_r, other=0.0)
    return r_i, r_f, r_z, r_o


@triton.jit
def _load_gates(x_ptr, head, offs_b, offs_d, t, S, NH, DH, mask, SKIP: tl.constexpr):
    """The four (BB, BD) gate tiles of step t of a (B, S, 4, NH, DH) tensor in fp32; zeros past the sequence's
    ends (t < 0 or t >= S) or when SKIP."""
    if SKIP:
        x_i = tl.zeros(mask.shape, dtype=tl.float32)
        x_f, x_z, x_o = x_i, x_i, x_i
    else:
        off = offs_b[:, None] * S * 4 * NH * DH + t * 4 * NH * DH + head * DH + offs_d[None, :]
        ok = mask & (t >= 0) & (t < S)
        x_i = tl.load(x_ptr + off, mask=ok, other=0.0).to(tl.float32)  # (BB, BD)
        x_f = tl.load(x_ptr + off + NH * DH, mask=ok, other=0.0).to(tl.float32)
        x_z = tl.load(x_ptr + off + 2 * NH * DH, mask=ok, other=0.0).to(tl.float32)
        x_o = tl.load(x_ptr + off + 3 * NH * DH, mask=ok, other=0.0).to(tl.float32)
    return x_i, x_f, x_z, x_o


@triton.jit
def _states_before(cs_ptr, ns_ptr, ms_ptr, c0_ptr, n0_ptr, m0_ptr, head, offs_b, offs_d, t, S, NH, DH, mask):
    """(c, n, m) entering step t, each (BB, BD): the stored states of step t - 1, the initial states at t = 0;
    padding lanes and t < 0 get c = 0, n = 1, m = 0."""
    seq_off = offs_b[:, None] * S * NH * DH + (t - 1) * NH * DH + head * DH + offs_d[None, :]  # (BB, BD)
    st_off = offs_b[:, None] * NH * DH + head * DH + offs_d[None, :]  # (BB, BD)
    in_seq = mask & (t >= 1)
    at_start = mask & (t == 0)
    c = tl.load(cs_ptr + seq_off, mask=in_seq, other=0.0) + tl.load(c0_ptr + st_off, mask=at_start, other=0.0)
    n = tl.where(t >= 1, tl.load(ns_ptr + seq_off, mask=in_seq, other=1.0),
                 tl.load(n0_ptr + st_off, mask=at_start, other=1.0))  # fmt: skip
    m = tl.load(ms_ptr + seq_off, mask=in_seq, other=0.0) + tl.load(m0_ptr + st_off, mask=at_start, other=0.0)
    return c, n, m


@triton.jit
def _h_before(hs_ptr, h0_ptr, head, offs_b, offs_d, t, S, NH, DH, mask):
    """h entering step t (BB, BD): the stored h of step t - 1, the initial h at t = 0; zeros in padding lanes and
    for t < 0."""
    seq_off = offs_b[:, None] * S * NH * DH + (t - 1) * NH * DH + head * DH + offs_d[None, :]  # (BB, BD)
    st_off = offs_b[:, None] * NH * DH + head * DH + offs_d[None, :]  # (BB, BD)
    h = tl.load(hs_ptr + seq_off, mask=mask & (t >= 1), other=0.0)
    return h + tl.load(h0_ptr + st_off, mask=mask & (t == 0), other=0.0)


@triton.jit
def _weight_grad_dot(h_prev, dg, LOWP: tl.constexpr):
    """h_prev^T @ dg (BD, BD) in fp32, the step's contribution to dR of one gate."""
    return _rdot(tl.trans(h_prev), dg, LOWP)


@triton.jit
def _logsigmoid(x):
    return tl.minimum(x, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(x)))
