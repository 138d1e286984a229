"""Forecast metrics on arrays, defined as gluonts' `gluonts.ev` defines them (tests compare the two).

Shapes: `y` and point forecasts (N, F); quantile forecasts (N, F, Q) with `levels` (Q,); samples (N, S, F).
All metrics are averaged over every (series, step) element unless stated. NaN targets are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

_SEASONS = {"min": 1440, "T": 1440, "h": 24, "H": 24, "D": 7, "B": 5, "W": 52, "M": 12, "MS": 12, "ME": 12,
            "Q": 4, "QS": 4, "QE": 4, "Y": 1, "YS": 1, "YE": 1, "A": 1, "AS": 1, "S": 3600, "s": 3600}


def season_length(freq: str | pd.DateOffset | int) -> int:
    """The usual seasonal period of a frequency (hourly 24, daily 7, weekly 52, monthly 12, quarterly 4, ...).

    Multiples divide the period when they can (e.g. '15min' -> 96, '2h' -> 12); unknown frequencies give 1.
    """
    if isinstance(freq, (int, np.integer)):
        return 1
    offset = pd.tseries.frequencies.to_offset(freq)
    base = offset.name.split("-")[0]
    period = _SEASONS.get(base, 1)
    if base in ("min", "T") and 60 % offset.n == 0:
        return 24 * 60 // offset.n
    return period // offset.n if offset.n > 1 and period % offset.n == 0 else period


def _check(y: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, pred = np.asarray(y, np.float64), np.asarray(pred, np.float64)
    if y.shape != pred.shape[: y.ndim]:
        raise ValueError(f"Forecast shape {pred.shape} does not match the target shape {y.shape}.")
    return y, pred


def mae(y: np.ndarray, pred: np.ndarray) -> float:
    y, pred = _check(y, pred)
    return float(np.nanmean(np.abs(y - pred)))


def mse(y: np.ndarray, pred: np.ndarray) -> float:
    y, pred = _check(y, pred)
    return float(np.nanmean((y - pred) ** 2))


def smape(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean of 2 |y - pred| / (|y| + |pred|), as a fraction (multiply by 100 for the M4 percentage)."""
    y, pred = _check(y, pred)
    return float(np.nanmean(2 * np.abs(y - pred) / (np.abs(y) + np.abs(pred))))


def seasonal_error(history: Sequence[np.ndarray], season: int) -> np.ndarray:
    """Per series, mean |y_t - y_{t-season}| over its history (season 1 when the history is too short). (N,)"""
    out = np.empty(len(history))
    for idx, values in enumerate(history):
        values = np.asarray(values, np.float64)
        m = season if len(values) > season else 1
        out[idx] = np.nanmean(np.abs(values[m:] - values[:-m]))
    return out


def mase(y: np.ndarray, pred: np.ndarray, history: Sequence[np.ndarray], season: int) -> float:
    """Mean absolute error scaled per series by the in-sample seasonal naive error."""
    y, pred = _check(y, pred)
    scale = seasonal_error(history, season)[:, None]  # (N, 1)
    return float(np.nanmean(np.abs(y - pred) / scale))


def quantile_loss(y: np.ndarray, quantiles: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """2 * pinball loss per element and level, (N, F, Q)."""
    y, quantiles = _check(y, quantiles)
    levels = np.asarray(levels, np.float64)
    err = y[..., None] - quantiles
    return 2 * np.abs(err * ((quantiles >= y[..., None]) - levels))


def weighted_quantile_loss(y: np.ndarray, quantiles: np.ndarray, levels: Sequence[float]) -> float:
    """Mean over levels of sum(quantile loss) / sum(|y|): the CRPS approximation reported by gluonts / GIFT-Eval."""
    loss = quantile_loss(y, quantiles, levels)  # (N, F, Q)
    per_level = np.nansum(loss, axis=(0, 1)) / np.nansum(np.abs(np.asarray(y, np.float64)))
    return float(np.mean(per_level))


def coverage(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Share of targets inside [lower, upper]."""
    y, lower = _check(y, lower)
    inside = (y >= lower) & (y <= np.asarray(upper, np.float64))
    return float(np.mean(inside[~np.isnan(y)]))


def msis(y: np.ndarray, lower: np.ndarray, upper: np.ndarray, history: Sequence[np.ndarray], season: int,
         alpha: float = 0.05) -> float:
    """Mean scaled interval score of central (1 - alpha) intervals, as the M4 competition defines it.

    Per element (upper - lower) + 2/alpha (lower - y) 1{y < lower} + 2/alpha (y - upper) 1{y > upper}, divided by
    the series' in-sample seasonal naive error (the MASE scale); the mean over steps, then over series.
    y, lower, upper (N, F); `history` N in-sample arrays.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie strictly between 0 and 1 (0.05 scores 95 % intervals), got {alpha!r}.")
    y, lower = _check(y, lower)
    y, upper = _check(y, upper)
    if len(history) != len(y):
        raise ValueError(f"Expected one in-sample history per series ({len(y)}), got {len(history)}.")
    width = upper - lower  # (N, F)
    penalty = (2 / alpha) * (np.maximum(lower - y, 0.0) + np.maximum(y - upper, 0.0))  # (N, F)
    per_series = np.nanmean(width + penalty, axis=1) / seasonal_error(history, season)  # (N,)
    return float(np.nanmean(per_series))


def crps_samples(y: np.ndarray, samples: np.ndarray) -> float:
    """Mean sample CRPS, E|X - y| - 0.5 E|X - X'| per element. y (N, F), samples (N, S, F)."""
    y, samples = np.asarray(y, np.float64), np.sort(np.asarray(samples, np.float64), axis=1)
    if samples.ndim != 3 or samples.shape[0] != y.shape[0] or samples.shape[2] != y.shape[1]:
        raise ValueError(f"Expected samples of shape (N, S, F) = ({y.shape[0]}, S, {y.shape[1]}), got {samples.shape}.")
    S = samples.shape[1]
    term1 = np.abs(samples - y[:, None, :]).mean(axis=1)  # (N, F)
    # E|X - X'| from sorted samples: sum_i (2i - S - 1) x_(i) * 2 / S^2
    weights = (2 * np.arange(1, S + 1) - S - 1)[None, :, None]
    term2 = (weights * samples).sum(axis=1) * 2 / S**2  # (N, F)
    return float(np.nanmean(term1 - 0.5 * term2))
