"""Rolling-origin evaluation: forecasts at several cutoffs, with the realized values beside them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from xlstm_ts.datasets.frame import future_times, validate_long_frame
from xlstm_ts.training_utils import quantile_column


def cross_validation(forecaster, df: pd.DataFrame, n_windows: int = 1, step_size: int | None = None,
                     refit: bool = False) -> pd.DataFrame:
    """Forecast `n_windows` rolling windows at the end of every series.

    Window k (0-based, oldest first) has its cutoff `prediction_length + (n_windows - 1 - k) * step_size` steps
    before the end of each series; its forecast covers the `prediction_length` steps after the cutoff. With
    `refit=False` the forecaster is fitted once on the data up to the first cutoff; with `refit=True` it is refitted
    on the data up to every cutoff. The forecaster keeps the last fit.

    Returns:
        Long frame: id, time, "cutoff" (last timestamp of the context), "mean", quantile columns, and "y" (realized).
    """
    horizon = forecaster.prediction_length
    step = horizon if step_size is None else step_size
    if not isinstance(n_windows, (int, np.integer)) or n_windows < 1:
        raise ValueError(f"n_windows must be a positive integer, got {n_windows!r}.")
    if not isinstance(step, (int, np.integer)) or step < 1:
        raise ValueError(f"step_size must be a positive integer or None, got {step_size!r}.")
    id_col, time_col, target_col = forecaster.id_col, forecaster.time_col, forecaster.target_col
    panel = validate_long_frame(df, id_col, time_col, target_col, forecaster.freq)
    span = horizon + (n_windows - 1) * step
    short = [uid for uid, v in zip(panel.ids, panel.values) if len(v) <= span]
    if short:
        raise ValueError(f"Series {short[0]!r} (and {len(short) - 1} more) have at most {span} rows, too few for "
                         f"{n_windows} windows of {horizon} steps every {step}: lower n_windows or step_size.")
    frames = []
    for k in range(n_windows):
        back = span - k * step  # rows after the cutoff, per series
        if refit or k == 0:
            forecaster.fit(_head_frame(panel, back, id_col, time_col, target_col))
        contexts = [v[: len(v) - back] for v in panel.values]
        out = forecaster._predict_series(contexts)
        cutoffs = [_time_at(panel, idx, len(v) - back - 1) for idx, v in enumerate(panel.values)]
        frame = {
            id_col: np.repeat(np.asarray(panel.ids, dtype=object), horizon),
            time_col: np.concatenate([future_times(c, panel.freq, horizon) for c in cutoffs]),
            "cutoff": np.repeat(np.asarray(cutoffs), horizon),
            "mean": out["mean"].reshape(-1),
        }
        for j, level in enumerate(forecaster.levels_):
            frame[quantile_column(level)] = out["quantiles"][..., j].reshape(-1)
        frame["y"] = np.concatenate([v[len(v) - back: len(v) - back + horizon] for v in panel.values])
        frames.append(pd.DataFrame(frame))
    return pd.concat(frames, ignore_index=True)


def _time_at(panel, series: int, position: int):
    """Timestamp of row `position` of a series (regular frequency)."""
    start, freq = panel.starts[series], panel.freq
    return start + position * freq


def _head_frame(panel, drop_last: int, id_col: str, time_col: str, target_col: str) -> pd.DataFrame:
    """The panel without the last `drop_last` rows of each series, as a long frame."""
    parts = []
    for idx, (uid, values) in enumerate(zip(panel.ids, panel.values)):
        n = len(values) - drop_last
        times = [_time_at(panel, idx, p) for p in range(n)] if isinstance(panel.freq, int) else \
            pd.date_range(panel.starts[idx], periods=n, freq=panel.freq)
        parts.append(pd.DataFrame({id_col: [uid] * n, time_col: times, target_col: values[:n]}))
    return pd.concat(parts, ignore_index=True)
