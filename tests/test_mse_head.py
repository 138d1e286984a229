"""The "mse" head: squared-error loss, the mean as its point, intervals from the running residual spread."""

import numpy as np
import pytest
import torch
from scipy import stats

from xlstm_ts.config import ModelConfig
from xlstm_ts.heads import make_head
from xlstm_ts.model import XLSTMForecastNet
from xlstm_ts.point_head import MSEHead


def test_loss_is_the_mean_squared_error_over_observed_steps():
    torch.manual_seed(0)
    head = MSEHead(6, 4).eval()
    params = head(torch.randn(5, 6), centre_offset=torch.randn(5, 4))  # (5, 4, 1)
    target = torch.randn(5, 4)
    observed = (torch.rand(5, 4) > 0.3).float()
    sq = (target - params[..., 0].detach()) ** 2
    loss = head.loss(target, params, observed).detach()
    assert loss.item() == pytest.approx(float(sq[observed > 0].mean()), rel=1e-6)
    assert isinstance(make_head("mse", 6, 4, (0.1, 0.9)), MSEHead)


def test_running_spread_is_bias_corrected_and_only_tracked_while_training():
    torch.manual_seed(0)
    head = MSEHead(3, 2)
    params = head(torch.randn(8, 3))
    target, observed = torch.randn(8, 2), torch.ones(8, 2)
    torch.testing.assert_close(head.residual_std(), torch.ones(2))  # untrained: unit spread
    head.eval()
    head.loss(target, params, observed)
    assert float(head.residual_weight) == 0.0  # validation does not move it
    head.train()
    with torch.no_grad():
        head.loss(target, params, observed)
    assert float(head.residual_weight) == 0.0  # nor does a loss without gradients
    head.loss(target, params, observed)
    first = ((target - params[..., 0].detach()) ** 2).mean(0).sqrt()  # (2,)
    torch.testing.assert_close(head.residual_std(), first)  # one batch: exactly its spread, not pulled to 1
    head.loss(target, params.detach() + 1.0, observed)
    second = ((target - params[..., 0].detach() - 1.0) ** 2).mean(0)
    d = head.RESIDUAL_DECAY
    expected = ((d * (1 - d) * first ** 2 + (1 - d) * second) / (d * (1 - d) + (1 - d))).sqrt()
    torch.testing.assert_close(head.residual_std(), expected)
    assert "residual_power" in head.state_dict() and "residual_weight" in head.state_dict()


def test_quantiles_and_samples_are_gaussian_around_the_mean():
    torch.manual_seed(0)
    head = MSEHead(3, 2)
    with torch.no_grad():
        head.residual_power.copy_(torch.tensor([0.25, 4.0]))
        head.residual_weight.fill_(1.0)
    params = head(torch.randn(4, 3)).detach()
    mu = params[..., 0].numpy()
    q = head.quantiles(params, (0.1, 0.5, 0.9)).numpy()
    np.testing.assert_allclose(q, stats.norm.ppf([0.1, 0.5, 0.9], mu[..., None], np.array([0.5, 2.0])[:, None]),
                               rtol=1e-5, atol=1e-6)
    draws = head.sample(params, 20000, torch.Generator().manual_seed(1))  # (4, N, 2)
    np.testing.assert_allclose(draws.std(1).numpy(), np.broadcast_to([0.5, 2.0], (4, 2)), rtol=0.03)
    np.testing.assert_allclose(draws.mean(1).numpy(), mu, atol=0.05)


