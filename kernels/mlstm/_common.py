"""Pieces shared by the pure-PyTorch mLSTM forms: input checks, state setup, log-decay matrix, state update, readout.

The parallel and chunkwise forms are the same computation at different granularity: the parallel form is one chunk
covering the whole sequence. Both call `log_decay_matrix`, `readout`, `chunk_state_sums` and `advance_state` below,
so they share one stabilizer m_t with the recurrent step (see README.md in this folder).
"""

from __future__ import annotations

import torch
from torch import Tensor

MLSTMState = tuple[Tensor, Tensor, Tensor]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype gates and states are computed in: float64 for float64 inputs, float32 otherwise."""
    return torch.promote_types(dtype, torch.float32)


def check_sequence_inputs(q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor) -> tuple[int, int, int, int, int]:
    """Validate the shapes of a sequence call and return (B, NH, S, DQK, DHV).

    Args:
        q: (B, NH, S, DQK). k: (B, NH, S, DQK). v: (B, NH, S, DHV). i, f: (B, NH, S).
    """
    if q.ndim != 4:
        raise ValueError(
            f"q must have shape (B, NH, S, DQK) with 4 dimensions, got shape {tuple(q.shape)}; "
            "move the heads to dim 1, e.g. q.view(B, S, NH, DQK).transpose(1, 2)."
        )
    B, NH, S, DQK = q.shape
    if S == 0:
        raise ValueError("q has sequence length S=0; pass at least one time step.")
    if k.shape != q.shape:
        raise ValueError(f"k must have the shape of q {tuple(q.shape)}, got {tuple(k.shape)}; check the k projection.")
    if v.ndim != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"v must have shape (B, NH, S, DHV) = ({B}, {NH}, {S}, DHV) to match q, got {tuple(v.shape)}; "
            "only the last dimension of v may differ from q."
        )
    for name, gate in (("i", i), ("f", f)):
        if gate.shape != q.shape[:3]:
            raise ValueError(
                f"gate pre-activation {name} must have shape (B, NH, S) = {tuple(q.shape[:3])}, "
                f"got {tuple(gate.shape)}; squeeze a trailing singleton dimension if there is one."
            )
    return B, NH, S, DQK, v.shape[-1]


def check_initial_states(
    c_initial: Tensor | None, n_initial: Tensor | None, m_initial: Tensor | None, shape: tuple[int, int, int, int]
) -> bool:
    """Check the shapes of the optional initial states; True if all three are given, False if none is.

    Args:
        c_initial: (B, NH, DQK, DHV) or None.
        n_initial: (B, NH, DQK) or None.
        m_initial: (B, NH, 1) or (B, NH), or None.
        shape: (B, NH, DQK, DHV).
    """
    B, NH, DQK, DHV = shape
    given = [x is not None for x in (c_initial, n_initial, m_initial)]
    if not any(given):
        return False
    if not all(given):
        raise ValueError(
            "c_initial, n_initial and m_initial must be given together, got "
            f"c_initial={'set' if given[0] else None}, n_initial={'set' if given[1] else None}, "
            f"m_initial={'set' if given[2] else None}; pass all three states returned by a previous call, or none."
        )
    if c_initial.shape != (B, NH, DQK, DHV):
        raise ValueError(
            f"c_initial must have shape (B, NH, DQK, DHV) = {(B, NH, DQK, DHV)}, got {tuple(c_initial.shape)}."
        )
    if n_initial.shape != (B, NH, DQK):
        raise ValueError(f"n_initial must have shape (B, NH, DQK) = {(B, NH, DQK)}, got {tuple(n_initial.shape)}.")
    if m_initial.shape not in ((B, NH, 1), (B, NH)):
        raise ValueError(
            f"m_initial must have shape (B, NH, 1) = {(B, NH, 1)} or (B, NH), got {tuple(m_initial.shape)}."
        )
    return True


def initial_states(
    c_initial: Tensor | None,
    n_initial: Tensor | None,
    m_initial: Tensor | None,
    shape: tuple[int, int, int, int],
    dtype: torch.dtype,
    device: torch.device,
) -> MLSTMState:
    """Check the optional initial states and return them in `dtype`; zeros when none are given.

    Args:
        c_initial: (B, NH, DQK, DHV) or None.
        n_initial: (B, NH, DQK) or None.
        m_initial: (B, NH, 1) or (B, NH), or None.
        shape: (B, NH, DQK, DHV).
        dtype: compute dtype of the states.
        device: device of the inputs.

    Returns:
        C0 (B, NH, DQK, DHV), n0 (B, NH, DQK), m0 (B, NH).
    """
    B, NH, DQK, DHV = shape
    if not check_initial_states(c_initial, n_initial, m_initial, shape):
        C0 = torch.zeros(B, NH, DQK, DHV, dtype=dtype, device=device)  # (B, NH, DQK, DHV)
        n0 = torch.zeros(B, NH, DQK, dtype=dtype, device=device)  # (B, NH, DQK)
        m0 = torch.zeros(B, NH, dtype=dtype, device=device)  # (B, NH)
        return C0, n0, m0
    m0 = m_initial.reshape(B, NH).to(dtype)  # (B, NH)
    return c_initial.to(dtype), n_initial.to(dtype), m0


def pack_states(C: Tensor, n: Tensor, m: Tensor) -> MLSTMState:
    """Return states in the public layout: C (B, NH, DQK, DHV), n (B, NH, DQK), m (B, NH) -> (B, NH, 1)."""
    return C, n, m.unsqueeze(-1)


def log_decay_matrix(log_f: Tensor, i: Tensor) -> Tensor:
    """Log weight of key s in the output at row t: sum of log f over (s, t] plus i~_s; -inf above the diagonal.

    The sum is a masked cumsum of log f, not a difference of prefix sums, so it has no cancellation error.

    Args:
        log_f: (..., L) log forget gates. i: (..., L) input-gate pre-activations (-inf marks padding).

    Returns:
        (..., L, L) log-decay matrix, row t and column s.
    """
    L = log_f.shape[-1]
    strictly_lower = torch.ones(L, L, dtype=torch.bool, device=log_f.device).tril(-1)  # (L, L)
    lower = torch.ones(L, L, dtype=torch.bool, device=log_f.device).tril()  # (L, L)
    # entry [r, s] = log f_r for r > s; the cumsum over r then sums log f over (s, t]
    gated = torch.where(strictly_lower, log_f.unsqueeze(-1), 0.0)  # (..., L, L)
    forget_sum = gated.cumsum(dim=-2)  # (..., L, L)
    log_decay = forget_sum + i.unsqueeze(-2)  # (..., L, L)
    return torch.where(lower, log_decay, float("-inf"))  # (..., L, L)


def prefix_log_decay(log_f: Tensor, i: Tensor) -> tuple[Tensor, Tensor]:
    """`log_decay_matrix` from float64 prefix sums of log f, rounded once to its dtype (no cancellation error).

    Returns the (..., L, L) matrix and the (..., L) prefix sums (float64), sum of log f over [0, t]."""
    L = log_f.shape[-1]
    lower = torch.ones(L, L, dtype=torch.bool, device=log_f.device).tril()  # (L, L)
    prefix = log_f.double().cumsum(dim=-1)  # (..., L)
    # [t, s] = prefix_t - prefix_s = sum of log f over (s, t]
    forget_sum = (prefix.unsqueeze(-1) - prefix.unsqueeze(-2)).to(log_f.dtype)  # (..., L, L)
    return torch.where(lower, forget_sum + i.unsqueeze(-2), float("-inf")), prefix  # (..., L, L), (..., L)


def prefix_log_decay_grads(grad: Tensor, d_prefix: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Gradients (d log f, d i~) of `prefix_log_decay` from the gradient of its matrix (zero above the diagonal)
    and an optional direct gradient on the prefix sums: two reductions and a reverse cumsum."""
    d_i = grad.sum(dim=-2)  # (..., L): i~_s enters every entry of column s
    d_sum = grad.sum(dim=-1) - d_i  # (..., L): prefix_t enters row t with +, column t with -
    if d_prefix is not None:
        d_sum = d_sum + d_prefix
    d_log_f = d_sum.flip(-1).cumsum(dim=-1).flip(-1)  # (..., L): log f_r is in every prefix_t with t >= r
    return d_log_f, d_i


