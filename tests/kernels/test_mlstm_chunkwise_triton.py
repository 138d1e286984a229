"""mlstm_chunkwise--triton against the fp64 torch reference: outputs, last states and true gradients (through the
normalizer), the detached-normalizer gradient, both branches of max(|n.q|, exp(-m)), and GPU shapes/dtypes.

Without CUDA the kernels run in the Triton interpreter (set in conftest.py), on tiny shapes in float32.
"""

import pytest
import torch
import torch.nn.functional as F

from xlstm_ts.kernels import get_kernel
from xlstm_ts.kernels._testing import TOLERANCES, assert_close, err_ratio, make_mlstm_inputs, make_mlstm_states

pytest.importorskip("triton")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
OUT_NAMES = ["h", "C", "n", "m"]
GRAD_NAMES = ["dq", "dk", "dv", "di", "df", "dC0", "dn0", "dm0"]
TOL = {
    torch.float32: (TOLERANCES["float32-ieee"].ratio, TOLERANCES["float32-ieee-grad"].ratio),
    torch.bfloat16: (TOLERANCES["bfloat16"].ratio, TOLERANCES["bfloat16-triton-grad"].ratio),
}


def _naive_mlstm(q, k, v, i, f, C, n, m, eps=1e-6, detach=False):
    """Step-by-step recurrence; with detach, the denominator and m are constants (mlstm_kernels' backward).

    Returns h (B, NH, S, DHV), the last states (C, n, m (B, NH, 1)) and the fraction of rows where |n.q| > exp(-m).
    """
    hs, active = [], []
    m = m.squeeze(-1)
    for t in range(q.shape[2]):
        log_f = F.logsigmoid(f[:, :, t])
        m_new = torch.maximum(log_f + m, i[:, :, t])
        if detach:
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


def _leaves(B, NH, S, DQK, DHV, i_mean, with_states):
    inputs = make_mlstm_inputs(B, NH, S, DQK, DHV, i_mean=i_mean)
    states = make_mlstm_states(B, NH, DQK, DHV) if with_states else (None, None, None)
    return [x if x is None else x.to(DEVICE).requires_grad_() for x in (*inputs, *states)]


def _upstream(B, NH, S, DQK, DHV):
    shapes = [(B, NH, S, DHV), (B, NH, DQK, DHV), (B, NH, DQK), (B, NH, 1)]
    return [torch.randn(s, dtype=torch.float64, device=DEVICE) for s in shapes]


def _run(fn, leaves, upstream, dtype, **kw):
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


def _dm0_terms(leaves, grads):
    """Size (rms over batch and head) of <C0, dC0> + <n0, dn0>, the sums of DQK * DHV products that make up dm0.

    They largely cancel against the gradient routed through m (e.g. -<dC_L, C_L> when the state just decays), so
    fp32 rounding of the states is relative to these terms, not to their small sum; 0 without initial states.
    """
    if leaves[5] is None:
        return 0.0
    C0, n0, dC0, dn0 = (x.detach().double() for x in (leaves[5], leaves[6], grads[5], grads[6]))
    terms = (C0 * dC0).sum((-2, -1)).abs() + (n0 * dn0).sum(-1).abs()  # (B, NH)
    return terms.pow(2).mean().sqrt().item()


def _compare(ref, out, tol_out, tol_grad, dm0_terms=0.0):
    errors = {}
    for name, a, b in zip(OUT_NAMES, ref[0], out[0], strict=True):
        errors[name] = assert_close(name, a, b, tol_out)
    scale = max(a.double().pow(2).mean().sqrt().item() for a in ref[1] if a is not None)
    for name, a, b in zip(GRAD_NAMES, ref[1], out[1], strict=True):
        if a is None:
            continue
        rms_ref = a.double().pow(2).mean().sqrt().item()
        if name == "dm0" and dm0_terms > rms_ref:
            rms_err = (a.double() - b.double()).pow(2).mean().sqrt().item()
            assert rms_err <= tol_grad * dm0_terms, f"dm0: rms error {rms_err:.2e} > {tol_grad:.0e} * {dm0_terms:.2e}"
            errors[name] = rms_err / dm0_terms
            continue
        if rms_ref < 1e-6 * scale:
            # a (near) zero reference, e.g. df at S=1 from a zero state: compare against the other gradients' size
            assert (a.double() - b.double()).abs().max().item() <= tol_grad * scale, name
            continue
        errors[name] = assert_close(name, a, b, tol_grad)
    return errors


