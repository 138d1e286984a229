"""`_row_m`, the per-step stabilizer of the chunkwise mLSTM forward kernels, as a running max over the chunk's
steps, against its definition, the row max over the (L, L) log-decay matrix:
max(b_t + m_prev, max_{s <= t} (b_t - b_s + i~_s))."""

import pytest
import torch
import triton
import triton.language as tl

from xlstm_ts.kernels.mlstm.triton_chunkwise_common import _row_m

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@triton.jit
def _row_m_kernel(b_ptr, i_ptr, m_prev, out_ptr, L: tl.constexpr):
    offs = tl.arange(0, L)
    out = _row_m(tl.load(b_ptr + offs), tl.load(i_ptr + offs), m_prev)
    tl.store(out_ptr + offs, out)


def _definition(b: torch.Tensor, i: torch.Tensor, m_prev: float) -> torch.Tensor:
    log_d = b[:, None] - b[None, :] + i[None, :]  # (L, L)
    causal = torch.ones_like(log_d, dtype=torch.bool).tril()
    return torch.maximum(b + m_prev, log_d.masked_fill(~causal, float("-inf")).amax(dim=1))


@pytest.mark.parametrize("m_prev", [0.0, -30.0, 12.0])
@pytest.mark.parametrize("i_mean,padded", [(0.0, 0), (-10.0, 0), (0.0, 7)], ids=["i~N(0,1)", "i~N(-10,1)", "padded"])
def test_row_m_is_the_row_max_of_the_log_decay_matrix(m_prev, i_mean, padded):
    torch.manual_seed(0)
    L = 32
    log_f = torch.nn.functional.logsigmoid(3 + torch.randn(L, dtype=torch.float64))
    i = i_mean + torch.randn(L, dtype=torch.float64)
    if padded:  # the kernels' padding past the sequence end: log f = 0, i~ = -inf
        log_f[-padded:] = 0.0
        i[-padded:] = float("-inf")
    b = log_f.cumsum(0)
    out = torch.empty(L, dtype=torch.float32, device=DEVICE)
    _row_m_kernel[(1,)](b.float().to(DEVICE), i.float().to(DEVICE), m_prev, out, L=L)
    expected = _definition(b, i, m_prev)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.cpu().double(), expected, rtol=0, atol=1e-5)
    # the maximizing term differs with the start state: the entering one dominates for a large m_prev
    if m_prev == 12.0:
        torch.testing.assert_close(out.cpu().double(), b + m_prev, rtol=0, atol=1e-5)
