"""XLSTMForecaster(cuda_graphs=True): refused off a single CUDA device; on a GPU, training with the loss replayed as
CUDA graphs gives the eager fit's losses and forecasts."""

import numpy as np
import pytest
import torch

from xlstm_ts import XLSTMForecaster
from xlstm_ts.datasets import make_synthetic_panel

MODEL = {"embed_dim": 16, "num_heads": 2, "pattern": "ms", "patch_length": 8, "dropout": 0.0}


def _fit(cuda_graphs, **kw):
    df = make_synthetic_panel(n_series=3, length=160, freq="h")
    return XLSTMForecaster(prediction_length=8, context_length=32, model=MODEL, max_steps=8, batch_size=8, val_size=8,
                           val_check_steps=4, random_state=0, cuda_graphs=cuda_graphs, **kw).fit(df)  # fmt: skip


def test_cuda_graphs_need_one_cuda_device():
    with pytest.raises(ValueError, match="cuda_graphs=True needs a fit on one CUDA device, got the "
                                         "SingleDeviceStrategy on cpu"):  # fmt: skip
        _fit(True)
    with pytest.raises(ValueError, match="cuda_graphs must be True or False"):
        _fit(1.0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_graphed_fit_matches_eager_fit(precision):
    kw = {"trainer_kwargs": {"accelerator": "gpu", "devices": 1, "precision": precision},
          "float32_matmul_precision": "highest"}  # fmt: skip
    eager, graphed = _fit(False, **kw), _fit(True, **kw)
    assert graphed.best_step_ == eager.best_step_
    np.testing.assert_allclose(graphed.best_val_loss_, eager.best_val_loss_, rtol=1e-4)
    np.testing.assert_allclose(graphed.train_loss_, eager.train_loss_, rtol=1e-4)
    a, b = eager.predict(), graphed.predict()
    np.testing.assert_allclose(b["mean"].to_numpy(), a["mean"].to_numpy(), rtol=1e-4, atol=1e-5)


def test_graphed_loss_dispatch(monkeypatch):
    """Which batches replay the graph: training batches of the first batch's keys, shapes and dtypes; others, and
    eval mode, run net.loss as it is. The capture itself (torch.cuda.make_graphed_callables) is replaced by a
    recorder here, so the routing is checked without a GPU."""
    from xlstm_ts import graphed_step

    captured = []

    def fake_capture(module, sample, allow_unused_input):
        captured.append(tuple(t.shape for t in sample))
        calls = []

        def graphed(*tensors):
            calls.append(len(tensors))
            return module(*tensors)

        graphed.calls = calls
        return graphed

    monkeypatch.setattr(torch.cuda, "make_graphed_callables", fake_capture)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(3))
            self.eager_calls = 0

        def loss(self, x, y):
            self.eager_calls += 1
            return ((x * self.w - y) ** 2).mean()

    net = Net()
    loss_of = graphed_step.GraphedLoss(net)
    batch = {"x": torch.randn(4, 3), "y": torch.randn(4, 3)}
    expected = ((batch["x"] - batch["y"]) ** 2).mean()
    torch.testing.assert_close(loss_of(batch), expected)
    assert captured == [((4, 3), (4, 3))]  # captured once, on the first batch, keys in sorted order
    loss = loss_of({"y": torch.randn(4, 3), "x": torch.randn(4, 3)})  # same signature: replayed
    loss.backward()
    assert loss_of._graphed.calls == [2, 2] and net.w.grad is not None
    eager_before = net.eager_calls
    loss_of({"x": torch.randn(2, 3), "y": torch.randn(2, 3)})  # another batch size: eager
    loss_of({"x": torch.randn(4, 3).double(), "y": torch.randn(4, 3).double()})  # another dtype: eager
    net.eval()
    loss_of(batch)  # eval mode: eager
    assert net.eager_calls - eager_before == 3 and loss_of._graphed.calls == [2, 2] and len(captured) == 1
