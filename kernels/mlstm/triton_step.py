"""One recurrent mLSTM step in Triton (decoding path): host wrapper and the public `mlstm_step_triton`.

Same function and signature as mlstm_step--torch. Forward only: no autograd (decoding runs under no_grad).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._fast_launch import fast
from .._ints import cdiv, next_power_of_2
from ._common import MLSTMState, compute_dtype, initial_states, pack_states
from .recurrent_torch import _gate_to_bnh
from .triton_step_kernels import _mlstm_step_fwd_kernel_tl


def mlstm_step_triton(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    i: Tensor,
    f: Tensor,
    c: Tensor,
    n: Tensor,
    m: Tensor,
    eps: float = 1e-6,
) -> tuple[Tensor, MLSTMState]:
    """One recurrent mLSTM step from the stabilized state (c, n, m), in Triton. Not differentiable.

    Args:
        q: (B, NH, DQK) query, float32, bfloat16 or float16; DQK <= 256.
        k: (B, NH, DQK) key.
        v: (B, NH, DHV) value.
        i: (B, NH) or (B, NH, 1) input-gate pre-activation.
        f: (B, NH) or (B, NH, 1) forget-gate pre-activation.
        c: (B, NH, DQK, DHV) stabilized C state.
        n: (B, NH, DQK) stabilized n state.
        m: (B, NH, 1) or (B, NH) stabilizer.
        eps: added to the denominator max(|n^T q|, exp(-m)). Default: 1e-6.

    Returns:
        (h, (c, n, m)): h (B, NH, DHV) in the dtype of q; c (B, NH, DQK, DHV), n (B, NH, DQK), m (B, NH, 1) in
        float32.
    """
    if q.ndim != 3:
        raise ValueError(
            f"q must have shape (B, NH, DQK) for one step, got {tuple(q.shape)}; "
            "use mlstm_chunkwise--triton for a (B, NH, S, DQK) sequence."
        )
    if q.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"mlstm_step--triton takes float32, bfloat16 or float16 q, got {q.dtype}; cast the inputs.")
    B, NH, DQK = q.shape
    if k.shape != q.shape:
        raise ValueError(f"k must have the shape of q {tuple(q.shape)}, got {tuple(k.shape)}.")
    if v.ndim != 3 or v.shape[:2] != (B, NH):
        raise ValueError(f"v must have shape (B, NH, DHV) = ({B}, {NH}, DHV), got {tuple(v.shape)}.")
    DHV = v.shape[-1]
    if DQK > 256 or DHV > 256:
        raise ValueError(f"mlstm_step--triton supports head dimensions up to 256, got DQK={DQK}, DHV={DHV}.")
    dtype = compute_dtype(q.dtype)
    C0, n0, m0 = initial_states(c, n, m, (B, NH, DQK, DHV), dtype, q.device)
    C0, n0, m0 = (x.float().contiguous() for x in (C0, n0, m0))
    i = _gate_to_bnh(i, "i", B, NH).contiguous()
    f = _gate_to_bnh(f, "f", B, NH).contiguous()
    BK = max(next_power_of_2(DQK), 16)
    BV = min(max(next_power_of_2(DHV), 16), 64)
    h = torch.empty(B, NH, DHV, dtype=q.dtype, device=q.device)  # (B, NH, DHV)
    C_out = torch.empty_like(C0)  # (B, NH, DQK, DHV)
    n_out = torch.empty_like(n0)  # (B, NH, DQK)
    m_out = torch.empty_like(m0)  # (B, NH)
    fast(_mlstm_step_fwd_kernel_tl)[(cdiv(DHV, BV), B * NH)](
        q.contiguous(), k.contiguous(), v.contiguous(), i, f, C0, n0, m0, h, C_out, n_out, m_out,
        DQK, DHV, DQK**-0.5, eps, BK=BK, BV=BV, num_warps=4 if BK * BV <= 64 * 64 else 8,
    )  # fmt: skip
    return h, pack_states(C_out, n_out, m_out)
