"""Covariates of long frames: their roles, their checks, and the arrays that the windows cut.

- past covariates: columns known up to each series' end (e.g. measured footfall). NaN marks a missing value,
  masked like a missing target.
- future covariates: columns known over the context and the forecast horizon (calendar, planned promotions, weather
  forecasts). They are required: NaN in the history is an error, and `predict` takes their values over the horizon
  from `futr_df`.
- static covariates: one value per series, from `static_df` (one row per series) or from columns of the frame that
  are constant within each series. Numeric and boolean columns are used as numbers; other columns (strings,
  categories) are one-hot encoded over the values seen in fit.

The network standardizes every covariate per column with the training frame's mean and std: one scale for all series
and windows, so a level keeps its meaning (30 degrees is hot in any window).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from xlstm_ts.datasets.frame import Panel, horizon_index, time_values, validate_long_frame
from xlstm_ts.datasets.windows import Covariates
from xlstm_ts.static_covariates import encode_static, is_numeric, static_features, static_table

ROLES = ("past_covariates", "future_covariates", "static_covariates")


@dataclass
class CovariateSpec:
    """The covariate columns of a forecaster by role, and the one-hot categories of non-numeric static columns."""

    past: list[str] = field(default_factory=list)
    future: list[str] = field(default_factory=list)
    static: list[str] = field(default_factory=list)
    categories: dict[str, list[str]] = field(default_factory=dict)
    """Column -> its categories (as strings) seen in fit, for static columns that are not numeric."""

    @property
    def dynamic(self) -> list[str]:
        """Columns known over the context: past-only ones first, then the known-future ones."""
        return self.past + self.future

    @property
    def any(self) -> bool:
        return bool(self.past or self.future or self.static)

    @property
    def n_static(self) -> int:
        """Ks: static features after one-hot encoding."""
        return sum(len(self.categories[c]) if c in self.categories else 1 for c in self.static)


def spec_from_params(forecaster) -> CovariateSpec:
    """Check the forecaster's covariate parameters: lists of distinct column names, one role per column."""
    names: dict[str, list[str]] = {}
    for role in ROLES:
        value = getattr(forecaster, role)
        try:
            columns = [] if value is None else list(value)
        except TypeError:
            columns = [value]
        if isinstance(value, str) or not all(isinstance(c, str) for c in columns):
            raise ValueError(f"{role} must be a list of column names, got {value!r}. Example: {role}=['promo'].")
        names[role] = columns
    reserved = {forecaster.id_col: "id_col", forecaster.time_col: "time_col", forecaster.target_col: "target_col"}
    seen: dict[str, str] = {}
    for role, columns in names.items():
        for col in columns:
            if col in reserved:
                raise ValueError(f"{role} names column {col!r}, which is the {reserved[col]}; a covariate must be "
                                 "another column of the frame.")
            if col in seen:
                where = "twice" if seen[col] == role else f"in both {seen[col]} and {role}"
                raise ValueError(f"Column {col!r} is listed {where}; each covariate has one role: future_covariates "
                                 "if its values are known ahead, past_covariates if only up to the end of each "
                                 "series, static_covariates if constant per series.")
            seen[col] = role
    return CovariateSpec(*names.values())


def read_panel(forecaster, df: pd.DataFrame, spec: CovariateSpec, freq) -> Panel:
    """Validate a long frame with its dynamic covariate columns; future covariates may not be NaN."""
    panel = validate_long_frame(df, forecaster.id_col, forecaster.time_col, forecaster.target_col, freq,
                                covariate_cols=spec.dynamic)
    first = len(spec.past)
    for i, cov in enumerate(panel.covariates or []):
        missing = np.isnan(cov[:, first:])  # (S, Kf)
        if missing.any():
            row, col = np.argwhere(missing)[0]
            raise ValueError(
                f"Future covariate {spec.future[col]!r} is NaN for series {panel.ids[i]!r} at "
                f"{panel.time_at(i, row)} ({int(missing.sum())} NaN value(s) in this series). Future covariates are "
                "known by definition: fill them in (e.g. 0 for 'no promotion'), or list the column in "
                "past_covariates, where NaN marks a missing value.")
    return panel


