"""Plots build figures with the expected artists and save to PNG."""

import pytest

from xlstm_ts import XLSTMForecaster
from xlstm_ts.datasets import make_synthetic_panel

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


@pytest.fixture(scope="module")
def fitted():
    df = make_synthetic_panel(n_series=2, length=120, seed=3)
    f = XLSTMForecaster(prediction_length=6, context_length=24, quantiles=(0.1, 0.25, 0.5, 0.75, 0.9),
                        model="tiny", max_steps=2, batch_size=8)
    return df, f.fit(df)


def test_plot_forecast(fitted, tmp_path):
    from xlstm_ts.plotting import plot_forecast

    df, f = fitted
    fig = plot_forecast(df, f.predict(), levels=(50, 80))
    assert len(fig.axes) == 2
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert {"history", "50% interval", "80% interval", "median"} <= set(labels)
    fig.savefig(tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 1000


def test_plot_forecast_missing_interval_columns(fitted):
    from xlstm_ts.plotting import plot_forecast

    df, f = fitted
    with pytest.raises(ValueError, match="q0.025"):
        plot_forecast(df, f.predict(), levels=(95,))


def test_plot_cross_validation(fitted, tmp_path):
    from xlstm_ts.plotting import plot_cross_validation

    df, f = fitted
    cv = f.cross_validation(df, n_windows=2, step_size=6)
    fig = plot_cross_validation(cv)
    assert len(fig.axes) == 2 and "2 windows" in fig.axes[0].get_title()
    fig.savefig(tmp_path / "cv.png")
