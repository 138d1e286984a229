"""Comparison helpers for the chunkwise mLSTM kernel tests: a step-by-step fp64 recurrence (with the detached
normalizer of mlstm_kernels as an option), input leaves and upstream gradients, one comparison of outputs, last
states and every gradient against a reference, with the tolerances of `_testing.TOLERANCES`, and the whole check
of mlstm_chunkwise--triton against the fp64 torch form for one case (`check_triton`), and of its forward without
gradients against the recurrence (`check_forward`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ._testing import TOLERANCES, assert_close, err_ratio, make_mlstm_inputs, make_mlstm_states, rounding_floor

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
OUT_NAMES = ["h", "C", "n", "m"]
GRAD_NAMES = ["dq", "dk", "dv", "di", "df", "dC0", "dn0", "dm0"]
TOL = {
    torch.float32: (TOLERANCES["float32-ieee"].ratio, TOLERANCES["float32-ieee-grad"].ratio),
    torch.bfloat16: (TOLERANCES["bfloat16"].ratio, TOLERANCES["bfloat16-triton-grad"].ratio),
    torch.float16: (TOLERANCES["float16"].ratio, TOLERANCES["float16-triton-grad"].ratio),
}


def naive_mlstm(q, k, v, i, f, C, n, m, eps=1e-6, detach=False, detach_m=None):
    """Step-by-step recurrence, independent of the kernels; with detach, the denominator and m are constants
    (mlstm_kernels' backward); detach_m (default: detach) chooses for m alone.

    Returns h (B, NH, S, DHV), the last states (C, n, m (B, NH, 1)) and the fraction of rows where |n.q| > exp(-m).
    """
    hs, active = [], []
    m = m.squeeze(-1)
    for t in range(q.shape[2]):
        log_f = F.logsigmoid(f[:, :, t])
        m_new = torch.maximum(log_f + m, i[:, :, t])
        if detach if detach_m is None else detach_m:
            m_new = m_new.detach()
        f_act, i_act = torch.exp(log_f + m - m_new), torch.exp(i[:, :, t] - m_new)
        C = f_act[..., None, None] * C + i_act[..., None, None] * torch.einsum("bhd,bhe->bhde", k[:, :, t], v[:, :, t])
        n = f_act[..., None] * n + i_act[..., None] * k[:, :, t]
        q_t = q[:, :, t] / q.shape[-1] ** 0.5
        qn = torch.einsum("bhd,bhd->bh", q_t, n).abs()
        den = torch.maximum(qn, torch.exp(-m_new)) + eps
        if detach:
            den = den.detach()
        hs.append(torch.einsum("bhd,bhde->bhe", q_t, C) / den[..., None])
        active.append(qn > torch.exp(-m_new))
        m = m_new
    return torch.stack(hs, dim=2), (C, n, m.unsqueeze(-1)), torch.stack(active).double().mean().item()


def products_h(q, k, v, i, f, C, n, m, eps=1e-6):
    """h of the recurrence with every product of q, k, v and C taken by magnitude, (|q^|^T C_abs) / den, over the
    true stabilizer and denominator; C_abs carries |k| |v|^T (from |C0|). Dot products rounded to a dtype of unit
    roundoff u are off by at most a few u times these magnitudes (not times |h|, which cancellation can make far
    smaller: in bf16, single-key rows came out up to 10.8 % off when the heads ran in two column blocks, whose q.k
    shares can cancel, and up to 1.1 % in one; 150 seeds each). Shapes and arguments as `naive_mlstm` (float64);
    returns (B, NH, S, DHV)."""
    hs = []
    m, C_abs = m.squeeze(-1), C.abs()
    for t in range(q.shape[2]):
        log_f = F.logsigmoid(f[:, :, t])
        m_new = torch.maximum(log_f + m, i[:, :, t])
        f_act, i_act = torch.exp(log_f + m - m_new), torch.exp(i[:, :, t] - m_new)
        k_t, v_t = k[:, :, t], v[:, :, t]
        C_abs = f_act[..., None, None] * C_abs + i_act[..., None, None] * torch.einsum("bhd,bhe->bhde", k_t.abs(),
                                                                                       v_t.abs())  # fmt: skip
        n = f_act[..., None] * n + i_act[..., None] * k_t
        q_t = q[:, :, t] / q.shape[-1] ** 0.5
        den = torch.maximum(torch.einsum("bhd,bhd->bh", q_t, n).abs(), torch.exp(-m_new)) + eps
        hs.append(torch.einsum("bhd,bhde->bhe", q_t.abs(), C_abs) / den[..., None])
        m = m_new
    return torch.stack(hs, dim=2)


def mlstm_leaves(B, NH, S, DQK, DHV, i_mean, with_states):
    inputs = make_mlstm_inputs(B, NH, S, DQK, DHV, i_mean=i_mean)
    states = make_mlstm_states(B, NH, DQK, DHV) if with_states else (None, None, None)
    return [x if x is None else x.to(DEVICE).requires_grad_() for x in (*inputs, *states)]


def mlstm_upstream(B, NH, S, DQK, DHV):
    shapes = [(B, NH, S, DHV), (B, NH, DQK, DHV), (B, NH, DQK), (B, NH, 1)]
    return [torch.randn(s, dtype=torch.float64, device=DEVICE) for s in shapes]


def run_mlstm(fn, leaves, upstream, dtype, **kw):
    """Outputs (h, C, n, m) and gradients of sum(out * upstream) w.r.t. every leaf (None where unused)."""
    # q, k, v, i, f in dtype; initial states stay fp32 (fp64 for the reference), as a caller keeps them
    state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    cast = [None if x is None else x.to(dtype if idx < 5 else state_dtype) for idx, x in enumerate(leaves)]
    h, states = fn(*cast, return_last_states=True, **kw)
    outs = [h, *states]
    loss = sum((o.double() * u).sum() for o, u in zip(outs, upstream, strict=True))
    used = [x for x in leaves if x is not None]
    grads = iter(torch.autograd.grad(loss, used))
    return outs, [None if x is None else next(grads) for x in leaves]


def dm0_terms(leaves, grads):
    """Size (rms over batch and head) of <C0, dC0> + <n0, dn0>, the sums of DQK * DHV products that make up dm0.

    They largely cancel against the gradient routed through m (e.g. -<dC_L, C_L> when the state just decays), so
    fp32 rounding of the states is relative to these terms, not to their small sum; 0 without initial states.
    """
    if leaves[5] is None:
        return 0.0
    C0, n0, dC0, dn0 = (x.detach().double() for x in (leaves[5], leaves[6], grads[5], grads[6]))
    terms = (C0 * dC0).sum((-2, -1)).abs() + (n0 * dn0).sum(-1).abs()  # (B, NH)
    return terms.pow(2).mean().sqrt().item()


def stabilizer_tol(m_ref, tol: float) -> float:
    """The error ratio of a stabilizer m compared on a scale of at least 1: m is a logarithm (an error d is a relative
    error d of e^m), and an m near 0 is a difference of O(1) gate terms whose rounding does not shrink with it."""
    return tol / min(1.0, max(m_ref.double().pow(2).mean().sqrt().item(), 1e-12))


def compare_mlstm(ref, out, tol_out, tol_grad, dm0_terms=0.0, floors=None):
    """Outputs (None: not returned) and gradients (None: no such input) of `run_mlstm` against the reference's, each
    within its tolerance, or within twice the error of the reference rounded to the returned dtype where that is
    larger (`rounding_floor`: subnormal fp16 values); m (a logarithm) on a scale of at least 1 (a last m near 0 is a
    difference of O(1) gate terms). `floors`: a smallest ratio per name (e.g. a few times the
    error of the fp32 recurrence on an ill-conditioned case). Returns the error ratios."""
    floors = floors or {}
    errors = {}
    for name, a, b in zip(OUT_NAMES, ref[0], out[0], strict=True):
        if a is not None or b is not None:
            tol = max(tol_out, rounding_floor(a, b.dtype), floors.get(name, 0.0))
            errors[name] = assert_close(name, a, b, stabilizer_tol(a, tol) if name == "m" else tol)
    if all(a is None for a in ref[1]):  # a call without gradients
        return errors
    scale = max(a.double().pow(2).mean().sqrt().item() for a in ref[1] if a is not None)
    for name, a, b in zip(GRAD_NAMES, ref[1], out[1], strict=True):
        if a is None:
            continue
        tol = max(tol_grad, floors.get(name, 0.0))
        rms_ref = a.double().pow(2).mean().sqrt().item()
        if name == "dm0" and dm0_terms > rms_ref:
            rms_err = (a.double() - b.double()).pow(2).mean().sqrt().item()
            assert rms_err <= tol * dm0_terms, f"dm0: rms error {rms_err:.2e} > {tol:.0e} * {dm0_terms:.2e}"
            errors[name] = rms_err / dm0_terms
            continue
        if rms_ref < 1e-6 * scale:
            # a (near) zero reference, e.g. df at S=1 from a zero state: compare against the other gradients' size
            assert (a.double() - b.double()).abs().max().item() <= tol * scale, name
            continue
        errors[name] = assert_close(name, a, b, max(tol, rounding_floor(a, b.dtype)))
    return errors


class TritonCheck(NamedTuple):
    leaves: list  # q, k, v, i, f, C0, n0, m0 (fp64 leaves, None for absent states)
    upstream: list  # gradients of h, C, n, m
    ref: tuple  # (outputs, gradients) of the fp64 torch form
    out: tuple  # (outputs, gradients) of mlstm_chunkwise--triton
    errors: dict  # error ratios per output and gradient


# no fp32 form beats fp32 rounding times the case's condition: an fp32 result may be this many times further from
# fp64 than the step-by-step recurrence evaluated in fp32 on the same case (`recurrence_floors`). Ill-conditioned
# cases exist among ordinary ones: at (1, 2, 37, 80, 40), i~ ~ N(-10, 1) from an initial state, the recurrence's
# df is 3.4e-6 off (against ~1e-7 typically) and the chunk-parallel kernels' 1.0e-5, at the fp32 bound
YARDSTICK = 4.0


def recurrence_floors(leaves, upstream, ref, **kw) -> dict[str, float]:
    """`compare_mlstm` floors of an fp32 result: YARDSTICK times the error of mlstm_recurrent--torch in fp32 against
    the fp64 reference `ref` (`run_mlstm`'s), per output and gradient; kw: the call's keywords."""
    from . import get_kernel

    plain = run_mlstm(get_kernel("mlstm_recurrent--torch"), leaves, upstream, torch.float32, **kw)
    return {name: YARDSTICK * err_ratio(a, b)
            for name, a, b in zip(OUT_NAMES + GRAD_NAMES, ref[0] + ref[1], plain[0] + plain[1], strict=True)
            if a is not None and b is not None and a.abs().max() > 0}  # fmt: skip


def check_triton(B, NH, S, DQK, DHV, i_mean, with_states, dtype=torch.float32, chunk_size=16, rounded=False):
    """mlstm_chunkwise--triton in `dtype` against mlstm_chunkwise--torch in fp64 on the same leaves, compared with
    TOL[dtype] (dm0 against the size of its terms; fp32 also within `recurrence_floors`). `rounded`: q, k, v, i, f
    rounded to `dtype` first, so the reference sees the kernel's inputs. Seed the generator before calling."""
    from . import get_kernel

    leaves = mlstm_leaves(B, NH, S, DQK, DHV, i_mean, with_states)
    if rounded:
        leaves = [x.detach().to(dtype).double().requires_grad_() if i < 5 else x for i, x in enumerate(leaves)]
    upstream = mlstm_upstream(B, NH, S, DQK, DHV)
    ref = run_mlstm(get_kernel("mlstm_chunkwise--torch"), leaves, upstream, torch.float64, chunk_size=chunk_size)
    out = run_mlstm(get_kernel("mlstm_chunkwise--triton"), leaves, upstream, dtype, chunk_size=chunk_size)
    floors = recurrence_floors(leaves, upstream, ref) if dtype == torch.float32 else None
    errors = compare_mlstm(ref, out, *TOL[dtype], dm0_terms=dm0_terms(leaves, ref[1]), floors=floors)
    return TritonCheck(leaves, upstream, ref, out, errors)


def check_forward(B, NH, S, DQK, DHV, i_mean, with_states, dtype, chunk_size=16):
    """mlstm_chunkwise--triton without gradients in `dtype` (h and the last states) against `naive_mlstm` in fp64 on
    the same rounded inputs (seed 21), with TOL[dtype]'s output tolerance (fp32's for the last states). Returns the
    `LaunchCounter` of the call."""
    from . import get_kernel
    from ._launches import LaunchCounter

    torch.manual_seed(21)
    leaves = [x if x is None else x.detach() for x in mlstm_leaves(B, NH, S, DQK, DHV, i_mean, with_states)]
    q, k, v = (x.to(dtype).double() for x in leaves[:3])  # the reference sees the rounded inputs
    kw = {"dtype": torch.float64, "device": DEVICE}
    zeros = (torch.zeros(B, NH, DQK, DHV, **kw), torch.zeros(B, NH, DQK, **kw), torch.zeros(B, NH, 1, **kw))
    states64 = [z if x is None else x for x, z in zip(leaves[5:], zeros, strict=True)]
    h_ref, last_ref, _ = naive_mlstm(q, k, v, *leaves[3:5], *states64)
    cast = [x.to(dtype) for x in leaves[:3]] + [x.float() for x in leaves[3:5]]
    states = [None if x is None else x.float() for x in leaves[5:]]
    with torch.no_grad(), LaunchCounter() as launches:
        h, last = get_kernel("mlstm_chunkwise--triton")(*cast, *states, return_last_states=True,
                                                        chunk_size=chunk_size)  # fmt: skip
    assert h.dtype == dtype and h.shape == (B, NH, S, DHV)
    tol = TOL[dtype][0]
    assert_close("h", h_ref, h, tol)
    for name, ref, out in zip("Cnm", last_ref, last, strict=True):
        assert_close(name, ref, out, TOLERANCES["float32-ieee"].ratio if dtype == torch.float32 else tol)
    return launches
