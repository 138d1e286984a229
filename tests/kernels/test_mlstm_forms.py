"""The parallel, recurrent and chunkwise torch mLSTM forms compute one function (fp64), including states."""

import pytest
import torch

from xlstm_ts.kernels import get_kernel
from xlstm_ts.kernels._testing import assert_close, make_mlstm_inputs, make_mlstm_states, tolerance

FORMS = ["mlstm_parallel--torch", "mlstm_recurrent--torch", "mlstm_chunkwise--torch"]
TOL64 = tolerance(torch.float64)
B, NH, DQK, DHV, CHUNK = 2, 3, 5, 7, 16


def _run_all(inputs, eps, states=None, chunk_size=CHUNK):
    """Each form's (h, (C, n, m)), keyed by registry name."""
    kw = {} if states is None else dict(zip(("c_initial", "n_initial", "m_initial"), states, strict=True))
    return {
        name: get_kernel(name)(*inputs, **kw, return_last_states=True, eps=eps, chunk_size=chunk_size) for name in FORMS
    }


def _assert_all_agree(results):
    h_ref, states_ref = results["mlstm_recurrent--torch"]
    for name, (h, states) in results.items():
        assert h.shape == h_ref.shape and h.dtype == torch.float64
        assert_close(f"{name} h", h_ref, h, TOL64)
        for label, ref, out in zip("Cnm", states_ref, states, strict=True):
            assert out.shape == ref.shape and out.dtype == torch.float64
            assert_close(f"{name} {label}", ref, out, TOL64)


@pytest.mark.parametrize("eps", [0.0, 1e-6], ids=["eps0", "eps1e-6"])
@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
@pytest.mark.parametrize("S", [1, 5, 37, 100], ids=lambda s: f"B{B}-H{NH}-S{s}-DK{DQK}-DV{DHV}")
def test_forms_agree_fp64(S, i_mean, eps):
    torch.manual_seed(42)
    inputs = make_mlstm_inputs(B, NH, S, DQK, DHV, i_mean=i_mean)
    _assert_all_agree(_run_all(inputs, eps))


@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
@pytest.mark.parametrize("S", [1, 37], ids=lambda s: f"B{B}-H{NH}-S{s}-DK{DQK}-DV{DHV}")
def test_forms_agree_with_initial_states(S, i_mean):
    torch.manual_seed(42)
    inputs = make_mlstm_inputs(B, NH, S, DQK, DHV, i_mean=i_mean)
    states = make_mlstm_states(B, NH, DQK, DHV)
    results = _run_all(inputs, 1e-6, states)
    _assert_all_agree(results)
    h_zero_state = get_kernel("mlstm_chunkwise--torch")(*inputs, chunk_size=CHUNK)
    assert (results["mlstm_chunkwise--torch"][0] - h_zero_state).abs().max() > 1e-3, "initial state had no effect"


def test_single_chunk_equals_many_chunks():
    torch.manual_seed(42)
    inputs = make_mlstm_inputs(B, NH, 50, DQK, DHV)
    chunkwise = get_kernel("mlstm_chunkwise--torch")
    h_one, states_one = chunkwise(*inputs, return_last_states=True, chunk_size=64)
    for chunk_size in (1, 7, 50):
        h, states = chunkwise(*inputs, return_last_states=True, chunk_size=chunk_size)
        assert_close(f"h chunk {chunk_size}", h_one, h, TOL64)
        for label, ref, out in zip("Cnm", states_one, states, strict=True):
            assert_close(f"{label} chunk {chunk_size}", ref, out, TOL64)


@pytest.mark.parametrize("name", FORMS)
def test_state_passing_two_halves_equals_one_call(name):
    torch.manual_seed(42)
    kernel = get_kernel(name)
    S, split = 37, 20
    inputs = make_mlstm_inputs(B, NH, S, DQK, DHV)
    states0 = make_mlstm_states(B, NH, DQK, DHV)
    kw = {"return_last_states": True, "chunk_size": CHUNK}
    h_full, states_full = kernel(*inputs, *states0, **kw)
    first = [x[:, :, :split] for x in inputs]
    second = [x[:, :, split:] for x in inputs]
    h_a, states_a = kernel(*first, *states0, **kw)
    h_b, states_b = kernel(*second, *states_a, **kw)
    assert_close("h", h_full, torch.cat([h_a, h_b], dim=2), TOL64)
    for label, ref, out in zip("Cnm", states_full, states_b, strict=True):
        assert_close(label, ref, out, TOL64)