class _PrefixLogDecay(torch.autograd.Function):
    """`prefix_log_decay` as an autograd function with its backward written out."""

    @staticmethod
    def forward(ctx, log_f: Tensor, i: Tensor) -> Tensor:
        return prefix_log_decay(log_f, i)[0]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:
        return prefix_log_decay_grads(torch.tril(grad))  # entries above the diagonal are constants


def log_decay_matrix_prefix(log_f: Tensor, i: Tensor) -> Tensor:
    """`log_decay_matrix` with fewer (L, L) operations: the sums of log f are differences of float64 prefix sums
    (rounded once to the compute dtype, so no cancellation error reaches it), and the backward is written out. The
    chunkwise form uses this; the parallel form keeps `log_decay_matrix` with autograd, as an independent check.

    Args:
        log_f: (..., L) log forget gates. i: (..., L) input-gate pre-activations (-inf marks padding).

    Returns:
        (..., L, L) log-decay matrix, row t and column s.
    """
    return _PrefixLogDecay.apply(log_f, i)


def readout(
    q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor, state_log_weight: Tensor, C: Tensor | None, n: Tensor | None,
    eps: float,
) -> Tensor:
    """Outputs of one chunk from its entering state (C, n) and its keys, with the shared stabilizer m_t.

    Args:
        q: (..., L, DQK) queries, already scaled by 1/sqrt(DQK).
        k: (..., L, DQK) keys.
        v: (..., L, DHV) values.
        log_decay: (..., L, L) from `log_decay_matrix`.
        state_log_weight: (..., L) log weight of the entering state in row t: sum of log f up to t plus its m.
        C: (..., DQK, DHV) entering state, or None when it is zero (then n is ignored).
        n: (..., DQK) entering normalizer state.
        eps: added to the denominator.

    Returns:
        h (..., L, DHV).
    """
    m = torch.maximum(state_log_weight, log_decay.amax(dim=-1))  # (..., L)
    scores = torch.exp(log_decay - m.unsqueeze(-1)) * (q @ k.transpose(-1, -2))  # (..., L, L)
    numerator = scores @ v  # (..., L, DHV)
    qn = scores.sum(dim=-1, keepdim=True)  # (..., L, 1)
    if C is not None:  # None: the entering state is zero (its log weight still enters m)
        state_weight = torch.exp(state_log_weight - m).unsqueeze(-1)  # (..., L, 1)
        numerator = numerator + state_weight * (q @ C)  # (..., L, DHV)
        qn = qn + state_weight * (q @ n.unsqueeze(-1))  # (..., L, 1)
    denominator = torch.maximum(qn.abs(), torch.exp(-m).unsqueeze(-1)) + eps  # (..., L, 1)
    return numerator / denominator  # (..., L, DHV)


