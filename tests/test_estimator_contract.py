"""The parts of scikit-learn's estimator contract that apply to a forecaster of long frames, checked together for
every public constructor parameter and every frame-taking method."""

import inspect

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import NotFittedError

from xlstm_ts import XLSTMForecaster
from xlstm_ts.datasets import make_covariate_panel

SETTINGS = dict(prediction_length=6, context_length=24, model="tiny", max_steps=3, batch_size=8, random_state=3,
                future_covariates=["promo", "temperature"], static_covariates=["store_size"])


@pytest.fixture(scope="module")
def frame():
    return make_covariate_panel(n_series=3, length=120, seed=2)


def test_params_are_the_constructor_arguments_and_round_trip():
    names = [p for p in inspect.signature(XLSTMForecaster.__init__).parameters if p != "self"]
    kinds = {p.kind for p in inspect.signature(XLSTMForecaster.__init__).parameters.values()}
    assert inspect.Parameter.VAR_KEYWORD not in kinds and inspect.Parameter.VAR_POSITIONAL not in kinds
    f = XLSTMForecaster(**SETTINGS)
    assert isinstance(f, BaseEstimator) and sorted(f.get_params()) == sorted(names)
    for name, value in SETTINGS.items():
        assert f.get_params()[name] is value  # stored as given, not copied or validated in __init__
    f.set_params(max_steps=5, learning_rate=3e-3)
    assert f.max_steps == 5 and clone(f).get_params() == f.get_params()
    with pytest.raises(ValueError):
        f.set_params(no_such_parameter=1)


def test_repr_and_notebook_html_show_the_non_default_parameters():
    f = XLSTMForecaster(**SETTINGS)
    assert "prediction_length=6" in repr(f) and "future_covariates" in repr(f)
    assert "XLSTMForecaster" in f._repr_html_()


def test_every_method_needs_fit_and_never_mutates_its_input(frame):
    f = XLSTMForecaster(**SETTINGS)
    for call in (lambda: f.predict(), lambda: f.sample(), lambda: f.score(frame), lambda: f.save("unused")):
        with pytest.raises(NotFittedError):
            call()
    before = frame.copy(deep=True)
    f.fit(frame)
    assert [a for a in vars(f) if a.endswith("_") and not a.startswith("_")]  # fitted state ends in "_"
    f.score(frame)
    f.cross_validation(frame, n_windows=1)
    history = frame.groupby("unique_id").head(100)
    futr = f.make_future_frame(history)
    futr[["promo", "temperature"]] = 0.0
    futr_before = futr.copy(deep=True)
    f.predict(history, futr_df=futr)
    pd.testing.assert_frame_equal(frame, before)
    pd.testing.assert_frame_equal(futr, futr_before)


def test_refit_and_clone_give_the_same_model(frame):
    first = XLSTMForecaster(**SETTINGS).fit(frame)
    futr = first.make_future_frame()
    futr[["promo", "temperature"]] = 1.0
    expected = first.predict(futr_df=futr)
    pd.testing.assert_frame_equal(first.fit(frame).predict(futr_df=futr), expected)  # fit twice: same model
    twin = clone(first)
    assert not hasattr(twin, "net_")  # a clone is unfitted
    pd.testing.assert_frame_equal(twin.fit(frame).predict(futr_df=futr), expected)
    assert np.isfinite(expected[["mean", "q0.1", "q0.9"]].to_numpy()).all()
