"""xLSTM sequence kernels, looked up by name.

Names follow ``"<op>_<mode>--<backend>"`` (``mlstm_chunkwise--torch``) or ``"<op>--<backend>"`` (``slstm--torch``).
Every kernel of one op shares one signature, so a Triton kernel drops in for its torch reference by name.
Modules are imported only when a kernel is requested: importing this package imports neither torch nor triton.

Examples:
    >>> from xlstm_ts.kernels import available_kernels, get_kernel
    >>> "mlstm_chunkwise--torch" in available_kernels()
    True
    >>> get_kernel("mlstm_chunkwise--torch").__name__
    'mlstm_chunkwise_torch'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

# name -> "module:function", the module relative to this package; one line per kernel
_REGISTRY: dict[str, str] = {
    "mlstm_parallel--torch": "mlstm.parallel_torch:mlstm_parallel_torch",
    "mlstm_recurrent--torch": "mlstm.recurrent_torch:mlstm_recurrent_torch",
    "mlstm_chunkwise--torch": "mlstm.chunkwise_torch:mlstm_chunkwise_torch",
    "mlstm_step--torch": "mlstm.recurrent_torch:mlstm_step_torch",
    "slstm--torch": "slstm.torch_ref:slstm_torch",
    "slstm--torch_loop": "slstm.torch_loop:slstm_torch_loop",
    "mlstm_chunkwise--triton": "mlstm.triton_chunkwise_op:mlstm_chunkwise_triton",
    "mlstm_step--triton": "mlstm.triton_step:mlstm_step_triton",
    "slstm--triton": "slstm.triton_slstm:slstm_triton",
    "slstm--triton_fp16r": "slstm.triton_slstm:slstm_triton_fp16r",
    "slstm--triton_fp32r": "slstm.triton_slstm:slstm_triton_fp32r",
    "causal_conv--torch": "conv.torch_ref:causal_conv_torch",
    "causal_conv--triton": "conv.triton_conv:causal_conv_triton",
    "conv_qkv--torch": "conv.conv_qkv_torch:conv_qkv_torch",
    "conv_qkv--triton": "conv.triton_conv_qkv:conv_qkv_triton",
}


def available_kernels() -> list[str]:
    """All registered kernel names, sorted.

    Returns:
        The names accepted by `get_kernel`.
    """
    return sorted(_REGISTRY)


def get_kernel(name: str) -> Callable:
    """Look up a kernel function by its registry name, importing its module on first use.

    Args:
        name: registry name such as ``"mlstm_chunkwise--torch"``; see `available_kernels`.

    Returns:
        The kernel function.

    Raises:
        ValueError: if `name` is not registered.
    """
    if name not in _REGISTRY:
        raise ValueError(
            f"Unknown kernel name {name!r}. Expected one of {available_kernels()}; "
            "pass one of these names (call xlstm_ts.kernels.available_kernels() to list them)."
        )
    module_name, function_name = _REGISTRY[name].split(":")
    module = importlib.import_module(f"{__name__}.{module_name}")
    return getattr(module, function_name)


__all__ = ["available_kernels", "get_kernel"]
