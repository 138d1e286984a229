"""mlstm_step--triton against mlstm_step--torch (fp64), and a sequence of steps against the chunkwise kernel."""

import pytest
import torch

from xlstm_ts.kernels import get_kernel
from xlstm_ts.kernels._testing import TOLERANCES, assert_close, make_mlstm_inputs, make_mlstm_states

pytest.importorskip("triton")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
@pytest.mark.parametrize("DQK,DHV", [(16, 24), (20, 80)], ids=lambda x: str(x))
def test_step_triton_matches_torch(DQK, DHV, i_mean, nan_poison):
    torch.manual_seed(42)
    q, k, v, i, f = (x[:, :, 0].to(DEVICE) for x in make_mlstm_inputs(2, 3, 1, DQK, DHV, i_mean=i_mean))
    C, n, m = (x.to(DEVICE) for x in make_mlstm_states(2, 3, DQK, DHV))
    h_ref, states_ref = get_kernel("mlstm_step--torch")(q, k, v, i, f, C, n, m)
    h, states = get_kernel("mlstm_step--triton")(*(x.float() for x in (q, k, v, i, f, C, n, m)))
    assert h.dtype == torch.float32 and states[2].shape == (2, 3, 1)
    tol = TOLERANCES["float32-ieee"].ratio
    assert_close("h", h_ref, h, tol)
    for name, a, b in zip("Cnm", states_ref, states, strict=True):
        assert_close(name, a, b, tol)


def test_step_triton_loop_matches_chunkwise(nan_poison):
    torch.manual_seed(42)
    q, k, v, i, f = (x.float().to(DEVICE) for x in make_mlstm_inputs(1, 2, 5, 16, 16))
    step = get_kernel("mlstm_step--triton")
    h_seq, (C, n, m) = get_kernel("mlstm_chunkwise--triton")(q, k, v, i, f, return_last_states=True)
    state = (None, None, None)
    hs = []
    for t in range(5):
        h_t, state = step(q[:, :, t], k[:, :, t], v[:, :, t], i[:, :, t], f[:, :, t], *state)
        hs.append(h_t)
    tol = TOLERANCES["float32-ieee"].ratio
    assert_close("h", h_seq, torch.stack(hs, dim=2), tol)
    for name, a, b in zip("Cnm", (C, n, m), state, strict=True):
        assert_close(name, a, b, tol)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_step_triton_gpu(dtype):
    torch.manual_seed(42)
    q, k, v, i, f = (x[:, :, 0].cuda() for x in make_mlstm_inputs(8, 4, 1, 256, 256))
    C, n, m = (x.cuda() for x in make_mlstm_states(8, 4, 256, 256))
    q, k, v = (x.to(dtype).double() for x in (q, k, v))
    h_ref, _ = get_kernel("mlstm_step--torch")(q, k, v, i, f, C, n, m)
    h, _ = get_kernel("mlstm_step--triton")(q.to(dtype), k.to(dtype), v.to(dtype), i, f, C.float(), n.float(), m)
    ratio = TOLERANCES["float32-ieee"].ratio if dtype == torch.float32 else TOLERANCES["bfloat16"].ratio
    assert_close("h", h_ref, h, ratio)
