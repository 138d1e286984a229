"""Chunkwise mLSTM in pure PyTorch: recurrence over chunk-boundary states plus a batched parallel part per chunk.

This is the CPU training path. The only Python loop runs over chunks and does elementwise work; all matmuls are
batched over chunks. Gradients come from autograd, through the normalizer max(|n^T q|, exp(-m)) as well; a sequence
of one chunk from zero states without last states goes to `one_chunk_torch.py`, which writes its backward out.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ._common import (
    MLSTMState,
    advance_state,
    check_sequence_inputs,
    chunk_state_sums,
    compute_dtype,
    initial_states,
    log_decay_matrix_prefix,
    pack_states,
    readout,
)
from .one_chunk_torch import mlstm_one_chunk


def mlstm_chunkwise_torch(
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
    """mLSTM over a sequence in the chunkwise form, O(S * chunk_size) time.

    Any S works: the last chunk is padded with log f = 0 and i~ = -inf, which leaves the state unchanged.
    When S <= chunk_size the whole sequence is one chunk.

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
        chunk_size: time steps per chunk. Default: 64.

    Returns:
        h (B, NH, S, DHV) in the dtype of q; with return_last_states, (h, (C, n, m)) with C (B, NH, DQK, DHV),
        n (B, NH, DQK), m (B, NH, 1) in float32 (float64 for float64 inputs).
    """
    B, NH, S, DQK, DHV = check_sequence_inputs(q, k, v, i, f)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}; 64 is a good default on CPU.")
    dtype = compute_dtype(q.dtype)
    C, n, m = initial_states(c_initial, n_initial, m_initial, (B, NH, DQK, DHV), dtype, q.device)

    L = min(chunk_size, S)
    NC = math.ceil(S / L)
    if NC == 1 and c_initial is None and not return_last_states:  # a patched forecaster's call: written-out backward
        return mlstm_one_chunk(*(x.to(dtype) for x in (q, k, v, i, f)), eps).to(q.dtype)
    pad = NC * L - S
    q_scaled = F.pad(q.to(dtype) * DQK**-0.5, (0, 0, 0, pad)).view(B, NH, NC, L, DQK)  # (B, NH, NC, L, DQK)
    k = F.pad(k.to(dtype), (0, 0, 0, pad)).view(B, NH, NC, L, DQK)  # (B, NH, NC, L, DQK)
    v = F.pad(v.to(dtype), (0, 0, 0, pad)).view(B, NH, NC, L, DHV)  # (B, NH, NC, L, DHV)
    log_f = F.pad(F.logsigmoid(f.to(dtype)), (0, pad), value=0.0).view(B, NH, NC, L)  # (B, NH, NC, L)
    i = F.pad(i.to(dtype), (0, pad), value=float("-inf")).view(B, NH, NC, L)  # (B, NH, NC, L)

    log_decay = log_decay_matrix_prefix(log_f, i)  # (B, NH, NC, L, L)
    log_f_cum = log_f.cumsum(dim=-1)  # (B, NH, NC, L)
    # the last chunk's sums only feed the last states: skip them when those are not returned
    summed = NC if return_last_states else NC - 1
    kv, k_sum, max_log_weight = chunk_state_sums(k[:, :, :summed], v[:, :, :summed],
                                                 log_decay[:, :, :summed, -1, :])  # per chunk, batched

    entering: list[MLSTMState] = []
    for c in range(NC):
        entering.append((C, n, m))
        if c < summed:
            C, n, m = advance_state(C, n, m, log_f_cum[:, :, c, -1], kv[:, :, c], k_sum[:, :, c],
                                    max_log_weight[:, :, c])  # fmt: skip
    m_in = torch.stack([s[2] for s in entering], dim=2)  # (B, NH, NC)
    state_log_weight = log_f_cum + m_in.unsqueeze(-1)  # (B, NH, NC, L)
    if NC == 1 and c_initial is None:  # one chunk from zero states: no state term in the readout
        C_in = n_in = None
    else:
        C_in = torch.stack([s[0] for s in entering], dim=2)  # (B, NH, NC, DQK, DHV)
        n_in = torch.stack([s[1] for s in entering], dim=2)  # (B, NH, NC, DQK)
    h = readout(q_scaled, k, v, log_decay, state_log_weight, C_in, n_in, eps)  # (B, NH, NC, L, DHV)
    h = h.reshape(B, NH, NC * L, DHV)[:, :, :S].to(q.dtype)  # (B, NH, S, DHV)
    if not return_last_states:
        return h
    return h, pack_states(C, n, m)
