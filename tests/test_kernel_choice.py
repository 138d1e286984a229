"""kernel='auto': Triton on CUDA for the head widths its kernels take, the torch kernels otherwise."""

import pytest
import torch

from xlstm_ts.kernel_choice import _AUTO, kernel_for, resolve_kernel_name
from xlstm_ts.kernels import get_kernel
from xlstm_ts.kernels.mlstm import triton_chunkwise
from xlstm_ts.kernels.slstm import triton_slstm

CUDA = torch.device("cuda")  # only resolved here, nothing runs on it


@pytest.mark.parametrize("op", ["mlstm", "slstm"])
def test_auto_picks_triton_on_cuda_up_to_the_widest_head(op, recwarn):
    fast, portable, widest = _AUTO[op]
    assert resolve_kernel_name("auto", op, CUDA, widest) == fast
    assert resolve_kernel_name("auto", op, CUDA) == fast
    assert resolve_kernel_name("auto", op, torch.device("cpu"), 16) == portable
    assert not recwarn.list


@pytest.mark.parametrize("op", ["mlstm", "slstm"])
def test_auto_falls_back_to_torch_for_wider_heads_and_says_why(op):
    fast, portable, widest = _AUTO[op]
    with pytest.warns(UserWarning, match=f"{fast} takes heads up to {widest} wide, this {op} block's are"):
        assert resolve_kernel_name("auto", op, CUDA, 2 * widest) == portable
    assert resolve_kernel_name(fast, op, CUDA, 2 * widest) == fast  # a named kernel is the caller's choice


def test_widest_heads_are_the_kernels_own_limits():
    widest = _AUTO["mlstm"][2]
    assert widest == triton_chunkwise.MAX_HEAD_DIM
    x = torch.zeros(1, 1, 4, widest + 1)
    gates = torch.zeros(1, 1, 4)
    with pytest.raises(ValueError, match=f"heads up to {widest} wide"):
        get_kernel("mlstm_chunkwise--triton")(x, x, x[..., :16], gates, gates)
    widest = _AUTO["slstm"][2]
    triton_slstm._launch_config(16, widest)
    with pytest.raises(ValueError, match=f"DH <= {widest}"):
        triton_slstm._launch_config(16, widest + 1)


def test_kernel_for_looks_up_per_head_width():
    with pytest.warns(UserWarning):
        wide = kernel_for("auto", "mlstm", CUDA, 1024)
    assert wide is get_kernel("mlstm_chunkwise--torch")
    narrow = kernel_for("auto", "mlstm", CUDA, 64)
    assert narrow is not wide and narrow is kernel_for("auto", "mlstm", CUDA, 64)


def test_fused_conv_qkv_only_for_the_triton_conv_and_while_switched_on(monkeypatch):
    from xlstm_ts.kernel_choice import conv_qkv_for
    from xlstm_ts.kernels.conv import triton_conv_qkv

    cpu = torch.device("cpu")
    monkeypatch.setattr(triton_conv_qkv, "ENABLED", True)
    assert conv_qkv_for("auto", cpu) is None  # 'auto' runs the torch conv on a CPU
    assert conv_qkv_for("mlstm_chunkwise--torch", cpu) is None
    assert conv_qkv_for("mlstm_chunkwise--triton", cpu) is triton_conv_qkv.conv_qkv_triton
    monkeypatch.setattr(triton_conv_qkv, "ENABLED", False)
    assert conv_qkv_for("mlstm_chunkwise--triton", cpu) is None
