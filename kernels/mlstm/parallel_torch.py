"""Parallel (quadratic) mLSTM in pure PyTorch: the whole sequence as one stabilized attention-like matrix."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ._common import (
    MLSTMState,
    advance_state,
    check_sequence_inputs,
    chunk_state_sums,
    compute_dtype,
    initial_states,
    log_decay_matrix,
    pack_states,
    readout,
)


def mlstm_parallel_torch(
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
    """mLSTM over a sequence in the parallel form, O(S^2) time and memory.

    Uses the stabilizer of the recurrence, m_t = max(F_t + m_0, max_{s<=t} (F_t - F_s + i~_s)), so its outputs
    and states equal those of the recurrent and chunkwise forms, also for eps > 0.

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
    C0, n0, m0 = initial_states(c_initial, n_initial, m_initial, (B, NH, DQK, DHV), dtype, q.device)
    q_scaled = q.to(dtype) * DQK**-0.5  # (B, NH, S, DQK)
    k, v = k.to(dtype), v.to(dtype)
    log_f = F.logsigmoid(f.to(dtype))  # (B, NH, S)
    log_decay = log_decay_matrix(log_f, i.to(dtype))  # (B, NH, S, S)
    log_f_cum = log_f.cumsum(dim=-1)  # (B, NH, S)
    h = readout(q_scaled, k, v, log_decay, log_f_cum + m0.unsqueeze(-1), C0, n0, eps)  # (B, NH, S, DHV)
    if not return_last_states:
        return h.to(q.dtype)
    kv, k_sum, max_log_weight = chunk_state_sums(k, v, log_decay[..., -1, :])
    C, n, m = advance_state(C0, n0, m0, log_f_cum[..., -1], kv, k_sum, max_log_weight)
    return h.to(q.dtype), pack_states(C, n, m)
