"""Matplotlib figures of forecasts and backtests (extra `[plot]`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from xlstm_ts.training_utils import quantile_column


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("Plotting needs matplotlib: pip install 'xlstm_ts[plot]'.") from err
    return plt


def _interval_columns(frame: pd.DataFrame, level: float) -> tuple[str, str]:
    """Columns of the central `level` % interval, e.g. 80 -> ('q0.1', 'q0.9')."""
    lo, hi = quantile_column((50 - level / 2) / 100), quantile_column((50 + level / 2) / 100)
    if lo not in frame.columns or hi not in frame.columns:
        raise ValueError(f"A {level:g}% interval needs columns {lo!r} and {hi!r}; the forecast has "
                         f"{[c for c in frame.columns if c.startswith('q')]}. Fit with those quantile levels.")
    return lo, hi


def _axes(n: int, width: float = 10.0, height: float = 2.6):
    plt = _pyplot()
    fig, axes = plt.subplots(n, 1, figsize=(width, height * n), squeeze=False)
    return fig, axes[:, 0]


def plot_forecast(history_df: pd.DataFrame, forecast_df: pd.DataFrame, ids: Sequence | None = None,
                  levels: Sequence[float] = (50, 80), id_col: str = "unique_id", time_col: str = "ds",
                  target_col: str = "y", history_length: int | None = None, max_series: int = 8):
    """History, point forecast and shaded central intervals, one panel per series.

    Args:
        history_df: long frame of observed values.
        forecast_df: output of `XLSTMForecaster.predict` (mean and q<level> columns); a `y` column, if present, is
            drawn as the realized values.
        ids: series to draw. Default: the first `max_series` ids of the forecast.
        levels: central interval widths in percent; each needs its two quantile columns (80 -> q0.1 and q0.9).
        history_length: last history steps to draw. Default: 4 x the forecast length.

    Returns:
        The matplotlib Figure.
    """
    ids = list(pd.unique(forecast_df[id_col]))[:max_series] if ids is None else list(ids)
    fig, axes = _axes(len(ids))
    for ax, uid in zip(axes, ids):
        fc = forecast_df[forecast_df[id_col] == uid]
        if fc.empty:
            raise ValueError(f"Series {uid!r} is not in the forecast frame.")
        keep = history_length if history_length is not None else 4 * len(fc)
        hist = history_df[history_df[id_col] == uid].sort_values(time_col).tail(keep)
        ax.plot(hist[time_col], hist[target_col], color="black", lw=1, label="history")
        for alpha, level in zip(np.linspace(0.35, 0.15, len(levels)), sorted(levels)):
            lo, hi = _interval_columns(fc, level)
            ax.fill_between(fc[time_col], fc[lo], fc[hi], color="tab:blue", alpha=alpha, lw=0,
                            label=f"{level:g}% interval")
        median = "q0.5" if "q0.5" in fc.columns else "mean"
        ax.plot(fc[time_col], fc[median], color="tab:blue", lw=1.5, label="median" if median == "q0.5" else "mean")
        if target_col in fc.columns:
            ax.plot(fc[time_col], fc[target_col], color="black", lw=1, ls="--", label="actual")
        ax.set_title(str(uid), fontsize=9)
    axes[0].legend(loc="upper left", fontsize=8, ncol=5)
    fig.tight_layout()
    return fig


def plot_cross_validation(cv_df: pd.DataFrame, ids: Sequence | None = None, level: float = 80,
                          id_col: str = "unique_id", time_col: str = "ds", max_series: int = 4):
    """Backtest windows of `XLSTMForecaster.cross_validation`: realized values, and per cutoff the forecast with
    its central interval and a vertical line at the cutoff. Returns the Figure."""
    ids = list(pd.unique(cv_df[id_col]))[:max_series] if ids is None else list(ids)
    lo, hi = _interval_columns(cv_df, level)
    fig, axes = _axes(len(ids))
    colors = _pyplot().rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, uid in zip(axes, ids):
        part = cv_df[cv_df[id_col] == uid]
        actual = part.drop_duplicates(time_col).sort_values(time_col)
        ax.plot(actual[time_col], actual["y"], color="black", lw=1, label="actual")
        for k, (cutoff, window) in enumerate(part.groupby("cutoff")):
            color = colors[k % len(colors)]
            ax.fill_between(window[time_col], window[lo], window[hi], color=color, alpha=0.25, lw=0)
            ax.plot(window[time_col], window["mean"], color=color, lw=1.5)
            ax.axvline(cutoff, color=color, lw=0.8, ls=":")
        ax.set_title(f"{uid}: {part['cutoff'].nunique()} windows, {level:g}% intervals", fontsize=9)
    fig.tight_layout()
    return fig
