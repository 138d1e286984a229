"""Kernel tests use tiny tensors: run them single-threaded, which is faster and stable when the CPU is shared."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
