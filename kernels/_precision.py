"""How the Triton kernels run their dots on fp32 inputs: PyTorch's fp32 matmul precision setting decides.

`torch.set_float32_matmul_precision("highest")` (PyTorch's default) keeps exact fp32 dots; "high" or "medium" let
fp32 inputs use TF32 tensor cores, as they do for cuBLAS matmuls (Lightning suggests "high" on GPUs with tensor
cores). Gates, states and sums stay fp32 either way.
"""

from __future__ import annotations

import os

import torch

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
"""Whether the Triton kernels run in the interpreter (Triton decides at import; so does this module): its
half-precision dots are wrong, so the kernels launch their fp32 emulation instead."""


def fp32_uses_tf32() -> bool:
    """True when PyTorch's fp32 matmul precision allows TF32 ("high" or "medium")."""
    return torch.get_float32_matmul_precision() != "highest"
