"""A compiled block around a Triton kernel: the kernel runs as it is (torch.compiler.disable), the code around it is
compiled, and forward and gradients match the eager block."""

import copy
import os
import shutil

import pytest
import torch

from xlstm_ts.kernels._testing import err_ratio
from xlstm_ts.mlstm_block import MLSTMBlock
from xlstm_ts.slstm_block import SLSTMBlock

pytest.importorskip("triton")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

NO_CXX = not shutil.which(os.environ.get("CXX", "g++"))


@pytest.mark.skipif(NO_CXX, reason="torch.compile on the CPU needs a C++ compiler")
@pytest.mark.parametrize("make", [
    lambda: MLSTMBlock(16, 2, proj_factor=2.0, qkv_blocksize=4, kernel="mlstm_chunkwise--triton", chunk_size=16),
    lambda: SLSTMBlock(16, 2, kernel="slstm--triton"),
], ids=["mlstm", "slstm"])  # fmt: skip
def test_compiled_block_with_triton_kernel_matches_eager(make):
    torch.manual_seed(0)
    eager = make().to(DEVICE)
    compiled = copy.deepcopy(eager)
    compiled.compile()
    x = torch.randn(2, 20, 16, device=DEVICE)  # 20 steps: not a multiple of the chunk
    upstream = torch.randn(2, 20, 16, device=DEVICE)
    results = []
    for block in (eager, compiled):
        y = block(x)
        (y * upstream).sum().backward()
        results.append((y.detach(), [p.grad.clone() for p in block.parameters()]))
    assert err_ratio(results[0][0], results[1][0]) < 1e-5
    for (name, _), g_eager, g_compiled in zip(eager.named_parameters(), results[0][1], results[1][1]):
        assert err_ratio(g_eager, g_compiled) < 1e-4, name