@pytest.mark.parametrize("with_states", [False, True], ids=["zero-state", "initial-state"])
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
@pytest.mark.parametrize(
    "B,NH,S,DQK,DHV",
    [(1, 2, 1, 16, 24), (1, 2, 19, 16, 24), (2, 1, 40, 20, 80), (1, 1, 19, 256, 40)],
    ids=lambda x: str(x),
)
def test_chunkwise_triton_matches_fp64_reference(B, NH, S, DQK, DHV, i_mean, with_states, nan_poison):
    torch.manual_seed(42)
    leaves = _leaves(B, NH, S, DQK, DHV, i_mean, with_states)
    upstream = _upstream(B, NH, S, DQK, DHV)
    ref = _run(get_kernel("mlstm_chunkwise--torch"), leaves, upstream, torch.float64, chunk_size=16)
    out = _run(get_kernel("mlstm_chunkwise--triton"), leaves, upstream, torch.float32, chunk_size=16)
    assert out[0][0].dtype == torch.float32
    _compare(ref, out, *TOL[torch.float32], dm0_terms=_dm0_terms(leaves, ref[1]))

    states = leaves[5:] if with_states else [torch.zeros_like(u, dtype=torch.float64) for u in upstream[1:]]
    with torch.no_grad():
        *_, active = _naive_mlstm(*leaves[:5], *states)
    if S > 1 and i_mean == 0.0:
        assert active > 0.5, f"|n.q| branch active in only {active:.0%} of rows"
    if S > 1 and i_mean == -10.0 and DQK <= 64:  # a random 256-wide initial n keeps |n.q| large for a while
        assert active < 0.05, f"exp(-m) branch expected nearly everywhere, |n.q| branch active in {active:.0%}"


def test_chunkwise_triton_first_step_on_either_branch(nan_poison):
    """i~_0 = 3 and i~ ~ -10 later: every later step takes the forget branch of m_t = max(log f_t + m_{t-1}, i~_t),
    so the stabilizer's gradient from the last states flows back to step 0. There m0 = -5 (head 0) makes step 0
    take the input branch (the gradient goes to i~_0, none to m0); m0 = +5 (head 1) the forget branch (on to m0)."""
    torch.manual_seed(42)
    B, NH, S, DQK, DHV = 1, 2, 19, 16, 24
    leaves = _leaves(B, NH, S, DQK, DHV, -10.0, with_states=True)
    with torch.no_grad():
        leaves[3][..., 0] = 3.0
        leaves[7].copy_(torch.tensor([-5.0, 5.0]).view(B, NH, 1))
    upstream = _upstream(B, NH, S, DQK, DHV)
    ref = _run(get_kernel("mlstm_chunkwise--torch"), leaves, upstream, torch.float64, chunk_size=16)
    out = _run(get_kernel("mlstm_chunkwise--triton"), leaves, upstream, torch.float32, chunk_size=16)
    _compare(ref, out, *TOL[torch.float32], dm0_terms=_dm0_terms(leaves, ref[1]))


@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
def test_chunkwise_triton_detach_normalizer(i_mean, nan_poison):
    torch.manual_seed(42)
    B, NH, S, DQK, DHV = 1, 2, 19, 16, 24
    leaves = _leaves(B, NH, S, DQK, DHV, i_mean, with_states=True)
    upstream = _upstream(B, NH, S, DQK, DHV)

    def naive(*args, detach, **kw):
        h, states, _ = _naive_mlstm(*args, detach=detach)
        return h, states

    ref = _run(lambda *a, **kw: naive(*a, detach=True), leaves, upstream, torch.float64)
    out = _run(get_kernel("mlstm_chunkwise--triton"), leaves, upstream, torch.float32, detach_normalizer=True)
    _compare(ref, out, *TOL[torch.float32])
    true = _run(lambda *a, **kw: naive(*a, detach=False), leaves, upstream, torch.float64)
    if i_mean == 0.0:  # the detached gradient must differ where the |n.q| branch is active
        assert err_ratio(true[1][0], out[1][0]) > 0.1


def test_chunkwise_triton_state_passing(nan_poison):
    torch.manual_seed(42)
    q, k, v, i, f = (x.float().to(DEVICE) for x in make_mlstm_inputs(1, 2, 35, 16, 16))
    kernel = get_kernel("mlstm_chunkwise--triton")
    h_all, states_all = kernel(q, k, v, i, f, return_last_states=True, chunk_size=16)
    h1, states = kernel(q[:, :, :20], k[:, :, :20], v[:, :, :20], i[:, :, :20], f[:, :, :20], return_last_states=True)
    h2, states2 = kernel(q[:, :, 20:], k[:, :, 20:], v[:, :, 20:], i[:, :, 20:], f[:, :, 20:], *states,
                         return_last_states=True)  # fmt: skip
    assert_close("h", h_all, torch.cat([h1, h2], dim=2), TOLERANCES["float32-ieee"].ratio)
    for name, a, b in zip("Cnm", states_all, states2, strict=True):
        assert_close(name, a, b, TOLERANCES["float32-ieee"].ratio)


