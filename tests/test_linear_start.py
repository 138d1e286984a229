"""The least-squares start of the linear skip: per-window centring, the scale-free ridge, and picking the ridge with
the lowest validation score."""

import numpy as np
import pandas as pd
import pytest
import torch

from xlstm_ts import XLSTMForecaster
from xlstm_ts.config import ModelConfig, config_from_dict
from xlstm_ts.model import XLSTMForecastNet
from xlstm_ts.scaling import InstanceScaler

TINY = dict(patch_length=4, embed_dim=8, num_heads=2, pattern="m", dropout=0.0)


def test_center_scaling_subtracts_the_observed_mean_and_keeps_units():
    target = torch.tensor([[1.0, 2.0, 6.0, 1000.0], [0.001, 0.002, 0.003, 0.002]])
    observed = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    loc, scale = InstanceScaler("center")(target, observed)
    assert loc[:, 0].tolist() == pytest.approx([3.0, 0.002])
    assert scale.tolist() == [[1.0], [1.0]]  # a quiet window is not stretched


def test_ridge_accepts_a_number_or_a_list_and_refuses_the_rest():
    assert ModelConfig(linear_skip_ridge=0.5).linear_skip_ridge == 0.5
    cfg = config_from_dict({"linear_skip_ridge": [0.1, 1.0]})  # as read from YAML
    assert cfg.linear_skip_ridge == (0.1, 1.0)
    hash(cfg)  # stays usable as a frozen, hashable config
    for bad in ([], -1.0, [0.1, "x"], True):
        with pytest.raises(ValueError, match="linear_skip_ridge"):
            ModelConfig(linear_skip_ridge=bad)
    with pytest.raises(ValueError, match="scaling must be one of"):
        ModelConfig(scaling="robust")


def _windows(n=400, L=24, F=6, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n + L + F)
    series = np.sin(t / 3.0) + 0.3 * rng.standard_normal(len(t))
    idx = np.arange(n)[:, None] + np.arange(L + F)
    w = torch.tensor(series[idx], dtype=torch.float32)
    return {"past_target": w[:, :L], "past_observed": torch.ones(n, L),
            "future_target": w[:, L:], "future_observed": torch.ones(n, F)}


def _net(scaling="center", L=24, F=6):
    return XLSTMForecastNet(ModelConfig(**TINY, scaling=scaling), L, F, (0.5,)).eval()


