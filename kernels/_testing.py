"""Comparison helpers for kernel tests: one tolerance table, the relative RMS error ratio, and input makers.

Every kernel test, CPU or GPU, compares against a reference with `assert_close(name, ref, out, ratio)` and takes
`ratio` from `TOLERANCES`. Widening an entry needs a reason on its line.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Tolerance:
    """Largest accepted error ratio for one kind of comparison."""

    ratio: float
    """Bound on rms(ref - out) / (rms(ref) + 1e-12)."""
    reason: str
    """Why the bound is this size."""


TOLERANCES: dict[str, Tolerance] = {
    "float64": Tolerance(1e-10, "same function, only summation order differs; fp64 rounding is ~1e-15 per op"),
    "float64-grad": Tolerance(1e-9, "backward adds a few more reductions and exp derivatives on top of the forward"),
    "float32": Tolerance(5e-3, "Triton fp32 dots may run in TF32 (10-bit mantissa, ~1e-3 relative); FLA uses 5e-3"),
    "float32-grad": Tolerance(1e-2, "TF32 rounding enters twice (forward recompute and backward dots)"),
    "bfloat16": Tolerance(2e-2, "inputs rounded to 8-bit mantissa (~4e-3 each), accumulated in fp32"),
    "bfloat16-grad": Tolerance(5e-2, "bf16 rounding of both the inputs and the upstream gradient"),
    "float16": Tolerance(1e-2, "inputs rounded to 11-bit mantissa, accumulated in fp32"),
    "float16-grad": Tolerance(3e-2, "fp16 rounding of both the inputs and the upstream gradient"),
    "float32-ieee": Tolerance(1e-5, "Triton kernels with exact fp32 dots (input_precision='ieee'), fp32 rounding only"),
    "float32-ieee-grad": Tolerance(1e-5, "as float32-ieee; measured ~1e-6 for the mLSTM and sLSTM backward"),
    "bfloat16-triton-grad": Tolerance(2e-2, "bf16 dot operands (inputs, weights, dh) with fp32 gates/states/sums"),
    "float16-triton-grad": Tolerance(1e-2, "fp16 inputs and forward dot operands (11-bit mantissa), TF32 backward"),
}


def tolerance(dtype: torch.dtype, grad: bool = False) -> float:
    """The error ratio from `TOLERANCES` for outputs (or gradients, with grad=True) computed in `dtype`."""
    key = str(dtype).removeprefix("torch.") + ("-grad" if grad else "")
    if key not in TOLERANCES:
        raise ValueError(f"No tolerance for {key!r}; expected one of {sorted(TOLERANCES)}. Add a row with a reason.")
    return TOLERANCES[key].ratio


def err_ratio(ref: Tensor, out: Tensor) -> float:
    """Relative RMS error rms(ref - out) / (rms(ref) + 1e-12), computed in float64; nan if either has a NaN."""
    ref64, out64 = ref.detach().double(), out.detach().double()
    rms_diff = (ref64 - out64).pow(2).mean().sqrt()
    rms_ref = ref64.pow(2).mean().sqrt()
    return (rms_diff / (rms_ref + 1e-12)).item()


def rounding_floor(ref: Tensor, dtype: torch.dtype) -> float:
    """Twice the error ratio of `ref` rounded to `dtype`: no kernel that returns `dtype` can be closer than once that.

    A table ratio is relative to rms(ref); where the values are so small that `dtype` holds them as subnormals (fp16
    below 6.1e-5, e.g. h from a gate of i~ ~ -10 and zero states), rounding alone costs more than the ratio, so a
    comparison of such an output takes max(ratio, rounding_floor(ref, out.dtype)). For values in the normal range
    this is 2^-8 (bf16) or 2^-11 (fp16) of rms(ref) at most, below every low-precision ratio of the table."""
    return 2 * err_ratio(ref, ref.detach().to(dtype))


def assert_close(name: str, ref: Tensor, out: Tensor, ratio: float) -> float:
    """Assert that `out` matches `ref` within the relative RMS error `ratio`, and that neither is NaN or inf.

    Args:
        name: what is compared, used in the failure message (e.g. "dq").
        ref: reference tensor.
        out: tensor under test, same shape as ref.
        ratio: the bound, usually from `tolerance`.

    Returns:
        The measured error ratio.
    """
    if ref.shape != out.shape:
        raise AssertionError(f"{name}: shape {tuple(out.shape)} != reference shape {tuple(ref.shape)}")
    for which, x in (("reference", ref), ("output", out)):
        if not torch.isfinite(x).all():
            raise AssertionError(f"{name}: {which} has {int((~torch.isfinite(x)).sum())} non-finite entries")
    measured = err_ratio(ref, out)
    if not measured <= ratio:
        max_abs = (ref.detach().double() - out.detach().double()).abs().max().item()
        raise AssertionError(f"{name}: error ratio {measured:.3e} > {ratio:.1e} (max abs diff {max_abs:.3e})")
    return measured


def make_mlstm_inputs(
    B: int,
    NH: int,
    S: int,
    DQK: int,
    DHV: int,
    *,
    i_mean: float = 0.0,
    f_mean: float = 2.0,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Random mLSTM inputs from the global torch RNG.

    Returns:
        q, k (B, NH, S, DQK), v (B, NH, S, DHV) ~ N(0, 1); i ~ N(i_mean, 1) and f ~ N(f_mean, 1), each (B, NH, S).
    """
    kw = {"dtype": dtype, "device": device}
    q = torch.randn(B, NH, S, DQK, **kw)  # (B, NH, S, DQK)
    k = torch.randn(B, NH, S, DQK, **kw)  # (B, NH, S, DQK)
    v = torch.randn(B, NH, S, DHV, **kw)  # (B, NH, S, DHV)
    i = torch.randn(B, NH, S, **kw) + i_mean  # (B, NH, S)
    f = torch.randn(B, NH, S, **kw) + f_mean  # (B, NH, S)
    return q, k, v, i, f


