"""The torch mLSTM for one chunk from zero states with its written-out backward (the CPU path of patched
forecasters): outputs and every gradient equal autograd through the parallel form in fp64, in both gate regimes
(i~ ~ N(0, 1): the |n.q| branch of the denominator; i~ ~ N(-10, 1): the e^{-m} branch, and rows where the zero
entering state wins the stabilizer max); `mlstm_chunkwise--torch` routes such calls to it."""

import pytest
import torch

from xlstm_ts.kernels import get_kernel
from xlstm_ts.kernels.mlstm.one_chunk_torch import mlstm_one_chunk


def _inputs(B, NH, L, DQK, DHV, i_mean):
    g = torch.Generator().manual_seed(11)
    q, k = (torch.randn(B, NH, L, DQK, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(B, NH, L, DHV, generator=g, dtype=torch.float64)
    i = i_mean + torch.randn(B, NH, L, generator=g, dtype=torch.float64)
    f = 3.0 + torch.randn(B, NH, L, generator=g, dtype=torch.float64)
    return q, k, v, i, f


@pytest.mark.parametrize("i_mean", [0.0, -10.0], ids=["i~N(0,1)", "i~N(-10,1)"])
@pytest.mark.parametrize("B,NH,L,DQK,DHV,row_block", [
    (2, 3, 1, 8, 5, None), (2, 3, 13, 8, 5, None), (1, 2, 40, 16, 24, None), (1, 2, 64, 8, 6, None),
    (2, 1, 63, 8, 8, None), (1, 2, 40, 8, 5, 7),  # one, two and six row blocks (the last one short)
])
def test_one_chunk_matches_autograd_in_fp64(B, NH, L, DQK, DHV, row_block, i_mean, monkeypatch):
    from xlstm_ts.kernels.mlstm import one_chunk_torch

    if row_block is not None:
        monkeypatch.setattr(one_chunk_torch, "ROW_BLOCK", row_block)
    assert len(one_chunk_torch._row_blocks(L)) == -(-L // one_chunk_torch.ROW_BLOCK)
    inputs = _inputs(B, NH, L, DQK, DHV, i_mean)
    upstream = torch.randn(B, NH, L, DHV, dtype=torch.float64)
    results = []
    for fn in (lambda *x: get_kernel("mlstm_parallel--torch")(*x), mlstm_one_chunk):
        leaves = [x.clone().requires_grad_() for x in inputs]
        h = fn(*leaves)
        results.append((h, torch.autograd.grad((h * upstream).sum(), leaves)))
    (h_ref, g_ref), (h, g) = results
    torch.testing.assert_close(h, h_ref, rtol=1e-10, atol=1e-12)
    for name, a, b in zip(["dq", "dk", "dv", "di", "df"], g_ref, g):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-11, msg=name)
    if i_mean < 0:  # the regime reaches the zero-state branch of the stabilizer max somewhere
        log_f_cum = torch.nn.functional.logsigmoid(inputs[4]).cumsum(-1)
        assert (log_f_cum >= inputs[3]).any()


def test_chunkwise_routes_one_chunk_calls_and_keeps_dtypes():
    q, k, v, i, f = (x.float() for x in _inputs(2, 2, 20, 8, 8, 0.0))
    chunkwise = get_kernel("mlstm_chunkwise--torch")
    torch.testing.assert_close(chunkwise(q, k, v, i, f, chunk_size=32), mlstm_one_chunk(q, k, v, i, f))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # sums and gates stay fp32 under mixed precision
        h = chunkwise(q.bfloat16(), k.bfloat16(), v.bfloat16(), i, f, chunk_size=32)
    assert h.dtype == torch.bfloat16
    ref = mlstm_one_chunk(q.bfloat16().float(), k.bfloat16().float(), v.bfloat16().float(), i, f)
    torch.testing.assert_close(h.float(), ref, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("grad", [False, True], ids=["no-grad", "grad"])
def test_no_grad_cpu_calls_go_in_slices_with_the_same_result(monkeypatch, grad):
    from xlstm_ts.kernels.mlstm import one_chunk_torch

    q, k, v, i, f = (x.float() for x in _inputs(5, 2, 17, 8, 6, 0.0))  # 10 heads, 2 per row of the first dim
    upstream = torch.randn(5, 2, 17, 6)
    results, calls = [], []
    forward = one_chunk_torch._forward
    for heads in (1000, 4):  # one slice, then slices of 2 rows (4 heads): rows 0-1, 2-3, 4
        monkeypatch.setattr(one_chunk_torch, "SLICE_HEADS", heads)
        monkeypatch.setattr(one_chunk_torch, "_forward", lambda *a: calls.append(a[0].shape[0]) or forward(*a))
        leaves = [x.clone().requires_grad_(grad) for x in (q, k, v, i, f)]
        with torch.set_grad_enabled(grad):
            h = mlstm_one_chunk(*leaves)
        grads = torch.autograd.grad((h * upstream).sum(), leaves) if grad else ()
        results.append((h.detach(), grads))
    assert calls == ([5, 5] if grad else [5, 2, 2, 1])  # with a gradient: whole
    (h_whole, g_whole), (h_sliced, g_sliced) = results
    # every op is per head; only a batched matmul may sum in another order for another batch count
    assert h_sliced.shape == (5, 2, 17, 6)
    torch.testing.assert_close(h_sliced, h_whole, rtol=1e-6, atol=1e-7)
    for a, b in zip(g_whole, g_sliced):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)


def test_no_slices_for_few_heads_other_devices_or_under_compile(monkeypatch):
    from xlstm_ts.kernels.mlstm import one_chunk_torch

    whole = [slice(None)]
    assert one_chunk_torch._slices(torch.zeros(300, 4, 3)) != whole  # 300 heads
    assert one_chunk_torch._slices(torch.zeros(256, 4, 3)) == whole
    assert one_chunk_torch._slices(torch.zeros(4, 3)) == whole  # no heads dimension
    assert one_chunk_torch._slices(torch.zeros(300, 4, 3, device="meta")) == whole
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # traced by torch.compile: one call
    assert one_chunk_torch._slices(torch.zeros(300, 4, 3)) == whole