@pytest.mark.parametrize("gate_shape", ["B-NH", "B-NH-1"])
def test_step_loop_equals_recurrent(gate_shape):
    torch.manual_seed(42)
    S = 9
    q, k, v, i, f = make_mlstm_inputs(B, NH, S, DQK, DHV)
    C, n, m = make_mlstm_states(B, NH, DQK, DHV)
    h_seq, states_seq = get_kernel("mlstm_recurrent--torch")(q, k, v, i, f, C, n, m, return_last_states=True)
    step = get_kernel("mlstm_step--torch")
    gate = (lambda x: x) if gate_shape == "B-NH" else (lambda x: x.unsqueeze(-1))
    m = m.squeeze(-1)  # the step also accepts m as (B, NH)
    hs = []
    for t in range(S):
        h_t, (C, n, m) = step(q[:, :, t], k[:, :, t], v[:, :, t], gate(i[:, :, t]), gate(f[:, :, t]), C, n, m)
        assert h_t.shape == (B, NH, DHV) and m.shape == (B, NH, 1)
        hs.append(h_t)
    assert_close("h", h_seq, torch.stack(hs, dim=2), TOL64)
    for label, ref, out in zip("Cnm", states_seq, (C, n, m), strict=True):
        assert_close(label, ref, out, TOL64)


@pytest.mark.parametrize("name", FORMS)
def test_m_initial_accepts_b_nh(name):
    torch.manual_seed(42)
    inputs = make_mlstm_inputs(1, 2, 6, 3, 4)
    C, n, m = make_mlstm_states(1, 2, 3, 4)
    kernel = get_kernel(name)
    assert_close("h", kernel(*inputs, C, n, m, chunk_size=4), kernel(*inputs, C, n, m.squeeze(-1), chunk_size=4), 0.0)


@pytest.mark.parametrize("name", FORMS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64], ids=["bf16", "fp32", "fp64"])
def test_output_and_state_dtypes(name, dtype):
    torch.manual_seed(42)
    inputs = make_mlstm_inputs(1, 2, 6, 3, 4, dtype=dtype)
    h, (C, n, m) = get_kernel(name)(*inputs, return_last_states=True, chunk_size=4)
    state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    assert h.dtype == dtype and h.shape == (1, 2, 6, 4)
    assert (C.dtype, n.dtype, m.dtype) == (state_dtype,) * 3
    assert (C.shape, n.shape, m.shape) == ((1, 2, 3, 4), (1, 2, 3), (1, 2, 1))


@pytest.mark.parametrize("name", FORMS)
def test_bad_inputs_raise_value_error(name):
    torch.manual_seed(42)
    kernel = get_kernel(name)
    q, k, v, i, f = make_mlstm_inputs(1, 2, 6, 3, 4)
    C, n, m = make_mlstm_states(1, 2, 3, 4)
    with pytest.raises(ValueError, match="q must have shape"):
        kernel(q[0], k, v, i, f)
    with pytest.raises(ValueError, match="k must have the shape of q"):
        kernel(q, k[..., :2], v, i, f)
    with pytest.raises(ValueError, match="v must have shape"):
        kernel(q, k, v[:, :, :3], i, f)
    with pytest.raises(ValueError, match="gate pre-activation i"):
        kernel(q, k, v, i.unsqueeze(-1), f)
    with pytest.raises(ValueError, match="given together"):
        kernel(q, k, v, i, f, c_initial=C)
    with pytest.raises(ValueError, match="c_initial must have shape"):
        kernel(q, k, v, i, f, C.transpose(-1, -2), n, m)
    with pytest.raises(ValueError, match="m_initial must have shape"):
        kernel(q, k, v, i, f, C, n, m.expand(1, 2, 3))


def test_chunkwise_rejects_bad_chunk_size():
    torch.manual_seed(42)
    inputs = make_mlstm_inputs(1, 1, 4, 2, 2)
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        get_kernel("mlstm_chunkwise--torch")(*inputs, chunk_size=0)
