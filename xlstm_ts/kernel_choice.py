"""Pick the sequence kernel for a tensor: the registry name, or 'auto' (Triton on CUDA when available)."""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable

import torch

from xlstm_ts.kernels import available_kernels, get_kernel

_AUTO = {
    # op -> (fast name used on CUDA when registered and triton imports, portable fallback)
    "mlstm": ("mlstm_chunkwise--triton", "mlstm_chunkwise--torch"),
    "slstm": ("slstm--triton", "slstm--torch_loop"),
}


@functools.cache
def _triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def resolve_kernel_name(name: str, op: str, device: torch.device) -> str:
    """The registry name that `name` stands for on `device` ('auto' is resolved, other names pass through)."""
    if name != "auto":
        return name
    fast, portable = _AUTO[op]
    if device.type == "cuda" and _triton_available() and fast in available_kernels():
        return fast
    return portable


_FOUND: dict[tuple[str, str, str], Callable] = {}


def kernel_for(name: str, op: str, device: torch.device) -> Callable:
    """The kernel function for `name` on `device`, looked up once per name, op and device type (blocks call this
    on every forward pass). A plain dict, not functools.cache, so that torch.compile reads it without a graph
    break once the first call has filled it.

    Triton kernels come back wrapped in `torch.compiler.disable`: a compiled block runs them as they are (one
    fused kernel each, with their own backward) and compiles the code around them, instead of tracing their
    launches. Torch kernels stay traceable, so compilation fuses their element-wise work."""
    key = (name, op, device.type)
    found = _FOUND.get(key)
    if found is None:
        resolved = resolve_kernel_name(name, op, device)
        found = get_kernel(resolved)
        if resolved.endswith("--triton"):
            found = torch.compiler.disable(found, recursive=True)
        _FOUND[key] = found
    return found
