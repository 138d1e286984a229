"""gluonts round trip and forecasts that gluonts' Evaluator scores."""

import numpy as np
import pandas as pd
import pytest

from xlstm_ts import XLSTMForecaster, metrics
from xlstm_ts.datasets import from_gluonts, make_synthetic_panel, to_gluonts

pytest.importorskip("gluonts")


def test_long_frame_round_trip_keeps_values_times_ids():
    df = make_synthetic_panel(n_series=3, length=50, seed=2)
    back = from_gluonts(to_gluonts(df, freq="h"))
    pd.testing.assert_frame_equal(back.reset_index(drop=True), df.astype({"y": "float64"}).reset_index(drop=True))


def test_from_gluonts_keeps_dynamic_features_and_defaults_ids():
    entries = [{"start": pd.Period("2024-01-01", freq="D"), "target": [1.0, 2.0, 3.0],
                "feat_dynamic_real": [[0.1, 0.2, 0.3], [5.0, 6.0, 7.0]]}]
    frame = from_gluonts(entries)
    assert list(frame.columns) == ["unique_id", "ds", "y", "feat_dynamic_real_0", "feat_dynamic_real_1"]
    assert frame.unique_id.tolist() == [0, 0, 0] and frame.ds.iloc[-1] == pd.Timestamp("2024-01-03")


def test_predict_gluonts_is_scored_by_the_evaluator():
    from gluonts.evaluation import Evaluator

    df = make_synthetic_panel(n_series=3, length=120, seed=5)
    train = df[df.groupby("unique_id").cumcount(ascending=False) >= 6]
    f = XLSTMForecaster(prediction_length=6, context_length=24, model="tiny", max_steps=2, batch_size=8).fit(train)
    forecasts = f.predict_gluonts(to_gluonts(train, freq="h"))
    assert [fc.item_id for fc in forecasts] == list(pd.unique(train.unique_id))
    assert forecasts[0].start_date == pd.Period(train.ds.max(), freq="h") + 1
    series = [g.set_index(pd.PeriodIndex(g.ds, freq="h")).y for _, g in df.groupby("unique_id", sort=False)]
    agg, _ = Evaluator(quantiles=(0.1, 0.5, 0.9), num_workers=0)(iter(series), iter(forecasts))
    pred = f.predict()
    actual = df[df.groupby("unique_id").cumcount(ascending=False) < 6].y.to_numpy().reshape(3, 6)
    assert agg["MSE"] == pytest.approx(metrics.mse(actual, pred["mean"].to_numpy().reshape(3, 6)), rel=1e-4)
    q = pred[["q0.1", "q0.5", "q0.9"]].to_numpy().reshape(3, 6, 3)
    assert agg["mean_wQuantileLoss"] == pytest.approx(metrics.weighted_quantile_loss(actual, q, (0.1, 0.5, 0.9)),
                                                      rel=1e-4)
    assert np.isfinite(agg["MASE"])


def test_predict_gluonts_reads_future_covariates_beyond_the_target():
    from xlstm_ts.datasets import make_covariate_panel

    df = make_covariate_panel(n_series=2, length=100, seed=6)[["unique_id", "ds", "y", "promo", "temperature"]]
    H = 6
    is_tail = df.groupby("unique_id").cumcount(ascending=False) < H
    train, tail = df[~is_tail], df[is_tail]
    # gluonts test entries: the target up to the forecast start, dynamic features over the prediction range too
    entries = [{"start": pd.Period(g.ds.iloc[0], freq="h"), "item_id": uid,
                "target": g.y.to_numpy()[:-H], "feat_dynamic_real": g[["promo", "temperature"]].to_numpy().T}
               for uid, g in df.groupby("unique_id", sort=False)]  # fmt: skip
    frame = from_gluonts(entries)
    assert len(frame) == len(train)
    names = ["feat_dynamic_real_0", "feat_dynamic_real_1"]
    f = XLSTMForecaster(prediction_length=H, context_length=24, model="tiny", max_steps=2, batch_size=8,
                        future_covariates=names).fit(frame)
    forecasts = f.predict_gluonts(entries)
    futr = tail.rename(columns={"promo": names[0], "temperature": names[1]})[["unique_id", "ds", *names]]
    expected = f.predict(frame, futr_df=futr)
    np.testing.assert_allclose(np.stack([fc.mean for fc in forecasts]), expected["mean"].to_numpy().reshape(2, H),
                               rtol=1e-6)
    np.testing.assert_allclose(forecasts[1].quantile(0.9), expected["q0.9"].to_numpy()[H:], rtol=1e-6)
    short = [dict(e, feat_dynamic_real=e["feat_dynamic_real"][:, :-H]) for e in entries]
    with pytest.raises(ValueError, match="next 6 steps"):
        f.predict_gluonts(short)
