"""The fit/predict API end to end, with tiny budgets."""

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from xlstm_ts import XLSTMForecaster
from xlstm_ts.datasets import make_synthetic_panel

TINY = dict(model="tiny", max_steps=3, batch_size=8)


@pytest.fixture(scope="module")
def panel():
    return make_synthetic_panel(n_series=3, length=150, seed=1)


@pytest.fixture(scope="module")
def fitted(panel):
    return XLSTMForecaster(prediction_length=6, context_length=24, quantiles=(0.1, 0.5, 0.9), **TINY).fit(panel)


def test_init_only_stores_and_clone_roundtrips():
    f = XLSTMForecaster(prediction_length=5, quantiles=(0.2, 0.8), trainer_kwargs={"accelerator": "cpu"})
    assert f.get_params()["quantiles"] == (0.2, 0.8)
    assert clone(f).get_params() == f.get_params()
    assert not hasattr(f, "net_")


def test_predict_before_fit_raises():
    with pytest.raises(NotFittedError):
        XLSTMForecaster().predict()


def test_predict_frame_contract(fitted, panel):
    out = fitted.predict()
    assert list(out.columns) == ["unique_id", "ds", "mean", "q0.1", "q0.5", "q0.9"]
    assert len(out) == 3 * 6
    for uid, group in out.groupby("unique_id"):
        last = panel[panel.unique_id == uid].ds.max()
        assert list(group.ds) == list(pd.date_range(last, periods=7, freq="h")[1:])
    assert (out["q0.1"] <= out["q0.5"]).all() and (out["q0.5"] <= out["q0.9"]).all()
    np.testing.assert_allclose(out["mean"], out["q0.5"])


def test_fit_returns_self_and_is_deterministic(panel):
    f = XLSTMForecaster(prediction_length=6, context_length=24, random_state=7, **TINY)
    assert f.fit(panel) is f
    first = f.predict()
    again = XLSTMForecaster(prediction_length=6, context_length=24, random_state=7, **TINY).fit(panel).predict()
    pd.testing.assert_frame_equal(first, again)
    refit = f.fit(panel).predict()
    pd.testing.assert_frame_equal(first, refit)
    other = XLSTMForecaster(prediction_length=6, context_length=24, random_state=8, **TINY).fit(panel).predict()
    assert not np.allclose(first["mean"], other["mean"])


def test_predict_on_new_ids_short_and_missing_context(fitted):
    new = pd.DataFrame({
        "unique_id": ["new"] * 10 + ["gappy"] * 30,
        "ds": list(pd.date_range("2025-01-01", periods=10, freq="h")) + list(pd.date_range("2025-03-01", periods=30,
                                                                                           freq="h")),
        "y": np.r_[np.linspace(0, 1, 10), np.where(np.arange(30) % 4 == 0, np.nan, np.arange(30.0))],
    })
    out = fitted.predict(new)
    assert list(out.unique_id.unique()) == ["new", "gappy"] and len(out) == 12
    assert np.isfinite(out[["mean", "q0.1", "q0.9"]].to_numpy()).all()
    assert out.ds.iloc[0] == pd.Timestamp("2025-01-01 10:00")


def test_custom_column_names_and_input_not_mutated():
    df = make_synthetic_panel(n_series=2, length=80).rename(columns={"unique_id": "item", "ds": "t", "y": "v"})
    before = df.copy()
    f = XLSTMForecaster(prediction_length=4, context_length=16, id_col="item", time_col="t", target_col="v",
                        quantiles=(0.25, 0.75), **TINY).fit(df)
    out = f.predict()
    pd.testing.assert_frame_equal(df, before)
    assert list(out.columns) == ["item", "t", "mean", "q0.25", "q0.75"]


def test_invalid_params_raise_in_fit(panel):
    with pytest.raises(ValueError, match="quantiles"):
        XLSTMForecaster(quantiles=(0.5, 1.5), **TINY).fit(panel)
    with pytest.raises(ValueError, match="prediction_length"):
        XLSTMForecaster(prediction_length=0, **TINY).fit(panel)
    with pytest.raises(ValueError, match="Unknown model preset"):
        XLSTMForecaster(model="huge").fit(panel)
    with pytest.raises(ValueError, match="head"):
        XLSTMForecaster(head="gamma", **TINY).fit(panel)


def test_normal_head_forecaster(panel):
    out = XLSTMForecaster(prediction_length=6, context_length=24, head="normal", quantiles=(0.05, 0.5, 0.95),
                          **TINY).fit(panel).predict()
    assert list(out.columns) == ["unique_id", "ds", "mean", "q0.05", "q0.5", "q0.95"]
    np.testing.assert_allclose(out["mean"], out["q0.5"], rtol=1e-5)  # symmetric distribution
    assert (out["q0.05"] < out["q0.95"]).all()


def test_predict_array_matches_predict(fitted, panel):
    values = np.stack([panel[panel.unique_id == uid].y.to_numpy() for uid in fitted.panel_.ids])
    arr = fitted.predict_array(values)
    out = fitted.predict()
    np.testing.assert_allclose(arr["mean"].reshape(-1), out["mean"].to_numpy(), rtol=1e-6)
    assert arr["quantiles"].shape == (3, 6, 3)


def test_validation_tail_restores_best_weights(panel):
    import torch

    from xlstm_ts.datasets.windows import tail_windows

    f = XLSTMForecaster(prediction_length=6, context_length=24, model="tiny", max_steps=20, batch_size=8,
                        learning_rate=3e-2, val_size=18, val_check_steps=5).fit(panel)
    assert f.best_step_ in (0, 5, 10, 15, 20)
    batch = tail_windows(f.panel_.values, 24, 6, 18)
    assert len(batch["past_target"]) == 3 * (18 - 6 + 1)
    with torch.no_grad():
        loss = f.net_.loss(**batch).item()
    assert loss == pytest.approx(f.best_val_loss_, rel=1e-4)  # the restored weights are the best ones


