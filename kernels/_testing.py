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
