"""GraphedTrainStep: clear errors where a CUDA graph cannot be captured; on a GPU, replayed steps train exactly as
eager steps do (same losses and weights from the same start)."""

import copy

import pytest
import torch

from xlstm_ts.config import ModelConfig
from xlstm_ts.graphed_step import GraphedTrainStep
from xlstm_ts.stack import XLSTMStack


def _loss(model, x, y):
    return (model(x) - y).pow(2).mean()


def _stack(device):
    torch.manual_seed(0)
    cfg = ModelConfig(embed_dim=32, num_heads=2, pattern="ms", conv_kernel=4, qkv_blocksize=4, dropout=0.0)
    return XLSTMStack(cfg).to(device)


def test_needs_a_capturable_adam():
    model = _stack("cpu")
    x = torch.randn(2, 8, 32)
    with pytest.raises(ValueError, match="capturable=True"):
        GraphedTrainStep(model, torch.optim.SGD(model.parameters(), lr=0.1), _loss, (x, x))
    with pytest.raises(ValueError, match="capturable=True"):
        GraphedTrainStep(model, torch.optim.AdamW(model.parameters()), _loss, (x, x))


def test_needs_cuda_parameters():
    model = _stack("cpu")
    x = torch.randn(2, 8, 32)
    opt = torch.optim.AdamW(model.parameters(), capturable=True)
    with pytest.raises(ValueError, match="CUDA device, got cpu"):
        GraphedTrainStep(model, opt, _loss, (x, x))


@pytest.mark.gpu
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16-autocast"])
def test_replayed_steps_match_eager_steps(bf16):
    torch.backends.cuda.matmul.allow_tf32 = False
    eager_model = _stack("cuda")
    graph_model = copy.deepcopy(eager_model)
    eager_opt = torch.optim.AdamW(eager_model.parameters(), lr=1e-3, capturable=True)
    graph_opt = torch.optim.AdamW(graph_model.parameters(), lr=1e-3, capturable=True)
    batches = [(torch.randn(4, 24, 32, device="cuda"), torch.randn(4, 24, 32, device="cuda")) for _ in range(5)]
    dtype = torch.bfloat16 if bf16 else None
    step = GraphedTrainStep(graph_model, graph_opt, _loss, batches[0], autocast_dtype=dtype)
    for p, q in zip(eager_model.parameters(), graph_model.parameters()):
        assert torch.equal(p, q)  # the warm-up steps were undone
    for x, y in batches:
        eager_opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16, cache_enabled=False):
            eager_loss = _loss(eager_model, x, y)
        eager_loss.backward()
        eager_opt.step()
        graph_loss = step(x, y)
        torch.testing.assert_close(graph_loss, eager_loss.detach(), rtol=1e-4, atol=0)
    for p, q in zip(eager_model.parameters(), graph_model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="captured step takes"):
        step(torch.randn(3, 24, 32, device="cuda"), torch.randn(3, 24, 32, device="cuda"))
