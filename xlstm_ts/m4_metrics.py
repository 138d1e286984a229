"""M4 competition scoring as the organisers computed it, and the reference forecasts its relative score needs.

Definitions (Makridakis, Spiliotis & Assimakopoulos, IJF 2018 and 2020; the organisers' evaluation script):
- sMAPE in percent (0-200) and MASE (scale: in-sample seasonal naive MAE with the group's seasonality m over the
  whole training series), each averaged over every step of every series;
- OWA = (sMAPE / sMAPE_Naive2 + MASE / MASE_Naive2) / 2, a ratio of subset means (not a mean of per-series ratios);
- MSIS of the 95 % intervals (alpha 0.05, the MASE scale) averaged over series; coverage pooled over all points;
- Naive2: the naive forecast of the seasonally adjusted series, reseasonalised. A series is adjusted only when
  m > 1, it has at least 3m values and it passes the 90 % autocorrelation test at lag m; the adjustment is the
  classical multiplicative decomposition (centred moving average over m, or 2 x m for even m; seasonal indices
  averaged per position of the cycle and normalised to mean 1), and the indices continue over the horizon.

Shapes: `history` is a list of N in-sample arrays of varying length; targets and forecasts are (N, F).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xlstm_ts.metrics import coverage, mase, msis, smape

ACF_CRITICAL = 1.645
"""One-sided 95 % normal quantile: the 90 % two-sided seasonality test of the M4 benchmarks."""


def acf(x: np.ndarray, max_lag: int) -> np.ndarray:
    """Sample autocorrelations r_1..r_max_lag as R's `acf` computes them (demeaned, over the lag-0 sum). (max_lag,)"""
    x = np.asarray(x, np.float64)
    centred = x - x.mean()  # (n,)
    c0 = np.dot(centred, centred)
    if c0 == 0.0:
        return np.full(max_lag, np.nan)
    return np.array([np.dot(centred[:-k], centred[k:]) / c0 for k in range(1, max_lag + 1)])


def is_seasonal(x: np.ndarray, season: int) -> bool:
    """The M4 seasonality test: |r_m| > 1.645 sqrt((1 + 2 sum_{k<m} r_k^2) / n), with R's default number of lags
    floor(10 log10 n). False when m <= 1, n < 3m, m is beyond those lags or the series is constant."""
    n = len(x)
    if season <= 1 or n < 3 * season:
        return False
    max_lag = int(np.floor(10 * np.log10(n)))
    if season > max_lag:
        return False
    r = acf(x, max_lag)  # (max_lag,)
    limit = ACF_CRITICAL * np.sqrt((1 + 2 * np.sum(r[: season - 1] ** 2)) / n)
    return bool(abs(r[season - 1]) > limit)  # NaN (constant series) compares False


def seasonal_indices(x: np.ndarray, season: int) -> np.ndarray:
    """Multiplicative seasonal indices of the classical decomposition (R's `decompose`), one per position of the
    cycle, position 0 being the first value of `x`; they average to 1. (season,)"""
    x = np.asarray(x, np.float64)
    if season < 2 or len(x) < 2 * season:
        raise ValueError(f"The decomposition needs a season of at least 2 and two full cycles, got season {season} "
                         f"and {len(x)} values.")
    if season % 2 == 0:  # 2 x m centred moving average: half weights on the two ends
        weights = np.r_[0.5, np.ones(season - 1), 0.5] / season  # (m + 1,)
    else:
        weights = np.ones(season) / season  # (m,)
    half = len(weights) // 2
    trend = np.full(len(x), np.nan)  # (n,)
    trend[half:len(x) - half] = np.convolve(x, weights, mode="valid")  # symmetric weights: no flip needed
    ratio = x / trend  # (n,), NaN where the moving average is undefined
    figure = np.array([np.nanmean(ratio[pos::season]) for pos in range(season)])  # (m,)
    return figure / figure.mean()


def seasonal_naive(history: Sequence[np.ndarray], horizon: int, season: int) -> np.ndarray:
    """The last `season` values of each series repeated over the horizon; season 1, or a series shorter than one
    season, gives the naive forecast (the last value). (N, F)"""
    steps = np.arange(horizon)
    out = np.empty((len(history), horizon))
    for row, x in enumerate(history):
        x = np.asarray(x, np.float64)
        m = season if len(x) >= season else 1
        out[row] = x[len(x) - m + steps % m]
    return out


def naive2(history: Sequence[np.ndarray], horizon: int, season: int) -> np.ndarray:
    """M4's Naive2: the last seasonally adjusted value times the continued seasonal indices, for series that pass
    `is_seasonal`; the last value otherwise. (N, F)"""
    out = np.empty((len(history), horizon))
    for row, x in enumerate(history):
        x = np.asarray(x, np.float64)
        n = len(x)
        if is_seasonal(x, season):
            figure = seasonal_indices(x, season)  # (m,)
            level = x[-1] / figure[(n - 1) % season]
            out[row] = level * figure[(n + np.arange(horizon)) % season]
        else:
            out[row] = x[-1]
    return out


def m4_scores(y: np.ndarray, point: np.ndarray, history: Sequence[np.ndarray], season: int,
              lower: np.ndarray | None = None, upper: np.ndarray | None = None) -> dict[str, float]:
    """sMAPE (percent), MASE and, given the bounds of 95 % intervals, MSIS and their coverage, of one method on one
    subset. y, point, lower, upper (N, F). Scores without intervals are NaN."""
    y, point = np.asarray(y, np.float64), np.asarray(point, np.float64)
    if y.ndim != 2 or point.shape != y.shape or len(history) != len(y):
        raise ValueError(f"Expected targets and forecasts of one shape (N, F) and N in-sample series; got targets "
                         f"{y.shape}, forecasts {point.shape} and {len(history)} series.")
    scores = {"smape": 100 * smape(y, point), "mase": mase(y, point, history, season),
              "msis": float("nan"), "coverage_95": float("nan")}
    if lower is not None and upper is not None:
        scores["msis"] = msis(y, lower, upper, history, season, alpha=0.05)
        scores["coverage_95"] = coverage(y, lower, upper)
    return scores


def owa(scores: dict[str, float], naive2_scores: dict[str, float]) -> float:
    """Overall weighted average relative to Naive2 on the same series: mean of the sMAPE and MASE ratios."""
    return 0.5 * (scores["smape"] / naive2_scores["smape"] + scores["mase"] / naive2_scores["mase"])
