"""Covariates: past, known-future and static columns, futr_df, make_future_frame, errors, save/load, backtests."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone

from xlstm_ts import XLSTMForecaster
from xlstm_ts.datasets import make_covariate_panel
from xlstm_ts.datasets.windows import Covariates, WindowSampler, context_windows, tail_windows
from xlstm_ts.metrics import mase

TINY = dict(prediction_length=6, context_length=24, model="tiny", max_steps=3, batch_size=8)
ROLES = dict(past_covariates=["sensor"], future_covariates=["promo", "temperature"],
             static_covariates=["store_size", "region"])


@pytest.fixture(scope="module")
def frame():
    df = make_covariate_panel(n_series=3, length=120, seed=1)
    rng = np.random.default_rng(0)
    df["sensor"] = np.where(rng.random(len(df)) < 0.1, np.nan, rng.normal(size=len(df)))  # NaN = missing
    return df


@pytest.fixture(scope="module")
def fitted(frame):
    return XLSTMForecaster(**TINY, **ROLES).fit(frame)


def future_from(frame: pd.DataFrame, futr: pd.DataFrame) -> pd.DataFrame:
    """Fill a future frame's covariates from `frame` (rows it has) or with a plan of one promotion hour."""
    futr = futr.copy()
    futr["promo"] = (np.arange(len(futr)) % 6 == 2).astype(float)
    futr["temperature"] = 18.0
    return futr


def test_params_are_stored_and_clone_roundtrips():
    f = XLSTMForecaster(**ROLES, log_dir="runs")
    assert f.get_params()["future_covariates"] == ["promo", "temperature"]
    assert clone(f).get_params() == f.get_params()


def test_make_future_frame(fitted, frame):
    futr = fitted.make_future_frame()
    assert list(futr.columns) == ["unique_id", "ds", "promo", "temperature"]
    assert len(futr) == 3 * 6 and futr[["promo", "temperature"]].isna().all().all()
    for uid, group in futr.groupby("unique_id"):
        last = frame[frame.unique_id == uid].ds.max()
        assert list(group.ds) == list(pd.date_range(last, periods=7, freq="h")[1:])
    shorter = frame[frame.ds < frame.ds.max() - pd.Timedelta(hours=9)]
    assert fitted.make_future_frame(shorter).ds.min() == shorter.ds.max() + pd.Timedelta(hours=1)
    plain = XLSTMForecaster(**TINY).fit(frame[["unique_id", "ds", "y"]])
    assert list(plain.make_future_frame().columns) == ["unique_id", "ds"]


def test_futr_df_round_trip(fitted, frame):
    futr = future_from(frame, fitted.make_future_frame())
    out = fitted.predict(futr_df=futr)
    assert list(out.columns) == ["unique_id", "ds", "mean", "q0.1", "q0.5", "q0.9"] and len(out) == 18
    assert np.isfinite(out["mean"]).all()
    pd.testing.assert_frame_equal(out[["unique_id", "ds"]], futr[["unique_id", "ds"]])
    shuffled = futr.sample(frac=1.0, random_state=0).assign(extra="ignored")  # row order and extra columns
    pd.testing.assert_frame_equal(fitted.predict(futr_df=shuffled), out)
    pd.testing.assert_frame_equal(fitted.predict(frame, futr_df=futr), out)  # the fitted frame again
    warmer = fitted.predict(futr_df=futr.assign(temperature=30.0))
    assert not np.allclose(warmer["mean"], out["mean"])  # the forecast reads the future values
    assert fitted.sample(num_samples=5, futr_df=futr).shape == (3, 5, 6)


def test_past_covariates_are_read_over_the_context(fitted, frame):
    futr = future_from(frame, fitted.make_future_frame())
    base = fitted.predict(frame, futr_df=futr)
    moved = frame.copy()
    last = moved.groupby("unique_id").cumcount(ascending=False) < 5
    moved.loc[last, "sensor"] = 5.0
    assert not np.allclose(fitted.predict(moved, futr_df=futr)["mean"], base["mean"])
    moved.loc[last, "sensor"] = np.nan  # missing past values are masked, not errors
    assert np.isfinite(fitted.predict(moved, futr_df=futr)["mean"]).all()


def test_static_covariates_from_columns_or_static_df(frame):
    static_df = frame.groupby("unique_id", as_index=False)[["store_size", "region"]].first()
    roles = dict(future_covariates=["promo"], static_covariates=["store_size", "region"])
    from_columns = XLSTMForecaster(**TINY, **roles).fit(frame)
    from_table = XLSTMForecaster(**TINY, **roles).fit(frame.drop(columns=["store_size", "region"]),
                                                       static_df=static_df)
    assert from_columns.covariates_.categories == {"region": ["north", "south"]}
    assert from_columns.static_features_.shape == (3, 3)  # store_size + one-hot region
    futr = from_columns.make_future_frame().assign(promo=0.0)
    out = from_columns.predict(futr_df=futr)
    pd.testing.assert_frame_equal(from_table.predict(futr_df=futr), out)
    bigger = static_df.assign(store_size=static_df.store_size * 3)
    assert not np.allclose(from_columns.predict(futr_df=futr, static_df=bigger)["mean"], out["mean"])
    context = frame.drop(columns=["store_size", "region"])  # fitted ids: the statics seen in fit
    pd.testing.assert_frame_equal(from_columns.predict(context, futr_df=futr), out)


