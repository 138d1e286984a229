"""Deterministic synthetic panels: trend + two seasonalities + noise (the toolkit's embedded default data), and a
panel whose target responds to known-future covariates."""

from __future__ import annotations

import numpy as np
import pandas as pd


def make_synthetic_panel(
    n_series: int = 8,
    length: int = 720,
    freq: str = "h",
    seasonalities: tuple[int, int] = (24, 168),
    noise: float = 0.3,
    start: str = "2024-01-01",
    seed: int = 0,
) -> pd.DataFrame:
    """A long frame of `n_series` series, identical for identical arguments.

    Each series is `level + slope * t + a1 * sin(2 pi t / s1 + p1) + a2 * sin(2 pi t / s2 + p2) + AR(1) noise`,
    with per-series level, slope, amplitudes and phases drawn from `seed`. With hourly data the defaults give a
    daily (24) and a weekly (168) cycle.

    Args:
        n_series: Number of series.
        length: Rows per series.
        freq: Pandas frequency alias of the time column.
        seasonalities: The two seasonal periods, in steps.
        noise: Standard deviation of the AR(1) noise innovations.
        start: First timestamp.
        seed: Random seed.

    Returns:
        Frame with columns unique_id ("series_0", ...), ds, y; sorted by (unique_id, ds).
    """
    rng, t, ds = _time_axis(n_series, length, freq, start, seed)
    frames = []
    for s in range(n_series):
        level = rng.uniform(5.0, 20.0)
        slope = rng.uniform(-0.004, 0.01)
        a1, a2 = rng.uniform(1.0, 3.0), rng.uniform(0.5, 2.0)
        p1, p2 = rng.uniform(0, 2 * np.pi, size=2)
        ar = _ar1_noise(rng, noise, length)
        y = (level + slope * t + a1 * np.sin(2 * np.pi * t / seasonalities[0] + p1)
             + a2 * np.sin(2 * np.pi * t / seasonalities[1] + p2) + ar)
        frames.append(pd.DataFrame({"unique_id": f"series_{s}", "ds": ds, "y": y.astype(np.float32)}))
    return pd.concat(frames, ignore_index=True)


def _time_axis(n_series: int, length: int, freq: str, start: str, seed: int,
               ) -> tuple[np.random.Generator, np.ndarray, pd.DatetimeIndex]:
    """Checked sizes, then the generator, the step index t (length,) and the timestamps every series shares."""
    if n_series < 1 or length < 2:
        raise ValueError(f"Expected n_series >= 1 and length >= 2, got n_series={n_series}, length={length}.")
    return (np.random.default_rng(seed), np.arange(length, dtype=np.float64),
            pd.date_range(start=start, periods=length, freq=freq))


def _ar1_noise(rng: np.random.Generator, noise: float, length: int) -> np.ndarray:
    """AR(1) noise with coefficient 0.5 and innovations of standard deviation `noise`, shape (length,)."""
    eps = rng.normal(0.0, noise, size=length)
    ar = np.empty(length)
    ar[0] = eps[0]
    for i in range(1, length):
        ar[i] = 0.5 * ar[i - 1] + eps[i]
    return ar


def make_covariate_panel(
    n_series: int = 8,
    length: int = 720,
    freq: str = "h",
    promo_rate: float = 0.04,
    noise: float = 0.3,
    start: str = "2024-01-01",
    seed: int = 0,
) -> pd.DataFrame:
    """A long frame whose target depends on known-future covariates, identical for identical arguments.

    Each series is `level + daily cycle + lift * promo + 0.15 * (temperature - 15) + AR(1) noise`:
    - `promo` (0/1): planned promotions, known ahead; each starts at random (rate `promo_rate` per step) and lasts
      4 to 12 steps. Nothing in the past of the target announces one, so only the covariate can forecast it.
    - `temperature`: a weather-like driver, known ahead (a forecast): a daily cycle plus a slow random walk.
    - `store_size` (static, constant per series): the promotion lift is `1.5 * store_size`.
    - `region` (static, "north"/"south"): a text column; southern stores are 2 degrees warmer.

    Args:
        n_series: Number of series.
        length: Rows per series.
        freq: Pandas frequency alias of the time column.
        promo_rate: Probability that a promotion starts at a given step.
        noise: Standard deviation of the AR(1) noise innovations.
        start: First timestamp.
        seed: Random seed.

    Returns:
        Frame with columns unique_id ("store_0", ...), ds, y, promo, temperature, store_size, region.
    """
    rng, t, ds = _time_axis(n_series, length, freq, start, seed)
    frames = []
    for s in range(n_series):
        size = rng.uniform(1.0, 4.0)
        region = "south" if s % 2 else "north"
        promo = np.zeros(length)
        for begin in np.flatnonzero(rng.random(length) < promo_rate):
            promo[begin:begin + rng.integers(4, 13)] = 1.0
        drift = np.cumsum(rng.normal(0.0, 0.3, size=length))
        temperature = 15.0 + 2.0 * (region == "south") + 5.0 * np.sin(2 * np.pi * (t - 9) / 24) + drift - drift.mean()
        ar = _ar1_noise(rng, noise, length)
        y = (rng.uniform(5.0, 20.0) + rng.uniform(1.0, 3.0) * np.sin(2 * np.pi * t / 24 + rng.uniform(0, 2 * np.pi))
             + 1.5 * size * promo + 0.15 * (temperature - 15.0) + ar)
        frames.append(pd.DataFrame({"unique_id": f"store_{s}", "ds": ds, "y": y.astype(np.float32), "promo": promo,
                                    "temperature": temperature.astype(np.float32), "store_size": round(size, 2),
                                    "region": region}))
    return pd.concat(frames, ignore_index=True)
