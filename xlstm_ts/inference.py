"""Batched inference of a fitted forecaster's network, for univariate series or for the variates of one panel.

In mode 'variate_mixing' the series of a panel are the variates of one multivariate series: they are stacked
time-major into a (S, C) array, in the variate order seen in `fit`, and forecast together.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from xlstm_ts.datasets.frame import Panel, horizon_index
from xlstm_ts.datasets.windows import Covariates, context_windows
from xlstm_ts.training_utils import quantile_column


def stack_variates(values: list[np.ndarray], ids: list | None = None, starts: list | None = None) -> np.ndarray:
    """The variates of one multivariate series as a (S, C) array; they must share length (and start)."""
    names = list(range(len(values))) if ids is None else list(ids)
    if not values:
        raise ValueError("mode='variate_mixing' needs at least one series, got none.")
    lengths = [len(v) for v in values]
    if len(set(lengths)) != 1:
        i = int(np.argmax(np.asarray(lengths) != lengths[0]))
        raise ValueError(f"mode='variate_mixing' treats the series as variates of one multivariate series, so they "
                         f"must share one time index: series {names[0]!r} has {lengths[0]} rows, series "
                         f"{names[i]!r} has {lengths[i]}. Align them (NaN for missing values) or use "
                         "mode='channel_independent'.")
    if starts is not None and len({str(s) for s in starts}) != 1:
        i = next(k for k, s in enumerate(starts) if str(s) != str(starts[0]))
        raise ValueError(f"mode='variate_mixing' needs series that start together: {names[0]!r} starts at "
                         f"{starts[0]}, {names[i]!r} at {starts[i]}. Align them (NaN for missing values).")
    return np.stack(values, axis=1)  # (S, C)


def variate_order(ids: list, fitted_ids: list) -> np.ndarray:
    """Positions in `ids` of the fitted variates, in fitted order; the two id sets must be equal."""
    given, fitted = set(ids), set(fitted_ids)
    if given != fitted or len(ids) != len(fitted_ids):
        missing = [u for u in fitted_ids if u not in given][:3]
        extra = [u for u in ids if u not in fitted][:3]
        raise ValueError(f"mode='variate_mixing' forecasts the variates seen in fit together, so the frame must hold "
                         f"exactly those {len(fitted_ids)} series; missing {missing}, unexpected {extra}.")
    where = {u: k for k, u in enumerate(ids)}
    return np.array([where[u] for u in fitted_ids])


def variate_panel(forecaster, panel: Panel) -> Panel:
    """In mode 'variate_mixing', the panel's series in fitted variate order (the same ids are required)."""
    if forecaster.config_.mode != "variate_mixing" or panel is forecaster.panel_:
        return panel
    order = variate_order(panel.ids, forecaster.panel_.ids)
    pick = lambda items: [items[i] for i in order]
    return Panel(ids=pick(panel.ids), values=pick(panel.values), starts=pick(panel.starts), ends=pick(panel.ends),
                 freq=panel.freq)


def predict_windows(net: torch.nn.Module, series: list[np.ndarray], context_length: int, n_levels: int,
                    prediction_length: int, batch_size: int = 1024,
                    covariates: Covariates | None = None) -> dict[str, np.ndarray]:
    """Forecasts after each series: {"mean": (N, F) or (N, C, F), "quantiles": (N, F, Q) or (N, C, F, Q)}."""
    device = next(net.parameters()).device
    means, quantiles = [], []
    for start in range(0, len(series), batch_size):
        rows = None if covariates is None else covariates.rows(start, start + batch_size)
        batch = context_windows(series[start:start + batch_size], context_length, rows)
        out = net.predict(**{k: v.to(device) for k, v in batch.items()})
        means.append(out["mean"].float().cpu().numpy())
        quantiles.append(out["quantiles"].float().cpu().numpy())
    if not means:
        return {"mean": np.zeros((0, prediction_length), np.float32),
                "quantiles": np.zeros((0, prediction_length, n_levels), np.float32)}
    return {"mean": np.concatenate(means), "quantiles": np.concatenate(quantiles)}


def predict_series(forecaster, series: list[np.ndarray], batch_size: int = 1024,
                   covariates: Covariates | None = None) -> dict[str, np.ndarray]:
    """Forecasts after each 1-D series in `series` (in mode 'variate_mixing': the variates, in fitted order):
    {"mean": (N, F), "quantiles": (N, F, Q)}. A forecaster fitted with covariates needs theirs."""
    check_covariates_given(forecaster, covariates)
    args = (forecaster.context_length_, len(forecaster.levels_), forecaster.prediction_length, batch_size)
    if forecaster.config_.mode != "variate_mixing":
        return predict_windows(forecaster.net_, series, *args, covariates=covariates)
    out = predict_windows(forecaster.net_, [stack_variates(series)], *args)
    return {"mean": out["mean"][0], "quantiles": out["quantiles"][0]}  # (C, F), (C, F, Q)


def check_covariates_given(forecaster, covariates: Covariates | None) -> None:
    """A forecaster fitted with covariates cannot forecast from target values alone."""
    spec = forecaster.covariates_
    if spec.any and covariates is None:
        raise ValueError(f"This forecaster was fitted with covariates (past {spec.past}, future {spec.future}, static "
                         f"{spec.static}), so it cannot forecast from target values alone: use predict(df, "
                         "futr_df=..., static_df=...) with long frames.")


def forecast_frame(forecaster, ids: list, lasts: list, freq, out: dict[str, np.ndarray]) -> pd.DataFrame:
    """Long forecast frame: id, time (the `prediction_length` steps after each of `lasts`), mean, quantiles."""
    result = horizon_index(ids, lasts, freq, forecaster.prediction_length, forecaster.id_col, forecaster.time_col)
    result["mean"] = out["mean"].reshape(-1)
    for j, level in enumerate(forecaster.levels_):
        result[quantile_column(level)] = out["quantiles"][..., j].reshape(-1)
    return result


def predict_array(forecaster, context: np.ndarray, batch_size: int = 1024) -> dict[str, np.ndarray]:
    """`XLSTMForecaster.predict_array`: forecasts from raw (N, S) context arrays ((N, C, S) when mixing)."""
    check_covariates_given(forecaster, None)
    rows = np.asarray(context, dtype=np.float32)
    if forecaster.config_.mode == "variate_mixing":
        n_variates = forecaster.n_series_
        rows = rows[None] if rows.ndim == 2 else rows
        if rows.ndim != 3 or rows.shape[1] != n_variates:
            raise ValueError(f"mode='variate_mixing' expects context of shape (N, {n_variates}, S) (the fitted "
                             f"variates), got {rows.shape}.")
        rows = np.moveaxis(rows, 1, 2)  # (N, S, C)
    rows = rows[None, :] if rows.ndim == 1 else rows
    args = (forecaster.context_length_, len(forecaster.levels_), forecaster.prediction_length, batch_size)
    return predict_windows(forecaster.net_, list(rows), *args)
