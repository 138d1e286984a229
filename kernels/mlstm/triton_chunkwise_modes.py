"""Dot modes of the chunkwise mLSTM kernels in Triton, by input dtype and pass (`_dot` in
`triton_chunkwise_common.py`: 0 exact fp32, 1 bf16, 2 fp16, 3 TF32, 4 bf16 emulated for the interpreter)."""

from __future__ import annotations

import torch

from .._precision import INTERPRETED, fp32_uses_tf32

_LOWP = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
_TF32 = 3
_BF16_EMULATED = 4  # bf16 operands multiplied in fp32: the interpreter's stand-in for bf16 dots


def _fwd_lowp(dtype: torch.dtype, store_h32: bool) -> int:
    """Dot mode of the forward: TF32 when an fp32 copy of h is kept for the backward, or for fp32 inputs under
    torch's 'high'/'medium' fp32 matmul precision; the input dtype otherwise (exact fp32 for fp32)."""
    if store_h32 or (dtype == torch.float32 and fp32_uses_tf32()):
        return _TF32
    return _LOWP[dtype]


def _bwd_lowp(dtype: torch.dtype) -> int:
    """Dot mode of the backward: exact for fp32 inputs under 'highest' precision, TF32 otherwise."""
    return 0 if dtype == torch.float32 and not fp32_uses_tf32() else _TF32


def _low_operands(mode: int) -> bool:
    """Whether dots of this mode take bf16/fp16 operands (bf16, fp16, and the interpreter's emulation of bf16)."""
    return mode in (_LOWP[torch.bfloat16], _LOWP[torch.float16], _BF16_EMULATED)


def _on_device(mode: int) -> int:
    """The dot mode to launch with: bf16 dots (1) become their fp32 emulation (4) under the Triton interpreter."""
    return _BF16_EMULATED if mode == _LOWP[torch.bfloat16] and INTERPRETED else mode


def _qk_lowp(dtype: torch.dtype, lowp: int) -> int:
    """Dot mode of q k^T: bf16/fp16 inputs multiply in their own dtype (exact products, fp32 sums: the same result
    as TF32 at twice the tensor-core rate); fp32 inputs as the other dots (`lowp`)."""
    return lowp if dtype == torch.float32 else _LOWP[dtype]


def _out_lowp(dtype: torch.dtype, lowp: int) -> int:
    """Dot mode of the backward's dq and dv for bf16 inputs: bf16 operands (the gradients are stored in bf16, and
    neither feeds the cancelling gate-gradient sums, which dk does); `lowp` otherwise (fp16 operands could
    overflow: dh / den has the range of fp32)."""
    return _LOWP[dtype] if dtype == torch.bfloat16 else lowp
