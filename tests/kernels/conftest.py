"""Kernel tests use tiny tensors: run them single-threaded, which is faster and stable when the CPU is shared.

Without CUDA, Triton kernels run in the Triton interpreter: TRITON_INTERPRET must be set before any kernel module is
imported, so it is set here, when pytest loads this file. `nan_poison` makes torch.empty/empty_like return NaN-filled
floating tensors, so that an output element a kernel forgets to write fails the comparison.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def nan_poison(monkeypatch):
    """Fill every floating tensor from torch.empty / torch.empty_like with NaN while the test runs."""
    empty, empty_like = torch.empty, torch.empty_like

    def _poison(x):
        if x.is_floating_point():
            x.fill_(float("nan"))
        return x

    monkeypatch.setattr(torch, "empty", lambda *a, **kw: _poison(empty(*a, **kw)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **kw: _poison(empty_like(*a, **kw)))
    yield


@pytest.fixture
def parallel_forward(monkeypatch):
    """Calls without gradients take the chunk-parallel forward (`triton_chunkwise_parallel.PARALLEL_FORWARD`)."""
    from xlstm_ts.kernels.mlstm import triton_chunkwise_parallel

    monkeypatch.setattr(triton_chunkwise_parallel, "PARALLEL_FORWARD", True)
