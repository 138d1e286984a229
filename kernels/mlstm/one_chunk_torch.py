"""mLSTM over one chunk from zero states in PyTorch, with a written-out backward: the CPU path of patched forecasters.

A patched forecaster runs the mLSTM over a few dozen tokens: one chunk, zero initial states, no last states. The
chunkwise form then reduces to one stabilized attention-like readout, and autograd through it records a dozen
(L x L) ops with their own backward nodes (the row max among them). Here the backward is formed directly, in as
few (L x L) passes as the identities allow:

    D_ts = b_t - b_s + i~_s (s <= t), b = cumsum(log f);   m_t = max(b_t, max_s D_ts);   W = exp(D - m)
    S = W * (q^ k^T);   num = S v;   qn = rowsum(S);   den = max(|qn|, e^{-m}) + eps;   h = num / den

    dnum = dh / den;   dden = -<dh, h> / den;   dqn = dden sign(qn) where |qn| > e^{-m}
    dS = dnum v^T + dqn;   dv = S^T dnum;   dq^ = (dS * W) k;   dk = (dS * W)^T q^
    dm = -rowsum(dS * S) - dden e^{-m} where |qn| <= e^{-m};   dD = dS * S, plus dm at the arg max of row t when
    D won the max (else dm goes to b_t);   di = colsum(dD);   db = rowsum(dD) - colsum(dD) (+ dm where b won)
    d log f = reverse cumsum(db);   df = d log f * sigmoid(-f~)

The function is that of `mlstm_chunkwise_torch` on such calls (same float64 prefix sums for D, same stabilizer), and
its gradients are autograd's except at exact ties of a max, where autograd splits the gradient.

Without a gradient on the CPU (validation and prediction batches of thousands of windows), the heads go through in
slices of about `SLICE_HEADS` along the first dimension, so the (L x L) intermediates of a slice stay in cache: 5x
faster at 28672 heads of (63 x 8), with the same result (every op is per head; a batched matmul may round
differently for another batch count). Training batches (896 heads in the ETTh1 presets) gained nothing from slices,
so calls with a gradient run whole; so does any call under torch.compile (see `_slices`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._common import prefix_log_decay, prefix_log_decay_grads

# heads per slice of a no-grad CPU call: 256 heads of 64 steps keep each (L x L) float64 intermediate at 8 MB
SLICE_HEADS = 256


def _forward(q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, eps: float) -> tuple[Tensor, tuple]:
    """h and the tensors the backward reads, for q, k (..., L, DQK); v (..., L, DHV); i, f (..., L)."""
    DQK = q.shape[-1]
    D, prefix = prefix_log_decay(F.logsigmoid(f), i)  # (..., L, L), (..., L)
    b = prefix.to(q.dtype)  # (..., L) log weight of the (zero) entering state: sum of log f up to t, m0 = 0
    row_max, arg = D.max(dim=-1)  # (..., L)
    m = torch.maximum(b, row_max)  # (..., L)
    W = torch.exp(D - m.unsqueeze(-1))  # (..., L, L), 0 above the diagonal
    q_hat = q * DQK**-0.5
    QK = q_hat @ k.transpose(-1, -2)  # (..., L, L)
    S = W * QK  # (..., L, L)
    qn = S.sum(dim=-1)  # (..., L)
    floor = torch.exp(-m)  # (..., L)
    den = torch.maximum(qn.abs(), floor) + eps  # (..., L)
    h = (S @ v) / den.unsqueeze(-1)  # (..., L, DHV)
    return h, (q_hat, k, v, f, W, S, h, qn, floor, den, arg, b >= row_max)


def _backward(dh: Tensor, q_hat, k, v, f, W, S, h, qn, floor, den, arg, b_won) -> tuple[Tensor, ...]:
    """(dq, dk, dv, di, df) from the upstream dh (..., L, DHV) and what `_forward` kept."""
    dh = dh.to(h.dtype)
    dnum = dh / den.unsqueeze(-1)  # (..., L, DHV)
    dden = -(dh * h).sum(dim=-1) / den  # (..., L)
    on_qn = qn.abs() > floor  # (..., L) which branch of the denominator's max
    dqn = torch.where(on_qn, dden * torch.sign(qn), 0.0)  # (..., L)
    dS = torch.baddbmm(dqn.reshape(-1, qn.shape[-1], 1), dnum.flatten(0, -3), v.flatten(0, -3).transpose(1, 2))
    dS = dS.view(S.shape)  # (..., L, L) = dnum v^T + dqn
    dv = S.transpose(-1, -2) @ dnum  # (..., L, DHV)
    dQK = dS * W  # (..., L, L)
    dq = (dQK @ k) * q_hat.shape[-1] ** -0.5  # (..., L, DQK)
    dk = dQK.transpose(-1, -2) @ q_hat  # (..., L, DQK)
    dD = dS * S  # (..., L, L) through W = exp(D - m); zero above the diagonal
    dm = torch.where(on_qn, 0.0, -dden * floor) - dD.sum(dim=-1)  # (..., L)
    # m = max(b, max_s D_ts): dm goes to b_t, or to the arg max entry of row t
    dD.scatter_add_(-1, arg.unsqueeze(-1), torch.where(b_won, 0.0, dm).unsqueeze(-1))
    d_log_f, d_i = prefix_log_decay_grads(dD, torch.where(b_won, dm, 0.0))  # b is the prefix sum too
    return dq, dk, dv, d_i, d_log_f * torch.sigmoid(-f)


def _slices(x: Tensor) -> list[slice]:
    """Slices of the first dimension of x (..., L, D) holding about SLICE_HEADS heads each: one slice (the whole)
    unless x is a CPU tensor with more heads, or torch.compile traces the call (a traced loop over slices would
    unroll into a graph of hundreds of copies; compiled code has its own fusion)."""
    lead = x.shape[:-2]
    heads = lead.numel()
    if not lead or heads <= SLICE_HEADS or x.device.type != "cpu" or torch.compiler.is_compiling():
        return [slice(None)]
    step = max(1, SLICE_HEADS // (heads // lead[0]))  # rows of the first dimension per slice
    return [slice(s, s + step) for s in range(0, lead[0], step)]


class _OneChunk(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, eps: float, keep: bool) -> Tensor:
        # q, k (..., L, DQK); v (..., L, DHV); i, f (..., L); all in the compute dtype. keep: a backward follows
        if keep:
            h, saved = _forward(q, k, v, i, f, eps)
            ctx.save_for_backward(*saved)
            return h
        parts = [_forward(q[s], k[s], v[s], i[s], f[s], eps)[0] for s in _slices(q)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)  # (..., L, DHV); one slice is not copied

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dh: Tensor) -> tuple[Tensor | None, ...]:
        return (*_backward(dh, *ctx.saved_tensors), None, None)


def mlstm_one_chunk(q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, eps: float = 1e-6) -> Tensor:
    """h of the mLSTM over a sequence of one chunk from zero states, in the compute dtype of the inputs.

    Args:
        q, k: (..., L, DQK); v: (..., L, DHV); i, f: (..., L) gate pre-activations; all in one floating dtype.
        eps: added to the denominator.

    Returns:
        h (..., L, DHV).
    """
    with torch.autocast(q.device.type, enabled=False):  # fp32 sums and gates under mixed precision too
        keep = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v, i, f))
        return _OneChunk.apply(q, k, v, i, f, eps, keep)