def test_save_load_keeps_the_covariate_setup(fitted, frame, tmp_path):
    futr = future_from(frame, fitted.make_future_frame())
    loaded = XLSTMForecaster.load(fitted.save(tmp_path / "model"), map_location="cpu")
    assert loaded.covariates_ == fitted.covariates_
    assert loaded.get_params()["static_covariates"] == ["store_size", "region"]
    pd.testing.assert_frame_equal(loaded.predict(futr_df=futr), fitted.predict(futr_df=futr))
    pd.testing.assert_frame_equal(loaded.predict(frame, futr_df=futr), fitted.predict(frame, futr_df=futr))
    np.testing.assert_array_equal(loaded.panel_.covariates[0], fitted.panel_.covariates[0][-24:])
    with pytest.raises(ValueError, match="pass futr_df"):
        loaded.predict()


def test_format_1_files_still_load(frame, tmp_path):
    plain = XLSTMForecaster(**TINY).fit(frame[["unique_id", "ds", "y"]])
    folder = plain.save(tmp_path / "old")
    settings = json.loads((folder / "forecaster.json").read_text())
    settings["format"] = 1
    for key in ("past_covariates", "future_covariates", "static_covariates", "log_dir"):
        settings["params"].pop(key)
    settings.pop("covariates")
    (folder / "forecaster.json").write_text(json.dumps(settings))
    pd.testing.assert_frame_equal(XLSTMForecaster.load(folder).predict(), plain.predict())


def test_cross_validation_takes_future_values_from_the_frame(frame):
    static_df = frame.groupby("unique_id", as_index=False)[["store_size", "region"]].first()
    df = frame.drop(columns=["store_size", "region"])
    f = XLSTMForecaster(**TINY, past_covariates=["sensor"], future_covariates=["promo", "temperature"],
                        static_covariates=["store_size", "region"])
    cv = f.cross_validation(df, n_windows=2, step_size=4, static_df=static_df)
    assert list(cv.columns) == ["unique_id", "ds", "cutoff", "mean", "q0.1", "q0.5", "q0.9", "y"]
    assert len(cv) == 2 * 3 * 6
    merged = cv.merge(df, on=["unique_id", "ds"], suffixes=("", "_true"))
    np.testing.assert_allclose(merged["y"], merged["y_true"])
    last = cv.cutoff.max()
    expected = f.predict(df[df.ds <= last], futr_df=df[(df.ds > last) & (df.ds <= last + pd.Timedelta(hours=6))],
                         static_df=static_df)
    np.testing.assert_allclose(cv[cv.cutoff == last]["mean"], expected["mean"], rtol=1e-6)
    refit = f.cross_validation(df, n_windows=2, step_size=4, refit=True, static_df=static_df)
    assert len(refit) == len(cv) and all(end == last for end in f.panel_.ends)


def test_score_uses_the_frames_future_values(fitted, frame):
    score = fitted.score(frame)
    is_tail = frame.groupby("unique_id").cumcount(ascending=False) < 6
    head, tail = frame[~is_tail], frame[is_tail]
    pred = fitted.predict(head, futr_df=tail)
    history = [g.y.to_numpy() for _, g in head.groupby("unique_id", sort=False)]
    expected = -mase(tail.y.to_numpy().reshape(3, 6), pred["mean"].to_numpy().reshape(3, 6), history, 24)
    assert score == pytest.approx(expected, rel=1e-5)


