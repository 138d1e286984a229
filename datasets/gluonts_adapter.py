"""gluonts interop (extra `[gluonts]`): gluonts datasets <-> long frames, forecasts as gluonts QuantileForecasts."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd


def _require_gluonts():
    try:
        import gluonts  # noqa: F401
    except ImportError as err:
        raise ImportError("gluonts interop needs gluonts: pip install 'xlstm_ts[gluonts]'.") from err


def from_gluonts(dataset: Iterable[dict], id_col: str = "unique_id", time_col: str = "ds",
                 target_col: str = "y") -> pd.DataFrame:
    """A gluonts dataset (entries with "target", "start", optional "item_id" and "feat_dynamic_real") as a long
    frame. Entries without an item id get their position as id; `feat_dynamic_real` rows become columns
    `feat_dynamic_real_0`, `feat_dynamic_real_1`, ... Timestamps are the start of each period."""
    frames = []
    for index, entry in enumerate(dataset):
        target = np.asarray(entry["target"], dtype=np.float64)
        if target.ndim != 1:
            raise ValueError(f"Entry {index} has a {target.ndim}-D target; expected a univariate (1-D) target.")
        start = entry["start"]
        start = start if isinstance(start, pd.Period) else pd.Period(start, freq=entry.get("freq"))
        times = pd.period_range(start, periods=len(target), freq=start.freq).to_timestamp()
        frame = {id_col: entry.get("item_id", index), time_col: times, target_col: target}
        feats = entry.get("feat_dynamic_real")
        if feats is not None:
            feats = np.asarray(feats, dtype=np.float64)
            for j, row in enumerate(feats):
                frame[f"feat_dynamic_real_{j}"] = row[: len(target)]
        frames.append(pd.DataFrame(frame))
    if not frames:
        raise ValueError("The gluonts dataset is empty: expected at least one entry.")
    return pd.concat(frames, ignore_index=True)


def to_gluonts(df: pd.DataFrame, id_col: str = "unique_id", time_col: str = "ds", target_col: str = "y",
               freq: str | None = None, feat_dynamic_real: list[str] | None = None):
    """A long frame as a gluonts `PandasDataset` (one entry per series)."""
    _require_gluonts()
    from gluonts.dataset.pandas import PandasDataset

    frame = df.copy()
    frame[time_col] = pd.to_datetime(frame[time_col])
    return PandasDataset.from_long_dataframe(frame, target=target_col, item_id=id_col, timestamp=time_col, freq=freq,
                                             feat_dynamic_real=feat_dynamic_real or [])


def predict_gluonts(forecaster, dataset: Iterable[dict]) -> list:
    """Forecasts after the end of every entry as gluonts `QuantileForecast`s (keys: the quantile levels and "mean"),
    in dataset order, ready for `gluonts.evaluation.Evaluator`.

    A forecaster fitted with covariates reads them as `from_gluonts` names them (`feat_dynamic_real_0`, ...): past
    ones over the target, future ones also over the next `prediction_length` steps, which gluonts' test entries
    carry (feat_dynamic_real of length target + prediction_length)."""
    _require_gluonts()
    from gluonts.model.forecast import QuantileForecast

    entries = list(dataset)
    if forecaster.covariates_.any:
        out = _predict_with_covariates(forecaster, entries)
    else:
        out = forecaster._predict_series([np.asarray(e["target"], np.float32) for e in entries])
    keys = [str(level) for level in forecaster.levels_] + ["mean"]
    forecasts = []
    for idx, entry in enumerate(entries):
        arrays = np.concatenate([out["quantiles"][idx].T, out["mean"][idx][None, :]])  # (Q + 1, F)
        forecasts.append(QuantileForecast(arrays, start_date=_start(entry) + len(entry["target"]), forecast_keys=keys,
                                          item_id=entry.get("item_id", idx)))
    return forecasts


def _start(entry: dict) -> pd.Period:
    start = entry["start"]
    return start if isinstance(start, pd.Period) else pd.Period(start, freq=entry.get("freq"))


def _predict_with_covariates(forecaster, entries: list[dict]) -> dict[str, np.ndarray]:
    """{"mean": (N, F), "quantiles": (N, F, Q)} from `predict` on the entries as a long frame, with the future
    covariates' horizon values taken from feat_dynamic_real beyond each target."""
    from xlstm_ts.training_utils import quantile_column

    spec, horizon = forecaster.covariates_, forecaster.prediction_length
    id_col, time_col = forecaster.id_col, forecaster.time_col
    frame = from_gluonts(entries, id_col, time_col, forecaster.target_col)
    futr_df = None
    if spec.future:
        rows = []
        for idx, entry in enumerate(entries):
            length = len(entry["target"])
            feats = np.asarray(entry.get("feat_dynamic_real", np.empty((0, 0))), dtype=np.float64)
            if feats.ndim != 2 or feats.shape[1] < length + horizon:
                raise ValueError(
                    f"Entry {idx} (item {entry.get('item_id', idx)!r}): the forecaster's future covariates "
                    f"{list(spec.future)} need feat_dynamic_real over the target and the next {horizon} steps "
                    f"(length >= {length + horizon}), got shape {feats.shape}. Use gluonts test entries, whose "
                    "dynamic features extend over the prediction range.")
            start = _start(entry) + length
            futr = {id_col: entry.get("item_id", idx),
                    time_col: pd.period_range(start, periods=horizon, freq=start.freq).to_timestamp()}
            futr.update({f"feat_dynamic_real_{j}": row[length:length + horizon] for j, row in enumerate(feats)})
            rows.append(pd.DataFrame(futr))
        futr_df = pd.concat(rows, ignore_index=True)[[id_col, time_col, *spec.future]]
    pred = forecaster.predict(frame, futr_df=futr_df)
    n = len(entries)
    columns = [quantile_column(level) for level in forecaster.levels_]
    return {"mean": pred["mean"].to_numpy().reshape(n, horizon),
            "quantiles": pred[columns].to_numpy().reshape(n, horizon, len(columns))}