def chunk_state_sums(k: Tensor, v: Tensor, key_log_weight: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The keys' contribution to the state at the end of a chunk, stabilized by its own max log weight.

    Args:
        k: (..., L, DQK). v: (..., L, DHV).
        key_log_weight: (..., L) log weight of key s at the chunk end (the last row of the log-decay matrix).

    Returns:
        kv (..., DQK, DHV) = sum_s w_s k_s v_s^T, k_sum (..., DQK) = sum_s w_s k_s, and the max log weight
        (...), where w_s = exp(key_log_weight_s - max).
    """
    max_log_weight = key_log_weight.amax(dim=-1)  # (...)
    weighted_k = k * torch.exp(key_log_weight - max_log_weight.unsqueeze(-1)).unsqueeze(-1)  # (..., L, DQK)
    return weighted_k.transpose(-1, -2) @ v, weighted_k.sum(dim=-2), max_log_weight


def advance_state(
    C: Tensor, n: Tensor, m: Tensor, log_f_total: Tensor, kv: Tensor, k_sum: Tensor, max_log_weight: Tensor
) -> MLSTMState:
    """Carry the stabilized state (C, n, m) across one chunk.

    Args:
        C: (..., DQK, DHV). n: (..., DQK). m: (...).
        log_f_total: (...) sum of log f over the chunk.
        kv, k_sum, max_log_weight: the chunk's contribution from `chunk_state_sums`.

    Returns:
        The state at the chunk end: C (..., DQK, DHV), n (..., DQK), m (...).
    """
    m_new = torch.maximum(log_f_total + m, max_log_weight)  # (...)
    decay = torch.exp(log_f_total + m - m_new)  # (...)
    scale = torch.exp(max_log_weight - m_new)  # (...)
    C_new = decay[..., None, None] * C + scale[..., None, None] * kv  # (..., DQK, DHV)
    n_new = decay.unsqueeze(-1) * n + scale.unsqueeze(-1) * k_sum  # (..., DQK)
    return C_new, n_new, m_new
