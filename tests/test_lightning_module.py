"""LitForecaster's optimizer: AdamW with weight decay on the weight matrices (not on sLSTM recurrent matrices,
norms or biases), fused where torch has the kernel."""

import copy
from types import SimpleNamespace

import pytest
import torch

from xlstm_ts.config import load_config
from xlstm_ts.lightning_module import LitForecaster, fused_adamw_supported
from xlstm_ts.model import XLSTMForecastNet


def _module() -> LitForecaster:
    torch.manual_seed(0)
    net = XLSTMForecastNet(load_config("tiny"), context_length=48, prediction_length=12, levels=(0.1, 0.5, 0.9))
    return LitForecaster(net, learning_rate=1e-3, weight_decay=1e-2, max_steps=20)


def test_optimizer_is_fused_adamw_with_decay_on_matrices_only():
    module = _module()
    optimizer = module.configure_optimizers()["optimizer"]
    assert isinstance(optimizer, torch.optim.AdamW)
    decay, no_decay = optimizer.param_groups
    assert decay["fused"] and no_decay["fused"]
    assert decay["weight_decay"] == 1e-2 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in module.net.named_parameters()}
    assert all(p.ndim >= 2 and "recurrent" not in names[id(p)] for p in decay["params"])
    assert all(p.ndim < 2 or "recurrent" in names[id(p)] for p in no_decay["params"])  # sLSTM's R: no decay
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(module.net.parameters()))


@pytest.mark.parametrize(
    "precision, clip, fused",
    [("32-true", 1.0, True), ("bf16-mixed", None, True), ("bf16-mixed", 1.0, False), ("16-mixed", 1.0, False)],
)
def test_no_fused_optimizer_when_clipping_under_mixed_precision(precision, clip, fused):
    module = _module()
    module._trainer = SimpleNamespace(precision=precision, gradient_clip_val=clip)  # what configure_optimizers reads
    assert all(g["fused"] is fused for g in module.configure_optimizers()["optimizer"].param_groups)


@pytest.mark.parametrize(
    "params, expected",
    [
        ([torch.zeros(3), torch.zeros(2, 2)], True),
        ([torch.zeros(3, device="meta")], False),  # no fused kernel there
        ([torch.zeros(3), torch.zeros(3, device="meta")], False),  # one device only
        ([torch.zeros(3, dtype=torch.int64)], False),
        ([], False),
    ],
)
def test_fused_adamw_supported(params, expected):
    assert fused_adamw_supported(params) is expected


def test_fused_update_matches_the_foreach_update():
    """Ten steps of the module's fused optimizer and of the foreach default from the same start and gradients."""
    module = _module()
    other = copy.deepcopy(module)  # same grouping of its own parameters, built by the same method
    fused = module.configure_optimizers()["optimizer"]
    groups = [{"params": g["params"], "weight_decay": g["weight_decay"]}
              for g in other.configure_optimizers()["optimizer"].param_groups]  # fmt: skip
    foreach = torch.optim.AdamW(groups, lr=1e-3, foreach=True)
    for _ in range(10):
        grads = [torch.randn_like(p) for p in module.net.parameters()]
        for net in (module.net, other.net):
            for p, g in zip(net.parameters(), grads):
                p.grad = g.clone()
        fused.step()
        foreach.step()
    for (name, p), q in zip(module.net.named_parameters(), other.net.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
