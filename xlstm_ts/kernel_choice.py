"""Pick the sequence kernel for a tensor: the registry name, or 'auto' (Triton on CUDA when available)."""

from __future__ import annotations

import functools
import importlib.util
import warnings
from collections.abc import Callable

import torch

from xlstm_ts.kernels import available_kernels, get_kernel
from xlstm_ts.kernels.mlstm.chunkwise_torch import cpu_chunk_size

_AUTO = {
    # op -> (fast name used on CUDA when registered and triton imports, portable fallback, widest head the fast
    # kernel takes: the limits the kernels check)
    "mlstm": ("mlstm_chunkwise--triton", "mlstm_chunkwise--torch", 512),
    "slstm": ("slstm--triton", "slstm--torch_loop", 128),
    "causal_conv": ("causal_conv--triton", "causal_conv--torch", None),
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
        if head_dim is None or widest is None or head_dim <= widest:
            return fast
        warnings.warn(
            f"kernel='auto': {fast} takes heads up to {widest} wide, this {op} block's are {head_dim}; it runs on "
            f"{portable} instead (slower). Use more heads to keep the Triton kernel.",
            stacklevel=3,
        )
    return portable


_FOUND: dict[tuple[str, str, str, int | None], Callable] = {}
_NAMES: dict[tuple[str, str, str, int | None], str] = {}  # the same keys -> the resolved registry name
_CHUNKS: dict[tuple[str, str, int, int], int] = {}  # (name, device type, S, DH) -> chunk length


def kernel_for(name: str, op: str, device: torch.device, head_dim: int | None = None) -> Callable:
    """The kernel function for `name` on `device`, looked up once per name, op, device type and head width
    (blocks call this on every forward pass). A plain dict, not functools.cache, so that torch.compile reads it
    without a graph break once the first call has filled it.

    Triton kernels come back wrapped in `torch.compiler.disable`: a compiled block runs them as they are (one
    fused kernel each, with their own backward) and compiles the code around them, instead of tracing their
    launches. Torch kernels stay traceable, so compilation fuses their element-wise work; so do Triton kernels
    registered as torch custom ops (marked `compile_traceable`), which a compiled graph calls in place.

    head_dim: the widest head dimension of the calls (see `resolve_kernel_name`); None skips that check."""
    key = (name, op, device.type, head_dim)
    found = _FOUND.get(key)
    if found is None:
        resolved = resolve_kernel_name(name, op, device, head_dim)
        found = get_kernel(resolved)
        if "--triton" in resolved and not getattr(found, "compile_traceable", False):
            found = torch.compiler.disable(found, recursive=True)
        _FOUND[key], _NAMES[key] = found, resolved
    return found


def conv_kernel_name(block_kernel: str) -> str:
    """The causal-conv kernel that goes with a block's sequence kernel: 'auto' stays 'auto' (Triton on CUDA), a
    Triton sequence kernel takes the Triton conv, any other the torch one."""
    if block_kernel == "auto":
        return "auto"
    return "causal_conv--triton" if "--triton" in block_kernel else "causal_conv--torch"


_CONV_QKV: dict[tuple[str, str], object] = {}  # (block kernel, device type) -> triton_conv_qkv module or None


def conv_qkv_for(block_kernel: str, device: torch.device) -> Callable | None:
    """The fused causal conv + q/k/v op (`conv_qkv--triton`) for an mLSTM block whose conv runs
    `causal_conv--triton` on `device`, while that op is switched on (`triton_conv_qkv.ENABLED`); else None (the block
    runs the conv op and its q, k, v matmuls). The module is found once per block kernel and device type and kept
    in a plain dict, as `kernel_for` keeps kernels."""
    key = (block_kernel, device.type)
    if key not in _CONV_QKV:
        conv = resolve_kernel_name(conv_kernel_name(block_kernel), "causal_conv", device)
        fused = conv == "causal_conv--triton"
        _CONV_QKV[key] = importlib.import_module("xlstm_ts.kernels.conv.triton_conv_qkv") if fused else None
    module = _CONV_QKV[key]
    return module.conv_qkv_triton if module is not None and module.ENABLED else None


def mlstm_chunk_size(name: str, device: torch.device, seq_len: int, head_dim: int) -> int:
    """Chunk length for the mLSTM kernel `name` ('auto' or a registry name) on `device` when the model leaves it
    open (`ModelConfig.chunk_size=None`): `cpu_chunk_size` for the torch chunkwise kernel on a CPU, else 64. Kept in
    a plain dict per call shape, as `kernel_for` keeps kernels."""
    key = (name, device.type, seq_len, head_dim)
    chunk = _CHUNKS.get(key)
    if chunk is None:
        kernel_for(name, "mlstm", device, head_dim)
        resolved = _NAMES[(name, "mlstm", device.type, head_dim)]
        cpu_torch = device.type == "cpu" and resolved == "mlstm_chunkwise--torch"
        chunk = _CHUNKS[key] = cpu_chunk_size(seq_len, head_dim) if cpu_torch else 64
    return chunk
