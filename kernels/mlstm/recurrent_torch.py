"""Recurrent mLSTM in pure PyTorch: one stabilized step, and a sequence built from a loop over that step.

This is the definition the parallel and chunkwise forms are tested against, and the decoding path
(one step per generated time step).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._common import MLSTMState, check_sequence_inputs, compute_dtype, initial_states, pack_states


def _step(
    q: Tensor, k: Tensor, v: Tensor, i: Tensor, log_f: Tensor, C: Tensor, n: Tensor, m: Tensor, eps: float
) -> tuple[Tensor, MLSTMState]:
    """One stabilized step in the compute dtype.

    Args:
        q: (B, NH, DQK) query, already scaled by 1/sqrt(DQK). k: (B, NH, DQK). v: (B, NH, DHV).
        i: (B, NH) input-gate pre-activation. log_f: (B, NH) log forget gate.
        C: (B, NH, DQK, DHV). n: (B, NH, DQK). m: (B, NH).
        eps: added to the denominator.

    Returns:
        h (B, NH, DHV) and the new (C, n, m) with m (B, NH).
    """
    m_new = torch.maximum(log_f + m, i)  # (B, NH)
    f_act = torch.exp(log_f + m - m_new)  # (B, NH)
    i_act = torch.exp(i - m_new)  # (B, NH)
    C = f_act[..., None, None] * C + i_act[..., None, None] * (k.unsqueeze(-1) * v.unsqueeze(-2))  # (B, NH, DQK, DHV)
    n = f_act.unsqueeze(-1) * n + i_act.unsqueeze(-1) * k  # (B, NH, DQK)
    numerator = (q.unsqueeze(-2) @ C).squeeze(-2)  # (B, NH, DHV)
    qn = (q * n).sum(dim=-1, keepdim=True)  # (B, NH, 1)
    denominator = torch.maximum(qn.abs(), torch.exp(-m_new).unsqueeze(-1)) + eps  # (B, NH, 1)
    return numerator / denominator, (C, n, m_new)


def _gate_to_bnh(gate: Tensor, name: str, B: int, NH: int) -> Tensor:
    """Accept a per-step gate of shape (B, NH) or (B, NH, 1) and return it as (B, NH)."""
    if gate.shape not in ((B, NH), (B, NH, 1)):
        raise ValueError(f"{name} must have shape (B, NH) = {(B, NH)} or (B, NH, 1), got {tuple(gate.shape)}.")
    return gate.reshape(B, NH)  # (B, NH)


def mlstm_step_torch(
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
    """One recurrent mLSTM step from the stabilized state (c, n, m).

    Args:
        q: (B, NH, DQK) query.
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
        float32 (float64 for float64 inputs).
    """
    if q.ndim != 3:
        raise ValueError(
            f"q must have shape (B, NH, DQK) for one step, got {tuple(q.shape)}; "
            "use mlstm_recurrent--torch for a (B, NH, S, DQK) sequence."
        )
    B, NH, DQK = q.shape
    if k.shape != q.shape:
        raise ValueError(f"k must have the shape of q {tuple(q.shape)}, got {tuple(k.shape)}.")
    if v.ndim != 3 or v.shape[:2] != (B, NH):
        raise ValueError(f"v must have shape (B, NH, DHV) = ({B}, {NH}, DHV), got {tuple(v.shape)}.")
    dtype = compute_dtype(q.dtype)
    i = _gate_to_bnh(i, "i", B, NH).to(dtype)
    log_f = F.logsigmoid(_gate_to_bnh(f, "f", B, NH).to(dtype))  # (B, NH)
    C, n, m = initial_states(c, n, m, (B, NH, DQK, v.shape[-1]), dtype, q.device)
    q_scaled = q.to(dtype) * DQK**-0.5  # (B, NH, DQK)
    h, (C, n, m) = _step(q_scaled, k.to(dtype), v.to(dtype), i, log_f, C, n, m, eps)
    return h.to(q.dtype), pack_states(C, n, m)


def mlstm_recurrent_torch(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    i: Tensor,
    f: Tensor,
    c_initial: Tensor | None = None,
    n_initial: Tensor | None = None,
    m_initial: Tensor | None = None,
    return_last_states: bool = False,
    eps: float = 1e-6,
    chunk_size: int = 64,
) -> Tensor | tuple[Tensor, MLSTMState]:
    """mLSTM over a sequence, one step at a time (a Python loop over S).

    Args:
        q: (B, NH, S, DQK) queries.
        k: (B, NH, S, DQK) keys.
        v: (B, NH, S, DHV) values.
        i: (B, NH, S) input-gate pre-activations.
        f: (B, NH, S) forget-gate pre-activations.
        c_initial: (B, NH, DQK, DHV) initial stabilized C, or None for zeros. Default: None.
        n_initial: (B, NH, DQK) initial stabilized n, or None for zeros. Default: None.
        m_initial: (B, NH, 1) or (B, NH) initial stabilizer, or None for zeros. Default: None.
        return_last_states: also return the states after the last step. Default: False.
        eps: added to the denominator max(|n^T q|, exp(-m)). Default: 1e-6.
        chunk_size: ignored; accepted so that all mLSTM kernels share one signature. Default: 64.

    Returns:
        h (B, NH, S, DHV) in the dtype of q; with return_last_states, (h, (C, n, m)) with C (B, NH, DQK, DHV),
        n (B, NH, DQK), m (B, NH, 1) in float32 (float64 for float64 inputs).
    """
    B, NH, S, DQK, DHV = check_sequence_inputs(q, k, v, i, f)
    dtype = compute_dtype(q.dtype)
    C, n, m = initial_states(c_initial, n_initial, m_initial, (B, NH, DQK, DHV), dtype, q.device)
    q_scaled = q.to(dtype) * DQK**-0.5  # (B, NH, S, DQK)
    k, v, i = k.to(dtype), v.to(dtype), i.to(dtype)
    log_f = F.logsigmoid(f.to(dtype))  # (B, NH, S)
    hs = []
    for t in range(S):
        h_t, (C, n, m) = _step(q_scaled[:, :, t], k[:, :, t], v[:, :, t], i[:, :, t], log_f[:, :, t], C, n, m, eps)
        hs.append(h_t)
    h = torch.stack(hs, dim=2).to(q.dtype)  # (B, NH, S, DHV)
    if not return_last_states:
        return h
    return h, pack_states(C, n, m)
