"""The CPU choices of mlstm_chunkwise--torch: batch slices without gradients, and the chunk length the model picks
when `ModelConfig.chunk_size` is None."""

import pytest
import torch

from xlstm_ts import kernel_choice
from xlstm_ts.config import ModelConfig
from xlstm_ts.kernels import get_kernel
from xlstm_ts.kernels._testing import make_mlstm_inputs, make_mlstm_states
from xlstm_ts.kernels.mlstm import chunkwise_torch
from xlstm_ts.mlstm_block import MLSTMBlock


@pytest.mark.parametrize("states", [False, True], ids=["zero-states", "initial-states"])
@pytest.mark.parametrize("S, chunk", [(23, 8), (7, 64)], ids=["chunks", "one-chunk"])
def test_batch_slices_without_grad_match_one_pass(states, S, chunk, monkeypatch):
    torch.manual_seed(0)
    B, NH, DQK, DHV = 11, 2, 8, 5
    q, k, v, i, f = (x.float() for x in make_mlstm_inputs(B, NH, S, DQK, DHV))
    init = [x.float() for x in make_mlstm_states(B, NH, DQK, DHV)] if states else [None] * 3
    kernel = get_kernel("mlstm_chunkwise--torch")
    with torch.no_grad():
        whole, whole_last = kernel(q, k, v, i, f, *init, return_last_states=True, chunk_size=chunk)
        monkeypatch.setattr(chunkwise_torch, "_cpu_rows", lambda *_: 3)  # 4 slices, the last of 2 rows
        sliced, sliced_last = kernel(q, k, v, i, f, *init, return_last_states=True, chunk_size=chunk)
        sliced_h = kernel(q, k, v, i, f, *init, chunk_size=chunk)
    assert sliced.shape == whole.shape == (B, NH, S, DHV)
    torch.testing.assert_close(sliced, whole, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(sliced_h, whole, rtol=1e-6, atol=1e-6)
    for a, b in zip(sliced_last, whole_last, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_batch_is_not_sliced_when_gradients_flow(monkeypatch):
    calls = []
    original = chunkwise_torch.mlstm_chunkwise_torch
    monkeypatch.setattr(chunkwise_torch, "_cpu_rows", lambda *_: 2)
    counted = lambda *a, **kw: calls.append(1) or original(*a, **kw)  # noqa: E731
    monkeypatch.setattr(chunkwise_torch, "mlstm_chunkwise_torch", counted)
    q, k, v, i, f = (x.float().requires_grad_() for x in make_mlstm_inputs(5, 2, 9, 4, 4))
    original(q, k, v, i, f, chunk_size=4).sum().backward()
    assert not calls and q.grad is not None  # one pass: autograd keeps one graph
    with torch.no_grad():
        original(q, k, v, i, f, chunk_size=4)
    assert len(calls) == 3  # rows 0-1, 2-3, 4


def test_sliced_batch_checks_state_shapes_first(monkeypatch):
    monkeypatch.setattr(chunkwise_torch, "_cpu_rows", lambda *_: 2)
    q, k, v, i, f = (x.float() for x in make_mlstm_inputs(5, 2, 9, 4, 4))
    C, n, m = (x.float() for x in make_mlstm_states(4, 2, 4, 4))  # one row short: the slices alone would not see it
    with torch.no_grad(), pytest.raises(ValueError, match="c_initial"):
        get_kernel("mlstm_chunkwise--torch")(q, k, v, i, f, C, n, m, chunk_size=4)


@pytest.mark.parametrize(
    "S, DH, chunk",
    [(95, 8, 8), (95, 16, 16), (95, 32, 95), (336, 32, 32), (336, 64, 32), (336, 256, 32), (20, 8, 20), (24, 8, 24),
     (25, 8, 8), (1, 128, 1)],
)  # fmt: skip
def test_cpu_chunk_size_rule(S, DH, chunk):
    assert chunkwise_torch.cpu_chunk_size(S, DH) == chunk


def test_model_leaves_the_chunk_to_the_kernel_on_cpu(monkeypatch):
    assert ModelConfig().chunk_size is None
    with pytest.raises(ValueError, match="chunk_size must be >= 1 or None"):
        ModelConfig(chunk_size=0)
    cpu = torch.device("cpu")
    assert kernel_choice.mlstm_chunk_size("auto", cpu, 95, 8) == 8  # the torch chunkwise kernel on a CPU
    assert kernel_choice.mlstm_chunk_size("mlstm_chunkwise--torch", cpu, 95, 32) == 95
    assert kernel_choice.mlstm_chunk_size("mlstm_parallel--torch", cpu, 95, 8) == 64  # other kernels: 64
    assert kernel_choice.mlstm_chunk_size("mlstm_chunkwise--triton", cpu, 95, 8) == 64

    seen = []
    kernel = get_kernel("mlstm_chunkwise--torch")

    def spy(*args, chunk_size):
        seen.append(chunk_size)
        return kernel(*args, chunk_size=chunk_size)

    monkeypatch.setattr("xlstm_ts.mlstm_block.kernel_for", lambda *_: spy)
    x = torch.randn(3, 95, 16)  # inner 32, 4 heads of 8
    MLSTMBlock(16, 4)(x)
    MLSTMBlock(16, 4, chunk_size=64)(x)
    assert seen == [8, 64]