def test_chunkwise_triton_input_errors():
    q, k, v, i, f = make_mlstm_inputs(1, 1, 4, 16, 16)
    kernel = get_kernel("mlstm_chunkwise--triton")
    with pytest.raises(ValueError, match="float32, bfloat16 or float16"):
        kernel(q, k, v, i, f)
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        kernel(q.float(), k.float(), v.float(), i.float(), f.float(), chunk_size=0)
    with pytest.raises(ValueError, match="i must be a floating-point tensor"):
        kernel(q.float(), k.float(), v.float(), i.long(), f.float())
    with pytest.raises(ValueError, match="head dimensions up to 256"):
        kernel(*(x.float() for x in make_mlstm_inputs(1, 1, 2, 300, 16)))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("S", [1, 63, 100, 257])
@pytest.mark.parametrize("DQK,DHV", [(64, 64), (48, 96), (128, 128), (256, 256)], ids=lambda x: str(x))
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
def test_chunkwise_triton_gpu(S, DQK, DHV, dtype, i_mean):
    torch.manual_seed(42)
    B, NH = 2, 3
    leaves = _leaves(B, NH, S, DQK, DHV, i_mean, with_states=True)
    # bf16: the reference sees the same rounded inputs; states and gates stay fp32 / fp64
    leaves = [x.detach().to(dtype).double().requires_grad_() if i < 5 else x for i, x in enumerate(leaves)]
    upstream = _upstream(B, NH, S, DQK, DHV)
    ref = _run(get_kernel("mlstm_chunkwise--torch"), leaves, upstream, torch.float64, chunk_size=64)
    out = _run(get_kernel("mlstm_chunkwise--triton"), leaves, upstream, dtype, chunk_size=64)
    errors = _compare(ref, out, *TOL[dtype], dm0_terms=_dm0_terms(leaves, ref[1]))
    print(f"mlstm_chunkwise S={S} DQK={DQK} DHV={DHV} {dtype} i_mean={i_mean}: " +
          " ".join(f"{k}={v:.1e}" for k, v in errors.items()))  # fmt: skip


def test_triton_kernels_are_registered():
    from xlstm_ts.kernels import available_kernels

    assert {"mlstm_chunkwise--triton", "mlstm_step--triton", "slstm--triton"} <= set(available_kernels())


@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
@pytest.mark.parametrize("B,NH,S,DQK,DHV", [(1, 2, 19, 16, 24), (2, 1, 40, 20, 80)], ids=lambda x: str(x))
def test_chunkwise_triton_bf16_small(B, NH, S, DQK, DHV, i_mean, nan_poison):
    """bf16 inputs with gradients: q k^T, dq and dv in bf16 dots, the weighted and state dots in TF32, against the
    fp64 reference on the same rounded inputs (one chunk and several); and the all-bf16 dots of a forward without
    gradients. Under the interpreter the bf16 dots run as their fp32 emulation."""
    torch.manual_seed(3)
    leaves = _leaves(B, NH, S, DQK, DHV, i_mean, with_states=True)
    leaves = [x.detach().to(torch.bfloat16).double().requires_grad_() if i < 5 else x for i, x in enumerate(leaves)]
    upstream = _upstream(B, NH, S, DQK, DHV)
    ref = _run(get_kernel("mlstm_chunkwise--torch"), leaves, upstream, torch.float64, chunk_size=16)
    out = _run(get_kernel("mlstm_chunkwise--triton"), leaves, upstream, torch.bfloat16, chunk_size=16)
    _compare(ref, out, *TOL[torch.bfloat16], dm0_terms=_dm0_terms(leaves, ref[1]))
    with torch.no_grad():
        inputs = [x.to(torch.bfloat16) if i < 5 else x.float() for i, x in enumerate(leaves)]
        h, states = get_kernel("mlstm_chunkwise--triton")(*inputs, return_last_states=True, chunk_size=16)
    for name, a, b in zip(OUT_NAMES, ref[0], [h, *states], strict=True):
        assert_close(name, a, b, TOL[torch.bfloat16][0])