def test_single_ridge_is_the_ridge_solution_relative_to_the_gram_diagonal():
    batch, net = _windows(), _net()
    assert net.fit_linear_skip(**batch, ridge=0.3) == 0.3
    x = batch["past_target"].double()
    loc = x.mean(dim=1, keepdim=True)
    x1 = torch.cat([x - loc, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    gram = x1.T @ x1
    coef = torch.linalg.solve(gram + 0.3 * gram.diagonal().mean() * torch.eye(len(gram), dtype=x.dtype),
                              x1.T @ (batch["future_target"].double() - loc))
    torch.testing.assert_close(net.skip.weight.detach().double(), coef[:-1].T, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(net.skip.bias.detach().double(), coef[-1], rtol=1e-5, atol=1e-6)


def test_several_ridges_keep_the_one_with_the_lowest_score():
    batch, net = _windows(), _net()
    weights = {}
    for r in (1e-3, 1.0, 30.0):
        net.fit_linear_skip(**batch, ridge=r)
        weights[r] = net.skip.weight.detach().clone()
    assert not torch.allclose(weights[1e-3], weights[30.0])
    # a score that prefers the middle ridge, recognised by its weights
    score = lambda: 0.0 if torch.allclose(net.skip.weight, weights[1.0]) else 1.0  # noqa: E731
    assert net.fit_linear_skip(**batch, ridge=(1e-3, 1.0, 30.0), score=score) == 1.0
    torch.testing.assert_close(net.skip.weight, weights[1.0])
    # NaN scores lose; without a score the first ridge is kept
    nan_first = lambda: float("nan") if torch.allclose(net.skip.weight, weights[1e-3]) else 2.0  # noqa: E731
    assert net.fit_linear_skip(**batch, ridge=(1e-3, 30.0), score=nan_first) == 30.0
    assert net.fit_linear_skip(**batch, ridge=(30.0, 1e-3)) == 30.0
    torch.testing.assert_close(net.skip.weight, weights[30.0])


def test_forecaster_picks_the_ridge_with_the_lowest_validation_loss(tmp_path):
    rng = np.random.default_rng(1)
    n = 400
    y = np.sin(np.arange(n) / 4.0) + 0.5 * rng.standard_normal(n)
    df = pd.DataFrame({"unique_id": "a", "ds": pd.date_range("2024-01-01", periods=n, freq="h"), "y": y})
    ridges = (1e-4, 100.0)
    common = dict(prediction_length=8, context_length=32, max_steps=1, batch_size=16, val_size=64,
                  val_check_steps=1, random_state=0, trainer_kwargs={"accelerator": "cpu"})
    losses = {}
    for r in ridges:  # each ridge alone: the validation loss of the start is the seeded best score
        est = XLSTMForecaster(model={**TINY, "linear_skip_ridge": r}, learning_rate=0.0, **common).fit(df)
        assert est.linear_skip_ridge_ == r
        losses[r] = est.best_val_loss_
    assert losses[ridges[0]] != pytest.approx(losses[ridges[1]])
    est = XLSTMForecaster(model={**TINY, "linear_skip_ridge": list(ridges)}, learning_rate=0.0, **common).fit(df)
    assert est.linear_skip_ridge_ == min(ridges, key=losses.get)
    assert est.best_val_loss_ == pytest.approx(min(losses.values()), rel=1e-6)
    assert XLSTMForecaster.load(est.save(tmp_path / "m")).linear_skip_ridge_ == est.linear_skip_ridge_


@pytest.mark.parametrize("mode", ["channel_independent", "variate_mixing"])
def test_skip_scorer_runs_the_stack_once_and_scores_as_mean_loss(mode):
    from xlstm_ts.training_utils import batch_loader, mean_loss, skip_scorer

    cfg = ModelConfig(**{**TINY, "dropout": 0.3}, mode=mode, mixing_dim=8, mixing_heads=2)
    net = XLSTMForecastNet(cfg, 24, 6, (0.1, 0.5, 0.9)).train()  # dropout on: the scorer must score in eval mode
    batch = _windows(n=90)
    if mode == "variate_mixing":  # 30 windows of 3 variates
        batch = {k: v.reshape(30, 3, -1) for k, v in batch.items()}
    loader = batch_loader(batch, size=16)  # batches of 16, 14 (or 16, 16, ..., 10)
    passes = []
    net.stack.register_forward_hook(lambda *_: passes.append(1))
    score = skip_scorer(net, loader)
    assert len(passes) == len(loader) and net.training
    torch.manual_seed(0)
    for _ in range(3):  # each skip map: the cached score is the full validation loss, and runs no stack
        with torch.no_grad():
            net.skip.weight.normal_(0.0, 0.1)
            net.skip.bias.normal_()
        cached, before = score(), len(passes)
        assert len(passes) == before and net.training
        assert cached == pytest.approx(mean_loss(net, loader), rel=1e-6)


def test_validation_batches_are_smaller_on_the_cpu():
    from types import SimpleNamespace

    from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator

    from xlstm_ts.training_utils import validation_batch_size

    assert validation_batch_size(SimpleNamespace(accelerator=CPUAccelerator())) == 256
    assert validation_batch_size(SimpleNamespace(accelerator=CUDAAccelerator())) == 1024


@pytest.mark.parametrize("mode", ["channel_independent", "variate_mixing"])
@pytest.mark.parametrize("head", ["quantile", "mse", "normal"])
def test_network_starts_as_its_linear_skip(mode, head):
    torch.manual_seed(0)
    net = XLSTMForecastNet(ModelConfig(**TINY, mode=mode, scaling="center"), 24, 6, (0.1, 0.5, 0.9), head=head).eval()
    past = torch.randn(4, 3, 24) * 2 + 5  # (B, C, L)
    with torch.no_grad():
        mean = net.predict(past, torch.ones_like(past))["mean"]  # (4, 3, 6)
        flat = past.reshape(-1, 24)
        loc = flat.mean(1, keepdim=True)
        expected = (net.skip(flat - loc) + loc).reshape(4, 3, 6)
    torch.testing.assert_close(mean, expected, rtol=1e-5, atol=1e-5)


def test_data_loss_scale_fits_the_least_squares_map_in_data_units():
    """loss_scale='data' with 'std' scaling: each window's scaled squared error weighted by its scale squared (the
    fit in data units); unweighted, windows of tiny spread would dominate the fit."""
    batch = _windows()
    batch["past_target"][::2] *= 0.01  # half the windows quiet: their scaled values are blown up by 1/std
    batch["future_target"][::2] *= 0.01
    net = XLSTMForecastNet(ModelConfig(**TINY, scaling="std", loss_scale="data"), 24, 6, (0.5,)).eval()
    net.fit_linear_skip(**batch, ridge=0.1)
    _, _, loc, scale = net.scaled_inputs(batch["past_target"], batch["past_observed"])
    x = ((batch["past_target"] - loc) / scale).double()
    y = ((batch["future_target"] - loc) / scale).double()
    x1 = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    w = scale.double() ** 2  # (n, 1)
    gram = (x1 * w).T @ x1
    coef = torch.linalg.solve(gram + 0.1 * gram.diagonal().mean() * torch.eye(len(gram), dtype=x.dtype),
                              (x1 * w).T @ y)
    torch.testing.assert_close(net.skip.weight.detach().double(), coef[:-1].T, rtol=1e-4, atol=1e-5)
    unweighted = XLSTMForecastNet(ModelConfig(**TINY, scaling="std"), 24, 6, (0.5,)).eval()
    unweighted.fit_linear_skip(**batch, ridge=0.1)

    @torch.no_grad()
    def data_mse(model):  # the skip's forecast in data units
        return float((((x1[:, :-1].float() @ model.skip.weight.T + model.skip.bias) * scale + loc
                       - batch["future_target"]) ** 2).mean())

    assert data_mse(net) < data_mse(unweighted)


def test_frozen_skip_needs_a_least_squares_start():
    assert ModelConfig(linear_skip_frozen=True).linear_skip_frozen
    for bad in ({"linear_skip_init": "random"}, {"linear_skip": False}):
        with pytest.raises(ValueError, match="linear_skip_frozen"):
            ModelConfig(linear_skip_frozen=True, **bad)


def test_frozen_skip_and_horizon_term_take_no_gradient():
    net = XLSTMForecastNet(ModelConfig(**TINY, linear_skip_frozen=True), 24, 6, (0.5,), n_future=1)
    assert not net.skip.weight.requires_grad and not net.skip.bias.requires_grad
    assert not net.covariates.horizon_linear.weight.requires_grad
    assert net.stack.parameters().__next__().requires_grad  # the stack trains


@pytest.mark.parametrize("frozen", [True, False])
def test_training_keeps_a_frozen_skip_at_its_least_squares_start(frozen):
    """The same seed with learning rate 0 gives the start; trained, a frozen skip is still exactly that start while
    the stack moved, and an unfrozen skip moved too."""
    rng = np.random.default_rng(2)
    n = 400
    y = np.sin(np.arange(n) / 4.0) + 0.5 * rng.standard_normal(n)
    df = pd.DataFrame({"unique_id": "a", "ds": pd.date_range("2024-01-01", periods=n, freq="h"), "y": y})
    common = dict(prediction_length=8, context_length=32, max_steps=5, batch_size=16, random_state=0,
                  trainer_kwargs={"accelerator": "cpu"})  # fmt: skip  # no validation: the last weights are kept
    model = {**TINY, "linear_skip_frozen": frozen}
    start = XLSTMForecaster(model=model, learning_rate=0.0, **common).fit(df).net_
    trained = XLSTMForecaster(model=model, learning_rate=1e-2, **common).fit(df).net_
    same_skip = torch.equal(trained.skip.weight, start.skip.weight) and torch.equal(trained.skip.bias, start.skip.bias)
    assert same_skip == frozen
    moved = [not torch.equal(a, b) for a, b in zip(trained.stack.parameters(), start.stack.parameters(), strict=True)]
    assert any(moved)
