"""XLSTMStack.compile_blocks: torch.compile of the whole stack (default) or per block computes the same function and
keeps parameter names."""

import copy
import os
import shutil

import pytest
import torch

from xlstm_ts import stack as stack_module
from xlstm_ts.config import ModelConfig
from xlstm_ts.kernels._testing import err_ratio
from xlstm_ts.stack import XLSTMStack, compile_options

NO_CXX = not shutil.which(os.environ.get("CXX", "g++"))


def _output_and_grads(stack: XLSTMStack, x: torch.Tensor, upstream: torch.Tensor) -> tuple:
    """stack(x) and the parameters' gradients of <stack(x), upstream>."""
    y = stack(x)
    (y * upstream).sum().backward()
    return y.detach(), [p.grad.clone() for p in stack.parameters()]


@pytest.mark.skipif(NO_CXX, reason="torch.compile on the CPU needs a C++ compiler")
@pytest.mark.parametrize("per_block", [False, True], ids=["whole-stack", "per-block"])
def test_compiled_blocks_match_eager_forward_and_backward(per_block, one_thread):
    torch.manual_seed(0)
    cfg = ModelConfig(embed_dim=16, num_heads=2, pattern="ms", qkv_blocksize=4, dropout=0.0)
    eager = XLSTMStack(cfg)
    compiled = copy.deepcopy(eager).compile_blocks(per_block=per_block)
    compiled_parts = [compiled.blocks[0]] if per_block else [compiled]
    assert all(part._compiled_call_impl is not None for part in compiled_parts)
    assert list(compiled.state_dict()) == list(eager.state_dict())  # in-place compile: same names, same checkpoints
    x = torch.randn(3, 6, 16)
    upstream = torch.randn(3, 6, 16)
    outs = [_output_and_grads(stack, x, upstream) for stack in (eager, compiled)]
    torch.testing.assert_close(outs[1][0], outs[0][0], rtol=1e-5, atol=1e-5)
    # fused kernels sum in another order: compare each gradient by its relative RMS error (single elements of
    # cancelling sums differ by ~1e-3 relative)
    for (name, _), g_compiled, g_eager in zip(eager.named_parameters(), outs[1][1], outs[0][1]):
        assert err_ratio(g_eager, g_compiled) < 1e-4, name


@pytest.mark.parametrize(
    "capability, kwargs, expected",
    [
        ((9, 0), {}, {"options": {"triton.enable_pdl": True}}),
        ((10, 0), {"options": {"max_autotune": True}}, {"options": {"max_autotune": True, "triton.enable_pdl": True}}),
        ((8, 0), {}, {}),  # no programmatic dependent launch before Hopper
        ((9, 0), {"mode": "max-autotune"}, {"mode": "max-autotune"}),  # torch.compile takes mode or options
        ((9, 0), {"options": {"triton.enable_pdl": False}}, {"options": {"triton.enable_pdl": False}}),
    ],
)
def test_compile_options_add_pdl_on_hopper_only(monkeypatch, capability, kwargs, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    given = copy.deepcopy(kwargs)
    assert compile_options(torch.device("cuda", 0), kwargs) == expected
    assert kwargs == given  # the caller's dicts are not changed
    assert compile_options(torch.device("cpu"), kwargs) == kwargs


def test_compile_blocks_passes_the_compile_options(monkeypatch):
    seen = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: seen.append(kw))
    monkeypatch.setattr(stack_module, "compile_options", lambda device, kw: {**kw, "options": {"marker": device.type}})
    cfg = ModelConfig(embed_dim=16, num_heads=2, pattern="ms", qkv_blocksize=4, dropout=0.0)
    XLSTMStack(cfg).compile_blocks(dynamic=False)
    assert seen == [{"dynamic": False, "options": {"marker": "cpu"}}]


@pytest.mark.gpu
def test_compiled_stack_on_cuda_matches_eager():
    """The whole stack compiled on a GPU (Triton kernels; programmatic dependent launch on Hopper and later) computes
    the eager stack's function and gradients."""
    torch.manual_seed(0)
    cfg = ModelConfig(embed_dim=32, num_heads=2, pattern="msm", qkv_blocksize=4, dropout=0.0)
    eager = XLSTMStack(cfg).cuda()
    compiled = copy.deepcopy(eager).compile_blocks()
    x = torch.randn(4, 20, 32, device="cuda")
    upstream = torch.randn(4, 20, 32, device="cuda")
    outs = [_output_and_grads(stack, x, upstream) for stack in (eager, compiled)]
    assert err_ratio(outs[0][0], outs[1][0]) < 1e-4
    for (name, _), g_compiled, g_eager in zip(eager.named_parameters(), outs[1][1], outs[0][1]):
        assert err_ratio(g_eager, g_compiled) < 1e-3, name
