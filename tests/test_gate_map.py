"""`gate_map.two_input_linear`: the same function and gradients as F.linear on the concatenation, both backwards."""

import pytest
import torch
import torch.nn.functional as F

from xlstm_ts.gate_map import two_input_linear


def _inputs(bias: bool, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2, 5, 6, generator=g, dtype=dtype, requires_grad=True)  # (B, T, Fa)
    b = torch.randn(2, 5, 3, generator=g, dtype=dtype, requires_grad=True)  # (B, T, Fb)
    w = torch.randn(4, 9, generator=g, dtype=dtype, requires_grad=True)  # (J, Fa + Fb)
    bb = torch.randn(4, generator=g, dtype=dtype, requires_grad=True) if bias else None
    return a, b, w, bb


@pytest.mark.parametrize("unrolled", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_linear_of_concat(unrolled, bias):
    a, b, w, bb = _inputs(bias)
    y = two_input_linear(a, b, w, bb, unrolled=unrolled)
    ref = F.linear(torch.cat([a, b], -1), w, bb)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    dy = torch.randn_like(y)
    leaves = [t for t in (a, b, w, bb) if t is not None]
    got = torch.autograd.grad(y, leaves, dy)
    want = torch.autograd.grad(ref, leaves, dy)
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda *t: two_input_linear(*t, unrolled=unrolled), (a, b, w, bb))


def test_autocast_dtypes_and_values():
    a, b, w, bb = (t.detach().float().requires_grad_() for t in _inputs(True))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = two_input_linear(a, b, w, bb, unrolled=True)
        ref = F.linear(torch.cat([a, b], -1), w, bb)
    assert y.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ref.float(), rtol=2e-2, atol=2e-2)
    y.float().sum().backward()
    assert a.grad.dtype == b.grad.dtype == w.grad.dtype == bb.grad.dtype == torch.float32
    torch.testing.assert_close(bb.grad, torch.full_like(bb, 10.0))  # 2 * 5 rows, each dy = 1


def test_compiled_graph_uses_the_products():
    from torch._dynamo.backends.common import aot_autograd

    backward_graphs = []

    def keep_backward(gm, example_inputs):
        backward_graphs.append(gm)
        return gm

    backend = aot_autograd(fw_compiler=lambda gm, example_inputs: gm, bw_compiler=keep_backward)
    a, b, w, bb = _inputs(True, torch.float32)
    two_input_linear(a, b, w, bb).sum().backward()  # eager: matmul backward
    grads_eager = [t.grad.clone() for t in (a, b, w, bb)]
    for t in (a, b, w, bb):
        t.grad = None
    torch._dynamo.reset()
    torch.compile(two_input_linear, backend=backend, fullgraph=True)(a, b, w, bb).sum().backward()
    (graph,) = backward_graphs
    mms = [n for n in graph.graph.nodes if n.target in (torch.ops.aten.mm.default, torch.ops.aten.bmm.default)]
    assert len(mms) == 2, f"expected only the weight gradient's two matmuls in the backward, got {len(mms)}"
    for t, g in zip((a, b, w, bb), grads_eager):
        torch.testing.assert_close(t.grad, g, rtol=1e-5, atol=1e-5)


def test_wrong_weight_width_says_what_to_pass():
    a, b, w, _ = _inputs(False)
    with pytest.raises(ValueError, match=r"weight takes 8 input features, but a and b have 6 \+ 3"):
        two_input_linear(a, b, w[:, :8])
