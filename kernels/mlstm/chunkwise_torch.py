"""Chunkwise mLSTM in pure PyTorch: recurrence over chunk-boundary states plus a batched parallel part per chunk.

This is the CPU training path. The only Python loop runs over chunks and does elementwise work; all matmuls are
batched over chunks. Gradients come from autograd, through the normalizer max(|n^T q|, exp(-m)) as well; a sequence
of one chunk from zero states without last states goes to `one_chunk_torch.py`, which writes its backward out.
Without gradients on a CPU, large batches run in slices (`_cpu_rows`); `cpu_chunk_size` is the chunk length the
model picks on a CPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .._autograd import needs_grad
from .._ints import next_power_of_2
from ._common import (
    MLSTMState,
    advance_state,
    check_initial_states,
    check_sequence_inputs,
    chunk_state_sums,
    compute_dtype,
    initial_states,
    log_decay_matrix_prefix,
    pack_states,
    readout,
)
from .one_chunk_torch import mlstm_one_chunk

_CPU_SLICE_BYTES = 16 * 2**20
"""Without gradients on a CPU, the batch runs in slices whose float64 (chunks, L, L) log-decay matrices stay under
this size: 7168 rows of (NH, S, DH) = (4, 95, 8), chunks of 8, took 906 ms in one pass and 239 ms in slices (2
threads, results/mlstm_cpu_chunks.md)."""


def cpu_chunk_size(S: int, DH: int) -> int:
    """Chunk length for this kernel on a CPU: chunks of max(8, min(32, DH)) rounded up to a power of two, or one
    chunk (S) when the sequence is at most three of those long.

    The (L, L) element-wise work per step grows with L and the state work per chunk with DH^2, so narrow heads want
    short chunks. `benchmarks/mlstm_cpu_chunks.py` times every chunk length (results/mlstm_cpu_chunks.md): on 2
    threads the pick is within 1.0-1.7x of the fastest in every recorded row (timings on a shared CPU vary by about
    that much); forward+backward at 224 rows, NH = 4: (S, DH) = (95, 8) 25-40 ms against 180-222 ms with chunks of
    64, (336, 32) 861 against 1471. The GPU kernels keep their own."""
    L = max(8, min(32, next_power_of_2(DH)))
    return S if S <= 3 * L else L


def _cpu_rows(NH: int, S: int, L: int) -> int:
    """Rows per slice of a batch run without gradients on a CPU (see `_CPU_SLICE_BYTES`)."""
    per_row = NH * math.ceil(S / L) * L * L * 8  # bytes of one row's float64 (NC, L, L) matrices
    return max(1, _CPU_SLICE_BYTES // per_row)


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
        raise ValueError(
            f"chunk_size must be a positive int, got {chunk_size!r}; cpu_chunk_size(S, DH) gives a good one on CPU."
        )
    states = (c_initial, n_initial, m_initial)
    rows = _cpu_rows(NH, S, min(chunk_size, S)) if q.device.type == "cpu" else B
    if B > rows and not needs_grad(q, k, v, i, f, *states):
        check_initial_states(*states, (B, NH, DQK, DHV))  # shapes checked before the batch is cut
        parts = [
            mlstm_chunkwise_torch(
                *(x[b : b + rows] for x in (q, k, v, i, f)),
                *(None if x is None else x[b : b + rows] for x in states),
                return_last_states,
                eps,
                chunk_size,
            )
            for b in range(0, B, rows)
        ]
        if not return_last_states:
            return torch.cat(parts)
        return torch.cat([h for h, _ in parts]), tuple(torch.cat(x) for x in zip(*(st for _, st in parts)))
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
