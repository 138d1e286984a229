"""Fixtures shared by the tests: loading a benchmark script as a module, single-threaded torch."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load_benchmark(name: str):
    """`benchmarks/<name>.py` as a module (registered, since dataclasses look their module up while it executes).
    The folder goes on sys.path, as when a script runs from it, so its helper modules (provenance, ...) import."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.append(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def load_benchmark():
    """A function: benchmark script name (e.g. "ltsf") -> the script as a module."""
    return _load_benchmark


@pytest.fixture
def one_thread():
    """Tiny networks run fastest on one thread (no thread start-up per op on a busy machine); restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
