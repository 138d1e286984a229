"""fp32 inputs: the Triton kernels run exact fp32 dots under torch's default 'highest' fp32 matmul precision and
TF32 dots under 'high'/'medium', as cuBLAS matmuls do; bf16/fp16 inputs are unaffected."""

import pytest
import torch

from xlstm_ts.kernels import get_kernel
from xlstm_ts.kernels._testing import TOLERANCES, assert_close, err_ratio, make_mlstm_inputs

pytest.importorskip("triton")

from xlstm_ts.kernels.mlstm import triton_chunkwise  # noqa: E402
from xlstm_ts.kernels.slstm import triton_slstm  # noqa: E402

TF32, EXACT = 3, 0


@pytest.fixture
def precision():
    before = torch.get_float32_matmul_precision()
    yield torch.set_float32_matmul_precision
    torch.set_float32_matmul_precision(before)


@pytest.mark.parametrize("setting, tf32", [("highest", False), ("high", True), ("medium", True)])
def test_dot_modes_follow_float32_matmul_precision(precision, setting, tf32):
    precision(setting)
    assert triton_chunkwise._fwd_lowp(torch.float32, store_h32=False) == (TF32 if tf32 else EXACT)
    assert triton_chunkwise._bwd_lowp(torch.float32) == (TF32 if tf32 else EXACT)
    assert triton_slstm._lowp(torch.float32) == (1 if tf32 else 0)
    # low-precision inputs: bf16 dots forward (TF32 when an fp32 h is kept), TF32 backward, whatever the setting
    assert triton_chunkwise._fwd_lowp(torch.bfloat16, store_h32=False) == 1
    assert triton_chunkwise._fwd_lowp(torch.bfloat16, store_h32=True) == TF32
    assert triton_chunkwise._bwd_lowp(torch.bfloat16) == TF32
    assert triton_slstm._lowp(torch.bfloat16) == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="TF32 exists on GPUs only")
def test_tf32_mlstm_forward_within_float32_tolerance(precision):
    q, k, v, i, f = (x.cuda() for x in make_mlstm_inputs(4, 2, 257, 64, 48, i_mean=0.0))
    kernel = get_kernel("mlstm_chunkwise--triton")
    ref = get_kernel("mlstm_chunkwise--torch")(q, k, v, i, f)  # float64
    args = [x.float() for x in (q, k, v, i, f)]
    precision("highest")
    exact = kernel(*args)
    precision("high")
    fast = kernel(*args)
    assert_close("h (tf32)", ref, fast, TOLERANCES["float32"].ratio)
    assert err_ratio(ref, exact) < err_ratio(ref, fast)  # the setting took effect: TF32 rounds more