def test_windows_carry_aligned_covariates():
    target = np.arange(40, dtype=np.float32)
    dynamic = np.stack([100 + target, 200 + target], axis=1)  # (S, K): one past-only, one known-future column
    covs = Covariates([dynamic], n_future=1, static=np.array([[7.0]], np.float32))
    sampler = WindowSampler([target], context_length=8, prediction_length=4, batch_size=3, seed=0, covariates=covs)
    batch = sampler.windows(np.array([20]))  # cut at 21: context rows 13..20, target rows 21..24
    np.testing.assert_array_equal(batch["past_target"][0].numpy(), target[13:21])
    np.testing.assert_array_equal(batch["past_covariates"][0].numpy(), dynamic[13:21].T)  # (K, L)
    np.testing.assert_array_equal(batch["future_covariates"][0, 0].numpy(), 200 + target[21:25])  # (Kf, F)
    assert batch["static_covariates"].tolist() == [[7.0]]
    early = sampler.windows(np.array([0]))  # context before the start: padded and masked
    assert early["past_covariates_observed"][0, :, :7].sum() == 0 and early["past_covariates"][0, :, :7].sum() == 0
    tail = tail_windows([target], 8, 4, tail=6, covariates=covs)
    np.testing.assert_array_equal(tail["future_covariates"][-1, 0].numpy(), 200 + target[-4:])
    assert tail["past_covariates"].shape == (3, 2, 8) and tail["static_covariates"].shape == (3, 1)
    ahead = Covariates([dynamic], 1, covs.static, future=np.full((1, 1, 4), 9.0, np.float32))
    ctx = context_windows([target], 8, ahead)
    np.testing.assert_array_equal(ctx["past_covariates"][0].numpy(), dynamic[-8:].T)
    assert ctx["future_covariates"].tolist() == [[[9.0] * 4]]


def test_network_covariate_inputs_and_linear_init():
    import dataclasses

    from xlstm_ts.config import load_config
    from xlstm_ts.model import XLSTMForecastNet

    torch.manual_seed(0)
    cfg = dataclasses.replace(load_config("tiny"), scaling="none")  # data units: the effect is exactly linear
    net = XLSTMForecastNet(cfg, 16, 4, (0.1, 0.5, 0.9), n_past=1, n_future=1, n_static=2)
    shapes = {k: v[0] for k, v in net.describe_inputs(3).items()}
    assert shapes == {"past_target": (3, 16), "past_observed": (3, 16), "past_covariates": (3, 2, 16),
                      "past_covariates_observed": (3, 2, 16), "future_covariates": (3, 1, 4),
                      "static_covariates": (3, 2)}
    with pytest.raises(ValueError, match="future_covariates of shape"):
        net(torch.randn(3, 16), torch.ones(3, 16), past_covariates=torch.randn(3, 2, 16),
            static_covariates=torch.randn(3, 2))
    # the least-squares start of the linear skip picks up a linear effect of the known-future covariate
    n = 512
    context, effect = torch.randn(n, 16), torch.randn(n, 1, 4)
    target = context[:, -4:] + 3.0 * effect[:, 0]
    inputs = dict(past_covariates=torch.randn(n, 2, 16), future_covariates=effect, static_covariates=torch.randn(n, 2))
    net.covariates.fit_scaling(inputs["past_covariates"].transpose(1, 2).reshape(-1, 2), inputs["static_covariates"])
    net.eval().fit_linear_skip(context, torch.ones(n, 16), target, torch.ones(n, 4), **inputs)
    mean = net.predict(context, torch.ones(n, 16), **inputs)["mean"]
    assert (mean - target).abs().mean() < 0.1 * target.abs().mean()


def _fit_error(frame, **change):
    params = {**TINY, **ROLES, **{k: v for k, v in change.items() if k not in ("df", "static_df")}}
    XLSTMForecaster(**params).fit(change.get("df", frame), static_df=change.get("static_df"))


def nan_at(frame, col, row):
    df = frame.copy()
    df.loc[row, col] = np.nan
    return df


FIT_ERRORS = {
    "not a list": (dict(past_covariates="sensor"), r"past_covariates must be a list of column names, got 'sensor'"),
    "two roles": (dict(past_covariates=["promo"]), r"'promo' is listed in both past_covariates and future_covariates"),
    "target column": (dict(future_covariates=["y"]), r"names column 'y', which is the target_col"),
    "missing column": (dict(future_covariates=["holiday"]), r"no covariate column\(s\) \['holiday'\]"),
    "text column": (dict(past_covariates=["region"], static_covariates=None), r"'region' must be numeric"),
    "mixing": (dict(model=dict(mode="variate_mixing", embed_dim=16, num_heads=2, pattern="m", mixing_dim=16,
                               mixing_heads=2)), r"mode='variate_mixing' takes no covariates"),
    "unused static_df": (dict(static_covariates=None, static_df="table"), r"static_df was given, but static_cov"),
}


@pytest.mark.parametrize("case", list(FIT_ERRORS))
def test_fit_errors(frame, case):
    change, message = FIT_ERRORS[case]
    if change.get("static_df") == "table":
        change = {**change, "static_df": frame.groupby("unique_id", as_index=False)[["store_size"]].first()}
    with pytest.raises(ValueError, match=message):
        _fit_error(frame, **change)


