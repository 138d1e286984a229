"""Pick the sequence kernel for a tensor: the registry name, or 'auto' (Triton on CUDA when available)."""

from __future__ import annotations

import functools
import importlib.util
import warnings
from collections.abc import Callable

import torch

from xlstm_ts.kernels import available_kernels, get_kernel

_AUTO = {
    # op -> (fast name used on CUDA when registered and triton imports, portable fallback, widest head the fast
    # kernel takes: the limits the kernels check)
    "mlstm": ("mlstm_chunkwise--triton", "mlstm_chunkwise--torch", 512),
    "slstm": ("slstm--triton", "slstm--torch_loop", 128),
}


@functools.cache
def _triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def resolve_kernel_name(name: str, op: str, device: torch.device, head_dim: int | None = None) -> str:
    """The registry name that `name` stands for on `device` ('auto' is resolved, other names pass through).

    'auto' takes the Triton kernel on CUDA when triton imports, unless `head_dim` (the widest of the op's head
    dimensions) is beyond what that kernel takes; then the torch kernel, with a warning that says why."""
    if name != "auto":
        return name
    fast, portable, widest = _AUTO[op]
    if device.type == "cuda" and _triton_available() and fast in available_kernels():
        if head_dim is None or head_dim <= widest:
            return fast
        warnings.warn(
            f"kernel='auto': {fast} takes heads up to {widest} wide, this {op} block's are {head_dim}; it runs on "
            f"{portable} instead (slower). Use more heads to keep the Triton kernel.",
            stacklevel=3,
        )
    return portable


_FOUND: dict[tuple[str, str, str, int | None], Callable] = {}


def kernel_for(name: str, op: str, device: torch.device, head_dim: int | None = None) -> Callable:
    """The kernel function for `name` on `device`, looked up once per name, op, device type and head width
    (blocks call this on every forward pass). A plain dict, not functools.cache, so that torch.compile reads it
    without a graph break once the first call has filled it.

    Triton kernels come back wrapped in `torch.compiler.disable`: a compiled block runs them as they are (one
    fused kernel each, with their own backward) and compiles the code around them, instead of tracing their
    launches. Torch kernels stay traceable, so compilation fuses their element-wise work.

    head_dim: the widest head dimension of the calls (see `resolve_kernel_name`); None skips that check."""
    key = (name, op, device.type, head_dim)
    found = _FOUND.get(key)
    if found is None:
        resolved = resolve_kernel_name(name, op, device, head_dim)
        found = get_kernel(resolved)
        if resolved.endswith("--triton"):
            found = torch.compiler.disable(found, recursive=True)
        _FOUND[key] = found
    return found