def dynamic_arrays(panel: Panel) -> list[np.ndarray]:
    """The panel's covariate arrays (S, K), or (S, 0) arrays when it has none."""
    if panel.covariates is not None:
        return panel.covariates
    return [np.zeros((len(v), 0), np.float32) for v in panel.values]


def fit_inputs(forecaster, df: pd.DataFrame, static_df: pd.DataFrame | None, mode: str,
               ) -> tuple[Panel, CovariateSpec, Covariates | None]:
    """The training panel, the covariate spec (with the static categories found) and the covariate arrays."""
    spec = spec_from_params(forecaster)
    if spec.any and mode == "variate_mixing":
        raise ValueError("mode='variate_mixing' takes no covariates (its series are the variates of one window). "
                         "Use mode='channel_independent', or add a past covariate as one more series of the frame.")
    _check_unused_static(spec, static_df)
    panel = read_panel(forecaster, df, spec, forecaster.freq)
    if not spec.any:
        return panel, spec, None
    static = None
    if spec.static:
        table = static_table(forecaster, spec, panel.ids, df, static_df)
        spec.categories = {c: sorted(set(table[c].astype(str))) for c in spec.static if not is_numeric(table[c])}
        static = encode_static(table, spec, panel.ids)
    return panel, spec, Covariates(dynamic_arrays(panel), len(spec.future), static)


def prediction_covariates(forecaster, panel: Panel, df: pd.DataFrame | None, futr_df: pd.DataFrame | None,
                          static_df: pd.DataFrame | None) -> Covariates | None:
    """Covariates of the series of `panel` for forecasting after their ends (future values from `futr_df`)."""
    spec: CovariateSpec = forecaster.covariates_
    _check_unused_static(spec, static_df)
    future = future_values(forecaster, futr_df, panel)
    if not spec.any:
        return None
    static = static_features(forecaster, panel.ids, df, static_df)
    return Covariates(dynamic_arrays(panel), len(spec.future), static, future)


def history_covariates(forecaster, panel: Panel, df: pd.DataFrame | None, static_df: pd.DataFrame | None,
                       ) -> Covariates | None:
    """Covariates of whole series, for backtests and scores (they cut them with `Covariates.before`)."""
    spec: CovariateSpec = forecaster.covariates_
    _check_unused_static(spec, static_df)
    if not spec.any:
        return None
    return Covariates(dynamic_arrays(panel), len(spec.future), static_features(forecaster, panel.ids, df, static_df))


def _check_unused_static(spec: CovariateSpec, static_df: pd.DataFrame | None) -> None:
    if static_df is not None and not spec.static:
        raise ValueError("static_df was given, but static_covariates is empty, so it would be ignored. Drop it, or "
                         "name its columns in static_covariates=[...] (and refit).")


def make_future_frame(forecaster, panel: Panel) -> pd.DataFrame:
    """The frame of the next `prediction_length` steps of every series, with NaN future covariate columns."""
    frame = horizon_index(panel.ids, panel.ends, panel.freq, forecaster.prediction_length, forecaster.id_col,
                          forecaster.time_col)
    for col in forecaster.covariates_.future:
        frame[col] = np.nan
    return frame


