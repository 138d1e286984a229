"""Metrics agree with gluonts' definitions (gluonts.ev) on the same forecasts, and with brute-force references."""

import numpy as np
import pytest

from xlstm_ts import metrics

ev = pytest.importorskip("gluonts.ev.metrics")


@pytest.fixture
def forecasts():
    rng = np.random.default_rng(42)
    N, F, levels = 5, 7, (0.1, 0.5, 0.9)
    y = rng.normal(10, 3, size=(N, F))
    q = np.sort(rng.normal(10, 3, size=(N, F, len(levels))), axis=-1)
    history = [rng.normal(10, 3, size=n) for n in (30, 50, 8, 40, 60)]
    return y, q, levels, history


def _gluonts(metric, data):
    return float(metric(axis=None).update(data).get())


def test_point_metrics_match_gluonts(forecasts):
    y, q, levels, history = forecasts
    season = 12
    data = {"label": y, "0.5": q[..., 1], "mean": q[..., 1],
            "seasonal_error": metrics.seasonal_error(history, season)[:, None]}
    assert metrics.mae(y, q[..., 1]) == pytest.approx(_gluonts(ev.MAE(), data))
    assert metrics.mse(y, q[..., 1]) == pytest.approx(_gluonts(ev.MSE(), data))
    assert metrics.smape(y, q[..., 1]) == pytest.approx(_gluonts(ev.SMAPE(), data))
    assert metrics.mase(y, q[..., 1], history, season) == pytest.approx(_gluonts(ev.MASE(), data))


def test_quantile_metrics_match_gluonts(forecasts):
    y, q, levels, _ = forecasts
    data = {"label": y, **{str(level): q[..., j] for j, level in enumerate(levels)}}
    wql = _gluonts(ev.MeanWeightedSumQuantileLoss(quantile_levels=levels), data)
    assert metrics.weighted_quantile_loss(y, q, levels) == pytest.approx(wql)
    assert metrics.coverage(y, np.full_like(y, -np.inf), q[..., 2]) == pytest.approx(_gluonts(ev.Coverage(q=0.9), data))


def test_msis_matches_gluonts(forecasts):
    y, q, _, history = forecasts
    season = 12
    data = {"label": y, "0.025": q[..., 0], "0.975": q[..., 2],
            "seasonal_error": metrics.seasonal_error(history, season)[:, None]}
    expected = _gluonts(ev.MSIS(alpha=0.05), data)
    assert metrics.msis(y, q[..., 0], q[..., 2], history, season, alpha=0.05) == pytest.approx(expected)


def test_seasonal_error_by_hand():
    history = [np.array([1.0, 2.0, 4.0, 8.0]), np.array([5.0, 3.0])]
    np.testing.assert_allclose(metrics.seasonal_error(history, 2), [(3.0 + 6.0) / 2, 2.0])  # short -> season 1


def test_crps_samples_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    y, samples = rng.normal(size=(3, 4)), rng.normal(size=(3, 25, 4))
    pairwise = np.abs(samples[:, :, None, :] - samples[:, None, :, :]).mean(axis=(1, 2))
    expected = (np.abs(samples - y[:, None, :]).mean(axis=1) - 0.5 * pairwise).mean()
    assert metrics.crps_samples(y, samples) == pytest.approx(expected)


@pytest.mark.parametrize("freq, season", [("h", 24), ("15min", 96), ("D", 7), ("W", 52), ("MS", 12), ("2h", 12),
                                          ("QS", 4), ("YS", 1)])
def test_season_length(freq, season):
    assert metrics.season_length(freq) == season


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="does not match"):
        metrics.mae(np.zeros((2, 3)), np.zeros((3, 2)))
