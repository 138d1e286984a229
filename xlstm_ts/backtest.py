"""Rolling-origin evaluation: forecasts at several cutoffs, with the realized values beside them; the score."""

from __future__ import annotations

import numpy as np
import pandas as pd

from xlstm_ts import covariates as cov
from xlstm_ts.datasets.frame import Panel, time_values
from xlstm_ts.inference import forecast_frame, variate_panel
from xlstm_ts.metrics import mase, season_length


def score(forecaster, df: pd.DataFrame, static_df: pd.DataFrame | None = None) -> float:
    """`XLSTMForecaster.score`: negative MASE of forecasts for the last horizon of each series, no refit."""
    history, actual, out = tail_forecasts(forecaster, df, static_df, n_windows=1)
    return -mase(actual, out["mean"], history, season_length(forecaster.freq_))


def tail_forecasts(forecaster, df: pd.DataFrame, static_df: pd.DataFrame | None, n_windows: int,
                   ) -> tuple[list[np.ndarray], np.ndarray, dict[str, np.ndarray]]:
    """Forecasts of the last `n_windows` x horizon steps of every series of `df` by the fitted forecaster, one window
    of `prediction_length` steps after another (oldest first), no refit; future covariates over each window come
    from `df`, as they were known ahead.

    Returns:
        (contexts, actual, out): the W * N contexts (window-major), the realized values (W * N, F) and the forecasts
        {"mean": (W * N, F), "quantiles": (W * N, F, Q)}.
    """
    horizon = forecaster.prediction_length
    panel = variate_panel(forecaster, cov.read_panel(forecaster, df, forecaster.covariates_, forecaster.freq_))
    span = n_windows * horizon
    if min(len(v) for v in panel.values) <= span + 1:
        raise ValueError(f"Forecasting the last n_windows * prediction_length = {span} steps of each series needs more "
                         f"than {span + 1} rows per series; the shortest has {min(map(len, panel.values))}.")
    covs = cov.history_covariates(forecaster, panel, df, static_df)
    contexts, actual, outs = [], [], []
    for k in range(n_windows):
        back = (n_windows - k) * horizon
        cuts = [len(v) - back for v in panel.values]
        window = [v[:c] for v, c in zip(panel.values, cuts)]
        outs.append(forecaster._predict_series(window, covariates=None if covs is None else covs.before(cuts, horizon)))
        actual.append(np.stack([v[c:c + horizon] for v, c in zip(panel.values, cuts)]))  # (N, F)
        contexts += window
    out = {key: np.concatenate([o[key] for o in outs]) for key in ("mean", "quantiles")}
    return contexts, np.concatenate(actual), out


def cross_validation(forecaster, df: pd.DataFrame, n_windows: int = 1, step_size: int | None = None,
                     refit: bool = False, static_df: pd.DataFrame | None = None) -> pd.DataFrame:
    """Forecast `n_windows` rolling windows at the end of every series.

    Window k (0-based, oldest first) has its cutoff `prediction_length + (n_windows - 1 - k) * step_size` steps
    before the end of each series; its forecast covers the `prediction_length` steps after the cutoff. With
    `refit=False` the forecaster is fitted once on the data up to the first cutoff; with `refit=True` it is refitted
    on the data up to every cutoff. The forecaster keeps the last fit. Covariates come from `df` (the future ones over
    each window's horizon too, as they were known ahead) and from `static_df`.

    Returns:
        Long frame: id, time, "cutoff" (last timestamp of the context), "mean", quantile columns, and "y" (realized).
    """
    horizon = forecaster.prediction_length
    step = horizon if step_size is None else step_size
    if not isinstance(n_windows, (int, np.integer)) or n_windows < 1:
        raise ValueError(f"n_windows must be a positive integer, got {n_windows!r}.")
    if not isinstance(step, (int, np.integer)) or step < 1:
        raise ValueError(f"step_size must be a positive integer or None, got {step_size!r}.")
    panel = cov.read_panel(forecaster, df, cov.spec_from_params(forecaster), forecaster.freq)
    span = horizon + (n_windows - 1) * step
    short = [uid for uid, v in zip(panel.ids, panel.values) if len(v) <= span]
    if short:
        raise ValueError(f"Series {short[0]!r} (and {len(short) - 1} more) have at most {span} rows, too few for "
                         f"{n_windows} windows of {horizon} steps every {step}: lower n_windows or step_size.")
    frames = []
    for k in range(n_windows):
        back = span - k * step  # rows after the cutoff, per series
        cuts = [len(v) - back for v in panel.values]
        cutoffs = [panel.time_at(idx, c - 1) for idx, c in enumerate(cuts)]
        if refit or k == 0:
            forecaster.fit(_head_frame(df, panel, cutoffs, forecaster.id_col, forecaster.time_col), static_df)
        covs = cov.history_covariates(forecaster, panel, df, static_df)
        contexts = [v[:c] for v, c in zip(panel.values, cuts)]
        out = forecaster._predict_series(contexts, covariates=None if covs is None else covs.before(cuts, horizon))
        frame = forecast_frame(forecaster, panel.ids, cutoffs, panel.freq, out)
        frame.insert(2, "cutoff", np.repeat(np.asarray(cutoffs), horizon))
        frame["y"] = np.concatenate([v[c:c + horizon] for v, c in zip(panel.values, cuts)])
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _head_frame(df: pd.DataFrame, panel: Panel, cutoffs: list, id_col: str, time_col: str) -> pd.DataFrame:
    """The rows of `df` up to each series' cutoff, every column kept (covariates included)."""
    last = pd.Series(cutoffs, index=pd.Index(panel.ids, dtype=object))
    limit = last.reindex(pd.Index(df[id_col].to_numpy(dtype=object))).to_numpy()
    return df[time_values(df, time_col).to_numpy() <= limit]
