"""`_row_m`, the per-step stabilizer of the chunkwise mLSTM forward kernels, as a running max over the chunk's
steps, against its definition, the row max over the (L, L) log-decay matrix:
max(b_t + m_prev, max_{s <= t} (b_t - b_s + i~_s)); and `_row_weights`, the forward's scaled decay weights
scale * exp(b_t - b_s + i~_s - m_t) and entering-state weights exp(b_t + m_prev - m_t) built from it in log2 units."""

import math

import pytest
import torch
import triton
import triton.language as tl

from xlstm_ts.kernels.mlstm.triton_chunkwise_common import _row_m, _row_weights

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# start states below, near and above the chunk's own terms; both gate regimes; a chunk ending in padding
M_PREV = pytest.mark.parametrize("m_prev", [0.0, -30.0, 12.0])
GATES = pytest.mark.parametrize(
    "i_mean,padded", [(0.0, 0), (-10.0, 0), (0.0, 7)], ids=["i~N(0,1)", "i~N(-10,1)", "padded"]
)


@triton.jit
def _row_m_kernel(b_ptr, i_ptr, m_prev, out_ptr, L: tl.constexpr):
    offs = tl.arange(0, L)
    out = _row_m(tl.load(b_ptr + offs), tl.load(i_ptr + offs), m_prev)
    tl.store(out_ptr + offs, out)


@triton.jit
def _row_weights_kernel(b_ptr, i_ptr, m_prev, log_scale, m_ptr, w_ptr, w0_ptr, L: tl.constexpr):
    offs = tl.arange(0, L)
    causal = offs[:, None] >= offs[None, :]
    m, w, w0 = _row_weights(tl.load(b_ptr + offs), tl.load(i_ptr + offs), m_prev, log_scale, causal)
    tl.store(m_ptr + offs, m)
    tl.store(w_ptr + offs[:, None] * L + offs[None, :], w)
    tl.store(w0_ptr + offs, w0)


def _log_decay(b: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    """The (L, L) log-decay matrix b_t - b_s + i~_s, -inf above the diagonal."""
    log_d = b[:, None] - b[None, :] + i[None, :]  # (L, L)
    return log_d.masked_fill(~torch.ones_like(log_d, dtype=torch.bool).tril(), float("-inf"))


def _definition(b: torch.Tensor, i: torch.Tensor, m_prev: float) -> torch.Tensor:
    return torch.maximum(b + m_prev, _log_decay(b, i).amax(dim=1))


def _gates(i_mean: float, padded: int, L: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """(b, i~) of one chunk in fp64: b the log-forget cumsum; padding past the sequence end as the kernels pad it
    (log f = 0, i~ = -inf)."""
    torch.manual_seed(0)
    log_f = torch.nn.functional.logsigmoid(3 + torch.randn(L, dtype=torch.float64))
    i = i_mean + torch.randn(L, dtype=torch.float64)
    if padded:
        log_f[-padded:] = 0.0
        i[-padded:] = float("-inf")
    return log_f.cumsum(0), i


@M_PREV
@GATES
def test_row_m_is_the_row_max_of_the_log_decay_matrix(m_prev, i_mean, padded):
    L = 32
    b, i = _gates(i_mean, padded, L)
    out = torch.empty(L, dtype=torch.float32, device=DEVICE)
    _row_m_kernel[(1,)](b.float().to(DEVICE), i.float().to(DEVICE), m_prev, out, L=L)
    expected = _definition(b, i, m_prev)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.cpu().double(), expected, rtol=0, atol=1e-5)
    # the maximizing term differs with the start state: the entering one dominates for a large m_prev
    if m_prev == 12.0:
        torch.testing.assert_close(out.cpu().double(), b + m_prev, rtol=0, atol=1e-5)


@M_PREV
@GATES
def test_row_weights_are_the_scaled_decay_weights(m_prev, i_mean, padded):
    L, scale = 32, 64**-0.5
    b, i = _gates(i_mean, padded, L)
    m, w, w0 = (torch.empty(shape, dtype=torch.float32, device=DEVICE) for shape in ((L,), (L, L), (L,)))
    _row_weights_kernel[(1,)](b.float().to(DEVICE), i.float().to(DEVICE), m_prev, math.log(scale), m, w, w0, L=L)
    m_def = _definition(b, i, m_prev)  # (L,)
    w_def = scale * torch.exp(_log_decay(b, i) - m_def[:, None])  # (L, L): 0 above the diagonal and for padded keys
    torch.testing.assert_close(m.cpu().double(), m_def, rtol=0, atol=1e-5)
    # every weight is at most scale (the stabilizer is the row max), relative error of fp32 exponents near 1e-6
    torch.testing.assert_close(w.cpu().double(), w_def, rtol=1e-5, atol=1e-7 * scale)
    torch.testing.assert_close(w0.cpu().double(), torch.exp(b + m_prev - m_def), rtol=1e-5, atol=1e-7)
    assert (w.cpu().triu(1) == 0).all() and w.max() <= scale * (1 + 1e-6)