def test_fit_errors_name_the_series_time_and_column(frame):
    row = frame.index[(frame.unique_id == "store_1")][5]
    with pytest.raises(ValueError, match=r"Future covariate 'promo' is NaN for series 'store_1' at "
                                         r"2024-01-01 05:00:00 \(1 NaN"):
        _fit_error(frame, df=nan_at(frame, "promo", row))
    with pytest.raises(ValueError, match=r"'store_size' is not constant within series 'store_1' \(values"):
        _fit_error(frame, df=frame.assign(store_size=np.where(frame.index == row, 99.0, frame.store_size)))
    with pytest.raises(ValueError, match=r"Static covariate 'region' is NaN for series 'store_2'"):
        _fit_error(frame, df=frame.assign(region=frame.region.where(frame.unique_id != "store_2")))
    static_df = frame.groupby("unique_id", as_index=False)[["store_size", "region"]].first()
    body = frame.drop(columns=["store_size", "region"])
    with pytest.raises(ValueError, match=r"static_df has no row for series 'store_2' \(1 series missing\)"):
        _fit_error(frame, df=body, static_df=static_df.iloc[:2])
    with pytest.raises(ValueError, match=r"more than one row for series 'store_0'"):
        _fit_error(frame, df=body, static_df=pd.concat([static_df, static_df.iloc[:1]]))
    with pytest.raises(ValueError, match=r"static_df is missing column\(s\) \['region'\]"):
        _fit_error(frame, df=body, static_df=static_df.drop(columns="region"))
    with pytest.raises(ValueError, match=r"Static covariate column\(s\) \['store_size', 'region'\] are not in"):
        _fit_error(frame, df=body)


def test_predict_errors_name_the_series_time_and_column(fitted, frame):
    futr = future_from(frame, fitted.make_future_frame())
    first, last = futr.ds.iloc[0], futr.ds.iloc[5]
    cases = [
        (None, r"uses future covariates \['promo', 'temperature'\]: pass futr_df .* make_future_frame"),
        (futr.drop(columns="temperature"), r"futr_df is missing column\(s\) \['temperature'\]"),
        (pd.concat([futr, futr.iloc[:1].assign(unique_id="ghost")]),
         rf"not being forecast: series 'ghost' at {first} \(column\(s\) \['promo', 'temperature'\]"),
        (pd.concat([futr, futr.iloc[:1]]), rf"more than one row: series 'store_0' at {first}"),
        (futr.assign(ds=futr.ds + pd.Timedelta(hours=1)),
         rf"outside the forecast horizon: series 'store_0' at {last + pd.Timedelta(hours=1)} .* steps {first} .. "
         rf"{last} after"),
        (futr.iloc[1:], rf"missing rows: series 'store_0' at {first} \(column\(s\) \['promo', 'temperature'\]"),
        (futr.assign(temperature=np.where(np.arange(18) == 7, np.nan, 18.0)),
         rf"has NaN: series 'store_1' at {futr.ds.iloc[7]} \(column\(s\) \['temperature'\]; 1 such"),
        (futr.assign(ds=np.arange(18)), r"same kind of timestamps"),
    ]
    for futr_df, message in cases:
        with pytest.raises(ValueError, match=message):
            fitted.predict(futr_df=futr_df)
    new = frame[frame.unique_id == "store_0"].assign(unique_id="new")
    with pytest.raises(ValueError, match=r"Series 'new' was not seen in fit, so its static covariate"):
        fitted.predict(new.drop(columns=["store_size", "region"]), futr_df=futr.iloc[:6].assign(unique_id="new"))
    with pytest.raises(ValueError, match=r"'region' of series 'new' is 'west', a category not seen in fit"):
        fitted.predict(new.assign(region="west"), futr_df=futr.iloc[:6].assign(unique_id="new"))
    with pytest.raises(ValueError, match="fitted with covariates"):
        fitted.predict_array(np.ones((2, 30)))
    plain = XLSTMForecaster(**TINY).fit(frame[["unique_id", "ds", "y"]])
    with pytest.raises(ValueError, match="futr_df was given, but this forecaster has no future_covariates"):
        plain.predict(futr_df=futr)


def test_known_future_covariate_lowers_test_mae():
    """On a panel driven by planned promotions and temperature, knowing them ahead cuts the test MAE by > 30%."""
    horizon = 24
    df = make_covariate_panel(n_series=6, length=360, seed=0)
    is_test = df.groupby("unique_id").cumcount(ascending=False) < horizon
    train, test = df[~is_test], df[is_test]
    common = dict(prediction_length=horizon, context_length=72, model="tiny", max_steps=30, batch_size=32)
    plain = XLSTMForecaster(**common).fit(train).predict()
    model = XLSTMForecaster(**common, future_covariates=["promo", "temperature"]).fit(train)
    informed = model.predict(futr_df=test[["unique_id", "ds", "promo", "temperature"]])
    mae = lambda out: np.abs(out.merge(test, on=["unique_id", "ds"]).eval("mean - y")).mean()
    assert mae(informed) < 0.7 * mae(plain), (mae(informed), mae(plain))