def future_values(forecaster, futr_df: pd.DataFrame | None, panel: Panel) -> np.ndarray | None:
    """(N, Kf, F) known-future covariate values over the horizon after each series, read from `futr_df`."""
    spec: CovariateSpec = forecaster.covariates_
    horizon, id_col, time_col = forecaster.prediction_length, forecaster.id_col, forecaster.time_col
    if not spec.future:
        if futr_df is not None:
            raise ValueError("futr_df was given, but this forecaster has no future_covariates, so it would be "
                             "ignored. Drop futr_df, or refit with future_covariates=[...] naming its columns.")
        return None
    if futr_df is None:
        raise ValueError(f"This forecaster uses future covariates {spec.future}: pass futr_df with their values for "
                         f"the next {horizon} steps of every series (columns {id_col!r}, {time_col!r} and "
                         f"{spec.future}). make_future_frame() builds that frame for you to fill.")
    if not isinstance(futr_df, pd.DataFrame):
        raise TypeError(f"futr_df must be a pandas DataFrame, got {type(futr_df).__name__}.")
    missing = [c for c in [id_col, time_col, *spec.future] if c not in futr_df.columns]
    if missing:
        raise ValueError(f"futr_df is missing column(s) {missing}; it has {list(futr_df.columns)}. It needs "
                         f"{id_col!r}, {time_col!r} and every future covariate {spec.future}.")
    expected = horizon_index(panel.ids, panel.ends, panel.freq, horizon, "id", "t")
    given = pd.DataFrame({"id": futr_df[id_col].to_numpy(dtype=object),
                          "t": time_values(futr_df, time_col).to_numpy()})
    if pd.api.types.is_integer_dtype(given["t"]) != pd.api.types.is_integer_dtype(expected["t"]):
        raise ValueError(f"futr_df's {time_col!r} column holds {given['t'].dtype} values but the series use "
                         f"{expected['t'].dtype}; give futr_df the same kind of timestamps as the frame.")
    if pd.api.types.is_datetime64_any_dtype(given["t"]):
        given["t"] = given["t"].astype(expected["t"].dtype)
    for k, col in enumerate(spec.future):
        if not is_numeric(futr_df[col]):
            raise ValueError(f"Future covariate {col!r} in futr_df must be numeric, got dtype {futr_df[col].dtype}.")
        given[f"x{k}"] = futr_df[col].to_numpy(dtype=np.float64, na_value=np.nan)

    def fail(rows: pd.DataFrame, problem: str, fix: str, columns: list[str] = spec.future) -> None:
        uid, when = rows["id"].iloc[0], rows["t"].iloc[0]
        when = when if isinstance(when, (int, np.integer)) else pd.Timestamp(when)
        raise ValueError(f"futr_df {problem}: series {uid!r} at {when} (column(s) {columns}; {len(rows)} such "
                         f"row(s)). {fix}")

    unknown = given[~given["id"].isin(panel.ids)]
    if len(unknown):
        fail(unknown, "has rows for a series that is not being forecast",
             f"Forecast series are {panel.ids[:5]}{' ...' if len(panel) > 5 else ''}: drop the other rows, or check "
             "the type of the id column (e.g. 1 vs '1').")
    dup = given[given.duplicated(["id", "t"])]
    if len(dup):
        fail(dup, "has more than one row", "Keep one row per series and timestamp.")
    outside = given.merge(expected, on=["id", "t"], how="left", indicator=True)
    outside = outside[outside["_merge"] == "left_only"]
    if len(outside):
        span = expected.loc[expected["id"] == outside["id"].iloc[0], "t"]
        fail(outside, "has a timestamp outside the forecast horizon",
             f"That series needs exactly the {horizon} steps {span.iloc[0]} .. {span.iloc[-1]} after its last "
             "timestamp, at the frame's frequency; make_future_frame() builds that frame.")
    merged = expected.merge(given, on=["id", "t"], how="left", indicator=True)
    absent = merged[merged["_merge"] == "left_only"]
    if len(absent):
        fail(absent, "is missing rows", f"Every series needs one row for each of the next {horizon} steps; "
             "make_future_frame() lists them.")
    values = merged[[f"x{k}" for k in range(len(spec.future))]].to_numpy(np.float32)  # (N * F, Kf)
    if np.isnan(values).any():
        row, col = np.argwhere(np.isnan(values))[0]
        fail(merged[np.isnan(values[:, col])], "has NaN", "Fill every future covariate value of the horizon.",
             [spec.future[col]])
    return values.reshape(len(panel), horizon, -1).transpose(0, 2, 1).copy()  # (N, Kf, F)