def test_val_size_must_cover_a_horizon(panel):
    with pytest.raises(ValueError, match="val_size"):
        XLSTMForecaster(prediction_length=6, val_size=3, **TINY).fit(panel)


def test_save_load_roundtrip_gives_identical_forecasts(fitted, panel, tmp_path):
    fitted.save(tmp_path / "model")
    loaded = XLSTMForecaster.load(tmp_path / "model", map_location="cpu")
    assert loaded.get_params()["quantiles"] == fitted.get_params()["quantiles"]
    pd.testing.assert_frame_equal(loaded.predict(), fitted.predict())
    pd.testing.assert_frame_equal(loaded.predict(panel), fitted.predict(panel))


def test_load_refuses_pickled_payload(fitted, tmp_path):
    import pickle

    import torch

    class Payload:
        def __reduce__(self):
            return (print, ("arbitrary code ran",))

    fitted.save(tmp_path / "model")
    torch.save({"evil": Payload()}, tmp_path / "model" / "weights.pt")
    with pytest.raises(pickle.UnpicklingError):
        XLSTMForecaster.load(tmp_path / "model")


def test_load_non_model_directory_raises(tmp_path):
    with pytest.raises(ValueError, match="not a saved forecaster"):
        XLSTMForecaster.load(tmp_path)


def test_cross_validation_windows_cutoffs_and_realized_values(panel):
    f = XLSTMForecaster(prediction_length=6, context_length=24, **TINY)
    cv = f.cross_validation(panel, n_windows=3, step_size=4)
    assert list(cv.columns) == ["unique_id", "ds", "cutoff", "mean", "q0.1", "q0.5", "q0.9", "y"]
    assert len(cv) == 3 * 3 * 6
    merged = cv.merge(panel, on=["unique_id", "ds"], suffixes=("", "_true"))
    assert len(merged) == len(cv)
    np.testing.assert_allclose(merged["y"], merged["y_true"])
    last = panel.ds.max()
    cutoffs = sorted(cv.cutoff.unique())
    assert cutoffs == [last - pd.Timedelta(hours=h) for h in (14, 10, 6)]
    assert (cv.ds > cv.cutoff).all() and (cv.ds <= cv.cutoff + pd.Timedelta(hours=6)).all()
    assert all(end == cutoffs[0] for end in f.panel_.ends)  # fitted once, on data up to the first cutoff
    # no refit: the last window equals a prediction from the context up to its cutoff
    head = panel[panel.ds <= cutoffs[-1]]
    expected = f.predict(head)
    got = cv[cv.cutoff == cutoffs[-1]].reset_index(drop=True)
    np.testing.assert_allclose(got["mean"], expected["mean"], rtol=1e-6)


def test_cross_validation_rejects_too_many_windows(panel):
    with pytest.raises(ValueError, match="too few"):
        XLSTMForecaster(prediction_length=6, **TINY).cross_validation(panel, n_windows=100)


def test_score_is_negative_mase_of_the_last_horizon(fitted, panel):
    from xlstm_ts.metrics import mase

    score = fitted.score(panel)
    head = panel[panel.groupby("unique_id").cumcount(ascending=False) >= 6]
    tail = panel[panel.groupby("unique_id").cumcount(ascending=False) < 6]
    pred = fitted.predict(head)
    history = [g.y.to_numpy() for _, g in head.groupby("unique_id", sort=False)]
    expected = -mase(tail.y.to_numpy().reshape(3, 6), pred["mean"].to_numpy().reshape(3, 6), history, 24)
    assert score == pytest.approx(expected, rel=1e-5)
    assert score < 0


@pytest.mark.parametrize("head", ["quantile", "normal", "student_t", "negative_binomial", "mse"])
def test_samples_reproduce_the_heads_quantiles(panel, head):
    levels = (0.1, 0.25, 0.5, 0.75, 0.9)
    f = XLSTMForecaster(prediction_length=6, context_length=24, head=head, quantiles=levels, **TINY).fit(panel)
    paths = f.sample(num_samples=4000, random_state=1)
    assert paths.shape == (3, 4000, 6)
    out = f.predict()
    spread = (out["q0.9"] - out["q0.1"]).to_numpy().reshape(3, 6)
    for level in levels:
        method = "inverted_cdf" if head == "negative_binomial" else "linear"  # counts: the ppf definition
        empirical = np.quantile(paths, level, axis=1, method=method)  # (3, 6)
        expected = out[f"q{level:g}"].to_numpy().reshape(3, 6)
        assert np.abs(empirical - expected).max() < 0.05 * spread.max()
    np.testing.assert_array_equal(paths, f.sample(num_samples=4000, random_state=1))


def test_negative_binomial_refuses_negative_targets(panel):
    bad = panel.assign(y=panel.y - 100.0)
    with pytest.raises(ValueError, match="negative_binomial.*'y'"):
        XLSTMForecaster(head="negative_binomial", **TINY).fit(bad)


def test_negative_binomial_on_counts(panel):
    counts = panel.assign(y=np.round(panel.y.clip(lower=0)))
    out = XLSTMForecaster(prediction_length=6, context_length=24, head="negative_binomial", **TINY).fit(
        counts).predict()
    assert (out[["q0.1", "q0.5", "q0.9"]] >= 0).all().all() and (out["mean"] > 0).all()
    np.testing.assert_array_equal(out["q0.9"], np.round(out["q0.9"]))  # count quantiles are integers
