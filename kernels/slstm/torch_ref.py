"""sLSTM in pure PyTorch: a per-step loop with block-diagonal (per-head) recurrent weights and the stabilizer m_t.

This is the reference the fused sLSTM kernels are tested against, and the CPU path. Gradients come from autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

SLSTMState = tuple[Tensor, Tensor, Tensor, Tensor]


def _check_inputs(wx: Tensor, r: Tensor, b: Tensor) -> tuple[int, int, int, int]:
    """Validate wx (B, S, 4, NH, DH), r (NH, 4, DH, DH), b (NH, 4, DH) and return (B, S, NH, DH)."""
    if wx.ndim != 5 or wx.shape[2] != 4:
        raise ValueError(
            f"wx must have shape (B, S, 4, NH, DH) with the 4 gates (i, f, z, o) in dim 2, got {tuple(wx.shape)}; "
            "reshape the input projection to (B, S, 4, NH, DH)."
        )
    B, S, _, NH, DH = wx.shape
    if S == 0:
        raise ValueError("wx has sequence length S=0; pass at least one time step.")
    if r.shape != (NH, 4, DH, DH):
        raise ValueError(
            f"r must have shape (NH, 4, DH, DH) = {(NH, 4, DH, DH)} to match wx {tuple(wx.shape)}, "
            f"got {tuple(r.shape)}; it holds one (DH, DH) recurrent matrix per head and gate."
        )
    if b.shape != (NH, 4, DH):
        raise ValueError(f"b must have shape (NH, 4, DH) = {(NH, 4, DH)} to match wx, got {tuple(b.shape)}.")
    return B, S, NH, DH


def _initial_states(
    initial_states: SLSTMState | None, shape: tuple[int, int, int], dtype: torch.dtype, device: torch.device
) -> SLSTMState:
    """Return (h, c, n, m), each (B, NH, DH) in `dtype`; zeros with m = -inf when none are given."""
    if initial_states is None:
        zeros = torch.zeros(shape, dtype=dtype, device=device)  # (B, NH, DH)
        return zeros, zeros, zeros, torch.full(shape, float("-inf"), dtype=dtype, device=device)
    if not isinstance(initial_states, (tuple, list)) or len(initial_states) != 4:
        got = (
            f"{type(initial_states).__name__} of length {len(initial_states)}"
            if isinstance(initial_states, (tuple, list))
            else type(initial_states).__name__
        )
        raise ValueError(
            f"initial_states must be a tuple (h, c, n, m) of 4 tensors, each (B, NH, DH), got {got}; "
            "pass the states returned with return_last_states=True, or None."
        )
    for name, state in zip("hcnm", initial_states, strict=True):
        if state.shape != shape:
            raise ValueError(f"initial state {name} must have shape (B, NH, DH) = {shape}, got {tuple(state.shape)}.")
    h, c, n, m = (state.to(dtype) for state in initial_states)
    return h, c, n, m


def slstm_torch(
    wx: Tensor,
    r: Tensor,
    b: Tensor,
    initial_states: SLSTMState | None = None,
    return_last_states: bool = False,
) -> Tensor | tuple[Tensor, SLSTMState]:
    """sLSTM over a sequence with exponential input gate, sigmoid forget gate and stabilizer m_t.

    Per head and gate g in (i, f, z, o): g~_t = wx_t[g] + h_{t-1} @ r[head, g] + b[head, g]. Then
    m_t = max(log sigmoid(f~_t) + m_{t-1}, i~_t), c_t = f' c_{t-1} + i' tanh(z~_t), n_t = f' n_{t-1} + i',
    h_t = sigmoid(o~_t) c_t / n_t with i' = exp(i~_t - m_t) and f' = exp(log sigmoid(f~_t) + m_{t-1} - m_t).

    Args:
        wx: (B, S, 4, NH, DH) input parts of the gate pre-activations, gates in the order (i, f, z, o).
        r: (NH, 4, DH, DH) recurrent weights; h (a row vector) multiplies r[head, gate] from the left.
        b: (NH, 4, DH) gate biases.
        initial_states: (h, c, n, m), each (B, NH, DH), or None for h = c = n = 0 and m = -inf (so that
            m_1 = i~_1). Default: None.
        return_last_states: also return the states after the last step. Default: False.

    Returns:
        h (B, S, NH, DH) in the dtype of wx; with return_last_states, (h, (h_last, c, n, m)), each state
        (B, NH, DH) in float32 (float64 for float64 inputs).
    """
    B, S, NH, DH = _check_inputs(wx, r, b)
    dtype = torch.promote_types(wx.dtype, torch.float32)
    h, c, n, m = _initial_states(initial_states, (B, NH, DH), dtype, wx.device)
    wx_b = wx.to(dtype) + b.to(dtype).transpose(0, 1)  # (B, S, 4, NH, DH)
    # all four gate matrices of a head side by side: one batched matmul per step
    r_cat = r.to(dtype).permute(0, 2, 1, 3).reshape(NH, DH, 4 * DH)  # (NH, DH, 4 * DH)
    hs = []
    for t in range(S):
        recurrent = (h.transpose(0, 1) @ r_cat).view(NH, B, 4, DH).permute(1, 2, 0, 3)  # (B, 4, NH, DH)
        i_pre, f_pre, z_pre, o_pre = (wx_b[:, t] + recurrent).unbind(dim=1)  # each (B, NH, DH)
        log_f = F.logsigmoid(f_pre)  # (B, NH, DH)
        m_new = torch.maximum(log_f + m, i_pre)  # (B, NH, DH)
        i_act = torch.exp(i_pre - m_new)  # (B, NH, DH)
        f_act = torch.exp(log_f + m - m_new)  # (B, NH, DH)
        c = f_act * c + i_act * torch.tanh(z_pre)  # (B, NH, DH)
        n = f_act * n + i_act  # (B, NH, DH)
        h = torch.sigmoid(o_pre) * c / n  # (B, NH, DH)
        m = m_new
        hs.append(h)
    out = torch.stack(hs, dim=1).to(wx.dtype)  # (B, S, NH, DH)
    if not return_last_states:
        return out
    return out, (h, c, n, m)