def make_mlstm_states(
    B: int, NH: int, DQK: int, DHV: int, *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"
) -> tuple[Tensor, Tensor, Tensor]:
    """Random stabilized mLSTM states: C (B, NH, DQK, DHV), n (B, NH, DQK), m (B, NH, 1), all ~ N(0, 1)."""
    kw = {"dtype": dtype, "device": device}
    return torch.randn(B, NH, DQK, DHV, **kw), torch.randn(B, NH, DQK, **kw), torch.randn(B, NH, 1, **kw)


def slstm_stabilizer_margins(wx: Tensor, r: Tensor, b: Tensor, states: tuple[Tensor, ...] | None) -> Tensor:
    """(log f~_t + m_{t-1}) - i~_t of every step, gate unit and row, in float64: the two arguments of the sLSTM
    stabilizer max(log f_t + m_{t-1}, i~_t). Shapes as `slstm--torch` takes them; returns (B, S, NH, DH).

    Where this is within rounding of 0 the gradient of the max is a tie: a kernel whose gate pre-activations differ
    from the reference's by their rounding error may take the other branch, which sends that element's gradient on
    m_t to i~_t instead of log f_t (or back) and moves a few gradient entries by O(1)."""
    B, S, _, NH, DH = wx.shape
    kw = {"dtype": torch.float64, "device": wx.device}
    if states is None:
        h, c, n = (torch.zeros(B, NH, DH, **kw) for _ in range(3))
        m = torch.full((B, NH, DH), float("-inf"), **kw)
    else:
        h, c, n, m = (x.detach().double() for x in states)
    r64, b64 = r.detach().double(), b.detach().double().transpose(0, 1)  # (NH, 4, DH, DH), (4, NH, DH)
    out = []
    for t in range(S):
        gates = wx[:, t].detach().double() + torch.einsum("bhd,hgde->bghe", h, r64) + b64  # (B, 4, NH, DH)
        i_pre, f_pre, z_pre, o_pre = gates.unbind(1)
        a = torch.nn.functional.logsigmoid(f_pre) + m
        out.append(a - i_pre)
        m_new = torch.maximum(a, i_pre)
        i_act, f_act = torch.exp(i_pre - m_new), torch.exp(a - m_new)
        c, n = f_act * c + i_act * torch.tanh(z_pre), f_act * n + i_act
        h, m = torch.sigmoid(o_pre) * c / n, m_new
    return torch.stack(out, dim=1)  # (B, S, NH, DH)


def slstm_tie_free(wx: Tensor, r: Tensor, b: Tensor, states: tuple[Tensor, ...] | None, dtype: torch.dtype,
                   margin: float = 2e-2, step: float = 0.125, rounds: int = 100) -> Tensor:  # fmt: skip
    """wx (fp64, values representable in `dtype`) with the input-gate parts moved by multiples of `step` where the
    stabilizer max is within `margin` of a tie (`slstm_stabilizer_margins`), until no step of the sequence is.

    Low-precision kernels are compared with the fp64 reference on such inputs, so that every branch of the max is
    decided by more than their rounding error and the reference gradient is the one they should reproduce. `step`
    is a power of two, exactly representable next to wx's values in bf16 and fp16 (|wx| < 16)."""
    wx = wx.detach().to(dtype).double().clone()
    for _ in range(rounds):
        gap = slstm_stabilizer_margins(wx, r, b, states)  # (B, S, NH, DH)
        near = gap.abs() < margin
        if not near.any():
            return wx
        # move i~ away from log f + m_{t-1}, to the side it is on; later steps are recomputed in the next round
        wx[:, :, 0] += torch.where(near, torch.where(gap >= 0, -step, step), 0.0)
        wx = wx.to(dtype).double()
    raise RuntimeError(f"slstm_tie_free: ties left after {rounds} rounds; use another seed or a larger step.")
