"""Variate mixing: windows of several variates, the mixing stack, the data-unit loss and the forecaster mode."""

import numpy as np
import pandas as pd
import pytest
import torch

from xlstm_ts import XLSTMForecaster
from xlstm_ts.config import ModelConfig
from xlstm_ts.datasets import WindowSampler, context_windows, make_synthetic_panel
from xlstm_ts.datasets.windows import tail_windows
from xlstm_ts.model import XLSTMForecastNet

SMALL = dict(embed_dim=16, num_heads=2, pattern="m", patch_length=8, mixing_dim=16, mixing_heads=2)


def net_for(mode: str, **extra) -> XLSTMForecastNet:
    torch.manual_seed(0)
    cfg = ModelConfig(**SMALL, mode=mode, linear_skip=False, dropout=0.0, **extra)
    net = XLSTMForecastNet(cfg, context_length=32, prediction_length=6, levels=(0.1, 0.5, 0.9)).eval()
    for param in net.head.parameters():  # the zero-initialised head would hide any dependence
        torch.nn.init.normal_(param, std=0.1)
    return net


@pytest.mark.parametrize("mode", ["channel_independent", "variate_mixing"])
def test_other_variates_change_a_forecast_only_when_mixing(mode):
    net = net_for(mode)
    x = torch.randn(2, 4, 32)
    changed = x.clone()
    changed[:, 3] += torch.randn(2, 32)  # only variate 3 moves
    base = net.predict(x, torch.ones_like(x))["mean"]  # (2, 4, 6)
    moved = net.predict(changed, torch.ones_like(x))["mean"]
    assert base.shape == (2, 4, 6)
    other = (moved[:, :3] - base[:, :3]).abs().max().item()
    assert (other > 1e-4) if mode == "variate_mixing" else (other == 0.0)
    assert (moved[:, 3] - base[:, 3]).abs().max().item() > 1e-4


def test_mixing_needs_variate_windows():
    with pytest.raises(ValueError, match=r"\(B, C, L\)"):
        net_for("variate_mixing").predict(torch.randn(2, 32), torch.ones(2, 32))


def test_data_loss_is_pinball_in_data_units():
    net = net_for("channel_independent", loss_scale="data")
    x = torch.randn(5, 32) * torch.arange(1, 6).unsqueeze(1) + 3.0  # windows of different scales
    y = torch.randn(5, 6) * 2.0
    observed = torch.ones_like(y)
    observed[0, :2] = 0.0
    quantiles = net.predict(x, torch.ones_like(x))["quantiles"]  # (5, 6, 3) data units
    levels = torch.tensor([0.1, 0.5, 0.9])
    diff = y.unsqueeze(-1) - quantiles
    pinball = torch.maximum(levels * diff, (levels - 1) * diff).mean(-1)  # (5, 6)
    expected = (pinball * observed).sum() / observed.sum()
    assert net.loss(x, torch.ones_like(x), y, observed).item() == pytest.approx(expected.item(), rel=1e-5)


def test_windows_of_a_multivariate_series():
    rng = np.random.default_rng(0)
    series = rng.normal(size=(50, 3)).astype(np.float32)  # (S, C)
    sampler = WindowSampler([series], context_length=8, prediction_length=4, batch_size=5, seed=0)
    batch = sampler.windows(np.array([0, 20, sampler.num_windows - 1]))
    assert batch["past_target"].shape == (3, 3, 8) and batch["future_target"].shape == (3, 3, 4)
    # flat index k has its cut at k + 1 (min_past 1): context rows cut-8 .. cut-1, target rows cut .. cut+3
    np.testing.assert_array_equal(batch["past_target"][1].numpy(), series[13:21].T)
    np.testing.assert_array_equal(batch["future_target"][1].numpy(), series[21:25].T)
    assert batch["past_observed"][0, :, :7].sum() == 0 and batch["past_observed"][0, :, 7].sum() == 3
    tail = tail_windows([series], 8, 4, tail=10)
    assert tail["past_target"].shape == (7, 3, 8)
    np.testing.assert_array_equal(tail["future_target"][-1].numpy(), series[-4:].T)
    ctx = context_windows([series], 60)["past_target"]
    assert ctx.shape == (1, 3, 60) and (ctx[0, :, :10] == 0).all()
    np.testing.assert_array_equal(ctx[0, :, 10:].numpy(), series.T)


def test_forecaster_variate_mixing_end_to_end(tmp_path):
    df = make_synthetic_panel(n_series=3, length=160, seed=1)
    model = dict(SMALL, mode="variate_mixing")
    f = XLSTMForecaster(prediction_length=8, context_length=32, model=model, max_steps=6, batch_size=4,
                        val_size=16, val_check_steps=3, random_state=0).fit(df)
    out = f.predict()
    assert out.shape == (24, 6) and list(out["unique_id"].unique()) == ["series_0", "series_1", "series_2"]
    shuffled = f.predict(df.sample(frac=1.0, random_state=0))  # same variates in any row order
    pd.testing.assert_frame_equal(out, shuffled)
    assert f.sample(num_samples=7).shape == (3, 7, 8)
    context = np.stack([df[df.unique_id == u].y.to_numpy()[-40:] for u in ["series_0", "series_1", "series_2"]])
    arr = f.predict_array(context[None])  # (1, 3, 40)
    np.testing.assert_allclose(arr["mean"][0], out["mean"].to_numpy().reshape(3, 8), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"\(N, 3, S\)"):
        f.predict_array(context[:2][None])
    with pytest.raises(ValueError, match="exactly those 3 series"):
        f.predict(df[df.unique_id != "series_1"])
    loaded = XLSTMForecaster.load(f.save(tmp_path / "m"))
    pd.testing.assert_frame_equal(loaded.predict(), out)
    assert np.isfinite(f.score(df))


def test_forecaster_variate_mixing_needs_aligned_series():
    df = make_synthetic_panel(n_series=2, length=120, seed=1)
    df = df.drop(df[df.unique_id == "series_1"].index[:5])  # series_1 starts 5 steps later
    f = XLSTMForecaster(prediction_length=8, context_length=32, model=dict(SMALL, mode="variate_mixing"),
                        max_steps=2, batch_size=4)
    with pytest.raises(ValueError, match="share one time index"):
        f.fit(df)