def test_training_reaches_the_mean_of_a_skewed_target_not_its_median():
    # exponential noise: mean 1, median ln 2; the quantile head's point would go to the median
    torch.manual_seed(0)
    head = MSEHead(1, 1)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(400):
        target = torch.empty(256, 1).exponential_()
        loss = head.loss(target, head(torch.ones(256, 1)), torch.ones(256, 1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        point = float(head.point(head(torch.ones(1, 1)))[0, 0])
    assert point == pytest.approx(1.0, abs=0.08) and abs(point - np.log(2)) > 0.2
    assert float(head.residual_std()[0]) == pytest.approx(1.0, abs=0.15)  # the exponential's std is 1


def test_data_units_weight_the_squared_error_by_the_squared_scale():
    torch.manual_seed(0)
    cfg = ModelConfig(patch_length=4, embed_dim=8, num_heads=2, pattern="m", dropout=0.0, loss_scale="data")
    net = XLSTMForecastNet(cfg, 16, 4, (0.5,), head="mse").eval()
    past = torch.randn(3, 16) * torch.tensor([[1.0], [10.0], [0.1]])
    future = torch.randn(3, 4)
    observed = torch.ones(3, 16)
    params, loc, scale = net(past, observed)
    mean = params[..., 0] * scale + loc  # (3, 4) data units
    expected = ((mean - future) ** 2).mean()
    torch.testing.assert_close(net.loss(past, observed, future), expected, rtol=1e-5, atol=1e-7)


def test_calibration_takes_the_out_of_sample_spread_per_step():
    from xlstm_ts.point_head import calibrate_spread

    torch.manual_seed(0)
    cfg = ModelConfig(patch_length=4, embed_dim=8, num_heads=2, pattern="m", dropout=0.0)
    net = XLSTMForecastNet(cfg, 16, 3, (0.5,), head="mse")
    with torch.no_grad():
        net.head.set_spread(torch.tensor([9.0, 9.0, 9.0]))
    past, future = torch.randn(10, 16) * 3 + 1, torch.randn(10, 3)
    observed = torch.ones(10, 3)
    observed[:, 2] = 0.0  # no target at the last step: it keeps its spread
    batches = [dict(past_target=past[:6], past_observed=torch.ones(6, 16), future_target=future[:6],
                    future_observed=observed[:6]),
               dict(past_target=past[6:], past_observed=torch.ones(4, 16), future_target=future[6:],
                    future_observed=observed[6:])]
    net.train()
    assert calibrate_spread(net, batches) and net.training  # the mode comes back
    with torch.no_grad():
        params, loc, scale = net.eval()(past, torch.ones(10, 16))
    expected = (((future - loc) / scale - params[..., 0]) ** 2).mean(0)  # (3,)
    torch.testing.assert_close(net.head.residual_std()[:2], expected[:2].sqrt(), rtol=1e-5, atol=1e-7)
    assert float(net.head.residual_std()[2]) == pytest.approx(3.0)
    quantile_net = XLSTMForecastNet(cfg, 16, 3, (0.5,))
    assert not calibrate_spread(quantile_net, batches) and not calibrate_spread(net, None)


def test_fit_with_a_validation_tail_calibrates_the_intervals(one_thread):
    from xlstm_ts import XLSTMForecaster
    from xlstm_ts.datasets import make_synthetic_panel

    panel = make_synthetic_panel(n_series=3, length=150, seed=1)
    f = XLSTMForecaster(prediction_length=6, context_length=24, head="mse", model="tiny", max_steps=3, batch_size=8,
                        val_size=6).fit(panel)
    series = [g.y.to_numpy(np.float32) for _, g in panel.groupby("unique_id", sort=False)]
    past = torch.tensor(np.stack([s[-30:-6] for s in series]))  # the one validation window of each series
    future = torch.tensor(np.stack([s[-6:] for s in series]))
    net = f.net_.cpu()
    _, _, loc, scale = net.scaled_inputs(past, torch.ones_like(past))
    mean = net.predict(past, torch.ones_like(past))["mean"]  # (3, 6) data units
    expected = (((future - mean) / scale) ** 2).mean(0).sqrt()  # (6,)
    torch.testing.assert_close(net.head.residual_std(), expected, rtol=1e-4, atol=1e-6)


def test_saved_forecaster_keeps_the_spread(one_thread, tmp_path):
    from xlstm_ts import XLSTMForecaster
    from xlstm_ts.datasets import make_synthetic_panel

    panel = make_synthetic_panel(n_series=2, length=120, seed=3)
    f = XLSTMForecaster(prediction_length=4, context_length=16, head="mse", quantiles=(0.1, 0.9), model="tiny",
                        max_steps=3, batch_size=8, val_size=8).fit(panel)
    f.save(tmp_path / "m")
    g = XLSTMForecaster.load(tmp_path / "m")
    torch.testing.assert_close(g.net_.head.residual_std(), f.net_.head.residual_std().cpu())
    pd_f, pd_g = f.predict(), g.predict()
    np.testing.assert_allclose(pd_g["q0.9"].to_numpy(), pd_f["q0.9"].to_numpy(), rtol=1e-5)
    assert (pd_f["q0.9"] > pd_f["mean"]).all() and (pd_f["q0.1"] < pd_f["mean"]).all()
