"""Triton device helpers of the sLSTM kernels: the recurrent dot, tile loads of gates and states, the weight-gradient
dot. Layouts as in `triton_slstm_kernels.py`."""

import triton
import triton.language as tl


@triton.jit
def _rdot(h, r, LOWP: tl.constexpr):
    """h @ r accumulated in fp32: exact fp32 (LOWP=0), TF32 (LOWP=1), fp16 operands (LOWP=2, both from `_operand`)
    or their emulation (LOWP=3: the same fp16-rounded values multiplied in exact fp32, for the Triton interpreter,
    whose half-precision dot is wrong)."""
    if LOWP == 2:
        out = tl.dot(h, r)
    elif LOWP == 1:
        out = tl.dot(h, r, input_precision="tf32")
    else:
        out = tl.dot(h, r, input_precision="ieee")
    return out


@triton.jit
def _operand(x, LOWP: tl.constexpr):
    """fp32 x as the operand `_rdot` takes in mode LOWP: fp16 (2), rounded to fp16 (3), else as is. In modes 2 and 3
    x must be scaled into fp16's range first (`_pow2_scale`)."""
    if LOWP == 2:
        out = x.to(tl.float16)
    elif LOWP == 3:
        out = x.to(tl.float16).to(tl.float32)
    else:
        out = x
    return out


@triton.jit
def _pow2_scale(amax):
    """The power of two at or above amax (tiny where amax is 0): values divided by it lie in [-1, 1], where fp16
    keeps 10 mantissa bits (TF32's) down to 2^-14, and the division and the later product are exact."""
    return tl.exp2(tl.ceil(tl.log2(tl.maximum(amax, 1e-30))))


@triton.jit
def _fp16_columns(r, LOWP: tl.constexpr):
    """r (BD, BD) fp32 -> (r / s as an fp16 `_operand`, s (1, BD)), s the power-of-two scale of each column, so that
    (h @ r) = (h @ (r / s)) * s; with LOWP < 2, (r, 1)."""
    if LOWP >= 2:
        s = _pow2_scale(tl.max(tl.abs(r), axis=0))[None, :]  # (1, BD)
        out = _operand(r / s, LOWP)
    else:
        s = 1.0
        out = r
    return out, s


@triton.jit
def _fp16_shared_columns(r_i, r_f, r_z, r_o, LOWP: tl.constexpr):
    """Four (BD, BD) fp32 matrices -> the four divided by s as fp16 `_operand`s, and s (1, BD), the power-of-two
    scale of each column over all four, so that sum_g d_g @ r_g = (sum_g d_g @ (r_g / s)) * s; with LOWP < 2, the
    matrices as they are and 1."""
    if LOWP >= 2:
        amax = tl.maximum(tl.maximum(tl.max(tl.abs(r_i), axis=0), tl.max(tl.abs(r_f), axis=0)),
                          tl.maximum(tl.max(tl.abs(r_z), axis=0), tl.max(tl.abs(r_o), axis=0)))  # fmt: skip
        s = _pow2_scale(amax)[None, :]  # (1, BD)
        r_i, r_f = _operand(r_i / s, LOWP), _operand(r_f / s, LOWP)
        r_z, r_o = _operand(r_z / s, LOWP), _operand(r_o / s, LOWP)
    else:
        s = 1.0
    return r_i, r_f, r_z, r_o, s


@triton.jit
def _fp16_rows_dot(d_i, d_f, d_z, d_o, r_i, r_f, r_z, r_o, LOWP: tl.constexpr):
    """sum_g d_g @ r_g in fp32 with fp16 operands: the four (BB, BD) fp32 d_g share one power-of-two scale per row
    (gate gradients may leave fp16's range), the r_g are fp16 `_operand`s already."""
    amax = tl.maximum(tl.maximum(tl.max(tl.abs(d_i), axis=1), tl.max(tl.abs(d_f), axis=1)),
                      tl.maximum(tl.max(tl.abs(d_z), axis=1), tl.max(tl.abs(d_o), axis=1)))  # fmt: skip
    s = _pow2_scale(amax)[:, None]  # (BB, 1)
    out = _rdot(_operand(d_i / s, LOWP), r_i, LOWP) + _rdot(_operand(d_f / s, LOWP), r_f, LOWP)
    out += _rdot(_operand(d_z / s, LOWP), r_z, LOWP) + _rdot(_operand(d_o / s, LOWP), r_o, LOWP)
    return out * s


@triton.jit
def _load_gate_matrices(r_ptr, off, DH, mask_r):
    """The four (BD, BD) fp32 recurrent matrices of one head at offsets `off` (transposed if `off` is)."""
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
    """h_prev^T @ dg (BD, BD) in fp32, the step's contribution to dR of one gate (fp32 operands: TF32 unless
    LOWP=0)."""
    return _rdot(tl.trans(h_prev), dg, 0 if LOWP == 0 else 1)


@triton.jit
def _logsigmoid(x):
    return tl.minimum(x, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(x)))
