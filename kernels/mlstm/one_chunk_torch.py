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

Every quantity above is per row t or sums over the keys s <= t, so the rows go in blocks of `ROW_BLOCK`: a block of
rows [r0, r1) forms only its (r1 - r0, r1) entries and meets the keys [0, r1); the key gradients (dk, dv, column sums)
add up over the blocks. At L = 64 two blocks form 3/4 of the (L x L) entries and matmul products. On a 2-core CPU,
compiled forward + backward at (B, NH, L, DH) = (224, 4, 63, 8) took 21-23 ms against 27-31 ms in one block, and
6.6-8.5 ms against 8.6-9.9 ms at (64, 4, 64, 32) (eager about the same either way); without a gradient, 172 against
192 ms over 7168 heads of (63 x 8) and 26 against 32 ms over 256 heads of (64 x 32) (medians, alternating runs).

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

# heads per slice of a no-grad CPU call: 256 heads of 64 steps keep each (L x L) float64 intermediate at 8 MB
SLICE_HEADS = 256
# rows per block of the readout: a block of rows [r0, r1) forms only its (r1 - r0, r1) entries
ROW_BLOCK = 32


def _row_blocks(L: int) -> list[tuple[int, int]]:
    """(first row, end row) of the blocks of rows the readout is formed in: rows [r0, r1) meet keys [0, r1) only,
    so no block forms the (L x L) entries above the diagonal beyond its own; one block when L <= ROW_BLOCK."""
    return [(r0, min(r0 + ROW_BLOCK, L)) for r0 in range(0, L, ROW_BLOCK)]


def _rows(parts: list[Tensor], dim: int) -> Tensor:
    """The row blocks' parts joined along `dim` (a single part as it is, not copied)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=dim)


def _forward(q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, eps: float) -> tuple[Tensor, tuple]:
    """h and the tensors the backward reads, for q, k (..., L, DQK); v (..., L, DHV); i, f (..., L)."""
    DQK, L = q.shape[-1], q.shape[-2]
    prefix = F.logsigmoid(f).double().cumsum(dim=-1)  # (..., L) sum of log f over [0, t], float64
    b = prefix.to(q.dtype)  # (..., L) log weight of the (zero) entering state, m0 = 0
    q_hat = q * DQK**-0.5
    hs, saved = [], []
    for r0, r1 in _row_blocks(L):
        causal = torch.ones(r1 - r0, r1, dtype=torch.bool, device=q.device).tril(r0)  # (R, r1): key s <= row t
        # D[t, s] = sum of log f over (s, t] + i~_s, from float64 prefix sums rounded once (as `prefix_log_decay`)
        forget = (prefix[..., r0:r1, None] - prefix[..., None, :r1]).to(q.dtype)  # (..., R, r1)
        D = torch.where(causal, forget + i[..., None, :r1], float("-inf"))  # (..., R, r1)
        row_max, arg = D.max(dim=-1)  # (..., R)
        m = torch.maximum(b[..., r0:r1], row_max)  # (..., R)
        W = torch.exp(D - m.unsqueeze(-1))  # (..., R, r1), 0 above the diagonal
        S = W * (q_hat[..., r0:r1, :] @ k[..., :r1, :].transpose(-1, -2))  # (..., R, r1)
        qn = S.sum(dim=-1)  # (..., R)
        floor = torch.exp(-m)  # (..., R)
        den = torch.maximum(qn.abs(), floor) + eps  # (..., R)
        hs.append((S @ v[..., :r1, :]) / den.unsqueeze(-1))  # (..., R, DHV)
        saved += [W, S, qn, floor, den, arg, b[..., r0:r1] >= row_max]
    h = _rows(hs, -2)  # (..., L, DHV)
    return h, (q_hat, k, v, f, h, *saved)


def _backward(dh: Tensor, q_hat, k, v, f, h, *saved) -> tuple[Tensor, ...]:
    """(dq, dk, dv, di, df) from the upstream dh (..., L, DHV) and what `_forward` kept (7 tensors per row block)."""
    L = q_hat.shape[-2]
    dh = dh.to(h.dtype)
    blocks = _row_blocks(L)
    dqs, d_rows = [], []
    dk, dv = torch.zeros_like(k), torch.zeros_like(v)  # (..., L, DQK), (..., L, DHV): key gradients over blocks
    d_cols = torch.zeros_like(h[..., 0])  # (..., L) column sums of dD over every block
    for n, (r0, r1) in enumerate(blocks):
        W, S, qn, floor, den, arg, b_won = saved[7 * n:7 * n + 7]
        dh_r = dh[..., r0:r1, :]  # (..., R, DHV)
        dnum = dh_r / den.unsqueeze(-1)  # (..., R, DHV)
        dden = -(dh_r * h[..., r0:r1, :]).sum(dim=-1) / den  # (..., R)
        on_qn = qn.abs() > floor  # (..., R) which branch of the denominator's max
        dqn = torch.where(on_qn, dden * torch.sign(qn), 0.0)  # (..., R)
        v_keys = v[..., :r1, :]  # (..., r1, DHV)
        dS = torch.baddbmm(dqn.reshape(-1, r1 - r0, 1), dnum.flatten(0, -3), v_keys.flatten(0, -3).transpose(1, 2))
        dS = dS.view(S.shape)  # (..., R, r1) = dnum v^T + dqn
        dv[..., :r1, :] += S.transpose(-1, -2) @ dnum
        dQK = dS * W  # (..., R, r1)
        dqs.append((dQK @ k[..., :r1, :]) * q_hat.shape[-1] ** -0.5)  # (..., R, DQK)
        dk[..., :r1, :] += dQK.transpose(-1, -2) @ q_hat[..., r0:r1, :]
        dD = dS * S  # (..., R, r1) through W = exp(D - m); zero above the diagonal
        dm = torch.where(on_qn, 0.0, -dden * floor) - dD.sum(dim=-1)  # (..., R)
        # m = max(b, max_s D_ts): dm goes to b_t, or to the arg max entry of row t
        dD.scatter_add_(-1, arg.unsqueeze(-1), torch.where(b_won, 0.0, dm).unsqueeze(-1))
        d_cols[..., :r1] += dD.sum(dim=-2)  # i~_s and -prefix_s enter every entry of column s
        d_rows.append(dD.sum(dim=-1) + torch.where(b_won, dm, 0.0))  # prefix_t: row t, and b_t = prefix_t
    dq = _rows(dqs, -2)  # (..., L, DQK)
    d_prefix = _rows(d_rows, -1) - d_cols  # (..., L)
    d_log_f = d_prefix.flip(-1).cumsum(dim=-1).flip(-1)  # log f_r is in every prefix_t with t >= r
    return dq, dk, dv, d_cols, d_log_f * torch.sigmoid(-f)


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
